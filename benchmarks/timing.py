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
    clocks: dict[str, Callable[[], float]] | None = None,
) -> dict[str, tuple[float, float, float, float]]:
    """Per clock, the quartiles (q1, median, q3) of candidate / baseline, one ratio per round of
    the two calls made back to back: a drift of the machine's speed over minutes moves both calls
    of a round alike, so it cancels in that round's ratio. Rounds alternate which call goes first
    (`rounds` is rounded up to even, so each order counts as often). Fourth: the candidate's total
    seconds over all rounds / the baseline's (what a long run of each would cost).

    `clocks` default to the wall clock; `time.process_time` (this process's CPU seconds, every
    thread's) moves less with a busy neighbour on a shared machine, but counts work spread over
    threads more than work done on one.
    """
    clocks = clocks or {"wall": time.perf_counter}
    for fn in (candidate, baseline):
        for _ in range(warmup):
            fn()
    ratios = {name: [] for name in clocks}
    totals = {name: [0.0, 0.0] for name in clocks}
    for round_index in range(rounds + rounds % 2):
        seconds = {}
        pair = (candidate, baseline) if round_index % 2 == 0 else (baseline, candidate)
        for fn in pair:
            start = {name: clock() for name, clock in clocks.items()}
            fn()
            seconds[fn] = {name: clock() - start[name] for name, clock in clocks.items()}
        for name in clocks:
            ratios[name].append(seconds[candidate][name] / seconds[baseline][name])
            totals[name][0] += seconds[candidate][name]
            totals[name][1] += seconds[baseline][name]
    return {name: (*statistics.quantiles(values, n=4), totals[name][0] / totals[name][1])
            for name, values in ratios.items()}  # fmt: skip
