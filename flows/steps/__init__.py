"""The campaign's steps, described once (docs/spine.md): `STEPS` is the step table, one object
per step in campaign order. The CLI (`evip <command>`), the Prefect flows and `evip status` all
read it, so a new step is one class (`flows.steps.base.Step`) and one entry here.
"""

from flows.steps.base import DETERMINISTIC, Step, retryable, run_step, step_markdown
from flows.steps.captions import Recaption
from flows.steps.driver import run_steps
from flows.steps.evaluation import Evaluate, probe_url
from flows.steps.ingest import Download, Filter, Plan
from flows.steps.init_model import Model
from flows.steps.stage_shards import Stages
from flows.steps.training import Train

STEPS: list[Step] = [Plan(), Download(), Filter(), Recaption(), Stages(), Model(), Train(),
                     Evaluate()]  # fmt: skip
"""In campaign order. `plan` has no run of its own: `download` plans first."""


def runnable(command: str | None = None) -> list[Step]:
    """Steps that run (of one CLI command, or all), in campaign order."""
    return [s for s in STEPS if s.runs and (command is None or s.command == command)]


__all__ = ["DETERMINISTIC", "STEPS", "Step", "probe_url", "retryable", "run_step", "run_steps",
           "runnable", "step_markdown"]  # fmt: skip
