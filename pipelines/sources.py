"""Image-text sources: LAION / COYO / custom parquet columns, metadata filters, a stable sample id.

Everything is checked before any download starts: every file must be parquet, non-empty, and have
the mapped columns. Metadata filters (similarity, safety, watermark) drop rows before download,
and the drop counts are reported. The sample id (a hash of the URL) follows a sample everywhere.
"""

from __future__ import annotations

import hashlib
from typing import Literal

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from fsspec.core import url_to_fs
from pydantic import model_validator

from model.options import FrozenOptions


class ColumnMapping(FrozenOptions):
    """Which source column holds each field; None where the source has no such column."""

    url: str
    """Image URL."""
    caption: str
    """Alt-text."""
    width: str | None = None
    """Original width in pixels."""
    height: str | None = None
    """Original height in pixels."""
    similarity: str | None = None
    """Image-text similarity score (higher is better)."""
    unsafe: str | None = None
    """NSFW probability (higher is worse)."""
    watermark: str | None = None
    """Watermark probability (higher is worse)."""
    unsafe_tag: str | None = None
    """A string safety tag (LAION-400M's and LAION-2B-en's `NSFW`: UNLIKELY / UNSURE / NSFW)."""
    optional: list[str] = []
    """Fields above whose column a file may lack; its filter is then skipped for that file."""


_LAION_META = dict(url="URL", caption="TEXT", width="WIDTH", height="HEIGHT",
                   similarity="similarity", unsafe_tag="NSFW")  # fmt: skip
PRESETS = {
    # laion2B-en's release parquet (and LAION-400M's, the same columns): SAMPLE_ID int64, URL,
    # TEXT, HEIGHT, WIDTH, LICENSE, NSFW (a string tag), similarity float64.
    "laion2b-en": ColumnMapping(**_LAION_META),
    "laion400m": ColumnMapping(**_LAION_META),
    # laion2B-en-joined adds the safety and watermark detectors' probabilities.
    "laion2b-en-joined": ColumnMapping(**_LAION_META, unsafe="punsafe", watermark="pwatermark",
                                       optional=["unsafe_tag"]),
    # COYO-700M: id, url, text, width, height, clip_similarity_vitb32 / vitl14,
    # nsfw_score_opennsfw2, nsfw_score_gantman, watermark_score, aesthetic_score_laion_v2, ...
    "coyo700m": ColumnMapping(url="url", caption="text", width="width", height="height",
                              similarity="clip_similarity_vitb32", unsafe="nsfw_score_opennsfw2",
                              watermark="watermark_score"),
}  # fmt: skip
PRESETS["laion"] = PRESETS["laion2b-en-joined"].model_copy(update={"unsafe_tag": None,
                                                                   "optional": []})
"""`laion` and `coyo`: the names earlier configs use (LAION with punsafe / pwatermark, COYO)."""
PRESETS["coyo"] = PRESETS["coyo700m"]


class SourceOptions(FrozenOptions):
    """One image-text source of the campaign."""

    name: str
    """Short name, used in output paths (raw/<name>/...)."""
    paths: list[str]
    """Parquet files (local paths or fsspec URLs); globs allowed."""
    preset: Literal["laion2b-en", "laion2b-en-joined", "laion400m", "coyo700m", "laion", "coyo",
                    "custom"] = "laion"  # fmt: skip
    """Column layout of a known release (see `PRESETS`); `custom` takes `columns`."""
    columns: ColumnMapping | None = None
    """Column mapping for `preset: custom` (or to override a preset)."""
    min_similarity: float | None = 0.28
    """Drop rows whose image-text similarity is below this (None: keep all)."""
    max_unsafe: float | None = 0.5
    """Drop rows whose NSFW score is above this."""
    max_watermark: float | None = 0.8
    """Drop rows whose watermark score is above this."""
    drop_tags: list[str] = ["NSFW"]
    """Drop rows whose string safety tag (`unsafe_tag`) is one of these (e.g. add "UNSURE")."""
    keep_columns: list[str] = []
    """Extra source columns carried to later steps (e.g. ground truth)."""

    @model_validator(mode="after")
    def _check_columns(self) -> SourceOptions:
        if self.preset == "custom" and self.columns is None:
            raise ValueError("preset 'custom' needs a `columns` mapping")
        if not self.paths:
            raise ValueError("paths is empty")
        return self

    @property
    def mapping(self) -> ColumnMapping:
        return self.columns or PRESETS[self.preset]


class SourceError(ValueError):
    """A source file that cannot be used; raised before any work."""


def sample_id(url: str) -> str:
    """A stable id for a sample: the first 16 hex digits of sha256(url)."""
    return hashlib.sha256(url.encode("utf-8")).hexdigest()[:16]


