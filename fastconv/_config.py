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

import hashlib
import os
import threading
import types
import warnings
from pathlib import Path

import numba

CACHE_ENABLED = os.environ.get("FASTCONV_DISABLE_CACHE", "").strip().lower() in ("", "0", "false")

if not os.environ.get("NUMBA_THREADING_LAYER"):
    numba.config.THREADING_LAYER = "workqueue"

#: Serialises parallel kernel launches from concurrent Python threads.
PARALLEL_LAUNCH_LOCK = threading.Lock()

# No fastmath: NaN and inf must propagate exactly as they do in torch (kernels that sum
# may ask for reassociation alone, which keeps them: see jit).
# The numpy error model skips Python's ZeroDivisionError checks in the index arithmetic.
JIT_OPTIONS = {"nogil": True, "error_model": "numpy"}

_cache_failures: list[str] = []


#: Below this many elements of work a kernel runs serially: starting the threads of a
#: parallel region costs tens to hundreds of microseconds (more while BLAS threads spin
#: after a GEMM), more than small calls take in all.
PARALLEL_MIN_WORK = 1 << 17


def _renamed(func, suffix: str):
    """A copy of ``func`` whose name ends in ``suffix``: Numba keys its disk cache by
    name, not by compile flags, so builds with different flags need different names."""
    twin = types.FunctionType(func.__code__, func.__globals__, func.__name__ + suffix,
                              func.__defaults__, func.__closure__)
    twin.__qualname__ = func.__qualname__ + suffix
    return twin


def _sources_tag(paths) -> str:
    """Twelve hex digits of a digest of the files at ``paths``."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(Path(path).read_bytes())
    return digest.hexdigest()[:12]


def _kernel_sources() -> list[Path]:
    """This module, with the flags every kernel is built with, and the kernel modules."""
    here = Path(__file__)
    return [here, *sorted((here.parent / "_kernels").glob("*.py"))]


# Numba takes a cached build if its function's bytecode and its own file are unchanged:
# not if only the flags here changed, nor a function inlined from another file. Every
# cached name carries a digest of all of them; a change compiles anew.
_SOURCES_TAG = _sources_tag(_kernel_sources())


def _compile(func, **options):
    """``numba.njit`` with fastconv's flags, cached on disk when a location is writable."""
    options = dict(JIT_OPTIONS, **options)
    if CACHE_ENABLED and options.get("inline") is None:
        func = _renamed(func, "_" + _SOURCES_TAG)
        if numba.config.BOUNDSCHECK:  # never let checked code stand in for unchecked
            func = _renamed(func, "_boundschecked")
        try:
            return numba.njit(cache=True, **options)(func)
        except RuntimeError as exc:  # numba found no writable cache location
            if not _cache_failures:
                warnings.warn(
                    f"fastconv: compiled kernels will not be cached on disk ({exc}); "
                    "set NUMBA_CACHE_DIR to a writable directory to keep them",
                    RuntimeWarning,
                    stacklevel=3,
                )
            _cache_failures.append(func.__name__)
    return numba.njit(**options)(func)


def _prange_only() -> dict:
    """Numba's parallel options with prange loops alone: its other transforms make array
    expressions and calls such as ``np.zeros`` parallel regions of their own, each a
    launch of the threads (a fresh dict each time: Numba empties it)."""
    return {"prange": True, "comprehension": False, "reduction": False, "inplace_binop": False,
            "setitem": False, "numpy": False, "stencil": False, "fusion": False}


class Kernel:
    """A kernel compiled twice: threaded for large calls, serial for small ones.

    Call it as ``kernel(work, *args)``, with ``work`` the number of elements it will
    touch. The serial build runs below :data:`PARALLEL_MIN_WORK` and wherever the
    calling thread has one thread to give (Numba's count is per thread: fastconv's
    worker threads have one). Parallel launches hold :data:`PARALLEL_LAUNCH_LOCK`.
    """

    def __init__(self, func):
        # Numba cannot raise from inside a parallel region, so a bounds-checked build
        # (NUMBA_BOUNDSCHECK=1) runs serially to turn bad indices into IndexError.
        parallel = False if numba.config.BOUNDSCHECK else _prange_only()
        self.parallel = _compile(func, parallel=parallel)
        self.serial = _compile(_renamed(func, "_serial"))
        self.__name__ = func.__name__
        self.__doc__ = func.__doc__

    def __call__(self, work: int, *args):
        if work < PARALLEL_MIN_WORK or numba.get_num_threads() == 1:
            return self.serial(*args)
        with PARALLEL_LAUNCH_LOCK:
            return self.parallel(*args)


def jit(*, parallel: bool = False, inline: bool = False, reassociate: bool = False,
        contract: bool = False):
    """Decorate a kernel: a :class:`Kernel` when ``parallel``, else one serial build
    (inlined into its callers when ``inline``). Two of fastmath's flags, alone, may be
    asked for a serial function: ``reassociate`` lets LLVM reorder its sums, so that it
    vectorises them, as BLAS does; ``contract`` lets it fuse a multiply and an add into
    one instruction, rounded once. NaN and inf still propagate."""

    def decorate(func):
        if parallel:
            return Kernel(func)
        if inline:
            return _compile(func, inline="always")
        flags = {name for name, wanted in (("reassoc", reassociate), ("contract", contract))
                 if wanted}
        return _compile(func, fastmath=flags) if flags else _compile(func)

    return decorate
