"""The map phase of a stage build: its inputs into shuffle buckets, one Ray task per unit.

A unit is a raw shard of a source (its kept samples, with the alt-text, ground truth and teacher
captions the stage needs, each taken with its source's probability and rendered into a
conversation) or a chunk of an instruction dataset's annotation lines (each row taken with the
datasets' probability). Every row draws its place in the stage's shuffle (`order`) and goes into
the hash bucket of that place, in one Arrow IPC file per unit under `stages/<stage>/_shuffle/`.
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines import storage
from pipelines.dedup import split
from pipelines.layout import RunLayout, shard_name
from pipelines.records import iter_tar
from pipelines.shuffle import write_parts
from pipelines.stages.instructions import read_rows
from pipelines.stages.render import render, uniform

ROWS = pa.schema([
    ("order", pa.float64()), ("sample_id", pa.string()), ("source", pa.string()),
    ("raw_shard", pa.int32()), ("raw_key", pa.string()), ("task", pa.string()),
    ("fallback", pa.bool_()), ("conversations", pa.string()), ("jpg", pa.binary()),
    ("more_jpgs", pa.list_(pa.binary())),
])  # fmt: skip
"""One stage sample; `more_jpgs`: a multi-image row's images after the first, in order."""
GROUND_TRUTH = ("gt_description", "gt_objects", "gt_text", "original_width", "original_height")


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


def map_shard(shared, unit) -> dict:
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
    write_parts(split(table, labels, buckets), part_file(scratch, source, shard))
    return {"buckets": np.bincount(labels, minlength=buckets).tolist(), "errors": []}


def map_chunk(shared, unit) -> dict:
    """Annotation lines [start, stop) of one instruction dataset into the shuffle buckets, each
    row taken with `probability` (1: all of S2's; a share of a `tasks` stage's otherwise)."""
    datasets, spec, probability, buckets, scratch = shared
    name, start, stop = unit
    rows, errors = [], []
    for line, row, images, error in read_rows(datasets[name], name, start, stop, spec.seed):
        if error is not None:
            errors.append(error)
            continue
        sample_id = f"{name}/{row.get('id', line)}/{row['copy']}"
        if probability < 1 and uniform(spec.seed, f"take/{spec.name}", sample_id) >= probability:
            continue
        rows.append({"order": uniform(spec.seed, f"order/{spec.name}", sample_id),
                     "sample_id": sample_id, "source": name, "raw_shard": line,
                     "raw_key": str(row.get("id", line)), "task": "conversation",
                     "fallback": False, "conversations": json.dumps(row["conversations"]),
                     "jpg": images[0] if images else None,
                     "more_jpgs": images[1:] or None})  # fmt: skip
    table = pa.Table.from_pylist(rows, schema=ROWS)
    labels = np.minimum((table["order"].to_numpy() * buckets).astype(np.int64), buckets - 1)
    write_parts(split(table, labels, buckets), part_file(scratch, f"meta-{name}", start))
    return {"buckets": np.bincount(labels, minlength=buckets).tolist(), "errors": errors}


def part_file(scratch: str, source: str, shard: int) -> str:
    return storage.join(scratch, f"{source}-{shard_name(shard)}.arrow")
