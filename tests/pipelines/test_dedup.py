"""Distributed filter + dedup over three sources with a repair round == the single-process rule."""

from __future__ import annotations

import pyarrow as pa
import pytest

from pipelines import storage
from pipelines.dedup import hex_buckets, split
from pipelines.download import complete_shards, shard_metadata
from pipelines.filter import FilterOptions, filter_table, mark_duplicates
from pipelines.filter_job import filter_sources
from pipelines.layout import RunLayout
from pipelines.schema import KEEP_LIST, SUPERSEDED
from tests.conftest import FABRICATED_SOURCES as SOURCES


def reference_keep_lists(layout: RunLayout, sources, options: FilterOptions) -> dict:
    """Today's single-process rule: every shard of every source in order, in one process."""
    shards = [(s, k, shard_metadata(layout.raw_folder(s), k)) for s in sources
              for k in complete_shards(layout.raw_folder(s))]  # fmt: skip
    last = {}
    for source, shard, metadata in shards:
        for sid in metadata["sample_id"].to_pylist():
            last[(source, sid)] = shard  # a later attempt of a sample supersedes earlier ones
    paired = []
    for source, shard, metadata in shards:
        rows = filter_table(metadata, options.build()).to_pylist()
        for row in rows:
            if last[(source, row["sample_id"])] != shard:
                row.update(keep=False, reason=SUPERSEDED)
        paired.append((metadata, pa.Table.from_pylist(rows, schema=KEEP_LIST)))
    final = mark_duplicates(paired, images=options.dedup_images, urls=options.dedup_urls)
    return {(s, k): t.to_pylist() for (s, k, _), t in zip(shards, final)}


@pytest.mark.slow
@pytest.mark.parametrize("options", [FilterOptions(), FilterOptions(dedup_images=False)])
def test_distributed_dedup_equals_single_process_reference(fabricated_run, options):
    layout = RunLayout(fabricated_run.run_root)
    report = filter_sources(layout, list(SOURCES), options, shards_per_task=2, buckets=16)
    expected = reference_keep_lists(layout, SOURCES, options)
    got = {(s, k): storage.read_parquet(layout.keep_list(s, k)).to_pylist() for s, k in expected}
    assert got == expected
    reasons = [r["reason"] for rows in expected.values() for r in rows]
    # The data exercises every rule: repairs, repeated URLs (within and across sources), images.
    assert reasons.count(SUPERSEDED) > 0 and reasons.count("duplicate_url") > 10
    assert (reasons.count("duplicate_image") > 0) == options.dedup_images
    cross = {r["sample_id"] for (s, _), rows in expected.items() if s == "laion-b" for r in rows
             if r["reason"] == "duplicate_url"}  # fmt: skip
    assert cross & {r["sample_id"] for (s, _), rows in expected.items() if s == "laion-a"
                    for r in rows if r["keep"]}  # fmt: skip
    kept = sum(r["keep"] for rows in expected.values() for r in rows)
    assert sum(report[s]["filtered"]["kept"] for s in SOURCES) == kept
    # Unchanged inputs and settings: the step is skipped and reports the same.
    assert filter_sources(layout, list(SOURCES), options, shards_per_task=2) == report


def test_split_and_buckets_keep_every_row_once():
    table = pa.table({"v": pa.array([f"{i:x}{i}" for i in range(300)])})
    labels = hex_buckets(table["v"], 16)
    parts = split(table, labels, 16)
    assert sum(p.num_rows for p in parts) == 300
    assert all(set(p["v"].to_pylist()) == {v for v, b in zip(table["v"].to_pylist(), labels)
                                           if b == i} for i, p in enumerate(parts))  # fmt: skip
