"""The step table's bookkeeping: errors per step, a step run too early, which failures retry."""

from __future__ import annotations

from pathlib import Path

import pytest

from flows.cli import main
from flows.config import RunConfig
from flows.status import run_status
from flows.steps import STEPS, run_step
from pipelines.completion import CompletionLog
from pipelines.layout import RunLayout

ROOT = Path(__file__).parents[2]
STEP = {s.name: s for s in STEPS}


def _ran(step, run):
    """`step` with another `run`: a subclass of its class, as a new step would be written."""
    return type(f"Tried{type(step).__name__}", (type(step),),
                {"run": lambda self, config, source, upstream: run(config, source, upstream)})()


def _raise(error: Exception):
    def run(config, source, upstream):
        raise error

    return run


def test_model_and_train_keep_their_own_last_error(tmp_path):
    """Both keep their records in `checkpoints/`: one's success does not erase the other's
    error, and `evip status` shows each error on its own row."""
    config = RunConfig(run_root=str(tmp_path / "run"))
    with pytest.raises(RuntimeError, match="training broke"):
        run_step(_ran(STEP["train"], _raise(RuntimeError("training broke"))), config, None, [])
    run_step(_ran(STEP["model"], lambda config, source, upstream: {}), config, None, [])
    rows = {row["step"]: row for row in run_status(config)}
    assert rows["train"]["error"]["error"].strip().endswith("RuntimeError: training broke")
    assert rows["model"]["error"] is None

    with pytest.raises(ValueError):
        run_step(_ran(STEP["model"], _raise(ValueError("no LLM"))), config, None, [])
    rows = {row["step"]: row for row in run_status(config)}
    assert rows["model"]["error"]["error"].strip().endswith("ValueError: no LLM")
    assert rows["train"]["error"]["error"].strip().endswith("RuntimeError: training broke")


def _demo(tmp_path, command: str) -> list[str]:
    return [command, "--config", str(ROOT / "configs/demo.yaml"), f"run_root={tmp_path / 'run'}"]


def test_train_without_the_init_checkpoint_names_the_command_that_builds_it(tmp_path, capsys):
    assert main(_demo(tmp_path, "train")) == 2
    err = capsys.readouterr().err
    assert "no start checkpoint" in err and "run `evip model` first" in err
    assert "Traceback" not in err


def test_train_without_stage_shards_names_the_command_that_builds_them(tmp_path, capsys):
    CompletionLog(RunLayout(str(tmp_path / "run")).checkpoints()).write("init", {"model": "x"})
    assert main(_demo(tmp_path, "train")) == 2
    assert "have no shards yet: run `evip stages` first" in capsys.readouterr().err


def test_stages_before_filter_name_the_command_that_filters(tmp_path, capsys):
    assert main(_demo(tmp_path, "stages")) == 2
    err = capsys.readouterr().err
    assert "sources ['synthetic'] are not filtered yet: run `evip ingest` first" in err


def test_the_model_step_is_a_command_of_its_own(capsys):
    with pytest.raises(SystemExit):
        main(["model", "--help"])
    assert "the init checkpoint" in capsys.readouterr().out


@pytest.mark.parametrize("error, retried", [
    (ValueError("bad value"), False), (KeyError("missing"), False),
    (FileNotFoundError("no checkpoint"), False), (ConnectionError("reset"), True),
    (TimeoutError("slow"), True), (RuntimeError("worker died"), True)])  # fmt: skip
def test_only_transient_failures_are_retried_by_the_flow(error, retried):
    from prefect.states import Failed

    from flows.campaign import step_task

    assert step_task.retry_condition_fn(step_task, None, Failed(data=error)) is retried


def test_a_stage_ray_train_gave_up_on_is_not_retried_again():
    from prefect.states import Failed

    from flows.campaign import step_task
    from pipelines.train.job import StageFailedError

    failed = Failed(data=StageFailedError("train S1.1: worker raised"))
    assert step_task.retry_condition_fn(step_task, None, failed) is False


def test_status_takes_an_auto_device_as_the_one_the_stage_trained_on(tmp_path):
    """`train.use_gpu: auto` is resolved where the stage trains (the Ray cluster's GPUs); status
    starts no Ray, so a stage trained on GPUs still counts as complete."""
    from flows.status import step_status
    from pipelines.train.job import stage_record_settings, stage_settings, stage_start

    config = RunConfig(run_root=str(tmp_path / "run"), train={"stages": [
        {"name": "S1.1", "trainable": ["patch_embed"]}]})  # fmt: skip
    layout, stage = RunLayout(config.run_root), config.train.stages[0]
    CompletionLog(layout.stages()).write("S1.1", {"built": "by hand"}, {"shards": []})
    CompletionLog(layout.checkpoints()).write("init", {"model": "x"})
    start = stage_start(layout, config.train, "S1.1")
    on_gpus = stage_record_settings(stage_settings(layout, config.train, stage, start, True), stage)
    CompletionLog(layout.checkpoints()).write("S1.1", on_gpus)
    assert config.train.use_gpu == "auto"
    assert step_status(STEP["train"], config, layout, None)["complete"] == 1


def test_a_running_step_reports_progress_from_what_its_units_wrote(tmp_path):
    from pipelines.outputs import training_logs
    from pipelines.train.train_log import TrainLog

    config = RunConfig(run_root=str(tmp_path / "run"))  # built-in defaults: S1.1 ... S2
    layout = RunLayout(config.run_root)
    train, model = STEP["train"], STEP["model"]
    assert train.parts(config) == [s.name for s in config.train.stages]  # a task per stage
    assert train.progress(config, layout, "S1.1") is None  # nothing reported yet
    log = TrainLog(layout.train_logs("S1.1"), "S1.1")
    log.write_progress({"step": 40, "loss": 0.5, "samples_seen": 800, "mean_step_seconds": 0.2},
                       steps=100)  # fmt: skip
    assert train.progress(config, layout, "S1.1") == (
        0.4, "train S1.1: step 40 / 100, loss 0.5000, 800 samples, ETA 12 s")
    training_logs(layout, "S1.1").clear_progress()  # as a stage does before it trains
    assert train.progress(config, layout, "S1.1") is None
    CompletionLog(layout.checkpoints()).write("init", {"model": "x"})
    assert model.progress(config, layout, None) == (0.5, "model: 1 / 2 units")
