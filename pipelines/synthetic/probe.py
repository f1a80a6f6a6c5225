"""The demo's held-out probe: drawn scenes the run never downloads, and prose it never trains on.

Scenes come from the same generator as the synthetic web, at indices far past any web's, so they
share its distribution and none of its images. Written as the probe folder `evaluate` reads:
`images.parquet` (image, description, objects, written word, size) and `text.parquet`.
"""

from __future__ import annotations

import json

import pyarrow as pa

from pipelines import storage
from pipelines.synthetic.scenes import make_scene, render_jpeg

HELD_OUT_FROM = 1_000_000
"""First scene index of the probe (a synthetic web has far fewer images)."""


def probe_rows(seed: int, count: int) -> list[dict]:
    """The probe's image rows for the web with `seed`."""
    rows = []
    for index in range(HELD_OUT_FROM, HELD_OUT_FROM + count):
        scene = make_scene(seed, index)
        objects = [{"shape": o.shape, "colour": o.colour, "box": list(o.box)}
                   for o in scene.objects]  # fmt: skip
        rows.append({"image": render_jpeg(scene), "description": scene.description,
                     "gt_objects": json.dumps(objects), "gt_text": scene.text or "",
                     "width": scene.width, "height": scene.height})  # fmt: skip
    return rows


def prose_rows(seed: int, count: int) -> list[dict]:
    """Held-out text: descriptions of further unseen scenes, as plain sentences."""
    start = HELD_OUT_FROM * 2
    return [{"text": make_scene(seed, i).description} for i in range(start, start + count)]


def write_probe(url: str, seed: int, images: int, texts: int) -> str:
    """Writes the probe folder at `url`; returns it."""
    storage.write_parquet(pa.Table.from_pylist(probe_rows(seed, images)),
                          storage.join(url, "images.parquet"))  # fmt: skip
    storage.write_parquet(pa.Table.from_pylist(prose_rows(seed, texts)),
                          storage.join(url, "text.parquet"))  # fmt: skip
    return url
