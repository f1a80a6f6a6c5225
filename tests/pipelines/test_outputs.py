"""The typed readers of step outputs, over records written as their steps write them."""

from __future__ import annotations

import json

from pipelines import storage
from pipelines.completion import CompletionLog
from pipelines.layout import RunLayout
from pipelines.outputs import (
    FILTER_UNIT,
    caption_shards,
    checkpoint,
    kept_shards,
    stage_manifest,
    training_logs,
)


def test_kept_shards_of_a_filtered_source(tmp_path):
    layout = RunLayout(tmp_path / "run")
    assert kept_shards(layout, "web") is None  # not filtered yet
    for shard in ("00000", "00001"):
        storage.write_bytes(b"", storage.join(layout.filtered("web"), f"{shard}.parquet"))
    record = CompletionLog(layout.filtered("web")).write(
        FILTER_UNIT, {"min_side": 64}, {"rows": 9, "kept_per_shard": {"00000": 0, "00001": 7}})
    kept = kept_shards(layout, "web")
    assert kept.shards == [1] and kept.kept == 7
    assert kept.settings_hash == record["settings_hash"]
    assert kept.keep_list_units() == ["00000", "00001"]


def test_caption_shards_are_the_recorded_ones(tmp_path):
    layout = RunLayout(tmp_path / "run")
    record = CompletionLog(layout.captions("tiny", "web")).write("00001", {"teacher": "tiny"})
    assert caption_shards(layout, "tiny", "web") == {"00001": record["settings_hash"]}


def test_a_stage_manifest_names_its_shard_urls(tmp_path):
    layout = RunLayout(tmp_path / "run")
    assert stage_manifest(layout, "S1.1") is None
    shards = [{"name": "shard-000000", "samples": 4}, {"name": "shard-000001", "samples": 2}]
    CompletionLog(layout.stages()).write("S1.1", {"spec": 1},
                                         {"shards": shards, "max_patches": 1280})  # fmt: skip
    manifest = stage_manifest(layout, "S1.1")
    assert manifest.shard_urls == [storage.join(layout.stages("S1.1"), "shard-000000.tar"),
                                   storage.join(layout.stages("S1.1"), "shard-000001.tar")]
    assert manifest.max_patches == 1280 and manifest.covered["shards"] == shards


def test_a_checkpoint_reads_its_record_beside_it(tmp_path):
    layout = RunLayout(tmp_path / "run")
    url = layout.stage_checkpoint("S1.1")
    assert checkpoint(url).record is None and checkpoint(url).settings_hash is None
    record = CompletionLog(storage.join(layout.checkpoints(), "S1.1")).write("final", {"s": 1})
    assert checkpoint(url).settings_hash == record["settings_hash"]
    assert checkpoint(url + "/").settings_hash == record["settings_hash"]


def test_training_logs_read_every_metrics_row(tmp_path):
    layout = RunLayout(tmp_path / "run")
    logs = training_logs(layout, "S1.1")
    rows = [{"step": 1, "samples_seen": 4}, {"step": 2, "samples_seen": 8}]
    storage.write_bytes("".join(json.dumps(r) + "\n" for r in rows).encode(), logs.metrics_url)
    assert logs.metrics_url == layout.path("reports", "train", "S1.1", "metrics.jsonl")
    assert logs.metrics() == rows
