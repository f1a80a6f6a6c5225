"""The ingest part of a run: serve the synthetic web when configured, then ingest every source."""

from __future__ import annotations

import contextlib
from pathlib import Path

from flows.config import RunConfig
from flows.report import ingest_figure
from pipelines.download_report import summary_table
from pipelines.filter import summary_table as filter_summary_table
from pipelines.ingest import ingest_source, validate_sources
from pipelines.ray_runtime import ensure_ray
from pipelines.synthetic.catalog import write_source_files
from pipelines.synthetic.server import SyntheticWeb


@contextlib.contextmanager
def served_synthetic_web(config: RunConfig):
    """Serves the run's synthetic web (if any) and writes its source files once."""
    web_options = config.synthetic_web
    if web_options is None:
        yield None
        return
    web = SyntheticWeb(seed=web_options.seed, slow_seconds=web_options.slow_seconds,
                       port=web_options.port)  # fmt: skip
    with web:
        folder = Path(config.run_root) / "sources" / web_options.source_name
        if not any(folder.glob("*.parquet")):
            write_source_files(web, web_options, folder)
        yield web


def ingest_markdown(report: dict) -> str:
    """One source's ingest report: metadata drops, download outcome, repairs, filter outcome."""
    return "\n".join([
        f"## ingest {report['source']}", "",
        f"dropped on metadata before download: {report['metadata_dropped']}", "",
        summary_table(report["downloaded"]), "", f"repairs: {report['repairs']}", "",
        filter_summary_table(report["filtered"]), "", f"figure: {report.get('figure', '-')}",
    ])  # fmt: skip


def ingest_one(config: RunConfig, source) -> dict:
    """Downloads, repairs and filters one source of the run; draws its report figure."""
    ensure_ray(config.ray)
    report = ingest_source(source, config.download, config.filter, config.run_root)
    figure = Path(config.run_root) / "reports" / f"ingest-{source.name}.png"
    report["figure"] = ingest_figure(report, figure)
    return report


def run_ingest(config: RunConfig) -> list[dict]:
    """Validates every source, then downloads, repairs and filters each; prints a report."""
    reports = []
    with served_synthetic_web(config):
        validate_sources(config.sources)
        for source in config.sources:
            report = ingest_one(config, source)
            print("\n" + ingest_markdown(report))
            reports.append(report)
    return reports
