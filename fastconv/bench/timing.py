"""Timing that survives noisy, shared machines: interleaved runs, medians."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping


def interleaved_medians(candidates: Mapping[str, Callable[[], object]], repeats: int,
                        min_seconds: float = 0.0) -> dict[str, float]:
    """Median seconds per call of each candidate.

    The candidates take turns, round after round, so a slow phase of the machine hits
    them all alike. Each turn starts with one untimed call: the timed call then runs
    as it does in a loop of its own, never paying for waking its thread pool or for
    the previous candidate's worker threads, which spin on for a while (OpenBLAS's for
    about 0.1 s). Rounds continue past ``repeats`` until ``min_seconds`` have passed.
    """
    samples: dict[str, list[float]] = {name: [] for name in candidates}
    start = time.perf_counter()
    rounds = 0
    while rounds < repeats or time.perf_counter() - start < min_seconds:
        for name, call in candidates.items():
            call()
            t0 = time.perf_counter()
            call()
            samples[name].append(time.perf_counter() - t0)
        rounds += 1
    return {name: statistics.median(times) for name, times in samples.items()}
