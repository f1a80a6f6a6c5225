"""Raw shards in img2dataset's layout, keep-lists beside them, and a tiny teacher on disk."""

from __future__ import annotations

import io
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import webdataset as wds

from pipelines.filter import KEEP_LIST_SCHEMA
from pipelines.sources import sample_id
from pipelines.synthetic.scenes import make_scene, render
from recaption.options import GenerationOptions, TeacherOptions
from recaption.tiny_teacher import save_tiny_teacher

GENERATION = GenerationOptions(max_new_tokens=8, repetition_penalty=1.5, no_repeat_ngram_size=2)


def _jpeg(index: int) -> bytes:
    buffer = io.BytesIO()
    render(make_scene(9, index)).save(buffer, format="JPEG")
    return buffer.getvalue()


def write_shards(root, sizes: list[int], bad: set[str] = frozenset(), dropped: int = 1,
                 source: str | None = None):  # fmt: skip
    """Shards `raw/NNNNN.tar` with `sizes[i]` samples; the first `dropped` of each are filtered
    out in `filtered/NNNNN.parquet`; keys in `bad` hold bytes that are no image.

    Returns:
        {shard: [kept keys]}.
    """
    raw, filtered = root / "raw", root / "filtered"
    if source is not None:
        raw, filtered = raw / source, filtered / source
    raw.mkdir(parents=True, exist_ok=True)
    filtered.mkdir(parents=True, exist_ok=True)
    kept, index = {}, 0
    for shard, size in enumerate(sizes):
        rows = []
        with wds.TarWriter(str(raw / f"{shard:05d}.tar")) as tar:
            for i in range(size):
                key = f"{shard:05d}{i:04d}"
                url = f"http://127.0.0.1/{key}.jpg"
                data = b"not an image at all" if key in bad else _jpeg(index)
                tar.write(
                    {
                        "__key__": key,
                        "jpg": data,
                        "txt": f"alt text {key}",
                        "json": json.dumps({"key": key, "sample_id": sample_id(url)}),
                    }
                )
                rows.append(
                    {
                        "key": key,
                        "sample_id": sample_id(url),
                        "keep": i >= dropped,
                        "reason": None if i >= dropped else "short_caption",
                    }
                )
                index += 1
        pq.write_table(
            pa.Table.from_pylist(rows, schema=KEEP_LIST_SCHEMA), filtered / f"{shard:05d}.parquet"
        )
        kept[shard] = [r["key"] for r in rows if r["keep"]]
    return kept


@pytest.fixture(scope="session")
def teacher_dir(tmp_path_factory):
    return save_tiny_teacher(tmp_path_factory.mktemp("teacher"), max_tiles=2)


@pytest.fixture(scope="session")
def teacher_options(teacher_dir):
    return TeacherOptions(path=str(teacher_dir), max_tiles=2, generation=GENERATION)
