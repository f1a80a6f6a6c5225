"""Write-then-rename: a unit of output either exists complete or not at all (DESIGN.md)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq


def _tmp(path: Path) -> Path:
    return path.with_name(path.name + ".tmp")


def write_parquet(table: pa.Table, path: str | Path) -> None:
    """Writes `table` to `path` through a temporary file renamed into place."""
    path = Path(path)
    pq.write_table(table, _tmp(path))
    os.replace(_tmp(path), path)


def write_json(data, path: str | Path) -> None:
    """Writes `data` as JSON to `path` through a temporary file renamed into place."""
    path = Path(path)
    _tmp(path).write_text(json.dumps(data, indent=2))
    os.replace(_tmp(path), path)
