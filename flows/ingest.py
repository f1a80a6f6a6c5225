"""The ingest part of a run: download every source, then filter and deduplicate them together
(the demo's synthetic web is served around it by the driver, `flows/demo.py`)."""

from __future__ import annotations

from flows.config import RunConfig
from flows.report import ingest_figure
from pipelines.download_report import summary_table
from pipelines.filter import summary_table as filter_summary_table
from pipelines.filter_job import filter_sources
from pipelines.ingest import download_source
from pipelines.layout import RunLayout
from pipelines.ray_runtime import ensure_ray


def ingest_markdown(report: dict) -> str:
    """One source's ingest report: metadata drops, download outcome, repairs, filter outcome."""
    return "\n".join([
        f"## ingest {report['source']}", "",
        f"dropped on metadata before download: {report['metadata_dropped']}", "",
        summary_table(report["downloaded"]), "", f"repairs: {report['repairs']}", "",
        filter_summary_table(report["filtered"]), "",
        f"![{report['source']}: download and filter]({report['figure']})" if report.get("figure")
        else "",
    ])  # fmt: skip


def download_one(config: RunConfig, source) -> dict:
    """Plans, downloads and repairs one source of the run."""
    ensure_ray(config.ray)
    return download_source(source, config.download, RunLayout(config.run_root))


def filter_all(config: RunConfig, downloads: list[dict]) -> list[dict]:
    """Filters every downloaded source together (dedup across them); one report per source."""
    ensure_ray(config.ray)
    layout = RunLayout(config.run_root)
    names = [d["source"] for d in downloads]
    filtered = filter_sources(layout, names, config.filter)
    reports = []
    for download in downloads:
        report = {**download, **filtered[download["source"]]}
        report["figure"] = ingest_figure(report, layout.report(f"ingest-{report['source']}.png"))
        reports.append(report)
    return reports
