"""The one sample schema: the record that flows from a source row to a training sample.

A sample is joined across steps by `sample_id` (sha256 of the URL, 16 hex digits) within a source,
and by (`shard`, `key`) to its image in a raw tar:

```
source row ─plan─► PLAN_ROW ─img2dataset─► ATTEMPT (one per download try; repairs add later shards)
   └─filter─► KEEP_LIST (verdict + reason, per raw shard)  └─recaption─► CAPTION (per raw shard)
```
Declared here once; filter, recaption, trace and the stage builder read these names.
"""

from __future__ import annotations

import pyarrow as pa

PLAN_ROW = pa.schema([
    ("sample_id", pa.string()),   # sha256(url)[:16]
    ("source", pa.string()),      # the run's source name
    ("source_file", pa.string()), # the source parquet the row came from
    ("source_row", pa.int64()),   # its row number there
    ("url", pa.string()),
    ("caption", pa.string()),     # the alt-text (img2dataset's column name)
    ("width", pa.int64()),        # size the source claims (img2dataset measures its own)
    ("height", pa.int64()),
])  # fmt: skip
"""A source row after planning: normalised columns plus the source's kept columns."""

LINEAGE_COLUMNS = ["sample_id", "source", "source_file", "source_row"]
"""Plan columns carried through img2dataset into every download attempt."""

ATTEMPT_COLUMNS = ["key", "status", "error_message", "width", "height", "original_width",
                   "original_height", "sha256"]  # fmt: skip
"""What img2dataset records per attempt (its shard parquet), besides the carried plan columns."""

KEEP_LIST = pa.schema([
    ("key", pa.string()),
    ("sample_id", pa.string()),
    ("keep", pa.bool_()),
    ("reason", pa.string()),      # the first failing check; null when kept
])  # fmt: skip
"""The filter's verdict on every attempt of one raw shard."""

CAPTION = pa.schema([
    ("shard", pa.int64()), ("key", pa.string()), ("sample_id", pa.string()),
    ("caption", pa.string()),          # what training reads: the teacher's, or the alt-text
    ("teacher_caption", pa.string()),  # cleaned teacher output; null when rejected
    ("raw_caption", pa.string()),      # the teacher's raw output
    ("fallback", pa.bool_()),          # true: `caption` is the alt-text
    ("reason", pa.string()),           # why the teacher caption was rejected
    ("prompt", pa.string()),
])  # fmt: skip
"""One teacher caption per kept sample of one raw shard."""

SUPERSEDED = "superseded_by_repair"
"""Keep-list reason of an attempt that a later attempt of the same sample replaces."""
