"""The recaption job's first stage: a shard's kept samples, read from its tar.

Kept apart from the teacher's code (no transformers): the Ray tasks that read shards start
without importing the model stack.
"""

from __future__ import annotations

from pipelines.records import iter_kept_samples
from recaption.subset import drawn


def read_shard(row: dict) -> list[dict]:
    """{shard, tar, keep_list, rate, seed} -> one row per kept sample of that shard drawn into
    the subset of `rate` (`recaption.subset`; rate 1 takes every one)."""
    return [{"shard": row["shard"], "key": s["key"], "sample_id": s["sample_id"], "jpg": s["jpg"],
             "alt_text": s["alt_text"]}
            for s in iter_kept_samples(row["tar"], row["keep_list"])
            if drawn(row.get("seed", 0), row.get("rate", 1.0), s["sample_id"])]  # fmt: skip
