"""Reading the kept samples of a downloaded shard: the tar's images joined with its keep-list."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import webdataset as wds


def kept_keys(keep_list_path: str | Path) -> dict[str, str]:
    """{key: sample_id} of the samples a filter keep-list keeps."""
    table = pq.read_table(keep_list_path, columns=["key", "sample_id", "keep"])
    return {k: s for k, s, keep in zip(table["key"].to_pylist(), table["sample_id"].to_pylist(),
                                      table["keep"].to_pylist()) if keep}  # fmt: skip


def iter_kept_samples(tar_path: str | Path, keep_list_path: str | Path) -> Iterator[dict]:
    """Yields {key, sample_id, jpg (bytes), alt_text, meta (dict)} for every kept sample."""
    keep = kept_keys(keep_list_path)
    for sample in wds.WebDataset(str(tar_path), shardshuffle=False, empty_check=False):
        key = sample["__key__"]
        if key not in keep:
            continue
        meta = json.loads(sample["json"]) if "json" in sample else {}
        alt_text = sample.get("txt", b"").decode("utf-8", "replace")
        yield {"key": key, "sample_id": keep[key], "jpg": sample.get("jpg", b""),
               "alt_text": alt_text, "meta": meta}  # fmt: skip
