"""Run one Ray task per unit of work with a bounded window in flight and per-unit retries.

The thin adapter every shard-level job shares (download, filter): the work function stays a
plain function; this file alone knows Ray. A progress bar counts finished units.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from typing import Any

from tqdm.auto import tqdm


def releasing_memory(fn: Callable[..., Any]) -> Callable[..., Any]:
    """`fn`, handing Arrow's freed memory back to the OS when it returns.

    Ray reuses worker processes; without this, Arrow's allocator keeps each task's peak, and a
    worker's memory creeps up with the number of tasks it ran rather than the size of one.
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        finally:
            import pyarrow as pa

            pa.default_memory_pool().release_unused()

    return wrapper


class UnitFailed(RuntimeError):
    """Units of work failed on every attempt; `failures` holds (unit, its last error or
    rejected result) pairs."""

    def __init__(self, message: str, failures: list[tuple]):
        super().__init__(message)
        self.failures = failures


def run_bounded(
    fn: Callable[..., Any],
    units: Iterable[Any],
    *,
    shared: Any = None,
    max_in_flight: int = 4,
    retries: int = 2,
    num_cpus: float = 0.5,
    num_gpus: float = 0.0,
    memory: int | None = None,
    ok: Callable[[Any], bool] = lambda result: True,
    desc: str = "units",
) -> list[Any]:
    """Calls `fn(shared, unit)` as Ray tasks (each reserving `num_cpus`, `num_gpus` and `memory`
    bytes), at most `max_in_flight` at once.

    A unit whose task raises, or whose result `ok` rejects, is queued again, up to `retries`
    extra attempts. `shared` is put in the object store once, not pickled per task.

    Returns:
        every unit's result, in the order of `units`.

    Raises:
        UnitFailed: a unit failed `retries + 1` times (the others still ran to the end first).
    """
    import ray

    options = {"num_cpus": num_cpus, "num_gpus": num_gpus, "max_retries": 0}
    task = ray.remote(**options, **({"memory": memory} if memory else {}))(releasing_memory(fn))
    shared_ref, units = ray.put(shared), list(units)
    queue, pending, attempts = list(range(len(units))), {}, [0] * len(units)
    results, failed = [None] * len(units), {}
    with tqdm(total=len(units), desc=desc, unit=desc.split()[-1]) as progress:
        while queue or pending:
            while queue and len(pending) < max_in_flight:
                index = queue.pop(0)
                attempts[index] += 1
                pending[task.remote(shared_ref, units[index])] = index
            (done,), _ = ray.wait(list(pending), num_returns=1)
            index = pending.pop(done)
            try:
                result, error = ray.get(done), None
            except ray.exceptions.RayError as exc:
                result, error = None, exc
            if error is None and ok(result):
                results[index] = result
                progress.update(1)
            elif attempts[index] <= retries:
                queue.append(index)
            else:
                failed[index] = error or result
                progress.update(1)
    if failed:
        failures = [(units[i], why) for i, why in failed.items()]
        raise UnitFailed(f"{len(failed)} {desc} failed after {retries + 1} attempts: "
                         f"{[why for _, why in failures]}", failures)  # fmt: skip
    return results
