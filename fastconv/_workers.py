"""Fastconv's worker threads: a pass split into pieces that run side by side.

A GEMM pass runs best as independent pieces, one per thread, each building its
columns in cache and multiplying them with a single-threaded GEMM, rather than as one
batch-wide im2col followed by a threaded GEMM: OpenBLAS's threads spin for about 0.1 s
after each GEMM, on the cores the next Numba kernel wants, and batch-wide columns go
through main memory. Each worker thread runs the kernels' serial builds (its Numba
thread count is 1) while :func:`fastconv._threads.serial_blas` holds BLAS at one
thread. The threads wait on a queue when idle; they never spin.

A thread woken from its queue may be put behind the thread that woke it, on the same
core, until a scheduler time slice ends: the kernels give up the GIL and never sleep,
so the pieces would then take turns (a 2-core Linux VM ran the 2 pieces of a pass
one after the other about half the time). So while a pass is the only one running,
its caller and its workers are each bound to a core of the caller's own (Linux's
``sched_setaffinity``), and all of them get the caller's set of cores back at its end.
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future

import numba

from . import _threads


class _Worker:
    """A thread that runs the tasks put on its own queue, with one Numba thread."""

    def __init__(self, index: int):
        self.tasks: queue.SimpleQueue = queue.SimpleQueue()
        started = threading.Event()
        self.native_id = 0
        # daemon: an idle worker must not keep the interpreter from exiting
        threading.Thread(target=self._serve, args=(started,), name=f"fastconv_{index}",
                         daemon=True).start()
        started.wait()

    def _serve(self, started: threading.Event) -> None:
        numba.set_num_threads(1)
        self.native_id = threading.get_native_id()
        started.set()
        while True:
            task, future = self.tasks.get()
            try:
                future.set_result(task())
            except BaseException as error:  # handed to the caller, who raises it
                future.set_exception(error)

    def submit(self, task: Callable[[], object]) -> Future:
        future: Future = Future()
        self.tasks.put((task, future))
        return future


_pool: list[_Worker] = []
_pool_lock = threading.Lock()


def _workers(count: int) -> list[_Worker]:
    """``count`` worker threads (at most ``NUMBA_NUM_THREADS - 1``, at least one),
    started on first use."""
    count = max(1, min(count, numba.config.NUMBA_NUM_THREADS - 1))
    with _pool_lock:
        while len(_pool) < count:
            _pool.append(_Worker(len(_pool)))
        return _pool[:count]


def _forget_pool() -> None:
    """A forked child has none of the parent's threads: it starts a pool of its own."""
    global _pool, _pool_lock
    _pool, _pool_lock = [], threading.Lock()


os.register_at_fork(after_in_child=_forget_pool)


def available_workers() -> int:
    """How many pieces a pass called from this thread may run side by side: the
    thread's count (:func:`fastconv.set_num_threads`), or 1 when BLAS cannot be held
    at one thread (a BLAS other than NumPy's bundled OpenBLAS)."""
    return numba.get_num_threads() if _threads.can_serialize_blas() else 1


@contextlib.contextmanager
def _cores_of_their_own(thread_ids: list[int], alone: bool):
    """While the block runs, bind each of ``thread_ids`` (0: the calling thread) to a
    core of its own from the caller's allowed set, if the pass runs ``alone`` (no other
    is under way) and there are cores enough; give the set back at its end."""
    can_bind = alone and hasattr(os, "sched_setaffinity")
    allowed = os.sched_getaffinity(0) if can_bind else set()
    bound = []
    try:
        if len(allowed) >= len(thread_ids):
            try:
                for thread_id, core in zip(thread_ids, sorted(allowed)):
                    os.sched_setaffinity(thread_id, {core})
                    bound.append(thread_id)
            except OSError:  # binding only speeds things up: run unbound where refused
                pass
        yield
    finally:
        for thread_id in bound:
            with contextlib.suppress(OSError):
                os.sched_setaffinity(thread_id, allowed)


def run(tasks: Sequence[Callable[[], object]]) -> list:
    """Run each task on its own thread, the first on the calling thread, and return
    their results in order; the first exception raised is raised again, after every
    task has finished (they may share the caller's arrays)."""
    workers = _workers(len(tasks) - 1)
    busy = workers[:len(tasks) - 1]
    thread_ids = [0, *(worker.native_id for worker in busy)]
    calling_thread_count = numba.get_num_threads()
    # a pass is under way exactly while it holds BLAS at one thread
    with _threads.serial_blas() as alone, _cores_of_their_own(thread_ids, alone):
        futures = [workers[i % len(workers)].submit(task) for i, task in enumerate(tasks[1:])]
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
