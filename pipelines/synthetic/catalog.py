"""The synthetic web as source parquet files, LAION or COYO columns, ground truth kept alongside."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Literal

import pyarrow as pa

from model.options import FrozenOptions
from pipelines.sources import PRESETS
from pipelines.synthetic.scenes import make_scene
from pipelines.synthetic.server import BAD_KINDS, SyntheticWeb

GROUND_TRUTH_COLUMNS = ["gt_description", "gt_objects", "gt_text", "gt_text_box", "gt_kind"]


class SyntheticWebOptions(FrozenOptions):
    """How big the synthetic web is and how much of it is broken."""

    seed: int = 0
    """Picks every scene; the same seed gives the same web."""
    num_images: int = 200
    """Good image URLs."""
    bad_per_kind: int = 2
    """URLs of each bad kind (404, slow, html, corrupt, oversized, redirect loop, noai, flaky)."""
    metadata_rejects: int = 4
    """Good URLs whose metadata (similarity, safety, watermark) the source filters must drop."""
    slow_seconds: float = 4.0
    """How long slow URLs stall (set above the download timeout)."""
    preset: Literal["laion", "coyo"] = "laion"
    """Column layout of the written parquet."""
    rows_per_file: int = 100
    """Rows per source parquet file."""


def catalog_rows(web: SyntheticWeb, options: SyntheticWebOptions) -> list[dict]:
    """One row per URL: good images with their ground truth, then every bad kind."""
    rng = random.Random(f"evip-catalog-{options.seed}")
    rows = []
    for index in range(options.num_images):
        scene = make_scene(options.seed, index)
        reject = index < options.metadata_rejects
        rows.append({
            "url": web.image_url(index), "caption": scene.alt_text,
            "width": scene.width, "height": scene.height,
            "similarity": 0.05 if reject and index % 3 == 0 else rng.uniform(0.3, 0.45),
            "unsafe": 0.95 if reject and index % 3 == 1 else rng.uniform(0.0, 0.1),
            "watermark": 0.99 if reject and index % 3 == 2 else rng.uniform(0.0, 0.3),
            "gt_description": scene.description,
            "gt_objects": json.dumps([{"shape": o.shape, "colour": o.colour, "box": o.box}
                                      for o in scene.objects]),
            "gt_text": scene.text or "",
            "gt_text_box": json.dumps(scene.text_box),
            "gt_kind": "metadata_reject" if reject else "good",
        })  # fmt: skip
    for offset, kind in enumerate(BAD_KINDS):
        for i in range(options.bad_per_kind):
            index = options.num_images + offset * options.bad_per_kind + i
            rows.append({
                "url": web.bad_url(kind, index), "caption": f"broken link {kind} {i}",
                "width": 256, "height": 256, "similarity": 0.35, "unsafe": 0.01,
                "watermark": 0.01, "gt_description": "", "gt_objects": "[]", "gt_text": "",
                "gt_text_box": "null", "gt_kind": kind,
            })  # fmt: skip
    random.Random(options.seed).shuffle(rows)
    return rows


def write_source_files(web: SyntheticWeb, options: SyntheticWebOptions, folder: str | Path):
    """Writes the catalogue as `part-NNNNN.parquet` files with the preset's column names.

    `folder` is a local path or an fsspec URL.
    """
    from pipelines import storage

    mapping = PRESETS[options.preset]
    rename = {"url": mapping.url, "caption": mapping.caption, "width": mapping.width,
              "height": mapping.height, "similarity": mapping.similarity,
              "unsafe": mapping.unsafe, "watermark": mapping.watermark}  # fmt: skip
    rows = catalog_rows(web, options)
    paths = []
    for number, start in enumerate(range(0, len(rows), options.rows_per_file)):
        chunk = rows[start : start + options.rows_per_file]
        table = pa.Table.from_pylist([{rename.get(k, k): v for k, v in r.items()} for r in chunk])
        path = storage.join(folder, f"part-{number:05d}.parquet")
        storage.write_parquet(table, path)
        paths.append(path)
    return paths
