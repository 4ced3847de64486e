"""The benchmark tools: the layer suite, the NumPy baseline, timing, and the CLI."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import fastconv
from fastconv.bench import cli, numpy_baseline, runner, targets, timing
from fastconv.bench.suite import QUICK, load_suite
from fastconv.bench.timing import interleaved_medians

from .oracle import random


def test_suite_has_every_layer_with_valid_shapes():
    layers = load_suite()
    assert len(layers) == 34
    assert set(QUICK) <= {layer.name for layer in layers}
    for layer in layers:
        plan = (fastconv.ConvPlan.transposed(layer.input_shape, layer.weight_shape,
                                             **layer.params)
                if layer.op == "conv_transpose"
                else fastconv.ConvPlan(layer.input_shape, layer.weight_shape, **layer.params))
        expected = plan.input_shape if layer.op == "conv_transpose" else plan.output_shape
        assert expected == layer.output_shape, layer.name


def test_flops_count_every_multiply_add():
    (layer,) = load_suite(["r50_3x3_64"])
    # 4 samples, 64 filters of 64 x 3 x 3 at 56 x 56 positions, 2 flops each
    assert layer.flops("forward") == 2 * 4 * 64 * 64 * 9 * 56 * 56
    assert layer.flops("backward_input") == layer.flops("backward_weight") == \
        layer.flops("forward")
    (depthwise,) = load_suite(["mnv2_dw_384_14"])
    assert depthwise.flops("forward") == 2 * 8 * 384 * 9 * 14 * 14


def test_unknown_layer_names_are_refused():
    with pytest.raises(ValueError, match="unknown layer names"):
        load_suite(["no_such_layer"])


@pytest.mark.parametrize("params", [{"stride": (1, 1), "padding": (1, 1), "dilation": (1, 1)},
                                    {"stride": (2, 1), "padding": (0, 2), "dilation": (1, 2),
                                     "groups": 2}])
def test_numpy_baseline_computes_the_same_convolution(params):
    rng = np.random.default_rng(0)
    x, w = random(rng, (2, 4, 9, 8)), random(rng, (6, 4 // params.get("groups", 1), 3, 3))
    y = numpy_baseline.conv_forward(x, w, **params)
    np.testing.assert_allclose(y, fastconv.conv(x, w, **params), rtol=1e-12, atol=1e-12)
    dy = random(rng, y.shape)
    np.testing.assert_allclose(numpy_baseline.conv_backward_input(dy, w, x.shape, **params),
                               fastconv.conv_backward_input(dy, w, x.shape, **params),
                               rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(numpy_baseline.conv_backward_weight(dy, x, w.shape, **params),
                               fastconv.conv_backward_weight(dy, x, w.shape, **params),
                               rtol=1e-12, atol=1e-12)


def test_interleaved_medians_time_each_candidate():
    calls = {"a": 0, "b": 0}

    def count(name):
        def call():
            calls[name] += 1
        return call

    times = interleaved_medians({"a": count("a"), "b": count("b")}, repeats=3, settle=0,
                                warmup=0)
    assert set(times) == {"a", "b"}
    assert calls == {"a": 6, "b": 6}  # an untimed call before each timed one


class _Clock:
    """A stand-in for the time module whose clock moves only when told to."""

    def __init__(self):
        self.now = 0.0

    def perf_counter(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


def test_interleaved_medians_time_the_steady_state(monkeypatch):
    # A candidate whose first three calls after a pause are slow (its threads waking) is
    # timed at its speed in a loop: after the warm-up, not on the second call. Durations
    # are powers of two, so that the clock adds them exactly.
    clock = _Clock()
    monkeypatch.setattr(timing, "time", clock)
    slow, fast = 2.0**-8, 2.0**-11
    last_end, streak, calls = [-1.0], [0], [0]

    def call():
        streak[0] = streak[0] + 1 if clock.now - last_end[0] < fast else 0
        clock.now += slow if streak[0] < 3 else fast
        last_end[0] = clock.now
        calls[0] += 1

    steady = interleaved_medians({"a": call}, repeats=3, settle=2.0**-3, warmup=2.0**-6)
    assert steady["a"] == fast
    assert calls[0] == 3 * (3 + 8 + 1)  # 3 slow calls, 8 fast ones to fill 1/64 s, timed
    calls[0] = 0
    waking = interleaved_medians({"a": call}, repeats=3, settle=2.0**-3, warmup=0)
    assert waking["a"] == slow
    assert calls[0] == 3 * 2


def test_summary_geomean_and_minimum():
    def row(layer, ms, torch_ms, depthwise=False, gemm_ratio=1.0):
        return runner.Row(layer, "forward", "float32", "nchw", 2, depthwise, ms, 1.0, 1.0,
                          gemm_ratio, None, torch_ms / ms, torch_ms)

    summary = runner.summarize([row("a", 1.0, 4.0, gemm_ratio=2.0),
                                row("b", 2.0, 1.0, depthwise=True, gemm_ratio=None)])
    assert summary["step_speedup_geomean"] == pytest.approx(math.sqrt(4.0 * 0.5))
    assert summary["step_speedup_min_layer"] == "b"
    assert summary["depthwise_step_speedup_geomean"] == pytest.approx(0.5)
    # "a" at its bare GEMM time takes 0.5 ms, 8x faster than torch; "b" stays at 0.5x
    assert summary["gemm_bound_step_speedup_geomean"] == pytest.approx(math.sqrt(8.0 * 0.5))


def test_bench_command_writes_json_csv_and_markdown(tmp_path, capsys):
    for suffix in ("json", "csv", "md"):
        out = tmp_path / f"result.{suffix}"
        assert cli.main(["bench", "--suite", "full", "--filter", "lenet5_c1", "--repeats", "1",
                         "--out", str(out)]) == 0
        assert out.stat().st_size > 0
    report = json.loads((tmp_path / "result.json").read_text())
    assert [r["op_pass"] for r in report["rows"]] == ["forward", "backward_input",
                                                      "backward_weight"]
    assert report["rows"][0]["torch_speedup"] > 0
    assert "| lenet5_c1 | forward |" in (tmp_path / "result.md").read_text()
    printed = capsys.readouterr()
    assert "training step" in printed.out
    assert "lenet5_c1" in printed.err  # the progress display


def test_speedup_chart_labels_round_ratios_and_the_plot_is_a_png(tmp_path):
    import matplotlib

    matplotlib.use("Agg")

    def row(layer, op_pass, speedup):
        return runner.Row(layer, op_pass, "float32", "nchw", 2, False, 1.0, 1.0, 1.0, 1.0,
                          None, speedup, speedup)

    rows = [row("a", "forward", 0.6), row("a", "backward_input", 2.5),
            row("b", "backward_weight", 1.2)]
    figure = cli.speedup_chart(rows, "title")
    figure.canvas.draw()
    axis = figure.axes[0]
    low, high = axis.get_ylim()
    shown = [t.get_text() for t, v in zip(axis.get_yticklabels(), axis.get_yticks())
             if low <= v <= high]
    assert {"0.7x", "1x", "1.5x", "2x"} <= set(shown)
    assert [t.get_text() for t in axis.get_xticklabels()] == ["a", "b"]
    path = tmp_path / "chart.png"
    cli._plot(path, rows, "title")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_command_refuses_an_empty_filter():
    with pytest.raises(SystemExit, match="no layer name contains 'nothing'"):
        cli.main(["bench", "--filter", "nothing"])


def test_check_command_matches_the_baseline(capsys):
    assert cli.main(["check", "--dtype", "float64", "--repeats", "1"]) == 0
    assert "matches the NumPy baseline" in capsys.readouterr().out


def test_the_start_up_measurement_without_scipy_hides_it_from_fastconv_and_numba():
    script = targets._WITHOUT_SCIPY + textwrap.dedent("""
        import fastconv
        try:
            import scipy.linalg
        except ImportError:
            print("hidden")
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         check=True, timeout=300)
    assert out.stdout.split() == ["hidden"]
