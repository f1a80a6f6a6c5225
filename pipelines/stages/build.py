"""Build a stage's webdataset shards: sample each input by its share, shuffle across inputs, write.

Two rounds of Ray tasks, no rows on the driver. (1) The map (`mapping.py`): per raw shard of a
source and per chunk of an instruction dataset, the rows the stage takes, rendered and placed in
the shuffle, into hash buckets under `stages/<stage>/_shuffle/`; `sample_rates` says how many of
each. (2) Per stage shard: its range of the shuffled order spans one or two buckets; read them
from every file, sort, slice, and write `shard-NNNNNN.tar` (`KEY.jpg` + `KEY.json`) and its
completion record. The stage record, written last, is the manifest: shards with sample counts
and sha256, counts per source and task, fallback captions.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import math
from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import webdataset as wds

from pipelines import storage
from pipelines.completion import CompletionLog, settings_hash
from pipelines.layout import RunLayout, shard_name
from pipelines.outputs import caption_counts, caption_shards, kept_shards
from pipelines.scheduler import run_bounded
from pipelines.shuffle import read_part
from pipelines.stages.instructions import chunks, read_meta
from pipelines.stages.mapping import ROWS, map_chunk, map_shard, part_file
from pipelines.stages.spec import StageSpec
from pipelines.units import Resources, UnitWork, run_units


def stage_shard_name(index: int) -> str:
    return f"shard-{index:06d}"


def _write_shard(shared, unit) -> dict:
    stage_folder, spec_name, files = shared
    index, pieces = unit
    parts = []
    for bucket, start, stop in pieces:
        rows = read_part(files, bucket, ROWS).sort_by([("order", "ascending"),
                                                      ("sample_id", "ascending")])  # fmt: skip
        parts.append(rows.slice(start, stop - start))
    table = pa.concat_tables(parts)
    buffer = io.BytesIO()
    # A fixed mtime: the same rows give the same bytes, so a rebuilt shard keeps its sha256 and
    # the training stages chained to it (by content) are not redone.
    with wds.TarWriter(buffer, mtime=0.0) as tar:
        for i, row in enumerate(table.to_pylist()):
            meta = {"stage": spec_name, "conversations": json.loads(row["conversations"]),
                    **{k: row[k] for k in ("sample_id", "source", "raw_shard", "raw_key", "task")}}
            sample = {"__key__": f"{index:06d}{i:06d}", "json": json.dumps(meta).encode()}
            if row["jpg"] is not None:  # text-only rows have no image
                sample["jpg"] = row["jpg"]
            for n, image in enumerate(row["more_jpgs"] or [], start=1):  # KEY.1.jpg, KEY.2.jpg
                sample[f"{n}.jpg"] = image
            tar.write(sample)
    data = buffer.getvalue()
    name = stage_shard_name(index)
    index_rows = table.select(["sample_id", "source", "raw_shard", "raw_key", "task"])
    keys = pa.array([f"{index:06d}{i:06d}" for i in range(table.num_rows)], pa.string())
    storage.write_parquet(index_rows.append_column("key", keys),
                          storage.join(stage_folder, "_index", f"{name}.parquet"))  # fmt: skip
    storage.write_bytes(data, storage.join(stage_folder, f"{name}.tar"))
    covered = {"samples": table.num_rows, "sha256": hashlib.sha256(data).hexdigest(),
               "per_source": dict(Counter(table["source"].to_pylist())),
               "per_task": dict(Counter(table["task"].to_pylist())),
               "fallback_captions": int(pc.sum(table["fallback"]).as_py() or 0)}  # fmt: skip
    return covered


def _remove_stage_shard(folder: str, name: str) -> None:
    storage.remove(storage.join(folder, f"{name}.tar"))
    storage.remove(storage.join(folder, "_index", f"{name}.parquet"))


def shard_pieces(bucket_rows: list[int], per_shard: int) -> list[list[tuple[int, int, int]]]:
    """For each stage shard, the (bucket, first, stop) slices of the shuffled order it holds."""
    total, starts = sum(bucket_rows), np.concatenate([[0], np.cumsum(bucket_rows)])
    shards = []
    for first in range(0, total, per_shard):
        last, pieces = min(first + per_shard, total), []
        for bucket, n in enumerate(bucket_rows):
            lo, hi = max(first, int(starts[bucket])), min(last, int(starts[bucket]) + n)
            if lo < hi:
                pieces.append((bucket, lo - int(starts[bucket]), hi - int(starts[bucket])))
        shards.append(pieces)
    return shards


def stage_inputs(layout: RunLayout, spec: StageSpec, sources: list[str],
                 teacher: str | None) -> dict:  # fmt: skip
    """Per source: kept samples, raw shards to read, and the records the stage is built from."""
    inputs = {}
    for source, weight in spec.weights(sources).items():
        if source not in sources:
            raise ValueError(f"stage {spec.name}: {source!r} is not a source of this run")
        filtered = kept_shards(layout, source)
        if filtered is None:
            raise ValueError(f"stage {spec.name}: source {source!r} is not filtered yet")
        shards = filtered.shards
        captions = None
        if teacher is not None:
            captioned = caption_shards(layout, teacher, source)
            missing = [s for s in shards if shard_name(s) not in captioned]
            if missing:
                raise ValueError(f"stage {spec.name}: {source!r} lacks captions for shards "
                                 f"{missing[:5]} (run recaption first)")  # fmt: skip
            captions = settings_hash(sorted(captioned[shard_name(s)] for s in shards))
        kept = filtered.kept
        if spec.text == "teacher_caption":  # what it can draw from: the captioned samples
            counts = caption_counts(layout, teacher, source)
            kept = sum(counts.get(shard_name(s), 0) for s in shards)
        inputs[source] = {"weight": weight, "kept": kept, "shards": shards,
                          "keep_lists": filtered.settings_hash, "captions": captions}
    return inputs


def resolve_stage(layout: RunLayout, spec: StageSpec, sources: list[str], teacher: str):
    """(teacher the stage reads or None, its inputs, the settings its records carry).

    The settings are the spec and what it reads: the keep-lists' and captions' records, and the
    instruction datasets (annotation, repeat, size) of its `meta`.

    Raises:
        ValueError: an input is not ready (not filtered, not captioned) or missing.
    """
    teacher_name = teacher if spec.text in ("teacher_caption", "tasks") else None
    meta = None
    if spec.meta is not None:
        meta = {name: {"annotation": e["annotation"], "repeat_time": e["repeat_time"],
                       "bytes": storage.size(e["annotation"])}
                for name, e in read_meta(spec.meta).items()}  # fmt: skip
    if spec.text == "conversations":
        return teacher_name, {}, {"spec": spec.model_dump(mode="json"), "inputs": meta}
    inputs = stage_inputs(layout, spec, sources, teacher_name)
    records = {s: {k: v[k] for k in ("keep_lists", "captions")} for s, v in inputs.items()}
    settings = {"spec": spec.model_dump(mode="json"), "inputs": records}
    return teacher_name, inputs, settings if meta is None else {**settings, "meta": meta}


def sample_rates(spec: StageSpec, inputs: dict, meta_rows: float) -> tuple[dict, float, float]:
    """(probability of taking each source's kept sample, probability of taking each row of the
    instruction datasets, expected samples) of a stage.

    The web gives as many samples as its weights allow without drawing any source twice (or
    `samples`, less the datasets' share); a `tasks` stage's datasets add `meta_share` of the
    whole. With too few dataset rows for that share, fewer web samples are taken.
    """
    if spec.text == "conversations":
        return {}, 1.0, meta_rows
    share = spec.meta_share or 0.0
    drawn = [v["kept"] / v["weight"] for v in inputs.values() if v["kept"]]
    if not drawn:
        raise ValueError(f"stage {spec.name}: its sources have no samples to draw")
    web = spec.samples * (1 - share) if spec.samples else min(drawn)
    wanted = web * share / (1 - share)
    if share and wanted > meta_rows:
        if not meta_rows:
            raise ValueError(f"stage {spec.name}: meta {spec.meta} has no rows to mix in")
        web, wanted = meta_rows * (1 - share) / share, meta_rows
    web_rates = {s: min(1.0, web * v["weight"] / v["kept"]) if v["kept"] else 0.0
                 for s, v in inputs.items()}  # fmt: skip
    return web_rates, (wanted / meta_rows if share else 0.0), web + wanted


def build_stage(layout: RunLayout, spec: StageSpec, sources: list[str], teacher: str,
                rows_per_bucket: int = 20_000, max_in_flight: int = 4) -> dict:  # fmt: skip
    """Writes `stages/<stage>/shard-NNNNNN.tar` unless built with the same spec and inputs.

    Returns:
        the manifest: shards (name, samples, sha256), samples per source and task, fallbacks.
    """
    teacher_name, inputs, settings = resolve_stage(layout, spec, sources, teacher)
    stages, folder = CompletionLog(layout.stages()), layout.stages(spec.name)
    if stages.is_complete(spec.name, settings):
        return stages.read(spec.name)["covered"]
    stages.clear(spec.name)
    scratch = storage.join(folder, "_shuffle")
    datasets = read_meta(spec.meta) if spec.meta is not None else {}
    chunk_units = chunks(datasets)
    meta_rows = sum(datasets[n]["repeat_time"] * (stop - start) for n, start, stop in chunk_units)
    web_rates, meta_rate, expected = sample_rates(spec, inputs, meta_rows)
    buckets = max(1, math.ceil(expected / rows_per_bucket))
    results, files = [], []
    if spec.text != "conversations":
        units = [(s, shard) for s, v in inputs.items() for shard in v["shards"]]
        results += run_bounded(map_shard, units, max_in_flight=max_in_flight,
                               shared=(layout.root, spec, teacher_name, web_rates, buckets,
                                       scratch), desc=f"{spec.name} raw shards")  # fmt: skip
        files += [part_file(scratch, s, shard) for s, shard in units]
    if meta_rate > 0:
        results += run_bounded(map_chunk, chunk_units, max_in_flight=max_in_flight,
                               shared=(datasets, spec, meta_rate, buckets, scratch),
                               desc=f"{spec.name} annotation chunks")  # fmt: skip
        files += [part_file(scratch, f"meta-{name}", start) for name, start, _ in chunk_units]
    errors = [e for result in results for e in result["errors"]]
    for error in errors[:20]:
        print(f"stage {spec.name}: skipping {error}")
    bucket_rows = np.sum([r["buckets"] for r in results], axis=0).astype(int).tolist()
    pieces = shard_pieces(bucket_rows, spec.samples_per_shard)
    names = [stage_shard_name(i) for i in range(len(pieces))]
    run_units(UnitWork(folder, f"{spec.name} stage shards",
                       {n: (i, tuple(p)) for i, (n, p) in enumerate(zip(names, pieces))},
                       lambda unit: settings, _write_shard, shared=(folder, spec.name, files),
                       clear=functools.partial(_remove_stage_shard, folder), exclusive=True,
                       resources=Resources(max_in_flight=max_in_flight)))  # fmt: skip
    storage.remove(scratch)
    log = CompletionLog(folder)
    shards = [{"name": n, **log.read(n)["covered"]} for n in names]
    per_source, per_task = Counter(), Counter()
    for shard in shards:
        per_source.update(shard["per_source"])
        per_task.update(shard["per_task"])
    manifest = {"stage": spec.name, "samples": sum(s["samples"] for s in shards),
                "shards": [{k: s[k] for k in ("name", "samples", "sha256")} for s in shards],
                "per_source": dict(per_source), "per_task": dict(per_task),
                "fallback_captions": sum(s["fallback_captions"] for s in shards),
                "malformed_rows": len(errors),
                "max_patches": spec.max_patches}  # fmt: skip
    stages.write(spec.name, settings, manifest)
    return manifest
