"""Model folders (a checkpoint, the tiny demo LLM or teacher) written once, counted only when whole.

A folder is complete when its completion record says so; a save that dies half way (after
`config.json`, before the weights) leaves no record, so the next run rewrites it. On an object-store
run root the folder is written locally, copied up, recorded, and mirrored back into the local cache
for transformers to load.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

from pipelines import storage
from pipelines.completion import CompletionLog, settings_hash
from pipelines.outputs import checkpoint

CACHE_MARK = ".evip-settings"


def model_folder(parent: str, name: str, settings: dict, write: Callable[[Path], object],
                 cache_dir: Path) -> Path:  # fmt: skip
    """The local path of folder `parent/name`, written by `write(local_path)` unless complete.

    Args:
        parent: where the folder lives (local path or fsspec URL); its `_done/` holds the record.
        settings: what determines the folder's contents; other settings rewrite it.
        cache_dir: local mirror used when `parent` is remote.
    """
    log, url = CompletionLog(parent), storage.join(parent, name)
    local = Path(url) if storage.is_local(url) else Path(cache_dir) / name
    wanted = settings_hash(settings)
    if log.is_complete(name, settings):
        mark = local / CACHE_MARK
        if not storage.is_local(url) and not (mark.exists() and mark.read_text() == wanted):
            shutil.rmtree(local, ignore_errors=True)
            storage.get_folder(url, local)
            mark.write_text(wanted)
        return local
    log.clear(name)
    shutil.rmtree(local, ignore_errors=True)
    storage.remove(url)
    local.mkdir(parents=True, exist_ok=True)
    write(local)
    files = sorted(p.relative_to(local).as_posix() for p in local.rglob("*") if p.is_file())
    if not storage.is_local(url):
        storage.put_folder(local, url)
        (local / CACHE_MARK).write_text(wanted)
    log.write(name, settings, covered={"files": files})
    return local


def local_model_folder(url: str, cache_dir: str | Path | None = None) -> Path:
    """A model folder at `url` as a local path, copied once into a cache when `url` is remote.

    Runs where the model is loaded (a Ray actor on any node), so only the folder's URL travels.
    """
    if storage.is_local(url):
        return Path(url)
    import hashlib
    import os

    cache = Path(cache_dir or os.environ.get("EVIP_CACHE", Path.home() / ".cache" / "evip"))
    local = cache / "models" / hashlib.sha256(url.encode()).hexdigest()[:16]
    wanted = checkpoint(url).settings_hash or "unrecorded"
    from filelock import FileLock

    mark = local / CACHE_MARK
    local.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(local) + ".lock"):  # actors of one node share the copy
        if not (mark.exists() and mark.read_text() == wanted):
            shutil.rmtree(local, ignore_errors=True)
            storage.get_folder(url, local)
            mark.write_text(wanted)
    return local
