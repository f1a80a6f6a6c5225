"""A step of the campaign, described once (docs/spine.md): the CLI, the Prefect flows and `evip
status` read these fields and methods, and nothing else about a step.

A step names its command and says whether it runs per source and needs the synthetic web served;
`folder`, `units` and `settings` say where its completion records are, which units a complete step
has and what settings they must carry (all `evip status` needs); `run` does the work and `report`
renders what it returned.
"""

from __future__ import annotations

import traceback

from flows.config import RunConfig
from pipelines.completion import CompletionLog
from pipelines.layout import RunLayout


class Step:
    """The base of every step; a step is a subclass with its fields set and its methods given."""

    name: str
    command: str
    """The CLI command that runs this step (with the others of the same command, in order)."""
    doc: str
    per_source: bool = False
    """Runs once per source (else once over the run)."""
    needs_web: bool = False
    """Runs while the run's synthetic web (if any) is served."""
    settings_per_unit: bool = False
    """Whether units have settings of their own (else `settings` is asked once)."""
    runs: bool = True
    """False for a step another one runs (`download` plans first)."""
    inputs: tuple[str, ...] = ()
    """Steps whose outputs this one reads: it is only as current as they are (`evip status`)."""

    def folder(self, config: RunConfig, layout: RunLayout, source: str | None) -> str:
        """Where the step's completion records are (for `source`, or the run)."""
        raise NotImplementedError

    def units(self, config: RunConfig, layout: RunLayout, source: str | None) -> list[str] | None:
        """Units of the complete step; None while an earlier step has not said yet."""
        raise NotImplementedError

    def settings(self, config: RunConfig, layout: RunLayout, source: str | None,
                 unit: str | None) -> dict | None:  # fmt: skip
        """Settings unit `unit` must be recorded with; None while unknown."""
        raise NotImplementedError

    def unit_settings(self, config: RunConfig, layout: RunLayout,
                      source: str | None) -> dict[str, dict | None] | None:  # fmt: skip
        """Every unit -> its `settings` (what `evip status` compares records with); a step with
        many units whose settings share work (download shards) gives them all at once."""
        units = self.units(config, layout, source)
        if units is None:
            return None
        if not self.settings_per_unit:
            shared = self.settings(config, layout, source, None)
            return dict.fromkeys(units, shared)
        return {unit: self.settings(config, layout, source, unit) for unit in units}

    def run(self, config: RunConfig, source: str | None, upstream: list) -> dict | list[dict]:
        """Does the step's work for `source` (or the run); `upstream`: the previous step's
        reports."""
        raise NotImplementedError

    def report(self, report: dict, config: RunConfig) -> str | None:
        """Markdown of one (per-source) report of `run`; None when the step has none."""
        return None

    def sources(self, config: RunConfig) -> list[str | None]:
        """The sources the step covers (status rows, runs); [None] for a run-wide step."""
        return [s.name for s in config.sources] if self.per_source else [None]

    def parts(self, config: RunConfig) -> list[str | None]:
        """What one run of the step is split into, each a call of `run` (a Prefect task of its
        own, its own state in the UI): its sources, or [None] for one call over the run."""
        return self.sources(config) if self.per_source else [None]

    def progress(self, config: RunConfig, layout: RunLayout,
                 part: str | None) -> tuple[float, str] | None:  # fmt: skip
        """(fraction done, one line) of a running part, from what its units have written so far
        (shown live in the flow run); None when there is nothing to say yet."""
        units = self.units(config, layout, part if self.per_source else None)
        if not units:
            return None
        records = CompletionLog(self.records_folder(config, layout, part)).records()
        done = sum(unit in records for unit in units)
        label = f"{self.name} {part}" if part else self.name
        return done / len(units), f"{label}: {done} / {len(units)} units"

    def records_folder(self, config: RunConfig, layout: RunLayout, source: str | None) -> str:
        """`folder`, where a run-wide step over sources keeps its records (and its last error)
        with the first source's."""
        if source is None and config.sources:
            source = config.sources[0].name
        return self.folder(config, layout, source)

    def __repr__(self) -> str:
        return f"<step {self.name} ({self.command})>"


def source_options(config: RunConfig, name: str):
    """The options of the run's source `name`."""
    return next(s for s in config.sources if s.name == name)


def run_step(step: Step, config: RunConfig, source: str | None, upstream: list):
    """Runs a step, after the demo has made what it feeds the step (`flows/demo.py`); a failure
    of either is kept as the step's last error for `evip status`, then raised (and, under
    Prefect, retried with the step's task)."""
    from flows.demo import prepare_demo

    log = CompletionLog(step.records_folder(config, RunLayout(config.run_root), source))
    try:
        prepare_demo(step.name, config)
        report = step.run(config, source, upstream)
    except Exception as error:
        log.write_error(step.name, "".join(traceback.format_exception(error))[-4000:])
        raise
    log.clear_errors(step.name)  # only its own: steps can share a folder (model and train)
    return report


def step_markdown(step: Step, report, config: RunConfig) -> list[tuple[str, str]]:
    """(source, markdown) for each per-source report of a step run; [] when it has none."""
    reports = report if isinstance(report, list) else [report]
    pairs = [(r.get("source", "run"), step.report(r, config)) for r in reports]
    return [(source, markdown) for source, markdown in pairs if markdown is not None]


DETERMINISTIC = (ValueError, TypeError, LookupError, AttributeError, NotImplementedError,
                 FileNotFoundError)  # fmt: skip
"""Errors the same config and inputs raise again: a bad value, inputs not made yet, a bug."""


def retryable(error: BaseException) -> bool:
    """Whether running a failed step again may pass: not after a deterministic error, nor after
    a training stage Ray Train has already retried (else one bug runs retries x max_failures
    times before anyone sees it)."""
    from pipelines.scheduler import UnitFailed
    from pipelines.train.job import StageFailedError

    if isinstance(error, UnitFailed):  # units already retried: again only if one may pass
        return any(not isinstance(why, BaseException) or retryable(why)
                   for _, why in error.failures)  # fmt: skip
    return not isinstance(error, (*DETERMINISTIC, StageFailedError))
