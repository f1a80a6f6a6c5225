"""Build a stage's webdataset shards: sample each source by weight, shuffle across sources, write.

Two rounds of Ray tasks, no rows on the driver. (1) Per raw shard: read its keep-list, its
img2dataset metadata (alt-text, sizes, ground truth), its captions when the stage needs them and
its tar; keep each kept sample with its source's probability, render its conversation
(`render.py`), draw its place in the shuffle, and write the rows into hash buckets of an Arrow IPC
file under `stages/<stage>/_shuffle/`. (2) Per stage shard: its range of the shuffled order spans
one or two buckets; read them from every file, sort, slice, and write `shard-NNNNNN.tar`
(`KEY.jpg` + `KEY.json`) and its completion record. The stage record, written last, is the
manifest: shards with sample counts and sha256, counts per source and task, fallback captions.
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
from pipelines.dedup import split
from pipelines.layout import RunLayout, shard_name
from pipelines.outputs import caption_counts, caption_shards, kept_shards
from pipelines.records import iter_tar
from pipelines.scheduler import run_bounded
from pipelines.shuffle import read_part, write_parts
from pipelines.stages.instructions import chunks, read_meta, read_rows
from pipelines.stages.render import render, uniform
from pipelines.stages.spec import StageSpec
from pipelines.units import Resources, UnitWork, run_units

ROWS = pa.schema([
    ("order", pa.float64()), ("sample_id", pa.string()), ("source", pa.string()),
    ("raw_shard", pa.int32()), ("raw_key", pa.string()), ("task", pa.string()),
    ("fallback", pa.bool_()), ("conversations", pa.string()), ("jpg", pa.binary()),
    ("more_jpgs", pa.list_(pa.binary())),
])  # fmt: skip
"""One stage sample; `more_jpgs`: a multi-image row's images after the first, in order."""
GROUND_TRUTH = ("gt_description", "gt_objects", "gt_text", "original_width", "original_height")


def stage_shard_name(index: int) -> str:
    return f"shard-{index:06d}"


def _samples(layout: RunLayout, source: str, shard: int, teacher: str | None) -> list[dict]:
    """The kept samples of one raw shard with everything rendering needs (no image bytes)."""
    keep = storage.read_parquet(layout.keep_list(source, shard), columns=["key", "keep"])
    kept = set(keep.filter(pc.fill_null(keep["keep"], False))["key"].to_pylist())
    metadata = storage.read_parquet(layout.raw_folder(source).shard(shard, "parquet"))
    names = metadata.schema.names
    wanted = [c for c in ("key", "sample_id", "caption", *GROUND_TRUTH) if c in names]
    rows = {r["key"]: r for r in metadata.select(wanted).to_pylist() if r["key"] in kept}
    for row in rows.values():
        row["alt_text"] = row.pop("caption", "") or ""
    if teacher is not None:
        captions = storage.read_parquet(layout.caption_shard(teacher, source, shard),
                                        columns=["key", "caption", "fallback"])  # fmt: skip
        for row in captions.to_pylist():
            if row["key"] in rows:
                rows[row["key"]].update(caption=row["caption"], fallback=row["fallback"])
    return list(rows.values())


def _map_shard(shared, unit) -> list[int]:
    layout_root, spec, teacher, probability, buckets, scratch = shared
    source, shard = unit
    layout = RunLayout(layout_root)
    chosen = {}
    for sample in _samples(layout, source, shard, teacher):
        if spec.text == "teacher_caption" and "caption" not in sample:
            continue  # not in the recaptioned subset (recaption.samples): not an S1.2 sample
        if uniform(spec.seed, f"take/{spec.name}", sample["sample_id"]) < probability[source]:
            chosen[sample["key"]] = sample
    rows = []
    if chosen:
        for item in iter_tar(layout.raw_folder(source).shard(shard, "tar")):
            sample = chosen.get(item["__key__"])
            if sample is None or "jpg" not in item:
                continue
            task, talk = render(spec, sample)
            rows.append({"order": uniform(spec.seed, f"order/{spec.name}", sample["sample_id"]),
                         "sample_id": sample["sample_id"], "source": source, "raw_shard": shard,
                         "raw_key": sample["key"], "task": task,
                         "fallback": bool(sample.get("fallback")),
                         "conversations": json.dumps(talk), "jpg": item["jpg"]})  # fmt: skip
    table = pa.Table.from_pylist(rows, schema=ROWS)
    labels = np.minimum((table["order"].to_numpy() * buckets).astype(np.int64), buckets - 1)
    write_parts(split(table, labels, buckets), _part_file(scratch, source, shard))
    return {"buckets": np.bincount(labels, minlength=buckets).tolist(), "errors": []}


