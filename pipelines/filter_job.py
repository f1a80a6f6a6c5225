"""The filter step over downloaded sources: keep-lists per raw shard, raw tars never rewritten.

A distributed job in four rounds of Ray tasks over hash buckets (`pipelines/dedup.py`), holding
nothing per sample on the driver: (1) per group of shards, run the filters and send each attempt to
its sample-id bucket; (2) per sample-id bucket, resolve superseded attempts and repeated URLs and
send survivors to their image bucket; (3) per image bucket, resolve repeated images; (4) per group
of shards, lay the decisions over the filter reasons and write each keep-list. Buckets travel
through Ray's object store. The step's completion record (one per source folder, unit `filter`)
names the filter settings and the download records it covered.
"""

from __future__ import annotations

import math
from collections import Counter

import pyarrow as pa
import pyarrow.compute as pc

from pipelines import storage
from pipelines.completion import CompletionLog
from pipelines.dedup import (
    DROPS,
    apply_drops,
    attempt_rows,
    hex_buckets,
    resolve_images,
    resolve_samples,
    split,
    unit_of,
)
from pipelines.download import complete_shards, shard_metadata
from pipelines.download_report import failure_reason
from pipelines.filter import FilterOptions, verdicts
from pipelines.layout import RunLayout, shard_name
from pipelines.schema import KEEP_LIST, SUPERSEDED

UNIT = "filter"


def _map_group(layout_root, units, options, buckets):
    layout, filters, parts = RunLayout(layout_root), options.build(), []
    for unit, (source_index, source, shard) in units:
        metadata = shard_metadata(layout.raw_folder(source), shard)
        parts.append(attempt_rows(metadata, verdicts(metadata, filters), unit, source_index))
    rows = pa.concat_tables(parts)
    return split(rows, hex_buckets(rows["sample_id"], buckets), buckets)


