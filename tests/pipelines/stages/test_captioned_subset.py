"""A teacher-caption stage (S1.2) draws from the captioned samples only: when `recaption.samples`
caps the captions, the kept samples left uncaptioned are simply not in it (not an error)."""

from __future__ import annotations

import pyarrow as pa

from pipelines import storage
from pipelines.completion import CompletionLog
from pipelines.layout import RunLayout
from pipelines.outputs import FILTER_UNIT, caption_counts
from pipelines.schema import CAPTION
from pipelines.shuffle import read_part
from pipelines.stages.build import stage_inputs
from pipelines.stages.mapping import ROWS, map_shard, part_file
from pipelines.stages.spec import StageSpec
from tests.recaption.conftest import write_shards


def _run_with_a_capped_recaption(root) -> tuple[RunLayout, list[str], list[str]]:
    """One raw shard of 8 samples, 7 kept, 3 of them captioned; (layout, kept, captioned keys)."""
    kept = write_shards(root, [8], source="web")[0]
    layout = RunLayout(str(root))
    keep = storage.read_parquet(layout.keep_list("web", 0)).to_pylist()
    metadata = [{"key": r["key"], "sample_id": r["sample_id"], "caption": f"alt {r['key']}"}
                for r in keep]  # fmt: skip
    storage.write_parquet(pa.Table.from_pylist(metadata),
                          layout.raw_folder("web").shard(0, "parquet"))  # fmt: skip
    CompletionLog(layout.filtered("web")).write(FILTER_UNIT, {}, {"kept_per_shard": {"00000": 7}})
    captioned = kept[::3]
    sample_ids = {r["key"]: r["sample_id"] for r in keep}
    rows = [{"shard": 0, "key": k, "sample_id": sample_ids[k], "caption": f"teacher {k}",
             "teacher_caption": f"teacher {k}", "raw_caption": f"teacher {k}", "fallback": False,
             "reason": None, "prompt": "Describe."} for k in captioned]  # fmt: skip
    storage.write_parquet(pa.Table.from_pylist(rows, schema=CAPTION),
                          layout.caption_shard("tiny", "web", 0))  # fmt: skip
    CompletionLog(layout.captions("tiny", "web")).write("00000", {"subset": 3},
                                                        {"captions": len(rows)})  # fmt: skip
    return layout, kept, captioned


def _stage_rows(layout, spec, teacher) -> list[dict]:
    scratch = storage.join(layout.stages(spec.name), "_shuffle")
    shared = (layout.root, spec, teacher, {"web": 1.0}, 1, scratch)
    map_shard(shared, ("web", 0))
    return read_part([part_file(scratch, "web", 0)], 0, ROWS).to_pylist()


def test_s1_2_holds_the_captioned_samples_and_s1_1_every_kept_one(tmp_path):
    layout, kept, captioned = _run_with_a_capped_recaption(tmp_path)
    assert caption_counts(layout, "tiny", "web") == {"00000": 3}
    s12 = StageSpec(name="S1.2", text="teacher_caption")
    assert stage_inputs(layout, s12, ["web"], "tiny")["web"]["kept"] == 3  # what it draws from
    rows = _stage_rows(layout, s12, "tiny")
    assert sorted(r["raw_key"] for r in rows) == sorted(captioned)
    assert all("teacher" in r["conversations"] for r in rows)

    s11 = StageSpec(name="S1.1", text="alt_text")
    assert stage_inputs(layout, s11, ["web"], None)["web"]["kept"] == 7
    assert sorted(r["raw_key"] for r in _stage_rows(layout, s11, None)) == sorted(kept)
