"""The campaign as Prefect flows: one flow per step command (ingest, recaption, stages, model,
train, evaluate) and `evip-campaign`, which runs them all in order. Each runs a Prefect task per
step of the step table (`flows/steps/`) and part (per source, per training stage: `Step.parts`)
through the one driver (`flows.steps.run_steps`), publishes its progress while it runs
(`flows/progress.py`) and its report as an artifact when it ends.

Trigger them from the Prefect UI (`evip serve` registers one deployment per flow, whose
parameter form is the run config) or run the campaign once (`evip run`, on Prefect's local
server). Parameters: the run config inline (`config`), or a YAML path (`config_path`) with
`overrides`. Rerunning after a crash skips complete work: the steps' completion records say what
is done (not Prefect's cache, whose key includes the run id); the Ray jobs inside resume where a
killed run stopped.
"""

# No `from __future__ import annotations` here: Prefect builds the parameter schema (the UI form)
# from the flow's annotations at runtime, so they must be real classes, not strings.
import re

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from flows.commands import COMMANDS
from flows.config import RunConfig, load_run_config
from flows.steps import retryable, run_step, run_steps, runnable, step_markdown


def _publish(markdown: str, step: str, source_name: str) -> None:
    """Logs a step's report and keeps it as a Prefect artifact (`<step>-<source>`), its figures
    embedded (the browser showing the UI cannot read the run's files)."""
    print(markdown)
    key = re.sub(r"[^a-z0-9-]+", "-", f"{step}-{source_name}".lower()).strip("-")
    create_markdown_artifact(embed_figures(markdown), key=key,
                             description=f"{step} report of {source_name}")  # fmt: skip


def embed_figures(markdown: str) -> str:
    """`![title](some.png)` with the PNG (local path or URL of the run) inlined as a data URI."""
    import base64

    from pipelines import storage

    def inline(match: re.Match) -> str:
        try:
            data = base64.b64encode(storage.read_bytes(match.group(2))).decode()
        except OSError:
            return match.group(0)
        return f"![{match.group(1)}](data:image/png;base64,{data})"

    return re.sub(r"!\[([^\]]*)\]\(([^)\s]+\.png)\)", inline, markdown)


def worth_retrying(task, task_run, state) -> bool:
    """Prefect's retry condition: a transient failure is retried, a deterministic one is not
    (`flows.steps.retryable`)."""
    return not isinstance(state.data, BaseException) or retryable(state.data)


@task(cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[5, 30],
      retry_condition_fn=worth_retrying, task_run_name="{step_name}-{source_name}")  # fmt: skip
def step_task(step_name: str, config: RunConfig, source_name: str, upstream: list):
    """One step of the campaign, for one part (a source, a training stage) or (source_name "run")
    the whole run; its progress is published while it runs; a transient failure is retried with
    back-off, and a retry skips the step's complete units."""
    from flows.progress import published_progress

    step = next(s for s in runnable() if s.name == step_name)
    part = None if source_name == "run" else source_name
    with published_progress(step, config, part):
        report = run_step(step, config, part, upstream)
    for source, markdown in step_markdown(step, report, config):
        _publish(markdown, "ingest" if step.command == "ingest" else step_name, source)
    return report


def resolve_config(config: RunConfig | None, config_path: str | None,
                   overrides: list[str]) -> RunConfig:  # fmt: skip
    """The run config of a flow run: inline, or loaded from `config_path`; then `overrides`."""
    if config is not None and config_path is not None:
        raise ValueError("give the run config inline (config) or as a path (config_path), not both")
    if config is None:
        return load_run_config(config_path, overrides)
    return load_run_config(config, overrides) if overrides else config


def flow_steps(commands: list[str]) -> list:
    """The steps a flow of `commands` runs, in campaign order (read from the step table when
    the flow runs)."""
    return [step for step in runnable() if step.command in commands]


def _as_task(step, config: RunConfig, source: str | None, upstream: list):
    return step_task(step.name, config, source or "run", upstream)


def run_commands(config: RunConfig, commands: list[str]) -> dict:
    """Every step of `commands`, in campaign order, each as a Prefect task."""
    steps = flow_steps(commands)
    results = run_steps(config, steps, run=_as_task, after=None)  # tasks publish the reports
    write_report(config, steps, results)
    return results


def write_report(config: RunConfig, steps: list, results: dict) -> str:
    """Every step's report in one markdown file, `reports/<commands>.md`; returns its URL."""
    from pipelines import storage
    from pipelines.layout import RunLayout

    parts = [markdown for step in steps
             for _, markdown in step_markdown(step, results[step.name], config)]  # fmt: skip
    name = "campaign" if len(steps) == len(runnable()) else "-".join(
        dict.fromkeys(step.command for step in steps))
    url = RunLayout(config.run_root).report(f"{name}.md")
    storage.write_bytes(("\n\n".join(parts) + "\n").encode(), url)
    return url


@flow(name="evip-campaign", log_prints=True)
def campaign(config: RunConfig | None = None, config_path: str | None = None,
             overrides: list[str] = []) -> dict:  # noqa: B006 (Prefect parameters are copied)
    """The whole EViP campaign: ingest, recaption, stage shards, model, train and evaluate each
    stage from the previous one's final weights."""
    return run_commands(resolve_config(config, config_path, overrides), list(COMMANDS))


def _command_flow(command: str):
    """The flow of one step command (`evip-<command>`), described as the CLI describes it."""

    def run(config: RunConfig | None = None, config_path: str | None = None,
            overrides: list[str] = []) -> dict:  # noqa: B006
        return run_commands(resolve_config(config, config_path, overrides), [command])

    run.__name__ = run.__qualname__ = command  # entrypoint flows.campaign.<command>
    return flow(name=f"evip-{command}", description=COMMANDS[command], log_prints=True)(run)


ingest, recaption, stages, model, train, evaluate = map(_command_flow, COMMANDS)


FLOWS = {"campaign": campaign, "ingest": ingest, "recaption": recaption, "stages": stages,
         "model": model, "train": train, "evaluate": evaluate}  # fmt: skip
"""Every flow `evip serve` deploys, by deployment name."""
