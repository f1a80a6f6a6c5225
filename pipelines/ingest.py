"""Ingest one source end to end: read + metadata filters -> download -> repair -> filter.

Layout under the run root (see DESIGN.md): raw/<source>/NNNNN.{tar,parquet,_stats.json},
filtered/<source>/NNNNN.parquet. Every step is resumable, so rerunning after a crash only does
what is missing.
"""

from __future__ import annotations

from pathlib import Path

from pipelines.download import (
    DownloadOptions,
    download_table,
    latest_attempts,
    repair,
    shard_metadata,
)
from pipelines.download_report import download_summary, is_retryable
from pipelines.filter import FilterOptions
from pipelines.filter_job import filter_source
from pipelines.sources import SourceOptions, read_source, validate_source


def raw_folder(run_root: str | Path, source: SourceOptions) -> Path:
    return Path(run_root) / "raw" / source.name


def filtered_folder(run_root: str | Path, source: SourceOptions) -> Path:
    return Path(run_root) / "filtered" / source.name


def ingest_source(
    source: SourceOptions, download: DownloadOptions, filters: FilterOptions, run_root: str | Path
) -> dict:
    """Runs every ingest step for one source; returns the reports of each."""
    raw = raw_folder(run_root, source)
    table, metadata_dropped = read_source(source)
    downloaded = download_table(table, raw, download)
    repairs = [repair(raw, download, is_retryable) for _ in range(download.repair_rounds)]
    summary = download_summary(latest_attempts(shard_metadata(raw)))
    kept = filter_source(raw, filtered_folder(run_root, source), filters, download.max_in_flight)
    return {"source": source.name, "metadata_dropped": metadata_dropped, "download": downloaded,
            "repairs": repairs, "downloaded": summary, "filtered": kept}  # fmt: skip


def validate_sources(sources: list[SourceOptions]) -> None:
    """Checks every source file before any work, so a bad file fails the run at once."""
    for source in sources:
        validate_source(source)
