"""Typed readers of what a step leaves for the steps after it, so no step parses another step's
completion record (`covered`) or spells another step's paths (docs/spine.md).

| reader | step that writes it | what |
| --- | --- | --- |
| `kept_shards` | filter | a source's keep-lists and how many samples each keeps |
| `caption_shards` | recaption | a source's captioned shards and the settings of each |
| `caption_counts` | recaption | how many samples each caption shard captions |
| `stage_manifest` | stages | a stage's shard URLs, max patches and settings hash |
| `checkpoint` | model, train | a checkpoint folder and its completion record |
| `training_logs` | train | a stage's log folder and its `metrics.jsonl` |
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from pipelines import storage
from pipelines.completion import CompletionLog, settings_hash
from pipelines.layout import RunLayout


@dataclass(frozen=True)
class DownloadedShards:
    """A source's downloaded shards (first attempts and repairs), as their records say."""

    settings_hashes: dict[int, str]
    """What each shard was made from, by shard number."""
    rows: int
    """Attempts across the shards (rows of their metadata)."""

    @property
    def shards(self) -> list[int]:
        return sorted(self.settings_hashes)


def downloaded_shards(layout: RunLayout, source: str) -> DownloadedShards:
    """What the download step has recorded for `source` (no shard yet: empty)."""
    return downloaded_shards_in(layout.raw(source))


def downloaded_shards_in(folder: str) -> DownloadedShards:
    """What the download step has recorded in the raw folder `folder`."""
    records = CompletionLog(folder).records()
    return DownloadedShards({int(u): r["settings_hash"] for u, r in records.items()},
                            sum(r["covered"].get("rows", 0) for r in records.values()))


FILTER_UNIT = "filter"
"""The filter step's record in each source's keep-list folder."""


@dataclass(frozen=True)
class KeptShards:
    """A filtered source: one keep-list per raw shard."""

    folder: str
    settings_hash: str
    """The filter record's: what every keep-list of the run was made with."""
    kept_per_shard: dict[str, int]
    """Samples kept, by shard name (NNNNN)."""

    @property
    def shards(self) -> list[int]:
        """Raw shards with a kept sample."""
        return [int(name) for name, kept in self.kept_per_shard.items() if kept]

    @property
    def kept(self) -> int:
        return sum(self.kept_per_shard.values())

    def keep_list_units(self) -> list[str]:
        """Shard names of every keep-list in the folder (those keeping nothing too)."""
        files = storage.glob(storage.join(self.folder, "[0-9]*.parquet"))
        return [url.rsplit("/", 1)[1].split(".")[0] for url in files]


def kept_shards(layout: RunLayout, source: str) -> KeptShards | None:
    """The filter's output for `source`; None while the source is not filtered."""
    return kept_shards_in(layout.filtered(source))


def kept_shards_in(folder: str) -> KeptShards | None:
    """The filter's output in the keep-list folder `folder`; None while not filtered."""
    record = CompletionLog(folder).read(FILTER_UNIT)
    if record is None:
        return None
    return KeptShards(folder, record["settings_hash"],
                      dict(record["covered"].get("kept_per_shard", {})))  # fmt: skip


def caption_shards(layout: RunLayout, teacher: str, source: str) -> dict[str, str]:
    """{shard name: settings hash} of the source's caption shards recorded complete."""
    records = CompletionLog(layout.captions(teacher, source)).records()
    return {name: record["settings_hash"] for name, record in records.items()}


def caption_counts(layout: RunLayout, teacher: str, source: str) -> dict[str, int]:
    """{shard name: captions} of the source's caption shards recorded complete (fewer than the
    shard keeps when `recaption.samples` caps them)."""
    records = CompletionLog(layout.captions(teacher, source)).records()
    return {name: record["covered"].get("captions", 0) for name, record in records.items()}


@dataclass(frozen=True)
class StageManifest:
    """A built curriculum stage (`stages/<stage>/`)."""

    stage: str
    settings_hash: str
    shard_urls: list[str]
    """Its webdataset shards, in order."""
    max_patches: int | None
    """Max patches per image the stage was built for (None in a record made before it said)."""
    covered: dict
    """The whole manifest (samples per source and task, fallback captions, ...)."""

    @property
    def content_hash(self) -> str:
        """What training reads, by content: each shard's sha256 and the patch budget. A stage
        rebuilt into the same bytes (another run root, a record redone) retrains nothing."""
        shards = [[s["name"], s["sha256"]] for s in self.covered.get("shards", [])]
        return settings_hash({"shards": shards, "max_patches": self.max_patches})


def stage_manifest(layout: RunLayout, stage: str) -> StageManifest | None:
    """The stage's manifest; None while the stage is not built."""
    record = CompletionLog(layout.stages()).read(stage)
    if record is None:
        return None
    covered = record["covered"]
    urls = [layout.stage_shard(stage, s["name"]) for s in covered.get("shards", [])]
    return StageManifest(stage, record["settings_hash"], urls, covered.get("max_patches"), covered)


@dataclass(frozen=True)
class Checkpoint:
    """A model folder (a checkpoint) and its completion record, kept beside it."""

    url: str
    record: dict | None
    """None while the folder is not complete."""

    @property
    def settings_hash(self) -> str | None:
        return None if self.record is None else self.record["settings_hash"]


def checkpoint(url: str) -> Checkpoint:
    """The checkpoint folder at `url` (its record is `<parent>/_done/<name>.json`)."""
    parent, name = str(url).rstrip("/").rsplit("/", 1)
    return Checkpoint(str(url), CompletionLog(parent).read(name))


@dataclass(frozen=True)
class TrainingLogs:
    """A training stage's logs: TensorBoard events, `metrics.jsonl`, `loss.png`."""

    folder: str

    @property
    def metrics_url(self) -> str:
        return storage.join(self.folder, "metrics.jsonl")

    def metrics(self) -> list[dict]:
        """Every row rank 0 logged, in order."""
        text = storage.read_bytes(self.metrics_url).decode()
        return [json.loads(line) for line in text.splitlines() if line]

    def progress(self) -> dict | None:
        """Where the stage is while it trains ({"stage", "step", "steps", "loss",
        "samples_seen", "eta_seconds"}), None before its first report."""
        from pipelines.train.train_log import PROGRESS

        url = storage.join(self.folder, PROGRESS)
        return storage.read_json(url) if storage.exists(url) else None

    def clear_progress(self) -> None:
        """Forgets an earlier run's progress before the stage trains (else a watcher shows the
        old run's last step until the new one reports)."""
        from pipelines.train.train_log import PROGRESS

        storage.remove(storage.join(self.folder, PROGRESS))


def training_logs(layout: RunLayout, stage: str) -> TrainingLogs:
    return TrainingLogs(layout.train_logs(stage))
