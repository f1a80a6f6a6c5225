"""Live progress of a running step in its Prefect flow run: a progress artifact and a log line,
updated from what the step's units write as they finish (`Step.progress`: records done, a
training stage's step, loss and ETA). The step itself runs on Ray and knows nothing of Prefect;
this only reads the run's folders, so it shows the same whether the work runs here or on a
cluster."""

from __future__ import annotations

import contextlib
import contextvars
import re
import threading

from flows.config import RunConfig
from flows.steps import Step
from pipelines.layout import RunLayout

EVERY_SECONDS = 15.0
"""How often a running step's progress is read and published."""


def progress_key(step: Step, part: str | None) -> str:
    """The progress artifact's key (Prefect keys: lowercase letters, digits, dashes)."""
    return re.sub(r"[^a-z0-9-]+", "-", f"{step.name}-{part or 'run'}-progress".lower()).strip("-")


@contextlib.contextmanager
def published_progress(step: Step, config: RunConfig, part: str | None,
                       every: float = EVERY_SECONDS):  # fmt: skip
    """While the block runs: a progress artifact of the current Prefect task updated every
    `every` seconds and once at the end, each change also logged. Progress never fails the
    step: a read or an update that fails is logged once and skipped."""
    from prefect import get_run_logger
    from prefect.artifacts import create_progress_artifact, update_progress_artifact

    logger, layout = get_run_logger(), RunLayout(config.run_root)
    artifact = create_progress_artifact(0.0, key=progress_key(step, part),
                                        description=f"{step.name} {part or 'run'}: starting")
    stop, last, warned = threading.Event(), [None], [False]

    def publish() -> None:
        try:
            now = step.progress(config, layout, part)
            if now is None or now == last[0]:
                return
            update_progress_artifact(artifact, 100.0 * now[0], description=now[1])
            last[0] = now
            logger.info(now[1])
        except Exception as error:  # a half-written file, a store or API hiccup: next time
            if not warned[0]:
                logger.warning(f"progress of {step.name} {part or 'run'}: {error!r}")
                warned[0] = True

    def watch() -> None:
        while not stop.wait(every):
            publish()

    # The thread sees the task's Prefect context (its client, its logger).
    thread = threading.Thread(target=contextvars.copy_context().run, args=(watch,), daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        publish()
