"""Reading and writing a run's files on any fsspec filesystem (local path, s3://, gs://, memory://).

Every step goes through here, so a run root can be an object store (docs/spine.md). Writes go to a
temporary name first and are moved into place: on a local disk the move is an atomic rename; on an
object store it is a copy, which is why a unit only counts once its completion record (written
last, `pipelines/completion.py`) says so.
"""

from __future__ import annotations

import io
import json
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.core import url_to_fs


def filesystem(url: str | Path):
    """(fsspec filesystem, path inside it) of `url`."""
    return url_to_fs(str(url))


def is_local(url: str | Path) -> bool:
    return "://" not in str(url) or str(url).startswith("file://")


def join(url: str | Path, *parts: str) -> str:
    """`url/part/...` for a local path or an fsspec URL."""
    return "/".join([str(url).rstrip("/"), *(str(p).strip("/") for p in parts)])


def exists(url: str | Path) -> bool:
    fs, path = filesystem(url)
    return fs.exists(path)


def size(url: str | Path) -> int:
    fs, path = filesystem(url)
    return fs.size(path)


def fingerprint(url: str | Path) -> dict:
    """What tells one version of a file from another without reading it: its size and the
    store's version tag (an object's ETag) or, on a file system, its modification time."""
    fs, path = filesystem(url)
    info = fs.info(path)
    tag = info.get("ETag") or info.get("etag") or info.get("mtime") or info.get("LastModified")
    return {"size": info["size"], "version": str(tag)}


def glob(pattern: str | Path) -> list[str]:
    """URLs matching `pattern`, sorted, with the pattern's protocol kept."""
    fs, path = filesystem(pattern)
    matches = sorted(fs.glob(path))
    return [fs.unstrip_protocol(m) if not is_local(pattern) else m for m in matches]


def remove(url: str | Path) -> None:
    """Removes a file or a folder; nothing happens when it does not exist."""
    fs, path = filesystem(url)
    if fs.exists(path):
        fs.rm(path, recursive=True)


def makedirs(url: str | Path) -> None:
    fs, path = filesystem(url)
    fs.makedirs(path, exist_ok=True)


def _move_into_place(data: bytes, url: str | Path) -> None:
    fs, path = filesystem(url)
    parent = path.rsplit("/", 1)[0]
    if parent:
        fs.makedirs(parent, exist_ok=True)
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    with fs.open(tmp, "wb") as handle:
        handle.write(data)
    fs.mv(tmp, path)


def write_bytes(data: bytes, url: str | Path) -> None:
    """Writes `data` to `url` through a temporary name moved into place."""
    _move_into_place(data, url)


def write_parquet(table: pa.Table, url: str | Path, row_group_size: int | None = None) -> None:
    """Writes `table` as parquet to `url` through a temporary name moved into place."""
    buffer = io.BytesIO()
    pq.write_table(table, buffer, row_group_size=row_group_size)
    _move_into_place(buffer.getvalue(), url)


def write_json(data, url: str | Path) -> None:
    """Writes `data` as JSON to `url` through a temporary name moved into place."""
    _move_into_place(json.dumps(data, indent=2, sort_keys=True).encode("utf-8"), url)


def read_bytes(url: str | Path) -> bytes:
    fs, path = filesystem(url)
    with fs.open(path, "rb") as handle:
        return handle.read()


def read_json(url: str | Path):
    fs, path = filesystem(url)
    with fs.open(path, "rb") as handle:
        return json.loads(handle.read())


def read_parquet(url: str | Path, columns: list[str] | None = None, filter=None) -> pa.Table:
    """One parquet file, or every parquet file under a folder, optionally filtered (pushed down)."""
    fs, path = filesystem(url)
    return pq.read_table(path, filesystem=fs, columns=columns, filters=filter)


def parquet_rows(url: str | Path) -> int:
    """Rows of a parquet file, from its footer (the file is not read)."""
    fs, path = filesystem(url)
    with fs.open(path, "rb") as handle:
        return pq.ParquetFile(handle).metadata.num_rows


def put_folder(local: str | Path, url: str | Path) -> None:
    """Copies a local folder to `url` (a no-op when `url` is that folder)."""
    if is_local(url) and Path(local).resolve() == Path(str(url)).resolve():
        return
    fs, path = filesystem(url)
    fs.makedirs(path, exist_ok=True)
    for file in sorted(Path(local).rglob("*")):
        if file.is_file():
            fs.put_file(str(file), f"{path}/{file.relative_to(local).as_posix()}")


def get_folder(url: str | Path, local: str | Path) -> Path:
    """Copies the folder at `url` into the local folder `local`; returns `local`."""
    fs, path = filesystem(url)
    local = Path(local)
    for remote in fs.find(path):
        target = local / remote[len(path.rstrip("/")) + 1 :]
        target.parent.mkdir(parents=True, exist_ok=True)
        fs.get_file(remote, str(target))
    return local
