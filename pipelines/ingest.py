"""Ingest of one source: plan each source file -> download (img2dataset) -> repair rounds.

Filtering runs over all sources together (`pipelines/filter_job.py`). Every unit has a
completion record, so a rerun does only what is missing and a settings change what it affects.
"""

from __future__ import annotations

from pipelines.completion import CompletionLog
from pipelines.download import (
    DownloadOptions,
    clear_shard,
    download_shards,
    shard_settings,
    shard_tasks,
)
from pipelines.layout import RunLayout, shard_name
from pipelines.plan import plan_source, planned
from pipelines.repair import repair_round, repair_tasks
from pipelines.sources import SourceOptions, validate_source


def download_source(source: SourceOptions, download: DownloadOptions, layout: RunLayout,
                    make_downloader=None) -> dict:  # fmt: skip
    """Plans, downloads and repairs one source; returns what each part did.

    Args:
        make_downloader: see `download_shards` (img2dataset's Downloader by default).
    """
    raw = layout.raw_folder(source.name)
    plan = plan_source(source, raw, download.max_in_flight, download.cpus_per_task)
    tasks = shard_tasks(plan["inputs"], 0, download.samples_per_shard)
    done = download_shards(tasks, raw, download, plan["contents"], make_downloader=make_downloader)
    previous, start, repairs = [t.shard for t in tasks], len(tasks), []
    made = set(previous)
    for round_number in range(1, download.repair_rounds + 1):
        repaired = repair_round(raw, download, round_number, previous, start, make_downloader)
        repairs.append({k: v for k, v in repaired.items() if k != "shards"})
        previous, start = repaired["shards"], start + len(repaired["shards"])
        made.update(previous)
    others = [n for n in CompletionLog(raw.url).records() if n.isdigit() and int(n) not in made]
    if others:  # e.g. a source cut into fewer shards: the filter must not read the old ones
        print(f"download {source.name}: clearing {len(others)} shards no longer made")
        for name in others:
            clear_shard(raw, int(name))
    return {"source": source.name, "metadata_dropped": plan["dropped"], "planned": plan["rows"],
            "download": {"shards": len(done.todo), "skipped": len(done.done)},
            "repairs": repairs}  # fmt: skip


def download_units(source: SourceOptions, download: DownloadOptions, layout: RunLayout,
                   files: list[str]) -> dict[str, dict] | None:  # fmt: skip
    """Each download shard of a source (first download, then each repair round) -> the settings
    its record must carry (`evip status`); None while its plan or a repair round is not made."""
    raw = layout.raw_folder(source.name)
    plan = planned(raw, len(files))
    if plan is None:
        return None
    tasks = shard_tasks(plan["inputs"], 0, download.samples_per_shard)
    units = {shard_name(t.shard): shard_settings(download, t, plan["contents"]) for t in tasks}
    for round_number in range(1, download.repair_rounds + 1):
        record = CompletionLog(raw.repair(round_number)).read("round")
        if record is None:
            return None
        units |= {shard_name(t.shard): shard_settings(download, t, record["covered"]["contents"])
                  for t in repair_tasks(record, download)}  # fmt: skip
    return units


def validate_sources(sources: list[SourceOptions]) -> None:
    """Checks every source file before any work, so a bad file fails the run at once."""
    for source in sources:
        validate_source(source)
