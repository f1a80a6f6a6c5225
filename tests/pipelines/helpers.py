"""Reading a whole (small) test run back, for assertions."""

from __future__ import annotations

import pyarrow as pa

from pipelines.download import complete_shards, shard_metadata
from pipelines.layout import RawFolder


def all_attempts(raw: RawFolder) -> pa.Table:
    """Every attempt img2dataset recorded in the complete shards of `raw`, in shard order."""
    tables = [shard_metadata(raw, s) for s in complete_shards(raw)]
    return pa.concat_tables(tables, promote_options="default")


def last_attempts(attempts: pa.Table) -> pa.Table:
    """Each sample's last attempt (the single-process rule the filter job reproduces)."""
    last = {sid: i for i, sid in enumerate(attempts["sample_id"].to_pylist())}
    return attempts.take(sorted(last.values()))
