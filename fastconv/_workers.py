"""Fastconv's worker threads: a pass split into pieces that run side by side.

A GEMM pass runs best as independent pieces, one per thread, each building its
columns in cache and multiplying them with a single-threaded GEMM, rather than as one
batch-wide im2col followed by a threaded GEMM: OpenBLAS's threads spin for about 0.1 s
after each GEMM, on the cores the next Numba kernel wants, and batch-wide columns go
through main memory. Each worker thread runs the kernels' serial builds (its Numba
thread count is 1) while :func:`fastconv._threads.serial_blas` holds BLAS at one
thread. The threads wait on a queue when idle; they never spin.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numba

from . import _threads

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _one_numba_thread() -> None:
    numba.set_num_threads(1)


def _executor() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=max(1, numba.config.NUMBA_NUM_THREADS - 1),
                                       thread_name_prefix="fastconv",
                                       initializer=_one_numba_thread)
        return _pool


def _forget_pool() -> None:
    """A forked child has none of the parent's threads: it starts a pool of its own."""
    global _pool, _pool_lock
    _pool, _pool_lock = None, threading.Lock()


os.register_at_fork(after_in_child=_forget_pool)


def available_workers() -> int:
    """How many pieces a pass called from this thread may run side by side: the
    thread's count (:func:`fastconv.set_num_threads`), or 1 when BLAS cannot be held
    at one thread (a BLAS other than NumPy's bundled OpenBLAS)."""
    return numba.get_num_threads() if _threads.can_serialize_blas() else 1


def run(tasks: Sequence[Callable[[], object]]) -> list:
    """Run each task on its own thread, the first on the calling thread, and return
    their results in order; the first exception raised is raised again, after every
    task has finished (they may share the caller's arrays)."""
    pool = _executor()
    calling_thread_count = numba.get_num_threads()
    with _threads.serial_blas():
        futures = [pool.submit(task) for task in tasks[1:]]
        numba.set_num_threads(1)
        try:
            first = tasks[0]()
        finally:
            numba.set_num_threads(calling_thread_count)
            rest = [f.exception() for f in futures]  # waits for all of them
    for error in rest:
        if error is not None:
            raise error
    return [first, *(f.result() for f in futures)]
