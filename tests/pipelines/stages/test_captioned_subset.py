"""A teacher-caption stage (S1.2) draws from the captioned samples only: when `recaption.samples`
caps the captions, the kept samples left uncaptioned are simply not in it (not an error)."""

from __future__ import annotations

from pipelines import storage
from pipelines.layout import RunLayout
from pipelines.outputs import caption_counts
from pipelines.shuffle import read_part
from pipelines.stages.build import stage_inputs
from pipelines.stages.mapping import ROWS, map_shard, part_file
from pipelines.stages.spec import StageSpec
from tests.pipelines.stages.web import captioned_web


def _run_with_a_capped_recaption(root) -> tuple[RunLayout, list[str], list[str]]:
    """One raw shard of 8 samples, 7 kept, 3 of them captioned; (layout, kept, captioned keys)."""
    return captioned_web(root, 7, every=3)


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
