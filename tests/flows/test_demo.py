"""The demo is a source, not a branch: the steps know nothing of it; `flows/demo.py` makes what
it feeds them before the step that reads it."""

from __future__ import annotations

from pathlib import Path

from flows.config import RunConfig, load_run_config
from flows.demo import prepare_demo
from flows.steps import runnable
from flows.steps.evaluation import probe_url
from pipelines import storage
from pipelines.layout import RunLayout

ROOT = Path(__file__).parents[2]


def test_no_step_tests_for_the_demo():
    for module in (ROOT / "flows" / "steps").glob("*.py"):
        assert ".synthetic_web" not in module.read_text(), module.name


def test_the_demo_probe_is_drawn_before_evaluate_and_only_for_the_demo(tmp_path):
    demo = load_run_config(str(ROOT / "configs/demo.yaml"),
                           [f"run_root={tmp_path / 'demo'}", "evaluate.images=2",
                            "evaluate.texts=2"])  # fmt: skip
    probe = probe_url(demo, RunLayout(demo.run_root))
    prepare_demo("train", demo)
    assert not storage.exists(storage.join(probe, "text.parquet"))
    prepare_demo("evaluate", demo)
    assert storage.read_parquet(storage.join(probe, "images.parquet")).num_rows == 2

    plain = RunConfig(run_root=str(tmp_path / "plain"))
    for step in runnable():
        prepare_demo(step.name, plain)
    assert probe_url(plain, RunLayout(plain.run_root)) is None
    assert not (tmp_path / "plain").exists()


def test_a_failure_of_the_demos_preparation_is_the_steps_last_error(tmp_path, monkeypatch):
    """It runs inside the step (and, under Prefect, inside the step's retried task)."""
    import pytest

    import flows.demo
    from flows.steps import STEPS
    from flows.steps.base import run_step
    from pipelines.completion import CompletionLog

    def broken(config, layout):
        raise OSError("disk full while drawing the probe")

    monkeypatch.setitem(flows.demo.PREPARE, "evaluate", broken)
    demo = load_run_config(str(ROOT / "configs/demo.yaml"), [f"run_root={tmp_path}"])
    evaluate = next(step for step in STEPS if step.name == "evaluate")
    with pytest.raises(OSError, match="disk full"):
        run_step(evaluate, demo, None, [])
    folder = evaluate.records_folder(demo, RunLayout(demo.run_root), None)
    assert "disk full" in CompletionLog(folder).last_error("evaluate")["error"]