def _reduce_samples(options, buckets, groups, per_group, *parts):
    drops, survivors = resolve_samples(pa.concat_tables(parts), options.dedup_urls)
    if not options.dedup_images:
        survivors = survivors.slice(0, 0)
    out = split(survivors, hex_buckets(survivors["sha256"], buckets), buckets)
    return out + split(drops, unit_of(drops["pos"]) // per_group, groups)


def _reduce_images(groups, per_group, *parts):
    drops = resolve_images(pa.concat_tables(parts))
    out = split(drops, unit_of(drops["pos"]) // per_group, groups)
    return out if groups > 1 else out[0]  # Ray stores one return value as itself


def _assemble(layout_root, units, options, *drops):
    layout, filters, counts = RunLayout(layout_root), options.build(), []
    drops = pa.concat_tables([DROPS.empty_table(), *drops])
    for unit, (_, source, shard) in units:
        metadata = shard_metadata(layout.raw_folder(source), shard)
        reasons = apply_drops(verdicts(metadata, filters), drops, unit)
        keep_list = pa.table({"key": metadata["key"], "sample_id": metadata["sample_id"],
                              "keep": pc.is_null(reasons), "reason": reasons}, schema=KEEP_LIST)
        storage.write_parquet(keep_list, layout.keep_list(source, shard))
        final = [(r, s, m) for r, s, m in zip(reasons.to_pylist(), metadata["status"].to_pylist(),
                 metadata["error_message"].to_pylist()) if r != SUPERSEDED]  # fmt: skip
        filtered = Counter(r or "kept" for r, _, _ in final)
        downloaded = Counter("downloaded" if s == "success" else failure_reason(m)
                             for _, s, m in final)  # fmt: skip
        counts.append((source, shard, dict(filtered), dict(downloaded)))
    return counts


def _outputs(refs, n):
    return refs if n > 1 else [refs]


def filter_settings(layout: RunLayout, sources: list[str], options: FilterOptions) -> dict:
    inputs = {s: {shard_name(k): r["settings_hash"] for k, r in
                  ((int(u), r) for u, r in CompletionLog(layout.raw(s)).records().items())}
              for s in sources}  # fmt: skip
    return {"filter": options.model_dump(), "sources": sources, "inputs": inputs}


def bucket_count(rows: int, rows_per_bucket: int = 250_000) -> int:
    """Hash buckets for `rows` attempts: enough that one bucket stays small, at least 16."""
    return min(4096, max(16, math.ceil(rows / rows_per_bucket)))


def filter_sources(layout: RunLayout, sources: list[str], options: FilterOptions,
                   shards_per_task: int = 16, buckets: int | None = None) -> dict:  # fmt: skip
    """Writes the keep-list of every downloaded shard of `sources`, deduplicated across them.

    Args:
        shards_per_task: shards one map or assemble task reads.
        buckets: hash buckets (None: `bucket_count` of the attempts in the download records).

    Returns:
        {source: {"filtered": {total, kept, <drop reason>: n}, "downloaded": {...}}};
        superseded attempts are not counted.
    """
    import ray

    settings = filter_settings(layout, sources, options)
    logs = {s: CompletionLog(layout.filtered(s)) for s in sources}
    if all(log.is_complete(UNIT, settings) for log in logs.values()):
        covered = {s: logs[s].read(UNIT)["covered"] for s in sources}
        return {s: {k: v for k, v in c.items() if k != "kept_per_shard"}
                for s, c in covered.items()}  # fmt: skip
    for source, log in logs.items():
        log.clear(UNIT)
        for stale in storage.glob(storage.join(layout.filtered(source), "*.parquet")):
            storage.remove(stale)  # keep-lists of another filter run are never mixed with these
    units = list(enumerate((i, s, shard) for i, s in enumerate(sources)
                           for shard in complete_shards(layout.raw_folder(s))))  # fmt: skip
    if not units:
        raise ValueError(f"nothing downloaded to filter in {sources}")
    if buckets is None:
        records = [CompletionLog(layout.raw(s)).records() for s in sources]
        buckets = bucket_count(sum(r["covered"].get("rows", 0) for rs in records
                                   for r in rs.values()))  # fmt: skip
    groups = [units[i : i + shards_per_task] for i in range(0, len(units), shards_per_task)]
    n_groups = max(1, len(groups))
    task = ray.remote(num_cpus=0.5)
    mapped = [_outputs(task(_map_group).options(num_returns=buckets).remote(
        layout.root, g, options, buckets), buckets) for g in groups]  # fmt: skip
    by_sample = [task(_reduce_samples).options(num_returns=buckets + n_groups).remote(
        options, buckets, n_groups, shards_per_task, *[m[b] for m in mapped])
        for b in range(buckets)]  # fmt: skip
    by_image = [_outputs(task(_reduce_images).options(num_returns=n_groups).remote(
        n_groups, shards_per_task, *[r[b] for r in by_sample]), n_groups)
        for b in range(buckets)]  # fmt: skip
    assembled = [task(_assemble).remote(
        layout.root, g, options, *[r[buckets + i] for r in by_sample], *[r[i] for r in by_image])
        for i, g in enumerate(groups)]  # fmt: skip
    totals = {s: {"filtered": Counter(), "downloaded": Counter()} for s in sources}
    kept = {s: {} for s in sources}
    for counts in _wait_all(ray, assembled, "filter shard groups"):
        for source, shard, filtered, downloaded in counts:
            totals[source]["filtered"].update(filtered)
            totals[source]["downloaded"].update(downloaded)
            kept[source][shard_name(shard)] = filtered.get("kept", 0)
    report = {}
    for source in sources:
        filtered, downloaded = totals[source]["filtered"], totals[source]["downloaded"]
        total = sum(filtered.values())
        success = downloaded.pop("downloaded", 0)
        report[source] = {
            "filtered": {"total": total, "kept": filtered.pop("kept", 0), **filtered},
            "downloaded": {"total": total, "downloaded": success,
                           "success_rate": success / total if total else 0.0,
                           "failures": dict(downloaded)},
        }  # fmt: skip
        logs[source].write(UNIT, settings, {**report[source], "kept_per_shard": kept[source]})
    return report


def _wait_all(ray, refs, desc):
    from tqdm.auto import tqdm

    pending = list(refs)
    with tqdm(total=len(pending), desc=desc, unit="groups") as progress:
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            progress.update(1)
            yield ray.get(done[0])
