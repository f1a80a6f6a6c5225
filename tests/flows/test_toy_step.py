"""A new step is one class and one entry of the step table (docs/spine.md): a toy step added
that way is shown by `evip status`, run by its command, and run by its command's Prefect flow."""

from __future__ import annotations

import pytest

from flows import steps
from flows.cli import main
from flows.steps import Step
from pipelines.completion import CompletionLog
from pipelines.layout import RunLayout


class CountStages(Step):
    """A toy step after `evaluate`: counts the curriculum's training stages."""

    name, command = "count-stages", "evaluate"
    doc = "count the curriculum's training stages (a toy)"

    def folder(self, config, layout, source):
        return layout.path("toy")

    def units(self, config, layout, source):
        return ["count"]

    def settings(self, config, layout, source, unit):
        return {"stages": [stage.name for stage in config.train.stages]}

    def run(self, config, source, upstream):
        layout = RunLayout(config.run_root)
        settings = self.settings(config, layout, source, "count")
        CompletionLog(self.folder(config, layout, source)).write("count", settings)
        return {"source": "run", "stages": len(settings["stages"]), "after": upstream}

    def report(self, report, config):
        return f"## count-stages\n\n{report['stages']} training stages"


@pytest.fixture
def toy(monkeypatch):
    monkeypatch.setattr(steps, "STEPS", [*steps.STEPS, CountStages()])


def test_status_shows_the_toy_step_and_its_command_runs_it(toy, tmp_path, capsys):
    run = [f"run_root={tmp_path / 'run'}"]  # built-in defaults: no probe, evaluate skips
    assert main(["status", *run]) == 0
    assert "| count-stages | (run) | 0 / 1 | not started | - |" in capsys.readouterr().out

    assert main(["evaluate", *run]) == 0
    out = capsys.readouterr().out
    assert "skipped: no evaluate.probe or evaluate.harness_tasks" in out
    assert "3 training stages" in out
    assert main(["status", *run]) == 0
    assert "| count-stages | (run) | 1 / 1 | complete | - |" in capsys.readouterr().out


def test_the_flow_of_its_command_runs_the_toy_step_after_the_others(toy, tmp_path, monkeypatch):
    from flows import campaign
    from flows.commands import COMMANDS
    from flows.config import RunConfig

    assert [s.name for s in campaign.flow_steps(["evaluate"])] == ["evaluate", "count-stages"]
    assert campaign.flow_steps(list(COMMANDS))[-1].name == "count-stages"

    ran = []

    def task(step_name, config, source_name, upstream):  # the Prefect task, without a server
        ran.append(step_name)
        step = next(s for s in steps.runnable() if s.name == step_name)
        return steps.run_step(step, config, None, upstream)

    monkeypatch.setattr(campaign, "step_task", task)
    config = RunConfig(run_root=str(tmp_path / "run"))
    results = campaign.run_commands(config, ["evaluate"])
    assert ran == ["evaluate", "count-stages"]
    assert results["count-stages"]["after"] == [results["evaluate"]]
    report = (tmp_path / "run" / "reports" / "evaluate.md").read_text()
    assert "3 training stages" in report
