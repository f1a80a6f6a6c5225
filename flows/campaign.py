"""The campaign as a Prefect flow: a task per step of `flows/steps.py` (per source where the step
runs per source), reports as artifacts.

Trigger it from the Prefect UI (`evip serve` registers a deployment whose parameter form is the
run config) or run it once (`evip run`, on Prefect's local server). The tasks call the same step
table as the CLI; the Ray jobs inside them resume where a killed run stopped.
"""

# No `from __future__ import annotations` here: Prefect builds the parameter schema (the UI form)
# from the flow's annotations at runtime, so they must be real classes, not strings.
import contextlib
import re

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from flows.config import RunConfig
from flows.ingest import served_synthetic_web
from flows.steps import run_step, runnable, step_markdown, step_sources
from pipelines.ingest import validate_sources

STEPS = {step.name: step for step in runnable()}


def _publish(markdown: str, step: str, source_name: str) -> None:
    """Logs a step's report and keeps it as a Prefect artifact (`<step>-<source>`)."""
    print(markdown)
    key = re.sub(r"[^a-z0-9-]+", "-", f"{step}-{source_name}".lower()).strip("-")
    create_markdown_artifact(markdown, key=key, description=f"{step} report of {source_name}")


@task(cache_policy=NO_CACHE, retries=1, retry_delay_seconds=5,
      task_run_name="{step_name}-{source_name}")  # fmt: skip
def step_task(step_name: str, config: RunConfig, source_name: str, upstream: list):
    """One step of the campaign, for one source or (source_name "run") the whole run."""
    step = STEPS[step_name]
    report = run_step(step, config, None if source_name == "run" else source_name, upstream)
    for source, markdown in step_markdown(step, report, config):
        _publish(markdown, "ingest" if step.command == "ingest" else step_name, source)
    return report


@flow(name="evip-campaign", log_prints=True)
def campaign(config: RunConfig = RunConfig()) -> dict:
    """One EViP campaign run: every step of the step table in order."""
    results, upstream = {}, []
    with contextlib.ExitStack() as web:
        web.enter_context(served_synthetic_web(config))
        validate_sources(config.sources)
        for step in STEPS.values():
            if not step.needs_web:
                web.close()  # downloads are done: stop serving the synthetic web
            if step.per_source:
                report = [step_task(step.name, config, s, upstream)
                          for s in step_sources(step, config)]  # fmt: skip
            else:
                report = step_task(step.name, config, "run", upstream)
            results[step.name] = report
            upstream = report if isinstance(report, list) else [report]
    return results
