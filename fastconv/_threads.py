"""One thread count for Numba's kernels and for the BLAS that runs the GEMMs.

The kernels and the GEMMs run one after the other, never nested, so giving both the
same count keeps every core busy without oversubscribing. NumPy's wheels bundle
OpenBLAS, whose thread count is set through its own C entry point; with another BLAS
only Numba's count is set, and a warning says so.

While fastconv's own worker threads run GEMMs side by side (:mod:`fastconv._workers`),
:func:`serial_blas` holds OpenBLAS at one thread.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import threading
import warnings
from pathlib import Path

import numba
import numpy as np

_SETTERS = ("scipy_openblas_set_num_threads64_", "openblas_set_num_threads64_",
            "openblas_set_num_threads")
_GETTERS = ("scipy_openblas_get_num_threads64_", "openblas_get_num_threads64_",
            "openblas_get_num_threads")


@functools.cache
def _openblas():
    """``(set, get)`` C functions of the OpenBLAS bundled with NumPy, or None."""
    numpy_dir = Path(np.__file__).resolve().parent
    for folder in (numpy_dir.parent / "numpy.libs", numpy_dir / ".dylibs"):
        for path in sorted(folder.glob("*openblas*")):
            try:
                lib = ctypes.CDLL(str(path))
            except OSError:
                continue
            setter = next((getattr(lib, n) for n in _SETTERS if hasattr(lib, n)), None)
            getter = next((getattr(lib, n) for n in _GETTERS if hasattr(lib, n)), None)
            if setter is not None and getter is not None:
                getter.restype = ctypes.c_int
                return setter, getter
    return None


class _SerialBlas:
    """How many passes hold OpenBLAS at one thread, and the count to restore after."""

    def __init__(self):
        self.lock = threading.Lock()
        self.holders = 0
        self.restore_to = 1


_serial = _SerialBlas()


def _reset_after_fork() -> None:
    """In a forked child no pass is running: give OpenBLAS back its count, and a lock
    that no thread of the parent can hold."""
    global _serial
    holders, restore_to = _serial.holders, _serial.restore_to
    _serial = _SerialBlas()
    blas = _openblas()
    if holders and blas is not None:
        blas[0](restore_to)


os.register_at_fork(after_in_child=_reset_after_fork)


def can_serialize_blas() -> bool:
    """Whether :func:`serial_blas` can hold NumPy's BLAS at one thread."""
    return _openblas() is not None


@contextlib.contextmanager
def serial_blas():
    """Hold OpenBLAS at one thread while the block runs, however many threads are in
    such blocks at once; the last to leave restores the count. Other threads' NumPy
    GEMMs run single-threaded meanwhile. Yields whether the block entered alone, with
    no other block under way."""
    setter, getter = _openblas()
    with _serial.lock:
        alone = _serial.holders == 0
        if alone:
            _serial.restore_to = int(getter())
            setter(1)
        _serial.holders += 1
    try:
        yield alone
    finally:
        with _serial.lock:
            _serial.holders -= 1
            if _serial.holders == 0:
                setter(_serial.restore_to)


def blas_threads() -> int | None:
    """OpenBLAS's thread count, or None when NumPy's BLAS is not a bundled OpenBLAS."""
    blas = _openblas()
    return None if blas is None else int(blas[1]())


def get_num_threads() -> int:
    """Threads the parallel kernels use in the calling thread.

    Returns
    -------
    int
        Set by :func:`set_num_threads`; by default the number of cores.

    Examples
    --------
    >>> import fastconv
    >>> fastconv.get_num_threads() >= 1
    True
    """
    return numba.get_num_threads()


def set_num_threads(n: int) -> None:
    """Use ``n`` threads for the Numba kernels and for BLAS.

    Parameters
    ----------
    n : int
        From 1 to the number of threads Numba started with (``NUMBA_NUM_THREADS``,
        by default the number of cores).

    Notes
    -----
    Numba's count applies to the calling Python thread; BLAS's to the process. GEMM
    passes that build im2col columns are split among ``n`` of fastconv's worker
    threads, each running single-threaded GEMMs.

    Examples
    --------
    >>> import fastconv
    >>> fastconv.set_num_threads(1)
    >>> fastconv.get_num_threads()
    1
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise TypeError(f"n must be an int, got {n!r}")
    limit = numba.config.NUMBA_NUM_THREADS
    if not 1 <= n <= limit:
        raise ValueError(f"n must be between 1 and NUMBA_NUM_THREADS={limit}, got {n}")
    numba.set_num_threads(int(n))
    blas = _openblas()
    if blas is None:
        warnings.warn("fastconv: NumPy's BLAS is not a bundled OpenBLAS; only the Numba "
                      "kernels' thread count was set", RuntimeWarning, stacklevel=2)
    else:
        with _serial.lock:
            if _serial.holders:  # a pass holds BLAS at one thread: set n when it ends
                _serial.restore_to = int(n)
            else:
                blas[0](int(n))
