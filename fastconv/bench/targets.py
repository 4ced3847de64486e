"""Measurements beyond the layer table: small calls, memory, threads, JIT start-up.

Each function returns a dict of measured figures; ``python -m fastconv targets``
prints them. Comparisons with torch run in the same process, interleaved, on the same
thread count.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import textwrap
import tracemalloc

import numpy as np

from .. import _threads
from ..functional import conv
from ..plan import ConvPlan
from . import runner
from .suite import load_suite
from .timing import interleaved_medians


def _per_call(call, calls: int):
    """A candidate that makes ``calls`` calls, for timing calls too short to time alone."""
    def repeated():
        for _ in range(calls):
            call()
    return repeated


def small_calls(repeats: int = 7) -> dict:
    """Per-call time of a 1x1x4x4 input with a 3x3 filter, and LeNet conv1 at batch 1."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 1, 4, 4)).astype(np.float32)
    w = rng.standard_normal((1, 1, 3, 3)).astype(np.float32)
    (lenet,) = load_suite(["lenet5_c1"])
    lx = rng.standard_normal((1, *lenet.input_shape[1:])).astype(np.float32)
    lw = rng.standard_normal(lenet.weight_shape).astype(np.float32)
    candidates = {"tiny": _per_call(lambda: conv(x, w), 100),
                  "lenet": _per_call(lambda: conv(lx, lw, padding=2), 20)}
    torch = runner.torch
    if torch is not None:
        tx, tw, tlx, tlw = map(torch.from_numpy, (x, w, lx, lw))
        candidates["torch_tiny"] = _per_call(lambda: torch.nn.functional.conv2d(tx, tw), 100)
        candidates["torch_lenet"] = _per_call(
            lambda: torch.nn.functional.conv2d(tlx, tlw, padding=2), 20)
    t = interleaved_medians(candidates, repeats)
    result = {"tiny_call_us": t["tiny"] / 100 * 1e6, "lenet_b1_forward_us": t["lenet"] / 20 * 1e6}
    if torch is not None:
        result["torch_tiny_call_us"] = t["torch_tiny"] / 100 * 1e6
        result["torch_lenet_b1_forward_us"] = t["torch_lenet"] / 20 * 1e6
        result["lenet_b1_latency_vs_torch"] = t["lenet"] / t["torch_lenet"]
    return result


def memory_and_chunking(batch: int = 64, repeats: int = 5) -> dict:
    """r50_conv1 at ``batch``: traced peak per pass under the default workspace limit, and
    the time of a training step with that limit against an unlimited plan, on one thread:
    on more, both plans split each pass among worker threads into the same cache-sized
    pieces, and the two would run the same code."""
    (layer,) = load_suite(["r50_conv1"])
    shape = (batch, *layer.input_shape[1:])
    rng = np.random.default_rng(1)
    x = rng.standard_normal(shape).astype(np.float32)
    w = (rng.standard_normal(layer.weight_shape) * 0.05).astype(np.float32)
    limited = ConvPlan(shape, layer.weight_shape, dtype=np.float32, **layer.params)
    unlimited = ConvPlan(shape, layer.weight_shape, dtype=np.float32,
                         workspace_limit=2**40, **layer.params)
    dy = rng.standard_normal(limited.output_shape).astype(np.float32)

    def step(plan):
        return lambda: (plan.forward(x, w), plan.backward_input(dy, w),
                        plan.backward_weight(dy, x))

    result = {"workspace_limit_bytes": limited.workspace_limit,
              "workspace_nbytes": limited.workspace_nbytes,
              "unlimited_workspace_nbytes": unlimited.workspace_nbytes}
    passes = {"forward": (lambda: limited.forward(x, w), limited.output_shape),
              "backward_input": (lambda: limited.backward_input(dy, w), limited.input_shape),
              "backward_weight": (lambda: limited.backward_weight(dy, x), limited.weight_shape)}
    for name, (call, out_shape) in passes.items():
        call()
        tracemalloc.start()
        try:
            call()
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        result[f"{name}_peak_bytes"] = peak
        result[f"{name}_peak_minus_result_bytes"] = peak - int(np.prod(out_shape)) * 4
    before = _threads.get_num_threads()
    _threads.set_num_threads(1)
    try:
        t = interleaved_medians({"limited": step(limited), "unlimited": step(unlimited)},
                                repeats)
    finally:
        _threads.set_num_threads(before)
    result["chunked_step_ms"] = t["limited"] * 1e3
    result["unchunked_step_ms"] = t["unlimited"] * 1e3
    result["chunking_cost"] = t["limited"] / t["unlimited"] - 1
    return result


def thread_scaling(names=("vgg16_conv3_2", "r50_3x3_512", "cb_L2", "c3d_conv2"),
                   repeats: int = 3) -> dict:
    """Training-step time on 1 and on 2 threads, for large layers."""
    result = {}
    before = _threads.get_num_threads()
    try:
        for layer in load_suite(list(names)):
            calls = runner.fastconv_passes(layer, layer.arrays(np.float32))

            def step(calls=calls):
                for call in calls.values():
                    call()

            times = {}
            for threads in (1, 2, 1, 2):  # twice each, alternating
                _threads.set_num_threads(threads)
                t = interleaved_medians({"step": step}, repeats)["step"]
                times[threads] = min(times.get(threads, t), t)
            result[layer.name] = times[1] / times[2]
    finally:
        _threads.set_num_threads(before)
    return result


_FIRST_STEP = textwrap.dedent("""
    import time
    start = time.perf_counter()
    import numpy as np
    import fastconv
    x = np.ones((8, 3, 32, 32), np.float32)
    w = np.ones((16, 3, 3, 3), np.float32)
    y = fastconv.conv2d(x, w, padding=1)
    fastconv.conv_backward_input(y, w, x.shape, padding=1)
    fastconv.conv_backward_weight(y, x, w.shape, padding=1)
    print(time.perf_counter() - start)
""")

#: Run before _FIRST_STEP, it makes SciPy unimportable, as where only fastconv's runtime
#: dependencies are installed: Numba imports SciPy's BLAS bindings, when SciPy is
#: there, on loading its first compiled function.
_WITHOUT_SCIPY = textwrap.dedent("""
    import importlib.abc, sys
    class _NoSciPy(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name.partition(".")[0] == "scipy":
                raise ImportError("SciPy hidden")
    sys.meta_path.insert(0, _NoSciPy())
""")

_WARMUP = "import fastconv; print(fastconv.warmup())"


def _run(script: str, env: dict) -> float:
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                         text=True, check=True, timeout=900)
    return float(out.stdout.strip().splitlines()[-1])


def jit_startup() -> dict:
    """Fresh processes: import plus the first float32 conv2d forward and backward with a
    warm on-disk cache (with SciPy importable, if installed, and without), and
    ``warmup()`` from an empty cache and from a warm one."""
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache,
                   NUMBA_CACHE_LOCATOR_CLASSES="UserProvidedCacheLocator")
        cold_warmup = _run(_WARMUP, env)
        warm_warmup = _run(_WARMUP, env)
        first_step = min(_run(_FIRST_STEP, env) for _ in range(3))
        without_scipy = min(_run(_WITHOUT_SCIPY + _FIRST_STEP, env) for _ in range(3))
    return {"warmup_cold_s": cold_warmup, "warmup_warm_cache_s": warm_warmup,
            "import_and_first_step_warm_cache_s": first_step,
            "without_scipy_s": without_scipy}
