"""Timing that survives noisy, shared machines: interleaved runs, medians."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping

#: Pause before each turn: long enough for the worker threads of the previous candidate
#: to stop spinning (OpenBLAS's spin for about 0.1 s) and leave the cores to this one.
SETTLE_SECONDS = 0.12
#: Untimed calls after the pause, before the timed one. Waking from the pause costs more
#: than one call: with a single untimed call, torch's float32 forward pass of
#: mnv2_dw_384_14 timed 0.85 ms against 0.28 ms in a loop of its own, on 2 threads of a
#: 2-core VM; after 0.03 s of calls, 0.26 ms.
WARMUP_SECONDS = 0.05


def interleaved_medians(candidates: Mapping[str, Callable[[], object]], repeats: int,
                        min_seconds: float = 0.0, settle: float = SETTLE_SECONDS,
                        warmup: float = WARMUP_SECONDS) -> dict[str, float]:
    """Median seconds per call of each candidate.

    The candidates take turns, round after round, so a slow phase of the machine hits
    them all alike. Each turn starts with a pause of ``settle`` seconds, so that no
    candidate runs while the previous one's worker threads still spin, then untimed
    calls for ``warmup`` seconds (at least one), then one timed call: it runs as it does
    in a loop of its own, its thread pool awake. Rounds continue past ``repeats`` until
    ``min_seconds`` have passed.
    """
    samples: dict[str, list[float]] = {name: [] for name in candidates}
    start = time.perf_counter()
    rounds = 0
    while rounds < repeats or time.perf_counter() - start < min_seconds:
        for name, call in candidates.items():
            time.sleep(settle)
            warm_until = time.perf_counter() + warmup
            call()
            while time.perf_counter() < warm_until:
                call()
            t0 = time.perf_counter()
            call()
            samples[name].append(time.perf_counter() - t0)
        rounds += 1
    return {name: statistics.median(times) for name, times in samples.items()}
