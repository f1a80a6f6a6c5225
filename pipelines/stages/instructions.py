"""S2 instruction data in the format the Mono-InternVL / InternVL fine-tuning scripts read.

A meta JSON names datasets: `{name: {"root": image folder, "annotation": LLaVA-style JSONL,
"data_augment": bool, "repeat_time": float, "length": rows}}`. Each JSONL line is
`{"id", "image" (relative to root; a list in a multi-image row; absent for a text-only row),
"conversations": [{"from": "human", "value": "<image>\\n…"}, {"from": "gpt", "value": "…"}, …]}`
with one `<image>` per image, in order. `repeat_time` repeats a
row (integer part) and keeps each row once more with the fractional part's probability, drawn per
row from the seed, so 0.5 keeps about half, deterministically, without reading the file twice.
A malformed line is reported with file and line, counted, and skipped.

As the official fine-tuning code reads it: every line of an annotation file is read (`length` is
only a count, for sampling), an image row whose first human turn has no `<image>` gets
`<image>\n` prepended, and every turn is stripped of surrounding white space. A relative `root`
or `annotation` resolves against the meta file's folder when it exists there, else against the
working directory (the official scripts' rule); the meta file's folder wins.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from pipelines import storage
from pipelines.stages.render import uniform

CHUNK_LINES = 2000
"""Annotation lines one builder task reads."""


class MetaError(ValueError):
    """A meta JSON that cannot be used (missing file or field); raised before any work."""


def read_meta(path: str) -> dict[str, dict]:
    """The meta JSON's datasets, checked: annotation exists, repeat_time ≥ 0."""
    if not storage.exists(path):
        raise MetaError(f"instruction meta {path} does not exist")
    meta = storage.read_json(path)
    base = path.rsplit("/", 1)[0]
    datasets = {}
    for name, entry in meta.items():
        missing = [k for k in ("annotation",) if k not in entry]
        if missing:
            raise MetaError(f"{path}: dataset {name!r} lacks {missing}")
        annotation = _resolve(entry["annotation"], base)
        if not storage.exists(annotation):
            raise MetaError(f"{path}: dataset {name!r}: annotation {annotation} does not exist")
        root = _resolve(entry.get("root", ""), base)
        repeat = float(entry.get("repeat_time", 1.0))
        if repeat < 0:
            raise MetaError(f"{path}: dataset {name!r}: repeat_time must be >= 0")
        datasets[name] = {"root": root, "annotation": annotation, "repeat_time": repeat,
                          "length": entry.get("length")}  # fmt: skip
    return datasets


def _resolve(path: str, base: str) -> str:
    """A meta entry's path: absolute or a URL as is; relative, beside the meta file if there,
    else from the working directory (where the official scripts look)."""
    if not path or path.startswith("/") or "://" in path:
        return path
    beside = storage.join(base, path)
    if storage.exists(beside) or not Path(path).exists():
        return beside
    return str(Path(path).resolve())


def image_names(row: dict) -> list[str]:
    """A row's images: `image` is one path, a list of paths (multi-image rows), or absent."""
    image = row.get("image")
    if not image:
        return []
    return [image] if isinstance(image, str) else list(image)


def _read_image(root: str, name: str) -> bytes:
    fs, path = storage.filesystem(storage.join(root, name) if root else name)
    with fs.open(path, "rb") as handle:
        return handle.read()


def official_row(row: dict) -> dict:
    """A row as the official code sees it: turns stripped, `<image>` in an image row's first
    human turn (prepended when absent)."""
    talk = [{**turn, "value": turn["value"].strip()} for turn in row["conversations"]]
    if len(image_names(row)) == 1:  # the official code prepends for single-image rows only
        first = next((i for i, t in enumerate(talk) if t["from"] == "human"), None)
        if first is not None and "<image>" not in talk[first]["value"]:
            talk[first] = {**talk[first], "value": "<image>\n" + talk[first]["value"]}
    return {**row, "conversations": talk}


def line_count(url: str) -> int:
    fs, path = storage.filesystem(url)
    with fs.open(path, "rb") as handle:
        return sum(1 for _ in handle)


def chunks(datasets: dict[str, dict]) -> list[tuple[str, int, int]]:
    """(dataset, first line, end line) units of at most CHUNK_LINES lines, over every line."""
    units = []
    for name, entry in datasets.items():
        length = line_count(entry["annotation"])  # `length` is a count for sampling only
        units += [(name, start, min(length, start + CHUNK_LINES))
                  for start in range(0, length, CHUNK_LINES)]  # fmt: skip
    return units


def copies(repeat_time: float, seed: int, name: str, line: int) -> int:
    """How many times line `line` of dataset `name` is used."""
    whole, fraction = math.floor(repeat_time), repeat_time - math.floor(repeat_time)
    return whole + (1 if uniform(seed, f"repeat/{name}", str(line)) < fraction else 0)


def read_rows(entry: dict, name: str, start: int, stop: int, seed: int):
    """Yields (line, row, images' bytes in `<image>` order, error or None) for [start, stop)."""
    fs, path = storage.filesystem(entry["annotation"])
    with fs.open(path, "rb") as handle:
        for line, raw in enumerate(handle):
            if line < start:
                continue
            if line >= stop:
                break
            n = copies(entry["repeat_time"], seed, name, line)
            if n == 0:
                continue
            where = f"{entry['annotation']}:{line + 1}"
            try:
                row = json.loads(raw)
                talk = row["conversations"]
                if not talk or not all({"from", "value"} <= set(t) for t in talk):
                    raise ValueError("conversations need from/value turns")
                row = official_row(row)
                images = [_read_image(entry["root"], name) for name in image_names(row)]
            except Exception as error:  # a malformed line: reported, counted, skipped
                yield line, None, [], f"{where}: {type(error).__name__}: {error}"
                continue
            for copy in range(n):
                yield line, {**row, "copy": copy}, images, None