def source_files(options: SourceOptions) -> list[str]:
    files = []
    for pattern in options.paths:
        fs, path = url_to_fs(pattern)
        matches = sorted(fs.glob(path)) if any(c in path for c in "*?[") else [path]
        files += [fs.unstrip_protocol(m) if "://" in pattern else m for m in matches]
    if not files:
        raise SourceError(f"source {options.name!r}: no file matches {options.paths}")
    return files


def validate_source(options: SourceOptions) -> list[str]:
    """Checks every file's schema and size up front; returns the file list."""
    files = source_files(options)
    mapping = options.mapping
    needed = [column for field, column in _mapped(mapping) if field not in mapping.optional]
    needed += list(options.keep_columns)
    for path in files:
        fs, local = url_to_fs(path)
        if not fs.exists(local):
            raise SourceError(f"source {options.name!r}: {path} does not exist")
        try:
            metadata = pq.ParquetFile(fs.open(local, "rb")).metadata
        except Exception as error:
            message = f"source {options.name!r}: {path} is not a parquet file ({error})"
            raise SourceError(message) from error
        if metadata.num_rows == 0:
            raise SourceError(f"source {options.name!r}: {path} is empty")
        names = metadata.schema.to_arrow_schema().names
        missing = [c for c in needed if c not in names]
        if missing:
            raise SourceError(
                f"source {options.name!r}: {path} lacks columns {missing} "
                f"(preset {options.preset!r}); it has {names}"
            )
    return files


def _mapped(mapping: ColumnMapping) -> list[tuple[str, str]]:
    """(field, source column) of every mapped field."""
    return [(f, c) for f, c in mapping.model_dump(exclude={"optional"}).items() if c]


def _metadata_keep(table: pa.Table, options: SourceOptions) -> tuple[pa.Array, dict[str, int]]:
    mapping, keep = options.mapping, pa.array([True] * table.num_rows)
    dropped = {}
    tag = mapping.unsafe_tag
    if tag and options.drop_tags and tag in table.column_names:
        ok = pc.invert(pc.fill_null(pc.is_in(table[tag].cast(pa.string()),
                                             pa.array(options.drop_tags, pa.string())), False))
        dropped["unsafe_tag"] = int(pc.sum(pc.invert(ok)).as_py() or 0)
        keep = pc.and_(keep, ok)
    rules = [
        ("low_similarity", mapping.similarity, options.min_similarity, pc.greater_equal),
        ("unsafe", mapping.unsafe, options.max_unsafe, pc.less_equal),
        ("watermark", mapping.watermark, options.max_watermark, pc.less_equal),
    ]
    for reason, column, threshold, passes in rules:
        if column is None or threshold is None or column not in table.column_names:
            continue
        ok = pc.fill_null(passes(table[column], threshold), False)
        dropped[reason] = int(pc.sum(pc.and_(keep, pc.invert(ok))).as_py() or 0)
        keep = pc.and_(keep, ok)
    return keep, dropped


def sample_ids(urls: pa.Array) -> pa.Array:
    """`sample_id` of every URL (runs where the rows are: in a Ray task, one file at a time)."""
    return pa.array([sample_id(u) for u in urls.to_pylist()], pa.string())


def normalise(table: pa.Table, options: SourceOptions, source_file: str) -> tuple[pa.Table, dict]:
    """One source file's rows -> plan rows (`schema.PLAN_ROW` + kept columns), metadata-filtered.

    Returns:
        (plan rows, rows dropped per metadata reason).
    """
    mapping = options.mapping
    rows = pa.array(range(table.num_rows), pa.int64())
    keep, dropped = _metadata_keep(table, options)
    table, rows = table.filter(keep), rows.filter(keep)
    n = table.num_rows
    urls = table[mapping.url].cast(pa.string())

    def size(column):
        return table[column].cast(pa.int64()) if column else pa.nulls(n, pa.int64())

    columns = {
        "sample_id": sample_ids(urls),
        "source": pa.array([options.name] * n, pa.string()),
        "source_file": pa.array([source_file] * n, pa.string()),
        "source_row": rows,
        "url": urls,
        "caption": pc.fill_null(table[mapping.caption].cast(pa.string()), ""),
        "width": size(mapping.width),
        "height": size(mapping.height),
    }
    columns.update({name: table[name] for name in options.keep_columns})
    return pa.table(columns), dropped


def read_source_file(options: SourceOptions, path: str) -> tuple[pa.Table, dict]:
    """Reads and normalises one source file (only the mapped and kept columns)."""
    wanted = [c for _, c in _mapped(options.mapping)] + list(options.keep_columns)
    fs, local = url_to_fs(path)
    with fs.open(local, "rb") as handle:
        present = set(pq.ParquetFile(handle).schema_arrow.names)
        wanted = [c for c in dict.fromkeys(wanted) if c in present]  # optional ones may be absent
        handle.seek(0)
        table = pq.read_table(handle, columns=wanted)
    return normalise(table, options, path)
