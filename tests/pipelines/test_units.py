"""The one way sharded steps run their units: plan, clear stale and dropped units, run on Ray with
their resources, record each unit where it ran, keep the error of a unit that always fails."""

from __future__ import annotations

import dataclasses

import pytest

from pipelines import storage
from pipelines.completion import CompletionLog
from pipelines.scheduler import UnitFailed
from pipelines.units import Resources, UnitWork, run_units


def _write(shared, unit) -> dict:
    folder, fail_on = shared
    name, value = unit
    if name == fail_on:
        raise ValueError(f"cannot make {name}")
    storage.write_bytes(str(value).encode(), storage.join(folder, f"{name}.txt"))
    return {"value": value}


def _work(folder, units: dict, version: int = 1, fail_on=None, **fields) -> UnitWork:
    return UnitWork(str(folder), "toy units", {n: (n, v) for n, v in units.items()},
                    lambda unit: {"version": version}, _write, shared=(str(folder), fail_on),
                    clear=lambda unit: storage.remove(storage.join(str(folder), f"{unit}.txt")),
                    resources=Resources(num_cpus=0.25, max_in_flight=2, retries=1),
                    **fields)  # fmt: skip


def test_units_run_once_stale_ones_again_and_dropped_ones_are_cleared(ray_local, tmp_path):
    log = CompletionLog(str(tmp_path))
    plan = run_units(_work(tmp_path, {"a": 1, "b": 2, "c": 3}))
    assert sorted(plan.todo) == ["a", "b", "c"]
    assert log.read("b")["covered"] == {"value": 2}
    assert run_units(_work(tmp_path, {"a": 1, "b": 2, "c": 3})).todo == []

    plan = run_units(_work(tmp_path, {"a": 1, "b": 2}, version=2, exclusive=True))
    assert sorted(plan.stale) == ["a", "b"] and plan.changed == ["version"]
    assert sorted(log.records()) == ["a", "b"]  # c is no longer made: record and file gone
    assert not (tmp_path / "c.txt").exists()
    assert {r["settings"]["version"] for r in log.records().values()} == {2}


def test_a_failing_unit_keeps_its_error_and_the_others_are_recorded(ray_local, tmp_path):
    with pytest.raises(UnitFailed) as failed:
        run_units(_work(tmp_path, {"a": 1, "b": 2}, fail_on="b"))
    [(units, why)] = failed.value.failures
    assert units == [("b", {"version": 1}, ("b", 2))] and isinstance(why, ValueError)
    assert sorted(CompletionLog(str(tmp_path)).records()) == ["a"]
    error = storage.read_json(storage.join(str(tmp_path), "_done", "_errors", "b.json"))
    assert "cannot make b" in error["error"]


def _write_together(shared, units: list) -> list[dict]:
    """One task's units: all in one process (its pid says so), each its own output."""
    import os

    return [_write(shared, unit) | {"pid": os.getpid(), "with": len(units)} for unit in units]


def test_units_run_together_share_a_task_and_are_still_recorded_alone(ray_local, tmp_path):
    log = CompletionLog(str(tmp_path))
    work = _work(tmp_path, {"a@x": 1, "a@y": 2, "b@x": 3}, together=lambda u: u.split("@")[0])
    run_units(dataclasses.replace(work, run=_write_together))
    covered = {name: record["covered"] for name, record in log.records().items()}
    assert covered["a@x"]["pid"] == covered["a@y"]["pid"] and covered["a@x"]["with"] == 2
    assert covered["b@x"]["with"] == 1 and (tmp_path / "a@y.txt").read_text() == "2"
    # A unit added later runs alone: its group's other units are complete.
    plan = run_units(dataclasses.replace(_work(tmp_path, {"a@x": 1, "a@y": 2, "a@z": 4},
                                               together=lambda u: u.split("@")[0]),
                                         run=_write_together))  # fmt: skip
    assert plan.todo == ["a@z"] and log.read("a@z")["covered"]["with"] == 1
    assert log.read("a@x")["covered"] == covered["a@x"]


def test_a_step_is_retried_only_when_a_failed_unit_may_pass():
    from flows.steps.base import retryable

    assert not retryable(UnitFailed("x", [("b", ValueError("bad value"))]))
    assert retryable(UnitFailed("x", [("b", ValueError("bad")), ("c", ConnectionError("reset"))]))
    assert retryable(UnitFailed("x", [("c", None)]))  # a rejected result (a download not done)
