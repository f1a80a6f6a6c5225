"""LAION-shaped data without images, for the scale benchmark and dedup tests.

`write_laion_files` fabricates source parquet files with LAION's columns (URL, TEXT, WIDTH, HEIGHT,
similarity, punsafe, pwatermark), a share of URLs repeated; `FabricatedDownloader` stands in for
img2dataset's Downloader: it reads a shard's input slice and writes the shard's metadata parquet
and `_stats.json` as img2dataset would (status, error message, sizes, sha256 with a share of
repeated images), deterministically from the sample id and shard, and no tar. Every other step
(planning, scheduling, repair, filter, dedup) then runs for real.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pyarrow as pa

from pipelines import storage
from pipelines.layout import RawFolder, shard_name

FAILURES = (  # (share of attempts, img2dataset's error message)
    (0.03, "<urlopen error timed out>"),
    (0.02, "HTTP Error 404: Not Found"),
    (0.01, "HTTP Error 503: Service Unavailable"),
    (0.01, "Image decoding error"),
)


def write_laion_files(folder: str, rows: int, files: int, seed: int = 0,
                      repeated_urls: float = 0.01, first_id: int = 0) -> list[str]:  # fmt: skip
    """`files` parquet files of `rows` rows in all, LAION's columns; returns their URLs.

    Image ids run from `first_id` (two sources with overlapping ranges share URLs); a share
    `repeated_urls` of rows repeat an earlier URL of the same source.
    """
    rng = np.random.default_rng(seed)
    paths, start = [], first_id
    for index in range(files):
        n = rows // files + (1 if index < rows % files else 0)
        ids = np.arange(start, start + n)
        repeat = rng.random(n) < repeated_urls
        ids[repeat] = rng.integers(first_id, max(first_id + 1, start + 1), repeat.sum())
        table = pa.table({
            "URL": pa.array([f"http://img.laion.test/{i}.jpg" for i in ids]),
            "TEXT": pa.array([f"a photo of thing {i} on a table" for i in ids]),
            "WIDTH": pa.array(rng.integers(32, 2048, n)),
            "HEIGHT": pa.array(rng.integers(32, 2048, n)),
            "similarity": pa.array(rng.uniform(0.2, 0.45, n)),
            "punsafe": pa.array(rng.uniform(0.0, 0.6, n)),
            "pwatermark": pa.array(rng.uniform(0.0, 1.0, n)),
        })  # fmt: skip
        path = storage.join(folder, f"part-{index:05d}.parquet")
        storage.write_parquet(table, path)
        paths.append(path)
        start += n
    return paths


def _unit_hash(values: list[str], salt: str) -> np.ndarray:
    """A uniform number in [0, 1) per value, from sha256(value + salt)."""
    return np.array([int(hashlib.sha256(f"{v}{salt}".encode()).hexdigest()[:8], 16) / 2**32
                     for v in values])  # fmt: skip


class FabricatedDownloader:
    """img2dataset's Downloader interface: called with (shard, input slice URL) -> (ok, shard)."""

    images = False
    """Also write the shard's tar, a tiny JPEG (and the alt-text) per success."""

    def __init__(self, options, output_folder: str, column_list: list[str],
                 repeated_images: float = 0.03):  # fmt: skip
        self.output, self.column_list = output_folder, column_list
        self.repeated_images = repeated_images

    def __call__(self, row):
        shard, input_url = row
        fs, path = storage.filesystem(input_url)
        with fs.open(path, "rb") as handle:
            table = pa.ipc.open_file(handle).read_all()
        ids = table["sample_id"].to_pylist()
        draw = _unit_hash(ids, f"/{shard}")  # another attempt (a repair) draws again
        edge = 0.0
        outcome = np.full(len(ids), None, dtype=object)
        for share, message in FAILURES:
            outcome[(draw >= edge) & (draw < edge + share)] = message
            edge += share
        status = ["success" if m is None else "failed_to_download" for m in outcome]
        image = _unit_hash(ids, "/image")
        sha = [None if m is not None else hashlib.sha256(
            (f"repeat-{int(u * 200)}" if u < self.repeated_images else sid).encode()).hexdigest()
            for sid, u, m in zip(ids, image, outcome)]  # fmt: skip
        width = (64 + image * 1500).astype(np.int32)
        height = (width * (0.4 + _unit_hash(ids, "/h"))).astype(np.int32)
        ok = np.array([m is None for m in outcome])
        size = lambda a: pa.array(np.where(ok, a, 0), pa.int32(), mask=~ok)  # noqa: E731
        n = table.num_rows
        metadata = table.select(self.column_list).append_column(
            "key", pa.array([f"{shard_name(shard)}{i:04d}" for i in range(n)]))
        for name, column in [("status", pa.array(status)), ("error_message", pa.array(
                list(outcome), pa.string())), ("width", size(width)), ("height", size(height)),
                ("original_width", size(width)), ("original_height", size(height)),
                ("sha256", pa.array(sha, pa.string()))]:  # fmt: skip
            metadata = metadata.append_column(name, column)
        raw = RawFolder(self.output)
        if self.images:
            _write_tar(metadata, raw.shard(shard, "tar"))
        storage.write_parquet(metadata, raw.shard(shard, "parquet"))
        stats = {"count": n, "successes": int(ok.sum()), "failed_to_download": int(n - ok.sum())}
        storage.write_bytes(json.dumps(stats).encode(), raw.shard(shard, "_stats.json"))
        storage.remove(input_url)
        return True, shard


class FabricatedDownloaderWithImages(FabricatedDownloader):
    images = True


def _write_tar(metadata: pa.Table, url: str) -> None:
    import io

    import webdataset as wds
    from PIL import Image

    buffer, image = io.BytesIO(), io.BytesIO()
    Image.new("RGB", (8, 8), "gray").save(image, format="JPEG")
    with wds.TarWriter(buffer) as tar:
        for row in metadata.select(["key", "status", "caption", "sample_id"]).to_pylist():
            if row["status"] == "success":
                meta = json.dumps({"sample_id": row["sample_id"]}).encode()
                tar.write({"__key__": row["key"], "jpg": image.getvalue(),
                           "txt": row["caption"] or "", "json": meta})  # fmt: skip
    storage.write_bytes(buffer.getvalue(), url)
