"""Side-by-side timing: candidates timed in interleaved rounds, so machine noise hits all alike."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def interleaved_medians(
    candidates: dict[str, Callable[[], None]], rounds: int, warmup: int = 3
) -> dict[str, float]:
    """Median seconds per call of each candidate, calling them in turn `rounds` times.

    Each round starts one candidate later than the one before, so none always runs first (a
    machine's state after one kind of call favours or slows the next).
    """
    for fn in candidates.values():
        for _ in range(warmup):
            fn()
    samples = {name: [] for name in candidates}
    names = list(candidates)
    for round_index in range(rounds):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            fn = candidates[name]
            start = time.perf_counter()
            fn()
            samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(times) for name, times in samples.items()}


def paired_ratios(
    candidate: Callable[[], None],
    baseline: Callable[[], None],
    rounds: int,
    warmup: int = 1,
    clock: Callable[[], float] = time.perf_counter,
) -> tuple[float, float, float]:
    """Quartiles (q1, median, q3) of candidate / baseline, one ratio per round of the two calls
    made back to back (in alternating order): a drift of the machine's speed over minutes
    moves both calls of a round alike, so it cancels in that round's ratio.

    `clock=time.process_time` counts the CPU seconds of this process's threads, which a busy
    neighbour on a shared machine moves less than the wall clock (not for GPU work).
    """
    for fn in (candidate, baseline):
        for _ in range(warmup):
            fn()
    ratios = []
    for round_index in range(rounds):
        seconds = {}
        pair = (candidate, baseline) if round_index % 2 == 0 else (baseline, candidate)
        for fn in pair:
            start = clock()
            fn()
            seconds[fn] = clock() - start
        ratios.append(seconds[candidate] / seconds[baseline])
    q1, median, q3 = statistics.quantiles(ratios, n=4)
    return q1, median, q3
