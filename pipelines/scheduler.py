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
    """A unit of work failed on every attempt."""


def run_bounded(
    fn: Callable[..., Any],
    units: Iterable[Any],
    *,
    shared: Any = None,
    max_in_flight: int = 4,
    retries: int = 2,
    num_cpus: float = 0.5,
    ok: Callable[[Any], bool] = lambda result: True,
    desc: str = "units",
) -> dict[Any, Any]:
    """Calls `fn(shared, unit)` as Ray tasks, at most `max_in_flight` at once.

    A unit whose task raises, or whose result `ok` rejects, is queued again, up to `retries`
    extra attempts. `shared` is put in the object store once, not pickled per task.

    Returns:
        {unit: result} for every unit.

    Raises:
        UnitFailed: a unit failed `retries + 1` times (the others still ran to the end first).
    """
    import ray

    task = ray.remote(num_cpus=num_cpus, max_retries=0)(releasing_memory(fn))
    shared_ref = ray.put(shared)
    queue, pending, attempts, results, failed = list(units), {}, {}, {}, {}
    with tqdm(total=len(queue), desc=desc, unit=desc.split()[-1]) as progress:
        while queue or pending:
            while queue and len(pending) < max_in_flight:
                unit = queue.pop(0)
                attempts[unit] = attempts.get(unit, 0) + 1
                pending[task.remote(shared_ref, unit)] = unit
            (done,), _ = ray.wait(list(pending), num_returns=1)
            unit = pending.pop(done)
            try:
                result, error = ray.get(done), None
            except ray.exceptions.RayError as exc:
                result, error = None, exc
            if error is None and ok(result):
                results[unit] = result
                progress.update(1)
            elif attempts[unit] <= retries:
                queue.append(unit)
            else:
                failed[unit] = error or result
                progress.update(1)
    if failed:
        raise UnitFailed(f"{len(failed)} {desc} failed after {retries + 1} attempts: {failed}")
    return results
