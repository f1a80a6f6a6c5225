"""The one driver: runs a list of steps in campaign order. The CLI runs them in this process;
the Prefect flows (`flows/campaign.py`) wrap each step call in a Prefect task."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

from flows.config import RunConfig
from flows.steps.base import Step, run_step, step_markdown


def print_markdown(step: Step, report, config: RunConfig) -> None:
    """Prints a step run's reports (the CLI)."""
    for _, markdown in step_markdown(step, report, config):
        print("\n" + markdown)


def run_steps(config: RunConfig, steps: list[Step], run: Callable = run_step,
              after: Callable | None = print_markdown) -> dict:  # fmt: skip
    """Runs `steps` in order, each once per part (`Step.parts`: per source, per training stage, or
    once); each gets the reports of the step before it.

    The synthetic web (if any) is served while steps that need it run; `run_step` has the demo
    make what it feeds a step first (`flows/demo.py`).

    Args:
        run: runs one step as `run(step, config, part or None, upstream)`; the flows pass
            one that calls their Prefect task.
        after: called as `after(step, report, config)` once a step has run.

    Returns:
        {step name: its report, or its reports per part}.
    """
    from flows.demo import served_synthetic_web
    from pipelines.ingest import validate_sources

    results, upstream = {}, []
    with contextlib.ExitStack() as web:
        if any(step.needs_web for step in steps):
            web.enter_context(served_synthetic_web(config))
            validate_sources(config.sources)
        for step in steps:
            if not step.needs_web:
                web.close()  # downloads are done: stop serving the synthetic web
            parts = step.parts(config)
            if parts == [None]:
                report = run(step, config, None, upstream)
            else:
                report = [run(step, config, part, upstream) for part in parts]
            if after is not None:
                after(step, report, config)
            results[step.name] = report
            upstream = report if isinstance(report, list) else [report]
    return results
