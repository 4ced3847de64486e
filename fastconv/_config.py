"""JIT flags, the disk-cache policy and the threading layer, in one place.

Environment variables read at import:

``FASTCONV_DISABLE_CACHE=1``
    Compile in memory only; never read or write Numba's on-disk cache.
``NUMBA_CACHE_DIR``
    Numba's own: where compiled kernels are cached (default: ``__pycache__`` beside
    the sources, or a user cache directory when that is not writable).
``NUMBA_THREADING_LAYER``
    Numba's own. When it is unset fastconv picks ``workqueue``: GNU OpenMP, the
    default here, is not fork-safe, and workqueue is. Workqueue is not thread-safe,
    so every parallel kernel launch holds :data:`PARALLEL_LAUNCH_LOCK`.
"""

from __future__ import annotations

import os
import threading
import warnings

import numba

CACHE_ENABLED = os.environ.get("FASTCONV_DISABLE_CACHE", "").strip().lower() in ("", "0", "false")

if not os.environ.get("NUMBA_THREADING_LAYER"):
    numba.config.THREADING_LAYER = "workqueue"

#: Serialises parallel kernel launches from concurrent Python threads.
PARALLEL_LAUNCH_LOCK = threading.Lock()

# No fastmath: NaN and inf must propagate exactly as they do in torch.
# The numpy error model skips Python's ZeroDivisionError checks in the index arithmetic.
JIT_OPTIONS = {"nogil": True, "error_model": "numpy"}

_cache_failures: list[str] = []


def jit(*, parallel: bool = False, inline: bool = False):
    """Compile a kernel with fastconv's flags, cached on disk when a location is writable."""
    # Numba cannot raise from inside a parallel region, so a bounds-checked build
    # (NUMBA_BOUNDSCHECK=1) runs serially to turn bad indices into IndexError.
    options = dict(JIT_OPTIONS, parallel=parallel and not numba.config.BOUNDSCHECK)
    if inline:
        options["inline"] = "always"

    def decorate(func):
        if CACHE_ENABLED and not inline:
            try:
                return numba.njit(cache=True, **options)(func)
            except RuntimeError as exc:  # numba found no writable cache location
                if not _cache_failures:
                    warnings.warn(
                        f"fastconv: compiled kernels will not be cached on disk ({exc}); "
                        "set NUMBA_CACHE_DIR to a writable directory to keep them",
                        RuntimeWarning,
                        stacklevel=2,
                    )
                _cache_failures.append(func.__name__)
        return numba.njit(**options)(func)

    return decorate
