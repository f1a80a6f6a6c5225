"""The filter step over downloaded sources: keep-lists per raw shard, raw tars never rewritten.

A distributed job in four rounds of Ray tasks over hash buckets (`pipelines/dedup.py`), holding
nothing per sample on the driver: (1) per group of shards, run the filters and send each attempt to
its sample-id bucket; (2) per sample-id bucket, resolve superseded attempts and repeated URLs and
send survivors to their image bucket; (3) per image bucket, resolve repeated images; (4) per group
of shards, lay the decisions over the filter reasons and write each keep-list. Buckets travel as
Arrow IPC files under `filtered/_shuffle/` (batch i of a file is bucket i), not through the object
store: Ray inlines small task results into the driver, which would put rows there. The step's
completion record (one per source folder, unit `filter`) names the filter settings and the
download records it covered.
"""

from __future__ import annotations

import math
from collections import Counter

import pyarrow as pa
import pyarrow.compute as pc

from pipelines import storage
from pipelines.completion import CompletionLog, changed_keys
from pipelines.dedup import (
    ATTEMPTS,
    DROPS,
    SURVIVORS,
    apply_drops,
    attempt_rows,
    hex_buckets,
    resolve_images,
    resolve_samples,
    split,
    unit_of,
)
from pipelines.download import shard_metadata
from pipelines.download_report import failure_reason
from pipelines.filter import FilterOptions, verdicts
from pipelines.layout import RunLayout, shard_name
from pipelines.outputs import FILTER_UNIT, downloaded_shards
from pipelines.scheduler import releasing_memory
from pipelines.schema import KEEP_LIST, SUPERSEDED
from pipelines.shuffle import read_part, write_parts

UNIT = FILTER_UNIT


def _map_group(layout_root, units, options, buckets, out):
    layout, filters, parts = RunLayout(layout_root), options.build(), []
    for unit, (source_index, source, shard) in units:
        metadata = shard_metadata(layout.raw_folder(source), shard)
        parts.append(attempt_rows(metadata, verdicts(metadata, filters), unit, source_index))
    rows = pa.concat_tables(parts)
    write_parts(split(rows, hex_buckets(rows["sample_id"], buckets), buckets), out)


def _reduce_samples(options, bucket, inputs, buckets, groups, per_group, out_images, out_drops,
                    *_after):  # fmt: skip
    rows = read_part(inputs, bucket, ATTEMPTS)
    drops, survivors = resolve_samples(rows, options.dedup_urls)
    if not options.dedup_images:
        survivors = survivors.slice(0, 0)
    write_parts(split(survivors, hex_buckets(survivors["sha256"], buckets), buckets), out_images)
    write_parts(split(drops, unit_of(drops["pos"]) // per_group, groups), out_drops)


def _reduce_images(bucket, inputs, groups, per_group, out, *_after):
    drops = resolve_images(read_part(inputs, bucket, SURVIVORS))
    write_parts(split(drops, unit_of(drops["pos"]) // per_group, groups), out)


def _assemble(layout_root, units, options, group, drop_files, *_after):
    layout, filters, counts = RunLayout(layout_root), options.build(), []
    drops = read_part(drop_files, group, DROPS)
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


def filter_settings(layout: RunLayout, sources: list[str], options: FilterOptions) -> dict:
    inputs = {s: {shard_name(k): made_with for k, made_with in
                  downloaded_shards(layout, s).settings_hashes.items()}
              for s in sources}  # fmt: skip
    return {"filter": options.model_dump(exclude={"cpus_per_task"}), "sources": sources,
            "inputs": inputs}  # fmt: skip


def bucket_count(rows: int, rows_per_bucket: int = 50_000) -> int:
    """Hash buckets for `rows` attempts: as many as keep a bucket near `rows_per_bucket` rows, so
    a reduce task's memory stays the same however large the run (at least 4, at most 4096)."""
    return min(4096, max(4, math.ceil(rows / rows_per_bucket)))


def filter_sources(layout: RunLayout, sources: list[str], options: FilterOptions,
                   shards_per_task: int = 16, buckets: int | None = None,
                   rows_per_bucket: int = 50_000) -> dict:  # fmt: skip
    """Writes the keep-list of every downloaded shard of `sources`, deduplicated across them.

    Args:
        shards_per_task: shards one map or assemble task reads.
        buckets: hash buckets (None: `bucket_count` of the attempts in the download records).
        rows_per_bucket: what `bucket_count` aims at.

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
        previous = log.read(UNIT)
        if previous is not None:
            changed = ", ".join(changed_keys(previous["settings"], settings)[:6])
            print(f"filter {source}: made with other settings ({changed}); redoing")
        log.clear(UNIT)
        for stale in storage.glob(storage.join(layout.filtered(source), "*.parquet")):
            storage.remove(stale)  # keep-lists of another filter run are never mixed with these
    downloaded = {s: downloaded_shards(layout, s) for s in sources}
    units = list(enumerate((i, s, shard) for i, s in enumerate(sources)
                           for shard in downloaded[s].shards))  # fmt: skip
    if not units:
        raise ValueError(f"nothing downloaded to filter in {sources}")
    if buckets is None:
        buckets = bucket_count(sum(d.rows for d in downloaded.values()), rows_per_bucket)
    groups = [units[i : i + shards_per_task] for i in range(0, len(units), shards_per_task)]
    scratch = layout.filter_scratch()
    storage.remove(scratch)

    def files(phase, count):
        return [storage.join(scratch, phase, f"{i:05d}.arrow") for i in range(count)]

    def task(fn):
        return ray.remote(num_cpus=options.cpus_per_task)(releasing_memory(fn))

    # Each round's tasks take the previous round's task refs only to wait for them.
    samples, images = files("samples", len(groups)), files("images", buckets)
    drops, image_drops = files("drops", buckets), files("image-drops", buckets)
    mapped = [task(_map_group).remote(layout.root, g, options, buckets, out)
              for g, out in zip(groups, samples)]  # fmt: skip
    by_sample = [task(_reduce_samples).remote(
        options, b, samples, buckets, len(groups), shards_per_task, images[b], drops[b],
        *mapped) for b in range(buckets)]  # fmt: skip
    by_image = [task(_reduce_images).remote(b, images, len(groups), shards_per_task,
                                            image_drops[b], *by_sample)
                for b in range(buckets)]  # fmt: skip
    assembled = [task(_assemble).remote(layout.root, g, options, i, drops + image_drops,
                                        *by_image)
                 for i, g in enumerate(groups)]  # fmt: skip
    totals = {s: {"filtered": Counter(), "downloaded": Counter()} for s in sources}
    kept = {s: {} for s in sources}
    for counts in _wait_all(ray, assembled, "filter shard groups"):
        for source, shard, filtered, downloaded in counts:
            totals[source]["filtered"].update(filtered)
            totals[source]["downloaded"].update(downloaded)
            kept[source][shard_name(shard)] = filtered.get("kept", 0)
    storage.remove(scratch)
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
