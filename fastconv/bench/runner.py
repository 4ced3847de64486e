"""Measure fastconv against torch, the NumPy-only baseline and the bare GEMMs, layer by layer.

Every comparison is made in one process, with the candidates interleaved round by
round and the same thread count on every side; medians are reported.
"""

from __future__ import annotations

import math
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass

import numpy as np

from .. import _threads
from ..plan import ConvPlan
from . import numpy_baseline
from .suite import PASSES, Layer
from .timing import interleaved_medians

try:  # torch is optional: the comparison column is left empty without it
    import torch
except ImportError:  # pragma: no cover - exercised where torch is absent
    torch = None


@dataclass
class Row:
    """One layer and pass: fastconv's time and its ratios to the comparisons."""

    layer: str
    op_pass: str
    dtype: str
    layout: str
    threads: int
    depthwise: bool
    fastconv_ms: float
    gflops: float
    percent_of_peak: float
    gemm_ratio: float | None  # fastconv time / bare GEMM time
    numpy_speedup: float | None
    torch_speedup: float | None
    torch_ms: float | None


def _channels_last(array: np.ndarray) -> np.ndarray:
    """The same logical array, stored with channels last (NHWC strides)."""
    return np.moveaxis(np.ascontiguousarray(np.moveaxis(array, 1, -1)), -1, 1)


def fastconv_passes(layer: Layer, a: dict) -> dict:
    x, w, dy = a["x"], a["weight"], a["grad_output"]
    if layer.op == "conv_transpose":
        plan = ConvPlan.transposed(x.shape, w.shape, dtype=x.dtype, **layer.params)
        return {"forward": lambda: plan.backward_input(x, w),
                "backward_input": lambda: plan.forward(dy, w),
                "backward_weight": lambda: plan.backward_weight(x, dy)}
    plan = ConvPlan(x.shape, w.shape, dtype=x.dtype, **layer.params)
    return {"forward": lambda: plan.forward(x, w),
            "backward_input": lambda: plan.backward_input(dy, w),
            "backward_weight": lambda: plan.backward_weight(dy, x)}


def numpy_passes(layer: Layer, a: dict) -> dict:
    x, w, dy = a["x"], a["weight"], a["grad_output"]
    rank = layer.rank
    p = {"stride": (layer.stride,) * rank, "padding": (layer.padding,) * rank,
         "dilation": (layer.dilation,) * rank, "groups": layer.groups}
    nb = numpy_baseline
    if layer.op == "conv_transpose":
        return {"forward": lambda: nb.conv_backward_input(x, w, dy.shape, **p),
                "backward_input": lambda: nb.conv_forward(dy, w, **p),
                "backward_weight": lambda: nb.conv_backward_weight(x, dy, w.shape, **p)}
    return {"forward": lambda: nb.conv_forward(x, w, **p),
            "backward_input": lambda: nb.conv_backward_input(dy, w, x.shape, **p),
            "backward_weight": lambda: nb.conv_backward_weight(dy, x, w.shape, **p)}


def torch_passes(layer: Layer, a: dict, channels_last: bool) -> dict:
    rank = layer.rank
    fmt = {2: torch.channels_last, 3: torch.channels_last_3d}.get(rank) if channels_last else None

    def tensor(array):
        t = torch.from_numpy(np.ascontiguousarray(array))
        return t.contiguous(memory_format=fmt) if fmt is not None else t

    x, w, dy = tensor(a["x"]), tensor(a["weight"]), tensor(a["grad_output"])
    transposed = layer.op == "conv_transpose"
    s, p, d = [layer.stride] * rank, [layer.padding] * rank, [layer.dilation] * rank
    zeros = [0] * rank

    def backward(mask):
        return lambda: torch.ops.aten.convolution_backward(dy, x, w, None, s, p, d, transposed,
                                                           zeros, layer.groups, mask)

    def forward():
        return torch.ops.aten.convolution(x, w, None, s, p, d, transposed, zeros, layer.groups)

    return {"forward": forward, "backward_input": backward([True, False, False]),
            "backward_weight": backward([False, True, False])}


def gemm_passes(layer: Layer, dtype) -> dict:
    """The bare BLAS GEMMs of each pass, on contiguous random matrices."""
    rng = np.random.default_rng(1)
    calls = {}
    for name, (g, m, n, k) in layer.gemm_shapes().items():
        a = rng.standard_normal((g, m, k)).astype(dtype)
        b = rng.standard_normal((g, k, n)).astype(dtype)
        c = np.empty((g, m, n), dtype)
        calls[name] = (lambda a=a, b=b, c=c: np.matmul(a, b, out=c))
    return calls


