"""Reading the kept samples of a downloaded shard: the tar's images joined with its keep-list."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pyarrow.compute as pc
from webdataset.tariterators import group_by_keys, tar_file_expander

from pipelines import storage


def kept_keys(keep_list_url: str) -> dict[str, str]:
    """{key: sample_id} of the samples a filter keep-list keeps."""
    table = storage.read_parquet(keep_list_url, columns=["key", "sample_id", "keep"])
    table = table.filter(pc.fill_null(table["keep"], False))
    return dict(zip(table["key"].to_pylist(), table["sample_id"].to_pylist()))


def kept_count(keep_list_url: str) -> int:
    table = storage.read_parquet(keep_list_url, columns=["keep"])
    return int(pc.sum(pc.fill_null(table["keep"], False)).as_py() or 0)


def iter_tar(tar_url: str) -> Iterator[dict]:
    """webdataset's samples ({"__key__", "jpg", "txt", ...}) of a tar on any fsspec filesystem."""
    fs, path = storage.filesystem(tar_url)
    with fs.open(path, "rb") as stream:
        yield from group_by_keys(tar_file_expander([{"url": tar_url, "stream": stream}]))


def iter_kept_samples(tar_url: str, keep_list_url: str) -> Iterator[dict]:
    """Yields {key, sample_id, jpg (bytes), alt_text, meta (dict)} for every kept sample."""
    keep = kept_keys(keep_list_url)
    for sample in iter_tar(tar_url):
        key = sample["__key__"]
        if key not in keep:
            continue
        meta = json.loads(sample["json"]) if "json" in sample else {}
        alt_text = sample.get("txt", b"").decode("utf-8", "replace")
        yield {"key": key, "sample_id": keep[key], "jpg": sample.get("jpg", b""),
               "alt_text": alt_text, "meta": meta}  # fmt: skip
