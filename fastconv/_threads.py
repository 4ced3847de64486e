"""One thread count for Numba's kernels and for the BLAS that runs the GEMMs.

The kernels and the GEMMs run one after the other, never nested, so giving both the
same count keeps every core busy without oversubscribing. NumPy's wheels bundle
OpenBLAS, whose thread count is set through its own C entry point; with another BLAS
only Numba's count is set, and a warning says so.
"""

from __future__ import annotations

import ctypes
import functools
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
    Numba's count applies to the calling Python thread; BLAS's to the process.

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
        blas[0](int(n))
