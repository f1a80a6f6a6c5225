"""Ingest of one source: plan each source file -> download (img2dataset) -> repair rounds.

Filtering runs over all sources together (`pipelines/filter_job.py`). Every unit has a
completion record, so a rerun does only what is missing and a settings change what it affects.
"""

from __future__ import annotations

from pipelines.completion import CompletionLog
from pipelines.download import (
    DownloadOptions,
    clear_shard,
    download_settings,
    download_shards,
    shard_tasks,
)
from pipelines.layout import RunLayout
from pipelines.plan import plan_source
from pipelines.repair import repair_round
from pipelines.sources import SourceOptions, validate_source


def download_source(source: SourceOptions, download: DownloadOptions, layout: RunLayout,
                    make_downloader=None) -> dict:  # fmt: skip
    """Plans, downloads and repairs one source; returns what each part did.

    Args:
        make_downloader: see `download_shards` (img2dataset's Downloader by default).
    """
    raw = layout.raw_folder(source.name)
    planned = plan_source(source, raw, download.max_in_flight, download.cpus_per_task)
    settings = download_settings(download, planned["id"])
    stale = CompletionLog(raw.url).stale(settings)
    if stale:
        print(f"download {source.name}: clearing {len(stale)} shards made with other settings")
        for shard in stale:
            clear_shard(raw, int(shard))
    tasks = shard_tasks(planned["inputs"], 0, download.samples_per_shard)
    plan = download_shards(tasks, raw, download, settings, make_downloader=make_downloader)
    previous, start, repairs = [t.shard for t in tasks], len(tasks), []
    for round_number in range(1, download.repair_rounds + 1):
        repaired = repair_round(raw, download, settings, round_number, previous, start,
                                make_downloader)  # fmt: skip
        repairs.append({k: v for k, v in repaired.items() if k != "shards"})
        previous, start = repaired["shards"], start + len(repaired["shards"])
    return {"source": source.name, "metadata_dropped": planned["dropped"],
            "planned": planned["id"]["rows"],
            "download": {"shards": len(plan.todo), "skipped": len(plan.done)},
            "repairs": repairs}  # fmt: skip


def validate_sources(sources: list[SourceOptions]) -> None:
    """Checks every source file before any work, so a bad file fails the run at once."""
    for source in sources:
        validate_source(source)
