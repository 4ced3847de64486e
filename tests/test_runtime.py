"""The runtime: threads, fork, the kernel cache, warm-up (fastconv._config, _threads,
_workers)."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numba
import numpy as np
import pytest

import fastconv
from fastconv import _config, _threads, _workers

from .oracle import random

PARAMS = {"stride": 2, "padding": 1, "groups": 2}


def _problem(seed):
    rng = np.random.default_rng(seed)
    x = random(rng, (3, 4, 12, 12), np.float32)
    w = random(rng, (6, 2, 3, 3), np.float32)
    return x, w


def _passes(x, w):
    y = fastconv.conv(x, w, **PARAMS)
    return (y, fastconv.conv_backward_input(y, w, x.shape, **PARAMS),
            fastconv.conv_backward_weight(y, x, w.shape, **PARAMS),
            fastconv.conv(x[:, :2], w[:2, :1], groups=2))  # the depthwise kernels too


@pytest.fixture
def always_parallel(monkeypatch):
    """Split every GEMM pass among worker threads, and run every other kernel through
    its threaded build, however small the call."""
    monkeypatch.setattr(_config, "PARALLEL_MIN_WORK", 0)
    monkeypatch.setattr(fastconv.plan, "WORKER_MIN_WORK", 0)


def test_eight_python_threads_get_the_serial_answers(always_parallel):
    problems = [_problem(seed) for seed in range(8)]
    _config.PARALLEL_MIN_WORK = 1 << 62  # one thread, serial builds: the expected answers
    expected = [_passes(x, w) for x, w in problems]
    _config.PARALLEL_MIN_WORK = 0
    with ThreadPoolExecutor(max_workers=8) as pool:
        for _ in range(3):
            results = list(pool.map(lambda p: _passes(*p), problems))
            for got, want in zip(results, expected):
                for g, e in zip(got, want):
                    np.testing.assert_array_equal(g, e)


def _child(queue):
    x, w = _problem(0)
    queue.put(_passes(x, w)[0])


def test_forked_child_runs_after_the_parent_ran_parallel_kernels(always_parallel):
    x, w = _problem(0)
    expected = _passes(x, w)[0]  # the parent's thread pool is started
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_child, args=(queue,))
    child.start()
    got = queue.get(timeout=120)
    child.join(timeout=120)
    assert child.exitcode == 0
    np.testing.assert_array_equal(got, expected)


def test_without_a_writable_cache_location_fastconv_warns_and_runs():
    """Numba raises at import when no cache location is writable; fastconv compiles in
    memory instead. The child may only cache under a directory that cannot exist."""
    script = textwrap.dedent("""
        import warnings
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            import numpy as np
            import fastconv
        print(any("will not be cached" in str(w.message) for w in caught))
        print(fastconv.conv(np.ones((1, 1, 5)), np.ones((1, 1, 3)))[0, 0].tolist())
    """)
    env = dict(os.environ, NUMBA_CACHE_DIR="/dev/null/cache",
               NUMBA_CACHE_LOCATOR_CLASSES="UserProvidedCacheLocator")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            env=env, timeout=300, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:2] == ["True", "[3.0, 3.0, 3.0]"]


def test_the_cache_can_be_switched_off():
    script = "import fastconv._config as c; print(c.CACHE_ENABLED)"
    env = dict(os.environ, FASTCONV_DISABLE_CACHE="1")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            env=env, timeout=300, check=True)
    assert result.stdout.strip() == "False"


@pytest.mark.parametrize("boundscheck", ["0", "1"])
def test_bounds_checked_builds_are_cached_apart(tmp_path, boundscheck):
    """Numba keys its disk cache by function name, not by flags: bounds-checked machine
    code goes under names of its own, so it never stands in for the unchecked build."""
    script = "import numpy as np, fastconv; fastconv.conv(np.ones((1, 1, 5)), np.ones((1, 1, 3)))"
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path), NUMBA_BOUNDSCHECK=boundscheck)
    subprocess.run([sys.executable, "-c", script], env=env, timeout=300, check=True)
    names = [p.name for p in tmp_path.rglob("*.nbi")]
    assert names
    assert all(("_boundschecked" in name) == (boundscheck == "1") for name in names), names
    assert all(_config._SOURCES_TAG in name for name in names), names


def test_cached_names_change_with_the_flags_and_any_kernel_source(tmp_path):
    """Numba reuses a cached build while its own function and file are unchanged, though
    the flags in _config or a function it inlined from another file may have changed:
    the digest in every cached name covers all of those files."""
    sources = _config._kernel_sources()
    assert sources[0] == Path(_config.__file__)
    assert {"stacked.py", "unfold.py", "vector.py"} <= {path.name for path in sources}
    flags, kernel = tmp_path / "flags.py", tmp_path / "kernel.py"
    flags.write_text("OPTIONS = {}\n")
    kernel.write_text("def f(): pass\n")
    before = _config._sources_tag([flags, kernel])
    assert _config._sources_tag([flags, kernel]) == before
    flags.write_text("OPTIONS = {'nogil': True}\n")
    assert _config._sources_tag([flags, kernel]) != before


def test_threading_layer_is_fork_safe_unless_chosen_by_the_user():
    if os.environ.get("NUMBA_THREADING_LAYER"):
        assert os.environ["NUMBA_THREADING_LAYER"] == numba.config.THREADING_LAYER
    else:
        assert numba.config.THREADING_LAYER == "workqueue"


def test_set_num_threads_sets_numba_and_blas_together():
    before = fastconv.get_num_threads()
    try:
        fastconv.set_num_threads(1)
        assert numba.get_num_threads() == 1
        assert _threads.blas_threads() in (1, None)
        x, w = _problem(1)
        one_thread = _passes(x, w)
        fastconv.set_num_threads(numba.config.NUMBA_NUM_THREADS)
        assert numba.get_num_threads() == numba.config.NUMBA_NUM_THREADS
        for a, b in zip(one_thread, _passes(x, w)):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    finally:
        fastconv.set_num_threads(before)


needs_openblas = pytest.mark.skipif(not _threads.can_serialize_blas(),
                                    reason="NumPy's BLAS is not a bundled OpenBLAS")


@needs_openblas
def test_serial_blas_holds_one_thread_until_the_last_holder_leaves():
    before = _threads.blas_threads()
    with _threads.serial_blas() as alone:
        assert alone
        assert _threads.blas_threads() == 1
        with _threads.serial_blas() as inner_alone:
            assert not inner_alone
            assert _threads.blas_threads() == 1
        assert _threads.blas_threads() == 1
    assert _threads.blas_threads() == before


@needs_openblas
def test_set_num_threads_inside_serial_blas_takes_effect_at_its_end():
    before = fastconv.get_num_threads()
    try:
        with _threads.serial_blas():
            fastconv.set_num_threads(1)
            assert _threads.blas_threads() == 1
            fastconv.set_num_threads(numba.config.NUMBA_NUM_THREADS)
            assert _threads.blas_threads() == 1
        assert _threads.blas_threads() == numba.config.NUMBA_NUM_THREADS
    finally:
        fastconv.set_num_threads(before)


@needs_openblas
def test_workers_run_every_task_on_one_numba_thread_and_restore_the_callers_count():
    before = numba.get_num_threads()
    blas_before = _threads.blas_threads()
    results = _workers.run([numba.get_num_threads] * 3)
    assert results == [1, 1, 1]
    assert numba.get_num_threads() == before
    assert _threads.blas_threads() == blas_before


needs_two_cores = pytest.mark.skipif(
    not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2,
    reason="binding threads to cores needs Linux and two allowed cores")


@needs_openblas
@needs_two_cores
def test_a_pass_running_alone_binds_each_of_its_threads_to_a_core_of_its_own():
    allowed = os.sched_getaffinity(0)
    seen = _workers.run([lambda: os.sched_getaffinity(0)] * 2)
    assert all(len(cores) == 1 for cores in seen)
    assert seen[0] != seen[1] and seen[0] | seen[1] <= allowed
    assert os.sched_getaffinity(0) == allowed
    worker = _workers._workers(1)[0]  # gets the caller's cores back too
    assert os.sched_getaffinity(worker.native_id) == allowed


@needs_openblas
@needs_two_cores
def test_threads_are_bound_only_while_no_other_pass_runs():
    allowed = os.sched_getaffinity(0)

    def a_pass():
        with _threads.serial_blas() as alone, _workers._cores_of_their_own([0], alone):
            return os.sched_getaffinity(0)

    with ThreadPoolExecutor(1) as other_thread:
        other_thread.submit(os.getpid).result()  # started unbound: threads inherit a binding
        with _threads.serial_blas() as alone, _workers._cores_of_their_own([0], alone):
            assert len(os.sched_getaffinity(0)) == 1
            assert other_thread.submit(a_pass).result() == allowed
    assert os.sched_getaffinity(0) == allowed
    assert _threads._serial.holders == 0


@needs_openblas
@pytest.mark.parametrize("failing", [0, 1])
def test_a_failing_worker_task_raises_after_every_task_finished(failing):
    blas_before = _threads.blas_threads()
    finished = []

    def fails():
        raise ValueError("task failed")

    def slow():
        finished.append(sum(range(10**6)))

    tasks = [slow, slow, slow]
    tasks[failing] = fails
    with pytest.raises(ValueError, match="task failed"):
        _workers.run(tasks)
    assert len(finished) == 2
    assert _threads.blas_threads() == blas_before


@pytest.mark.parametrize(("value", "error"), [(0, ValueError), (10**6, ValueError),
                                              (1.5, TypeError), (True, TypeError)])
def test_set_num_threads_rejects_bad_counts(value, error):
    with pytest.raises(error, match="n must be"):
        fastconv.set_num_threads(value)


def test_warmup_compiles_every_kernel_in_both_builds():
    from fastconv._kernels import columns, depthwise, direct, pool, stacked, unfold, window3

    fastconv.warmup(dtypes=(np.float64,))
    kernels = [k for module in (unfold, direct, depthwise, stacked, window3, columns, pool)
               for k in vars(module).values() if isinstance(k, _config.Kernel)]
    assert sorted(k.__name__ for k in kernels) == [
        "backward_input", "backward_weight", "backward_weight", "backward_weight",
        "backward_weight", "col2im", "convolve", "convolve", "convolve", "convolve",
        "forward", "im2col", "max_over_windows", "scatter_add"]
    for kernel in kernels:
        for build in (kernel.serial, kernel.parallel):
            compiled = [s for s in build.signatures if "float64" in str(s)]
            assert compiled, f"{kernel.__name__} has no float64 build"
