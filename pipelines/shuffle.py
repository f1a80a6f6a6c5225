"""Hash buckets between two rounds of Ray tasks, through files rather than the object store.

A writer puts bucket i of its rows in record batch i of one Arrow IPC file; a reader takes batch i
of every writer's file. Ray inlines small task results into the driver, so passing buckets as
task results would put rows there; files keep the driver to file names.
"""

from __future__ import annotations

import pyarrow as pa

from pipelines import storage


def write_parts(parts: list[pa.Table], url: str) -> None:
    """Arrow IPC file with record batch i = parts[i] (empty ones too): readers take one batch."""
    schema = parts[0].schema
    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, schema) as writer:
        for part in parts:
            table = part.combine_chunks()
            writer.write_batch(table.to_batches()[0] if table.num_rows else
                               pa.RecordBatch.from_pylist([], schema=schema))  # fmt: skip
    storage.write_bytes(sink.getvalue().to_pybytes(), url)


def read_part(urls: list[str], index: int, schema: pa.Schema) -> pa.Table:
    """Batch `index` of each IPC file, concatenated (one hash bucket from every writer)."""
    batches = []
    for url in urls:
        fs, path = storage.filesystem(url)
        with fs.open(path, "rb") as handle:
            batches.append(pa.ipc.open_file(handle).get_batch(index))
    return pa.Table.from_batches(batches, schema=schema)
