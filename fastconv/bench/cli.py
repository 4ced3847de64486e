"""The ``fastconv`` command line."""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

from .. import _threads
from ..plan import ConvPlan
from . import numpy_baseline
from .suite import QUICK, load_suite
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


class Progress:
    """One status line on a terminal, rewritten in place; plain lines elsewhere."""

    def __init__(self, total: int, stream=None):
        self.total, self.done = total, 0
        self.stream = sys.stderr if stream is None else stream
        self.start = time.perf_counter()
        self.tty = self.stream.isatty()

    def step(self, label: str) -> None:
        self.done += 1
        elapsed = time.perf_counter() - self.start
        text = f"[{self.done:>3}/{self.total}] {elapsed:6.1f}s  {label}"
        if self.tty:
            self.stream.write("\r\033[K" + text + ("\n" if self.done == self.total else ""))
        else:
            self.stream.write(text + "\n")
        self.stream.flush()


def _fmt(value, spec: str, suffix: str = "") -> str:
    return "-" if value is None else format(value, spec) + suffix


HEADERS = ("layer", "pass", "ms", "GFLOP/s", "% peak", "x GEMM", "vs numpy", "vs torch")


def table_cells(rows) -> list[tuple[str, ...]]:
    """One line of formatted cells per row, in the order of :data:`HEADERS`."""
    return [(r.layer, r.op_pass, f"{r.fastconv_ms:.3f}", f"{r.gflops:.1f}",
             f"{r.percent_of_peak:.1f}", _fmt(r.gemm_ratio, ".2f"),
             _fmt(r.numpy_speedup, ".2f", "x"), _fmt(r.torch_speedup, ".2f", "x"))
            for r in rows]


def render_text(cells) -> str:
    widths = [max(len(c) for c in column) for column in zip(HEADERS, *cells)]
    lines = [" ".join(c.ljust(w) if i < 2 else c.rjust(w)
                      for i, (c, w) in enumerate(zip(line, widths)))
             for line in (HEADERS, *cells)]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def render_markdown(cells) -> str:
    lines = ["| " + " | ".join(HEADERS) + " |",
             "|" + "|".join(["---"] * 2 + ["---:"] * (len(HEADERS) - 2)) + "|"]
    lines += ["| " + " | ".join(line) + " |" for line in cells]
    return "\n".join(lines)


def summary_lines(summary: dict) -> list[str]:
    lines = [f"layers: {summary['layers']}"]
    if summary["step_speedup_geomean"] is not None:
        lines.append(
            f"training step (forward + backward_input + backward_weight) speedup over torch: "
            f"geomean {summary['step_speedup_geomean']:.2f}x, lowest "
            f"{summary['step_speedup_min']:.2f}x ({summary['step_speedup_min_layer']})")
    if summary["depthwise_step_speedup_geomean"] is not None:
        lines.append(f"depthwise layers: geomean {summary['depthwise_step_speedup_geomean']:.2f}x "
                     "over torch")
    if summary["gemm_ratio_median"] is not None:
        lines.append(f"time / bare GEMM time, non-depthwise passes: median "
                     f"{summary['gemm_ratio_median']:.2f}, worst {summary['gemm_ratio_max']:.2f}")
    if summary["gemm_bound_step_speedup_geomean"] is not None:
        lines.append("training step speedup over torch if every non-depthwise pass took its "
                     "bare GEMMs' time: geomean "
                     f"{summary['gemm_bound_step_speedup_geomean']:.2f}x")
    return lines


def headline(meta: dict) -> str:
    return (f"{meta['cpu']}; {meta['threads']} threads; {meta['dtype']}; {meta['layout']}; "
            f"BLAS GEMM peak {meta['gemm_peak_gflops']:.0f} GFLOP/s; "
            f"torch {meta['torch'] or 'not installed'}")