def _map_chunk(shared, unit) -> dict:
    """S2: annotation lines [start, stop) of one instruction dataset into the shuffle buckets."""
    datasets, spec, buckets, scratch = shared
    name, start, stop = unit
    rows, errors = [], []
    for line, row, images, error in read_rows(datasets[name], name, start, stop, spec.seed):
        if error is not None:
            errors.append(error)
            continue
        sample_id = f"{name}/{row.get('id', line)}/{row['copy']}"
        rows.append({"order": uniform(spec.seed, f"order/{spec.name}", sample_id),
                     "sample_id": sample_id, "source": name, "raw_shard": line,
                     "raw_key": str(row.get("id", line)), "task": "conversation",
                     "fallback": False, "conversations": json.dumps(row["conversations"]),
                     "jpg": images[0] if images else None,
                     "more_jpgs": images[1:] or None})  # fmt: skip
    table = pa.Table.from_pylist(rows, schema=ROWS)
    labels = np.minimum((table["order"].to_numpy() * buckets).astype(np.int64), buckets - 1)
    write_parts(split(table, labels, buckets), _part_file(scratch, name, start))
    return {"buckets": np.bincount(labels, minlength=buckets).tolist(), "errors": errors}


def _part_file(scratch: str, source: str, shard: int) -> str:
    return storage.join(scratch, f"{source}-{shard_name(shard)}.arrow")


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

    The settings are the spec and what it reads: the keep-lists' and captions' records, or the
    instruction datasets (annotation, repeat, size).

    Raises:
        ValueError: an input is not ready (not filtered, not captioned) or missing.
    """
    teacher_name = teacher if spec.text in ("teacher_caption", "tasks") else None
    if spec.text == "conversations":
        inputs = {name: {"annotation": e["annotation"], "repeat_time": e["repeat_time"],
                         "bytes": storage.size(e["annotation"])}
                  for name, e in read_meta(spec.meta).items()}  # fmt: skip
        return teacher_name, inputs, {"spec": spec.model_dump(mode="json"), "inputs": inputs}
    inputs = stage_inputs(layout, spec, sources, teacher_name)
    records = {s: {k: v[k] for k in ("keep_lists", "captions")} for s, v in inputs.items()}
    return teacher_name, inputs, {"spec": spec.model_dump(mode="json"), "inputs": records}


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
    if spec.text == "conversations":
        datasets = read_meta(spec.meta)
        units = chunks(datasets)
        expected = sum(datasets[n]["repeat_time"] * (stop - start) for n, start, stop in units)
        buckets = max(1, math.ceil(expected / rows_per_bucket))
        results = run_bounded(_map_chunk, units, shared=(datasets, spec, buckets, scratch),
                              max_in_flight=max_in_flight, desc=f"{spec.name} annotation chunks")
        files = [_part_file(scratch, name, start) for name, start, _ in units]
    else:
        # As many samples as the weights allow without drawing any source twice (or `samples`).
        target = spec.samples or min(v["kept"] / v["weight"] for v in inputs.values() if v["kept"])
        probability = {s: min(1.0, target * v["weight"] / v["kept"]) if v["kept"] else 0.0
                       for s, v in inputs.items()}  # fmt: skip
        buckets = max(1, math.ceil(target / rows_per_bucket))
        units = [(s, shard) for s, v in inputs.items() for shard in v["shards"]]
        results = run_bounded(_map_shard, units, max_in_flight=max_in_flight,
                              shared=(layout.root, spec, teacher_name, probability, buckets,
                                      scratch), desc=f"{spec.name} raw shards")  # fmt: skip
        files = [_part_file(scratch, s, shard) for s, shard in units]
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
