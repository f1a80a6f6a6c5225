"""One way to run the units of a sharded step (datatrove's executor, NeMo Curator's stages).

A step says what its units are and what each one's outputs are made from (`UnitWork`); this
module does the rest the same way for every step: plans them against their completion records
(done / todo / stale, with the settings that changed), clears what is stale (record first, then
the step's own outputs), runs the rest as Ray tasks with the resources one unit needs and a
bounded window in flight, writes each unit's record in the task that made it (a killed driver
loses no finished unit), and keeps the last error of a unit that failed every attempt.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pipelines.completion import CompletionLog, Plan
from pipelines.scheduler import UnitFailed, run_bounded


@dataclass(frozen=True)
class Resources:
    """What one unit's task needs, and how many may run at once."""

    num_cpus: float = 0.5
    num_gpus: float = 0.0
    memory: int | None = None
    """Bytes Ray reserves for each task (None: no reservation)."""
    max_in_flight: int = 4
    retries: int = 2
    """Extra attempts of a unit whose task raised or returned None."""


@dataclass(frozen=True)
class UnitWork:
    """The units of one step over one records folder."""

    folder: str
    """Where the units' completion records are kept."""
    what: str
    """Label of the log line and the progress bar, e.g. 'plan laion-a files'."""
    units: dict[str, Any]
    """Unit name -> the argument its task gets."""
    settings: Callable[[str], dict]
    """Unit name -> what its outputs are made from (only that)."""
    run: Callable[[Any, Any], dict | None] | None = None
    """(shared, argument) -> the record's `covered`; None: not done, try again. Runs in a Ray
    task: a module-level function. None for units another executor runs (recaption's Ray Data
    pipeline): they are planned and cleared by `prepare_units` alone."""
    shared: Any = None
    """Put in the object store once and handed to every task."""
    clear: Callable[[str], None] | None = None
    """Removes a stale unit's outputs (its record is removed before)."""
    exclusive: bool = False
    """The folder holds these units only: a recorded unit not among them is cleared too (a
    stage rebuilt into fewer shards leaves none of the old ones)."""
    resources: Resources = field(default_factory=Resources)
    together: Callable[[str], str] | None = None
    """Unit name -> a key: the units to do with one key run in one task, in `units` order
    (a checkpoint's evaluations share its loaded model); `run` then gets the list of their
    arguments and returns the list of their `covered`s. Each unit is still recorded alone."""


def plan_units(work: UnitWork) -> Plan:
    """What `run_units` would do, without doing it."""
    return CompletionLog(work.folder).plan(list(work.units), work.settings)


def prepare_units(work: UnitWork) -> Plan:
    """Plans the units and clears the stale ones (and, when `exclusive`, those no longer made):
    record first, then outputs, so the folder never holds two settings' outputs."""
    log, plan = CompletionLog(work.folder), plan_units(work)
    others = sorted(set(log.records()) - set(work.units)) if work.exclusive else []
    if plan.todo or others:
        print(plan.describe(work.what) + (f"; clearing {len(others)} no longer made"
                                          if others else ""))  # fmt: skip
    for name in [*plan.stale, *others]:
        log.clear(name)
        if work.clear is not None:
            work.clear(name)
    return plan


def run_units(work: UnitWork) -> Plan:
    """Runs every unit not recorded with its settings; returns the plan it followed.

    Raises:
        UnitFailed: a unit failed every attempt (its error is kept for `evip status`; the
            other units still ran and are recorded).
    """
    log, plan = CompletionLog(work.folder), prepare_units(work)
    todo = [(name, work.settings(name), work.units[name]) for name in plan.todo]
    if not todo:
        return plan
    groups: dict[str, list] = {}
    for unit in todo:  # one group per unit unless `together` says otherwise
        groups.setdefault(unit[0] if work.together is None else work.together(unit[0]),
                          []).append(unit)  # fmt: skip
    resources = work.resources
    try:
        run_bounded(_run_and_record, list(groups.values()),
                    shared=(work.folder, work.run, work.shared, work.together is not None),
                    max_in_flight=resources.max_in_flight, retries=resources.retries,
                    num_cpus=resources.num_cpus, num_gpus=resources.num_gpus,
                    memory=resources.memory, ok=lambda covered: covered is not None,
                    desc=work.what)  # fmt: skip
    except UnitFailed as error:
        for group, why in error.failures:
            for name, _, _ in group:
                log.write_error(name, f"{work.what}: {name}: {why}")
        raise
    return plan


def _run_and_record(shared, group: list) -> list | None:
    """Runs one task's units and records each one done; None when any is not (the task is
    then tried again)."""
    folder, run, arguments, together = shared
    if together:
        covered = run(arguments, [argument for _, _, argument in group])
    else:
        covered = [run(arguments, group[0][2])]
    for (name, settings, _), done in zip(group, covered, strict=True):
        if done is not None:
            CompletionLog(folder).write(name, settings, done)
    return None if any(done is None for done in covered) else covered
