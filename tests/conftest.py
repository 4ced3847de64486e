"""Test-session set-up.

Tests run the kernels with bounds checking on unless ``NUMBA_BOUNDSCHECK=0`` is set:
Numba does not check indices, so without it an indexing bug would corrupt memory
silently instead of raising. Bounds-checked kernels run serially (see
``fastconv._config``); CI runs the suite a second time with ``NUMBA_BOUNDSCHECK=0`` to
cover the parallel builds. The flag must be set before numba is imported, and numba's
on-disk cache does not tell checked from unchecked machine code, so each setting gets
a cache of its own.
"""

import os
from pathlib import Path

os.environ.setdefault("NUMBA_BOUNDSCHECK", "1")
os.environ["NUMBA_CACHE_DIR"] = str(Path(__file__).resolve().parent.parent / ".numba_cache"
                                    / f"boundscheck-{os.environ['NUMBA_BOUNDSCHECK']}")

from hypothesis import settings

from .oracle import DEVIATIONS

# JIT compilation makes first calls slow, so no per-example deadline.
settings.register_profile("fastconv", deadline=None, max_examples=40, print_blob=True)
settings.load_profile("fastconv")


def pytest_terminal_summary(terminalreporter):
    if DEVIATIONS:
        terminalreporter.section("largest deviation from the reference (max |error| / max |ref|)")
        for (dtype, reference), (deviation, where) in sorted(DEVIATIONS.items()):
            terminalreporter.write_line(f"{dtype:8s} vs {reference:13s} {deviation:.3e}  ({where})")
