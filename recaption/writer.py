"""The recaption job's last stage: caption rows -> one sealed parquet per shard, then its record.

Kept apart from the teacher's code (no torch, no transformers): the writer actor starts in a
fraction of a second instead of importing the whole model stack.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pyarrow as pa

from pipelines import storage
from pipelines.completion import CompletionLog
from pipelines.layout import shard_name
from pipelines.schema import CAPTION


def write_captions(rows: list[dict], url: str) -> None:
    """Writes one shard's captions, sorted by key, through a temporary name."""
    rows = sorted(rows, key=lambda r: r["key"])
    storage.write_parquet(pa.Table.from_pylist(rows, schema=CAPTION), url)


class CaptionWriter:
    """Ray Data stage (one actor): buffers caption rows per shard and writes each complete shard.

    The first row of a key stands, so a retried upstream task never adds a second caption; the
    record is written after the file. Only a one-row summary per written shard goes downstream.
    """

    def __init__(self, out_folder: str, expected: dict[int, int], settings: dict[int, dict]):
        self.log, self.out = CompletionLog(out_folder), out_folder
        self.expected, self.settings = expected, settings
        self.buffers: dict[int, dict[str, dict]] = {}

    def __call__(self, batch: pa.Table) -> dict:
        done = {"shard": [], "images": [], "kept": []}
        for row in batch.select(CAPTION.names).to_pylist():
            shard = row["shard"]
            if shard not in self.expected:
                continue  # already written: a late repeat
            buffer = self.buffers.setdefault(shard, {})
            buffer.setdefault(row["key"], row)
            if len(buffer) == self.expected[shard]:
                rows = list(self.buffers.pop(shard).values())
                write_sealed(self.log, self.out, shard, rows, self.settings[shard])
                del self.expected[shard]
                done["shard"].append(shard)
                done["images"].append(len(rows))
                done["kept"].append(sum(r["reason"] is None for r in rows))
        return {k: np.asarray(v, dtype=np.int64) for k, v in done.items()}


def write_sealed(log: CompletionLog, out_folder: str, shard: int, rows, settings) -> None:
    """A shard's caption file, then its completion record."""
    write_captions(rows, storage.join(out_folder, f"{shard_name(shard)}.parquet"))
    reasons = Counter(r["reason"] for r in rows if r["reason"] is not None)
    log.write(shard_name(shard), settings, {"captions": len(rows), "rejected": dict(reasons)})