def gemm_peak_gflops(dtype, size: int = 2048, repeats: int = 5) -> float:
    """GFLOP/s of a large square GEMM: the roofline the table compares with."""
    rng = np.random.default_rng(2)
    a, b = (rng.standard_normal((size, size)).astype(dtype) for _ in range(2))
    seconds = interleaved_medians({"gemm": lambda: a @ b}, repeats)["gemm"]
    return 2 * size**3 / seconds / 1e9


def run_layer(layer: Layer, dtype, *, threads: int, layout: str, repeats: int, peak: float,
              with_numpy: bool = True) -> list[Row]:
    arrays = layer.arrays(dtype)
    if layout == "nhwc":
        arrays = {k: _channels_last(v) for k, v in arrays.items()}
    candidates = {"fastconv": fastconv_passes(layer, arrays),
                  "gemm": gemm_passes(layer, dtype)}
    if with_numpy:
        candidates["numpy"] = numpy_passes(layer, arrays)
    if torch is not None:
        candidates["torch"] = torch_passes(layer, arrays, layout == "nhwc")
    rows = []
    for name in PASSES:
        times = interleaved_medians({who: calls[name] for who, calls in candidates.items()},
                                    repeats)
        ours = times["fastconv"]
        gflops = layer.flops(name) / ours / 1e9
        rows.append(Row(
            layer=layer.name, op_pass=name, dtype=np.dtype(dtype).name, layout=layout,
            threads=threads, depthwise=layer.is_depthwise, fastconv_ms=ours * 1e3,
            gflops=gflops, percent_of_peak=100 * gflops / peak,
            gemm_ratio=ours / times["gemm"],
            numpy_speedup=times["numpy"] / ours if "numpy" in times else None,
            torch_speedup=times["torch"] / ours if "torch" in times else None,
            torch_ms=times["torch"] * 1e3 if "torch" in times else None,
        ))
    return rows


def geomean(values) -> float:
    values = list(values)
    return math.exp(statistics.fmean(math.log(v) for v in values)) if values else float("nan")


def summarize(rows: list[Row]) -> dict:
    """Training-step speedups over torch (forward + both backward passes per layer)."""
    steps: dict[str, dict[str, float]] = {}
    for row in rows:
        step = steps.setdefault(row.layer, {"fastconv": 0.0, "torch": 0.0, "gemm_bound": 0.0,
                                            "depthwise": row.depthwise})
        step["fastconv"] += row.fastconv_ms
        step["torch"] += row.torch_ms if row.torch_ms is not None else math.nan
        # the pass at its bare GEMMs' time; the direct kernels (depthwise) as measured
        step["gemm_bound"] += (row.fastconv_ms if row.depthwise or row.gemm_ratio is None
                               else row.fastconv_ms / row.gemm_ratio)
    speedups = {name: s["torch"] / s["fastconv"] for name, s in steps.items()}
    have_torch = [v for v in speedups.values() if not math.isnan(v)]
    gemm_bound = [s["torch"] / s["gemm_bound"] for s in steps.values()
                  if not math.isnan(s["torch"])]
    depthwise = [speedups[n] for n, s in steps.items() if s["depthwise"]
                 and not math.isnan(speedups[n])]
    gemm = [r.gemm_ratio for r in rows if not r.depthwise and r.gemm_ratio is not None]
    summary = {
        "layers": len(steps),
        "step_speedup_geomean": geomean(have_torch) if have_torch else None,
        "step_speedup_min": min(have_torch) if have_torch else None,
        "step_speedup_min_layer": (min(speedups, key=lambda n: speedups[n])
                                   if have_torch else None),
        "depthwise_step_speedup_geomean": geomean(depthwise) if depthwise else None,
        # what the speedup would be with im2col, col2im and reordering free
        "gemm_bound_step_speedup_geomean": geomean(gemm_bound) if gemm_bound else None,
        "gemm_ratio_median": statistics.median(gemm) if gemm else None,
        "gemm_ratio_max": max(gemm) if gemm else None,
        "step_speedups": speedups,
        "step_ms": {name: {"fastconv": s["fastconv"], "torch": s["torch"]}
                    for name, s in steps.items()},
    }
    return summary


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f
                       if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "python": sys.version.split()[0], "numpy": np.__version__,
            "torch": None if torch is None else torch.__version__,
            "blas_threads": _threads.blas_threads(), "date": time.strftime("%Y-%m-%d")}


def as_dicts(rows: list[Row]) -> list[dict]:
    return [asdict(r) for r in rows]
