"""The ``fastconv`` command line."""

from __future__ import annotations

import argparse
import math
import sys
import time

import numpy as np

from ..plan import ConvPlan
from . import numpy_baseline
from .timing import interleaved_medians

# ResNet-20's 3x3 layer on CIFAR-10 (He et al. 2016), batch 32.
CHECK_LAYER = {"input_shape": (32, 16, 32, 32), "weight_shape": (16, 16, 3, 3), "padding": 1}


def _check(args) -> int:
    """One conv layer forward and backward against the NumPy baseline, with timings."""
    dtype = np.dtype(args.dtype)
    layer = CHECK_LAYER
    params = {"stride": (1, 1), "padding": (1, 1), "dilation": (1, 1)}
    rng = np.random.default_rng(0)
    x = rng.standard_normal(layer["input_shape"]).astype(dtype)
    w = (rng.standard_normal(layer["weight_shape"]) * 0.1).astype(dtype)
    print(f"layer: x {layer['input_shape']}, weight {layer['weight_shape']}, padding 1, {dtype}")

    start = time.perf_counter()
    plan = ConvPlan(x.shape, w.shape, padding=layer["padding"], dtype=dtype)
    y = plan.forward(x, w)
    dy = rng.standard_normal(y.shape).astype(dtype)
    ours = {"forward": y, "backward_input": plan.backward_input(dy, w),
            "backward_weight": plan.backward_weight(dy, x)}
    print(f"first forward + backward (compiles, or loads the kernel cache): "
          f"{time.perf_counter() - start:.2f} s")

    passes = {
        "forward": (lambda: plan.forward(x, w),
                    lambda: numpy_baseline.conv_forward(x, w, **params)),
        "backward_input": (lambda: plan.backward_input(dy, w),
                           lambda: numpy_baseline.conv_backward_input(dy, w, x.shape, **params)),
        "backward_weight": (lambda: plan.backward_weight(dy, x),
                            lambda: numpy_baseline.conv_backward_weight(dy, x, w.shape,
                                                                        **params)),
    }
    reduction = {"forward": math.prod(w.shape[1:]),
                 "backward_input": w.shape[0] * math.prod(w.shape[2:]),
                 "backward_weight": y.shape[0] * math.prod(y.shape[2:])}
    failed = False
    print(f"\n{'pass':16s} {'max rel. dev.':>13s} {'fastconv ms':>12s} {'numpy ms':>9s} "
          f"{'speedup':>8s}")
    for name, (fast, baseline) in passes.items():
        expected = baseline()
        deviation = np.abs(ours[name] - expected).max() / np.abs(expected).max()
        # Both sides round each of `reduction` products once: n * eps bounds the gap.
        ok = deviation <= reduction[name] * np.finfo(dtype).eps
        failed |= not ok
        times = interleaved_medians({"fastconv": fast, "numpy": baseline}, args.repeats)
        print(f"{name:16s} {deviation:13.2e} {times['fastconv'] * 1e3:12.2f} "
              f"{times['numpy'] * 1e3:9.2f} {times['numpy'] / times['fastconv']:7.1f}x"
              f"{'' if ok else '  MISMATCH'}")
    print("\nresult:", "MISMATCH against the NumPy baseline" if failed else
          "matches the NumPy baseline")
    return 1 if failed else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fastconv",
        description="PyTorch-exact N-d convolution for NumPy, compiled with Numba.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    check = commands.add_parser(
        "check",
        help="run a conv layer forward and backward, check it against the NumPy baseline "
             "and print timings (the default)",
    )
    check.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    check.add_argument("--repeats", type=int, default=5, help="timed rounds (default 5)")
    check.set_defaults(run=_check)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv if argv else ["check"])
    return args.run(args)