def _write_out(path: Path, rows, summary, meta) -> None:
    from .runner import as_dicts

    records = as_dicts(rows)
    if path.suffix == ".csv":
        with path.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(records[0]))
            writer.writeheader()
            writer.writerows(records)
    elif path.suffix == ".md":
        steps = ["| layer | fastconv step ms | torch step ms | speedup |",
                 "|---|---:|---:|---:|"]
        steps += [f"| {name} | {ms['fastconv']:.2f} | {ms['torch']:.2f} | "
                  f"{summary['step_speedups'][name]:.2f}x |"
                  for name, ms in summary["step_ms"].items()]
        text = [headline(meta), "", *(f"- {line}" for line in summary_lines(summary)), "",
                "Training step (forward + backward_input + backward_weight):", "", *steps,
                "", "Each pass:", "", render_markdown(table_cells(rows))]
        path.write_text("\n".join(text) + "\n")
    else:
        path.write_text(json.dumps({"machine": meta, "summary": summary, "rows": records},
                                   indent=2))


#: The speedups the chart labels on its log axis (those outside the data are not drawn).
SPEEDUP_TICKS = [0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 1, 1.5, 2, 3, 5, 7, 10, 20, 30, 50, 100]


def _plot(path: Path, rows, title: str) -> None:
    try:
        import matplotlib
    except ImportError:
        raise SystemExit("--plot needs matplotlib: pip install 'fastconv[bench]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure = speedup_chart(rows, title)
    figure.savefig(path, dpi=120)
    plt.close(figure)


def speedup_chart(rows, title: str):
    """A matplotlib figure: each layer's speedups over torch, a bar per pass, on a log
    axis labelled at round ratios."""
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    layers = list(dict.fromkeys(r.layer for r in rows))
    figure, ax = plt.subplots(figsize=(max(6.0, 0.45 * len(layers) + 2), 4.5))
    width = 0.27
    for i, name in enumerate(("forward", "backward_input", "backward_weight")):
        values = [next((r.torch_speedup or float("nan") for r in rows
                        if r.layer == layer and r.op_pass == name), float("nan"))
                  for layer in layers]
        ax.bar([j + (i - 1) * width for j in range(len(layers))], values, width, label=name)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_yscale("log")
    # speedups span a decade or two: label round ratios, not just powers of 10
    ax.yaxis.set_major_locator(matplotlib.ticker.FixedLocator(SPEEDUP_TICKS))
    ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}x"))
    ax.yaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    ax.grid(axis="y", linewidth=0.3)
    ax.set_xticks(range(len(layers)), layers, rotation=60, ha="right", fontsize=8)
    ax.set_ylabel("speedup over torch (log scale)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    figure.tight_layout()
    return figure


def _bench(args) -> int:
    from . import runner

    names = QUICK if args.suite == "quick" else None
    layers = load_suite(names)
    if args.filter:
        layers = [layer for layer in layers if args.filter in layer.name]
        if not layers:
            raise SystemExit(f"no layer name contains {args.filter!r}")
    dtype = np.dtype(args.dtype)
    _threads.set_num_threads(args.threads)
    if runner.torch is not None:
        runner.torch.set_num_threads(args.threads)
    meta = runner.machine() | {"threads": args.threads, "dtype": dtype.name,
                                "layout": args.layout, "suite": args.suite}
    meta["gemm_peak_gflops"] = runner.gemm_peak_gflops(dtype)
    print(headline(meta))
    progress = Progress(len(layers))
    rows = []
    for layer in layers:
        progress.step(layer.name)
        rows += runner.run_layer(layer, dtype, threads=args.threads, layout=args.layout,
                                 repeats=args.repeats, peak=meta["gemm_peak_gflops"],
                                 with_numpy=not args.no_numpy)
    summary = runner.summarize(rows)
    print(render_text(table_cells(rows)))
    print("\n" + "\n".join(summary_lines(summary)))
    if args.out:
        _write_out(Path(args.out), rows, summary, meta)
    if args.plot:
        _plot(Path(args.plot), rows,
              f"fastconv vs torch, {dtype.name}, {args.layout}, {args.threads} threads")
    return 0


def _targets(args) -> int:
    from . import targets

    _threads.set_num_threads(args.threads)
    if targets.runner.torch is not None:
        targets.runner.torch.set_num_threads(args.threads)
    limit = None
    report: dict = {}

    def verdict(value, bound, at_most=True) -> str:
        return "met" if (value <= bound if at_most else value >= bound) else "MISSED"

    print(f"{args.threads} threads")
    small = report["small_calls"] = targets.small_calls()
    print(f"1x1x4x4 input, 3x3 filter: {small['tiny_call_us']:.1f} us per call "
          f"(torch {small.get('torch_tiny_call_us', float('nan')):.1f} us); target <= 20 us: "
          f"{verdict(small['tiny_call_us'], 20)}")
    if "lenet_b1_latency_vs_torch" in small:
        ratio = small["lenet_b1_latency_vs_torch"]
        print(f"LeNet conv1, batch 1, forward: {small['lenet_b1_forward_us']:.1f} us, "
              f"{ratio:.2f}x torch's latency; target <= 1.5x: {verdict(ratio, 1.5)}")
    memory = report["memory"] = targets.memory_and_chunking()
    limit = memory["workspace_limit_bytes"]
    for name in ("forward", "backward_input", "backward_weight"):
        extra = memory[f"{name}_peak_minus_result_bytes"]
        print(f"r50_conv1 batch 64 {name}: traced peak {memory[f'{name}_peak_bytes'] / 2**20:.1f}"
              f" MiB, {extra / 2**20:.1f} MiB besides its result; limit "
              f"{limit / 2**20:.0f} MiB: {verdict(extra, limit)}")
    cost = memory["chunking_cost"]
    print(f"chunking under the limit, one thread: step {memory['chunked_step_ms']:.1f} ms against "
          f"{memory['unchunked_step_ms']:.1f} ms unlimited "
          f"({memory['unlimited_workspace_nbytes'] / 2**20:.0f} MiB workspace), cost "
          f"{100 * cost:+.1f}%; target <= 10%: {verdict(cost, 0.10)}")
    scaling = report["thread_scaling"] = targets.thread_scaling()
    for name, speedup in scaling.items():
        print(f"{name}: 1 -> 2 threads {speedup:.2f}x; target >= 1.7x: "
              f"{verdict(speedup, 1.7, at_most=False)}")
    startup = report["jit_startup"] = targets.jit_startup()
    first = startup["import_and_first_step_warm_cache_s"]
    print(f"fresh process, warm cache: import + first conv2d forward and backward "
          f"{first:.2f} s; target <= 1.0 s: {verdict(first, 1.0)}")
    bare = startup["without_scipy_s"]
    print(f"the same with SciPy unimportable (only numpy and numba installed): "
          f"{bare:.2f} s; target <= 1.0 s: {verdict(bare, 1.0)}")
    print(f"warmup(): {startup['warmup_cold_s']:.1f} s from an empty cache, "
          f"{startup['warmup_warm_cache_s']:.2f} s from a warm one")
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2))
    return 0


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

    bench = commands.add_parser(
        "bench", help="time the layer suite against torch, the NumPy baseline and bare GEMMs")
    bench.add_argument("--suite", choices=["quick", "full"], default="quick",
                       help=f"quick: {len(QUICK)} layers, one per family; full: all (default "
                            "quick)")
    bench.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    bench.add_argument("--threads", type=int, default=2,
                       help="threads for fastconv, BLAS and torch alike (default 2)")
    bench.add_argument("--filter", default="", help="only layers whose name contains this")
    bench.add_argument("--layout", choices=["nchw", "nhwc"], default="nchw",
                       help="memory layout of the arrays (nhwc: channels-last strides)")
    bench.add_argument("--repeats", type=int, default=5, help="timed rounds (default 5)")
    bench.add_argument("--no-numpy", action="store_true",
                       help="skip the NumPy-only baseline (it is slow on large layers)")
    bench.add_argument("--out", help="write the results to a .json, .csv or .md (markdown) file")
    bench.add_argument("--plot", help="write a PNG chart of the speedups over torch")
    bench.set_defaults(run=_bench)

    targets = commands.add_parser(
        "targets", help="small-call overhead, memory bound and chunking cost, thread scaling "
                        "and JIT start-up, each against its target")
    targets.add_argument("--threads", type=int, default=2)
    targets.add_argument("--out", help="write the figures to a JSON file")
    targets.set_defaults(run=_targets)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv if argv else ["check"])
    return args.run(args)
