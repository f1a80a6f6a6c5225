"""The filter step over a downloaded source: keep-lists per shard, a summary, raw tars untouched.

Per-sample checks run on each shard's metadata as Ray tasks; duplicates (image hash, URL) and
superseded attempts (a sample re-downloaded by a repair round) are resolved after, in shard
order. Each keep-list is written to a temporary name and renamed; the step records which raw
shards it covered and is skipped when they have not changed.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.atomic import write_json, write_parquet
from pipelines.download import done_shards, latest_attempts, one_shard_metadata
from pipelines.filter import (
    KEEP_LIST_SCHEMA,
    FilterOptions,
    filter_table,
    mark_duplicates,
    summarize,
)
from pipelines.scheduler import run_bounded

SUPERSEDED = "superseded_by_repair"


def _filter_shard(filters, path: str) -> pa.Table:
    return filter_table(pq.read_table(path), filters)


def _mark_superseded(shards: list[tuple[pa.Table, pa.Table]]) -> list[tuple[pa.Table, pa.Table]]:
    """A sample's earlier failed attempts give way to its last attempt."""
    shard_of = [(m, k, m["shard"][0].as_py() if m.num_rows else -1) for m, k in shards]
    all_meta = pa.concat_tables([m for m, _ in shards], promote_options="default")
    final = latest_attempts(all_meta)
    last_shard = dict(zip(final["sample_id"].to_pylist(), final["shard"].to_pylist()))
    out = []
    for meta, keep, shard in shard_of:
        rows = keep.to_pylist()
        for row, sid in zip(rows, meta["sample_id"].to_pylist()):
            if last_shard.get(sid, shard) != shard:
                row.update(keep=False, reason=SUPERSEDED)
        out.append((meta, pa.Table.from_pylist(rows, schema=KEEP_LIST_SCHEMA)))
    return out


def filter_source(raw_folder: str | Path, filtered_folder: str | Path, options: FilterOptions,
                  max_in_flight: int = 4) -> dict:  # fmt: skip
    """Writes `filtered_folder/NNNNN.parquet` (key, sample_id, keep, reason) for every raw shard.

    Returns:
        counts: total samples, kept, and dropped per reason (superseded attempts not counted).
    """
    raw_folder, filtered_folder = Path(raw_folder), Path(filtered_folder)
    filtered_folder.mkdir(parents=True, exist_ok=True)
    shards = sorted(done_shards(raw_folder))
    manifest_path = filtered_folder / "_manifest.json"
    if manifest_path.exists():
        manifest = json.loads(manifest_path.read_text())
        if manifest["shards"] == shards and manifest["options"] == options.model_dump():
            return manifest["summary"]
    paths = {s: str(raw_folder / f"{s:05d}.parquet") for s in shards}
    keep_lists = run_bounded(
        _filter_shard, list(paths.values()), shared=options.build(),
        max_in_flight=max_in_flight, desc="filter shards",
    )  # fmt: skip
    metadata = [one_shard_metadata(raw_folder, shard) for shard in shards]
    paired = _mark_superseded(list(zip(metadata, (keep_lists[p] for p in paths.values()))))
    final = mark_duplicates(paired, images=options.dedup_images, urls=options.dedup_urls)
    for shard, keep_list in zip(shards, final):
        write_parquet(keep_list, filtered_folder / f"{shard:05d}.parquet")
    summary = summarize(final, ignore=(SUPERSEDED,))
    manifest = {"shards": shards, "options": options.model_dump(), "summary": summary}
    write_json(manifest, manifest_path)
    return summary
