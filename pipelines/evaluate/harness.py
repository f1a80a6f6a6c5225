"""lmms-eval tasks on one checkpoint, in-process (the evaluate step runs this inside each
checkpoint's Ray task), and the names checked up front on the driver.

The probe's own tasks (`probe_task.PROBE_TASKS`) are made from the run's probe folder on the
fly; any other task is lmms-eval's own (MMBench, TextVQA, ...: they fetch their datasets from the
hub, so run them where it is reachable or cached) or one from `harness_include` folders.
"""

from __future__ import annotations

import difflib
import tempfile
from pathlib import Path

from pipelines.evaluate.probe_task import PROBE_TASKS, TASK_YAMLS, write_probe_task

INSTALL_HINT = "pip install --no-deps -r configs/harness-requirements.txt"


def _task_manager(include: list[str], defaults: bool):
    try:
        from lmms_eval.tasks import TaskManager
    except ImportError as error:
        raise ImportError(f"evaluate.harness_tasks needs lmms-eval: {INSTALL_HINT}") from error
    return TaskManager(verbosity="ERROR", include_path=list(include) or None,
                       include_defaults=defaults)  # fmt: skip


def check_tasks(tasks: list[str], include: list[str]) -> bool:
    """Raises ValueError naming every unknown task (with the nearest known names); returns
    whether lmms-eval's own task index is needed (False: every task is in `include` or the
    probe's, and indexing lmms-eval's ~2,000 tasks, ~8 s, is skipped)."""
    folders = [str(TASK_YAMLS), *include]
    for defaults in (False, True):
        known = set(_task_manager(folders, defaults).all_tasks)
        unknown = [task for task in tasks if task not in known]
        if not unknown:
            return defaults
    hints = {task: difflib.get_close_matches(task, sorted(known), n=3) for task in unknown}
    raise ValueError("evaluate.harness_tasks: unknown lmms-eval tasks: " + "; ".join(
        f"{task} (did you mean {', '.join(near)}?)" if near else task
        for task, near in hints.items()))  # fmt: skip


def metrics_of(results: dict) -> dict[str, dict[str, float]]:
    """{task: {metric: value}} of lmms-eval's results: numbers only, the default filter's
    `,none` suffix dropped, stderr and groups' empty rows left out."""
    out = {}
    for task, row in results.get("results", {}).items():
        metrics = {}
        for key, value in row.items():
            number = isinstance(value, (int, float)) and not isinstance(value, bool)
            if number and "stderr" not in key:
                metrics[key.removesuffix(",none")] = float(value)
        if metrics:
            out[task] = metrics
    return out


def run_tasks(asker, tasks: list[str], include: list[str], probe: str | None, defaults: bool,
              limit: int | None = None, probe_asks: dict | None = None) -> dict[str, dict]:
    """{task: {metric: value}} of lmms-eval's `tasks` answered by `asker`'s loaded checkpoint
    (`probe_asks`: the probe tasks' `max_new_tokens` and `prompt`, as `write_probe_task`)."""
    from lmms_eval.evaluator import simple_evaluate

    from pipelines.evaluate.harness_model import EvipLMM

    with tempfile.TemporaryDirectory(prefix="evip-harness-") as scratch:
        folders = list(include)
        if any(task in PROBE_TASKS for task in tasks):
            if probe is None:
                raise ValueError(f"evaluate: tasks {PROBE_TASKS} need a probe")
            folders.append(str(write_probe_task(probe, Path(scratch) / "probe",
                                                **(probe_asks or {}))))  # fmt: skip
        results = simple_evaluate(model=EvipLMM.from_asker(asker), tasks=list(tasks),
                                  batch_size=asker.batch_size, limit=limit,
                                  task_manager=_task_manager(folders, defaults),
                                  log_samples=False, verbosity="WARNING")  # fmt: skip
    return metrics_of(results or {})
