"""A stage's settings hold what changes its weights, and nothing else (no Ray Train here)."""

from __future__ import annotations

import pytest

from pipelines import storage
from pipelines.completion import CompletionLog, settings_hash
from pipelines.layout import RunLayout
from pipelines.train.job import (
    clear_stale_milestones,
    run_name,
    stage_record_settings,
    stage_settings,
    stage_start,
)
from pipelines.train.schedule import TrainOptions, TrainStage, milestone_name

STAGE = TrainStage(name="S1.1", trainable=["patch_embed", "visual_ffn"], steps=8, milestones=4)


@pytest.fixture
def layout(tmp_path):
    """A run whose S1.1 shards and init checkpoint are recorded (nothing else is read)."""
    layout = RunLayout(tmp_path / "run")
    CompletionLog(layout.stages()).write("S1.1", {"built": "by hand"}, {"shards": []})
    CompletionLog(layout.checkpoints()).write("init", {"model": "tiny"})
    return layout


def _settings(layout, stage=STAGE, use_gpu=False, **options) -> dict:
    train = TrainOptions(stages=[stage], **options)
    return stage_settings(layout, train, stage, stage_start(layout, train, stage.name), use_gpu)


def _run(layout, stage=STAGE, use_gpu=False, **options) -> str:
    settings = _settings(layout, stage, use_gpu, **options)
    return run_name(stage, stage_record_settings(settings, stage))


@pytest.mark.parametrize("field, value", [("report_every", 1), ("checkpoint_every", 3),
                                          ("keep_checkpoints", 5)])  # fmt: skip
def test_logging_fields_neither_retrain_nor_restart_a_stage(layout, field, value):
    changed = STAGE.model_copy(update={field: value})
    assert _settings(layout, changed) == _settings(layout)
    assert _run(layout, changed) == _run(layout)


def test_milestones_retrain_the_stage_but_leave_its_weights_settings(layout):
    changed = STAGE.model_copy(update={"milestones": 2})
    assert settings_hash(_settings(layout, changed)) == settings_hash(_settings(layout))
    assert _run(layout, changed) != _run(layout)  # the new milestones are exported afresh


@pytest.mark.parametrize("options", [{"seed": 1}, {"workers": 4}, {"use_gpu": True}])
def test_seed_workers_and_device_train_afresh_under_a_new_run(layout, options):
    assert settings_hash(_settings(layout, **options)) != settings_hash(_settings(layout))
    assert _run(layout, **options) != _run(layout)


def test_a_stage_rebuilt_into_the_same_bytes_retrains_nothing(layout):
    shard = {"name": "shard-000000", "samples": 4, "sha256": "ab" * 32}
    stages = CompletionLog(layout.stages())
    stages.write("S1.1", {"built": "by hand"}, {"shards": [shard], "max_patches": 1280})
    before = _settings(layout)
    stages.write("S1.1", {"built": "elsewhere"}, {"shards": [shard], "max_patches": 1280})
    assert _settings(layout) == before  # same shards, another record (another run root)
    other = {**shard, "sha256": "cd" * 32}
    stages.write("S1.1", {"built": "elsewhere"}, {"shards": [other], "max_patches": 1280})
    assert _settings(layout) != before


def test_a_weights_change_retrains_the_stage_under_a_new_run(layout):
    changed = STAGE.model_copy(update={"steps": 9})
    assert _run(layout, changed) != _run(layout)


def test_milestones_of_other_settings_are_cleared_before_a_stage_retrains(layout):
    folder = storage.join(layout.checkpoints(), "S1.1")
    log, settings = CompletionLog(folder), _settings(layout)
    old = {**settings, "seed": 7}

    def export(step: int, made_with: dict) -> None:
        storage.write_bytes(b"weights", storage.join(folder, milestone_name(step), "w"))
        log.write(milestone_name(step), {**made_with, "milestone": step})

    export(2, settings)  # these settings: a resumed run keeps it
    export(4, old)  # a step of this stage's milestones, made with another seed
    export(5, settings)  # not a milestone step of this stage
    storage.write_bytes(b"half", storage.join(folder, milestone_name(3), "w"))  # no record

    removed = clear_stale_milestones(layout, STAGE, settings)
    assert removed == [milestone_name(s) for s in (3, 4, 5)]
    left = storage.glob(storage.join(folder, "milestone-*"))
    assert [url.rsplit("/", 1)[1] for url in left] == [milestone_name(2)]
    assert sorted(log.records()) == [milestone_name(2)]
