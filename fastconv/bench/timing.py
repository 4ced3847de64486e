"""Timing that survives noisy, shared machines: interleaved runs, medians."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping


def interleaved_medians(candidates: Mapping[str, Callable[[], object]], repeats: int,
                        min_seconds: float = 0.0) -> dict[str, float]:
    """Median seconds per call of each candidate.

    The candidates run in turn, round after round, so a slow phase of the machine
    hits them all alike. Rounds continue past ``repeats`` until ``min_seconds`` of
    wall time has passed.
    """
    samples: dict[str, list[float]] = {name: [] for name in candidates}
    start = time.perf_counter()
    rounds = 0
    while rounds < repeats or time.perf_counter() - start < min_seconds:
        for name, call in candidates.items():
            t0 = time.perf_counter()
            call()
            samples[name].append(time.perf_counter() - t0)
        rounds += 1
    return {name: statistics.median(times) for name, times in samples.items()}
