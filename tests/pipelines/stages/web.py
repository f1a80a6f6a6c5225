"""A hand-made filtered and recaptioned web source for stage tests (no download, no teacher)."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from pipelines import storage
from pipelines.completion import CompletionLog
from pipelines.layout import RunLayout
from pipelines.outputs import FILTER_UNIT
from pipelines.schema import CAPTION
from tests.recaption.conftest import write_shards


def captioned_web(root: Path, samples: int, every: int = 1) -> tuple[RunLayout, list, list]:
    """One raw shard of the source `web` with `samples` kept samples, every `every`-th of them
    captioned by the teacher `tiny`; (layout, kept keys, captioned keys)."""
    kept = write_shards(root, [samples + 1], source="web")[0]
    layout = RunLayout(str(root))
    keep = storage.read_parquet(layout.keep_list("web", 0)).to_pylist()
    metadata = [{"key": r["key"], "sample_id": r["sample_id"], "caption": f"alt {r['key']}"}
                for r in keep]  # fmt: skip
    storage.write_parquet(pa.Table.from_pylist(metadata),
                          layout.raw_folder("web").shard(0, "parquet"))  # fmt: skip
    CompletionLog(layout.filtered("web")).write(FILTER_UNIT, {},
                                                {"kept_per_shard": {"00000": samples}})
    captioned = kept[::every]
    ids = {r["key"]: r["sample_id"] for r in keep}
    rows = [{"shard": 0, "key": k, "sample_id": ids[k], "caption": f"teacher {k}",
             "teacher_caption": f"teacher {k}", "raw_caption": f"teacher {k}", "fallback": False,
             "reason": None, "prompt": "Describe."} for k in captioned]  # fmt: skip
    storage.write_parquet(pa.Table.from_pylist(rows, schema=CAPTION),
                          layout.caption_shard("tiny", "web", 0))  # fmt: skip
    CompletionLog(layout.captions("tiny", "web")).write("00000", {"every": every},
                                                        {"captions": len(rows)})  # fmt: skip
    return layout, kept, captioned
