"""im2col and col2im: against torch's unfold/fold, the loop reference, and each other."""

from __future__ import annotations

import numba
import numpy as np
import pytest
import torch

import fastconv
from fastconv import _config, _kernels
from fastconv._geometry import three_d, unfold_window
from fastconv._kernels import stacked

from . import reference
from .oracle import assert_close, assert_nonfinite_like, random, torch_conv_passes

CASES = [
    {"kernel_size": 3},
    {"kernel_size": 2, "stride": 2},
    {"kernel_size": 3, "padding": 2, "dilation": 2},
    {"kernel_size": (3, 1), "stride": (1, 3), "padding": (0, 1)},
    # "same" windows: output rows as long as input rows, copied a slice at a time
    {"kernel_size": 3, "padding": 1},
    {"kernel_size": (5, 3), "padding": (2, 1)},
]


def _params(case, rank):
    return {k: v[:rank] + v[-1:] * (rank - len(v)) if isinstance(v, tuple) else v
            for k, v in case.items()}


# The last spatial size: short rows go through the table of positions; long rows, read
# with unit stride, are copied by rows (fastconv._kernels.LONG_ROW), and rows as long as
# the input's by depth slices. col2im also adds strided rows by rows: the long rows are
# long enough for that with strides up to 3.
ROW_LENGTHS = {"short rows": 8, "long rows": 3 * _kernels.LONG_ROW + 5}


@pytest.mark.parametrize("row", list(ROW_LENGTHS))
@pytest.mark.parametrize("case", range(len(CASES)))
def test_im2col_and_col2im_match_torch_unfold_and_fold(case, row):
    params = CASES[case]
    size = (9, ROW_LENGTHS[row])
    x = random(np.random.default_rng(0), (2, 3, *size))
    cols = fastconv.im2col(x, **params)
    expected = torch.nn.functional.unfold(torch.from_numpy(x), **params).numpy()
    np.testing.assert_array_equal(cols, expected)
    c = random(np.random.default_rng(1), cols.shape)
    folded = fastconv.col2im(c, size, **params)
    expected = torch.nn.functional.fold(torch.from_numpy(c), size, **params).numpy()
    np.testing.assert_allclose(folded, expected, rtol=1e-14, atol=1e-14)


@pytest.mark.parametrize("row", list(ROW_LENGTHS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", range(len(CASES)))
@pytest.mark.parametrize("rank", [1, 2, 3])
def test_im2col_matches_reference_and_col2im_is_its_adjoint(rank, case, dtype, row):
    params = _params(CASES[case], rank)
    rng = np.random.default_rng(rank)
    size = (*(5, 4)[:rank - 1], ROW_LENGTHS[row])
    x = random(rng, (2, 3, *size), dtype)
    cols = fastconv.im2col(x, **params)
    window = unfold_window(size, **params)
    np.testing.assert_array_equal(
        cols, reference.unfold(x, window.kernel_size, stride=window.stride,
                               padding=window.pad_low, dilation=window.dilation))
    # <im2col(x), c> == <x, col2im(c)>: col2im is exactly the adjoint scatter-add.
    c = random(rng, cols.shape, dtype)
    folded = fastconv.col2im(c, size, **params)
    lhs = np.vdot(cols.astype(np.float64), c.astype(np.float64))
    rhs = np.vdot(x.astype(np.float64), folded.astype(np.float64))
    tol = np.finfo(dtype).eps * cols.shape[1] * np.abs(cols).sum() * np.abs(c).max()
    assert abs(lhs - rhs) <= tol


def test_col2im_rank_follows_the_sequence_argument():
    c = np.ones((1, 2 * 3, 4))
    assert fastconv.col2im(c, 6, (3,)).shape == (1, 2, 6)
    assert fastconv.col2im(np.ones((1, 4, 4)), 3, 2).shape == (1, 1, 3, 3)


def test_empty_batch_im2col_col2im():
    x = np.zeros((0, 3, 5, 5), np.float32)
    cols = fastconv.im2col(x, 3)
    assert cols.shape == (0, 27, 9)
    assert fastconv.col2im(cols, (5, 5), 3).shape == (0, 3, 5, 5)


@pytest.mark.skipif(not numba.config.BOUNDSCHECK,
                    reason="an out-of-bounds write is safe to provoke only when bounds-checked")
def test_bounds_checking_turns_a_bad_buffer_into_index_error():
    x = np.zeros((1, 1, 1, 4, 4))
    window = unfold_window((4, 4), 3).kernel_args()
    assert window == ((1, 3, 3), (1, 1, 1), (1, 1, 1), (0, 0, 0), (1, 2, 2))
    # Without the validation in front of the kernels, a wrong buffer size is an
    # out-of-bounds access; bounds checking raises instead of writing past the buffer
    # (a slice copy that does not fit raises ValueError).
    with pytest.raises((IndexError, ValueError)):
        _kernels.im2col(x, window, np.zeros((9, 1, 3)))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_threaded_and_serial_builds_agree(monkeypatch, dtype):
    """Every kernel's threaded build against its serial twin, on one problem per path."""
    cases = [((3, 4, 10, 9), (6, 2, 3, 3), {"padding": 1, "groups": 2, "stride": (2, 1)}),
             ((2, 3, 6, 40), (4, 3, 3, 3), {"padding": 1}),  # long rows
             ((2, 3, 6, 5, 4), (4, 3, 2, 2, 2), {"padding": "same", "dilation": 2}),
             # narrow groups: by channel blocks (depthwise, stride 3); two outputs per
             # channel on stacked planes (unit strides) and, for the weight gradient,
             # plane by plane with long and short rows; depthwise on stacked planes
             ((5, 20, 6, 7), (20, 1, 3, 3), {"padding": 1, "groups": 20, "stride": 3}),
             ((2, 4, 5, 40), (8, 1, 3, 3), {"padding": 1, "groups": 4}),
             ((3, 4, 17), (8, 1, 3), {"padding": 1, "groups": 4}),
             ((3, 20, 9, 7), (20, 1, 5, 5), {"padding": 2, "groups": 20}),
             # 3x3 depthwise: on large planes the forward pass and input gradient by
             # rows; on small ones every pass down columns
             ((1, 2, 70, 130), (2, 1, 3, 3), {"padding": 1, "groups": 2}),
             ((3, 20, 9, 12), (20, 1, 3, 3), {"padding": 1, "dilation": (2, 1),
                                               "groups": 20}),
             ((2, 6, 10, 20), (6, 1, 3, 3), {"padding": 1, "stride": 2, "groups": 6})]

    def passes():
        results = []
        for input_shape, weight_shape, params in cases:
            x = random(np.random.default_rng(1), input_shape, dtype)
            w = random(np.random.default_rng(2), weight_shape, dtype)
            y = fastconv.conv(x, w, **params)
            results += [y, fastconv.conv_backward_input(y, w, x.shape, **params),
                        fastconv.conv_backward_weight(y, x, w.shape, **params)]
        return results

    monkeypatch.setattr(_config, "PARALLEL_MIN_WORK", 1 << 62)
    serial = passes()
    monkeypatch.setattr(_config, "PARALLEL_MIN_WORK", 0)
    for got, want in zip(passes(), serial):
        np.testing.assert_array_equal(got, want)


# Depthwise problems for the channel-block kernels (fastconv._kernels.depthwise): one,
# several and partial blocks of channels; batches split into groups of samples or not;
# unit strides (one extended run) and strides with several column phases; dilation;
# padding wider than the window; input rows and columns that no window reads; ranks 1-3;
# blocks larger than depthwise.L1_BYTES, filled and emptied a row of channels at a time.
DEPTHWISE_CASES = [
    ((3, 16, 7, 7), (3, 3), {"padding": 1}),
    ((2, 17, 9, 11), (5, 5), {"stride": 2, "padding": 2}),
    ((1, 33, 10, 13), (3, 2), {"stride": (2, 3), "dilation": (2, 1), "padding": (0, 1)}),
    ((4, 16, 20), (4,), {"stride": 3, "dilation": 2, "padding": 3}),
    ((2, 18, 5, 7, 8), (2, 3, 3), {"stride": (2, 1, 2), "dilation": (1, 2, 1),
                                   "padding": (1, 1, 0)}),
    ((2, 24, 6, 6), (3, 3), {"stride": 2, "padding": 4}),
    ((20, 16, 4, 5), (2, 3), {"dilation": (1, 2), "padding": (1, 2)}),
    ((1, 16, 22, 22), (3, 3), {"padding": 1}),
    ((2, 17, 30, 32), (3, 3), {"stride": 2, "padding": 1}),
]


def _3x3_depthwise_by_rows(monkeypatch):
    """Route 3x3 depthwise problems to the rows kernels wherever they apply."""
    monkeypatch.setattr(_kernels, "COLUMNS_MAX_PLANE_BYTES", -1)
    monkeypatch.setattr(_kernels, "WINDOW3_MIN_WIDTH", 1)


def _without_3x3_depthwise_kernels(monkeypatch):
    """Route 3x3 depthwise problems to the kernels they would take without the 3x3 ones
    (by rows and down columns)."""
    monkeypatch.setattr(_kernels, "_depthwise_3x3", lambda *args: False)


def _loop_passes(x, w, dy, window, groups):
    """The three passes by the loop reference, and the same on absolute values (the
    magnitudes that bound their rounding)."""
    ref = {"stride": window.stride, "pad_low": window.pad_low, "dilation": window.dilation,
           "groups": groups}

    def passes(x, w, dy):
        return [reference.conv(x, w, pad_high=window.pad_high, **ref),
                reference.conv_backward_input(dy, w, x.shape, **ref),
                reference.conv_backward_weight(dy, x, w.shape, **ref)]

    return passes(x, w, dy), passes(abs(x), abs(w), abs(dy))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", range(len(DEPTHWISE_CASES)))
def test_depthwise_channel_blocks_match_the_loops_and_the_plane_kernels(case, dtype,
                                                                         monkeypatch):
    input_shape, kernel, params = DEPTHWISE_CASES[case]
    channels = input_shape[1]
    window = unfold_window(input_shape[2:], kernel, **params)
    volume = int(np.prod(kernel))
    assert _kernels._channel_blocks(channels, np.empty((channels, volume)),
                                    window.kernel_args(), np.dtype(dtype).itemsize)
    rng = np.random.default_rng(case)
    x = random(rng, input_shape, dtype)
    w = random(rng, (channels, 1, *kernel), dtype)
    output_shape = (*input_shape[:2], *window.output_size)
    dy = random(rng, output_shape, dtype)

    def passes():
        return [fastconv.conv(x, w, groups=channels, **params),
                fastconv.conv_backward_input(dy, w, x.shape, groups=channels, **params),
                fastconv.conv_backward_weight(dy, x, w.shape, groups=channels, **params)]

    # unit-stride 2-d problems go to the stacked-plane kernels unless told otherwise
    monkeypatch.setattr(_kernels, "stacked_planes", lambda *args: False)
    _without_3x3_depthwise_kernels(monkeypatch)
    blocks = passes()
    monkeypatch.setattr(_kernels, "DEPTHWISE_BLOCK_BYTES", 0)
    planes = passes()
    expected, magnitudes = _loop_passes(x, w, dy, window, channels)
    # Output and input-gradient elements sum at most `volume` products; weight-gradient
    # elements sum one per sample and output position.
    terms = [volume, volume, input_shape[0] * int(np.prod(window.output_size))]
    for name, got, plane, want, magnitude, n in zip(
            ["forward", "backward_input", "backward_weight"], blocks, planes, expected,
            magnitudes, terms):
        label = f"depthwise {name} {case} {np.dtype(dtype)}"
        assert_close(got, want.astype(dtype), magnitude, n, label=label, reference="loops")
        assert_close(got, plane, magnitude, n, label=label,
                     reference="plane kernels")


# Problems for the stacked-plane kernels (fastconv._kernels.stacked), all on the direct
# algorithm (at most 4 channels per group, or few channel pairs): depthwise, groups of
# several input and output channels, one group (target channels in blocks of 8, 4, 2 and
# 1: 3, 4, 6, 9, 15 and 16 of them, both ways); the weight gradient's offsets three at a
# time with and without a remainder (5x5: 25; (3, 2): 6; 1x1: 1); an unpadded 5x5
# window on 14 x 14 (1.96 positions per output); symmetric, asymmetric ("same" with an
# even kernel),
# no and one-sided padding; dilation; rank 1; batches stacked whole or in groups, the
# last one partial (float64 planes of 34 x 42 fit 2 to a task: 5 samples in 2 + 2 + 1).
STACKED_CASES = [
    ((3, 16, 7, 7), (16, 1, 3, 3), {"padding": 1, "groups": 16}),
    ((2, 5, 9, 11), (5, 1, 5, 5), {"padding": 2, "groups": 5}),
    ((2, 5, 9, 11), (5, 1, 3, 2), {"padding": (2, 1), "dilation": (1, 2), "groups": 5}),
    ((2, 4, 9, 10), (4, 1, 2, 4), {"padding": "same", "dilation": (3, 1), "groups": 4}),
    ((4, 7, 20), (7, 1, 4), {"dilation": 2, "padding": 3, "groups": 7}),
    ((2, 6, 6, 6), (6, 1, 1, 1), {"groups": 6}),
    ((2, 6, 6, 6), (6, 1, 3, 3), {"groups": 6}),
    ((5, 3, 32, 40), (3, 1, 3, 3), {"padding": 1, "groups": 3}),
    ((2, 8, 9, 11), (12, 2, 3, 3), {"padding": 1, "groups": 4}),
    ((3, 8, 10, 8), (8, 4, 3, 3), {"padding": 2, "dilation": 2, "groups": 2}),
    ((2, 3, 9, 9), (4, 3, 3, 3), {"padding": (0, 1)}),
    ((2, 4, 17), (8, 1, 3), {"padding": 1, "groups": 4}),
    ((2, 3, 12, 12), (16, 3, 3, 3), {"padding": 1}),
    ((2, 6, 9, 13), (15, 6, 3, 3), {"padding": 1}),
    ((3, 16, 14, 14), (9, 16, 5, 5), {}),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", range(len(STACKED_CASES)))
def test_stacked_planes_match_torch_the_loops_and_the_plane_kernels(case, dtype,
                                                                    monkeypatch):
    input_shape, weight_shape, params = STACKED_CASES[case]
    _without_3x3_depthwise_kernels(monkeypatch)
    plan = fastconv.ConvPlan(input_shape, weight_shape, **params)
    assert plan.algorithm == "direct"
    window = plan.geometry.window
    assert _kernels.stacked_planes(three_d(input_shape[2:]), window.kernel_args())
    rng = np.random.default_rng(case)
    x = random(rng, input_shape, dtype)
    w = random(rng, weight_shape, dtype)
    dy = random(rng, (input_shape[0], weight_shape[0], *window.output_size), dtype)

    def passes():
        return [fastconv.conv(x, w, **params),
                fastconv.conv_backward_input(dy, w, x.shape, **params),
                fastconv.conv_backward_weight(dy, x, w.shape, **params)]

    stacked = passes()
    monkeypatch.setattr(_kernels, "stacked_planes", lambda *args: False)
    monkeypatch.setattr(_kernels, "DEPTHWISE_BLOCK_BYTES", 0)
    planes = passes()
    groups = params.get("groups", 1)
    expected, magnitudes = _loop_passes(x, w, dy, window, groups)
    torch_passes = torch_conv_passes(x, w, None, dy, **params)
    # an output sums a filter's weights; an input-gradient element one product per
    # output channel of its group and kernel offset; a weight-gradient element one per
    # sample and output position
    terms = [w[0].size, weight_shape[0] // groups * int(np.prod(weight_shape[2:])),
             input_shape[0] * int(np.prod(window.output_size))]
    for name, got, plane, want, magnitude, oracle, n in zip(
            ["forward", "backward_input", "backward_weight"], stacked, planes, expected,
            magnitudes, torch_passes, terms):
        label = f"stacked {name} {case} {np.dtype(dtype)}"
        assert_close(got, want.astype(dtype), magnitude, n, label=label, reference="loops")
        assert_close(got, oracle, magnitude, n, label=label)
        assert_close(got, plane, magnitude, n, label=label, reference="plane kernels")


# float32 rows of 12 go down columns in vectors of 16 lanes, float64 ones in two of 8
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kernels", ["stacked planes", "stacked planes, 4 to 8 channels",
                                     "3x3 rows", "3x3 columns"])
def test_direct_kernels_carry_nan_and_inf_only_to_the_windows_they_are_in(
        monkeypatch, kernels, dtype):
    # Border elements are where the stacked layout puts a row's neighbours side by side
    # (the dropped outputs between them read both), where the 3x3 rows' run over whole
    # rows reads the neighbouring row (those outputs are summed again), and where the
    # 3x3 columns' vectors start before a row or reach past it (masked off): the kept
    # outputs must not see them. The 3x3 rows take the forward pass and the input
    # gradient, the weight gradient then going on stacked planes; the columns all three.
    # From 4 to 8 channels the stacked planes sum blocks of 8 and 4 channels in registers.
    channels, out_channels, groups = 3, 3, 3
    if kernels.startswith("stacked planes"):
        _without_3x3_depthwise_kernels(monkeypatch)
        if kernels.endswith("channels"):
            channels, out_channels, groups = 4, 8, 1
    elif kernels == "3x3 rows":
        _3x3_depthwise_by_rows(monkeypatch)
    x = random(np.random.default_rng(0), (2, channels, 6, 12), dtype)
    w = random(np.random.default_rng(1), (out_channels, channels // groups, 3, 3), dtype)
    x[0, 0, 0, 11] = np.inf
    x[0, 1, 3, 0] = np.nan
    x[1, 2, 5, 11] = -np.inf
    x[1, 0, 2, 7] = np.inf  # the last column of a float64 chunk
    params = {"padding": 1, "groups": groups}
    # the input gradient, from an output gradient with the same holes
    dy = np.resize(x, (2, out_channels, 6, 12))
    y = fastconv.conv(x, w, **params)
    dx = fastconv.conv_backward_input(dy, w, x.shape, **params)
    expected_y, expected_dx = torch_conv_passes(x, w, None, dy, **params)[:2]
    # float32: sums of up to 144 products of unit normals, each rounded to 6e-8
    tolerance = 1e-12 if dtype == np.float64 else 1e-4
    assert_nonfinite_like(y, expected_y, tolerance)
    assert_nonfinite_like(dx, expected_dx, tolerance)
    # the weight gradient from a finite output gradient: finite at the kernel offsets
    # whose windows miss the input's holes
    dy = random(np.random.default_rng(2), dy.shape, dtype)
    dw = fastconv.conv_backward_weight(dy, x, w.shape, **params)
    assert_nonfinite_like(dw, torch_conv_passes(x, w, None, dy, **params)[2], tolerance)
    assert np.isfinite(dw).any()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_3x3_columns_carry_nan_and_inf_of_a_spread_output_gradient_where_it_reaches(dtype):
    # With stride 2 the input gradient's vectors are expanding loads of the output
    # gradient's rows, which start before a row or reach past it (masked off).
    dy = random(np.random.default_rng(0), (2, 3, 6, 12), dtype)
    w = random(np.random.default_rng(1), (3, 1, 3, 3), dtype)
    dy[0, 0, 0, 11] = np.inf
    dy[0, 1, 3, 0] = np.nan
    dy[1, 2, 5, 11] = -np.inf
    dy[1, 0, 2, 7] = np.inf
    params = {"stride": 2, "padding": 1, "groups": 3}
    x = np.zeros((2, 3, 11, 24), dtype)
    dx = fastconv.conv_backward_input(dy, w, x.shape, **params)
    tolerance = 1e-12 if dtype == np.float64 else 1e-5  # sums of up to 4 products
    assert_nonfinite_like(dx, torch_conv_passes(x, w, None, dy, **params)[1], tolerance)
    assert np.isfinite(dx).any()


def _depthwise_3x3_problem(input_shape, params, seed, dtype):
    """A 3x3 depthwise problem: its parameters, the groups added, its window, and random
    ``x``, ``w`` and ``dy``."""
    channels = input_shape[1]
    window = unfold_window(input_shape[2:], 3, **params)
    rng = np.random.default_rng(seed)
    x = random(rng, input_shape, dtype)
    w = random(rng, (channels, 1, 3, 3), dtype)
    dy = random(rng, (input_shape[0], channels, *window.output_size), dtype)
    return {**params, "groups": channels}, window, x, w, dy


def _assert_3x3_passes_close(label, passes, others, x, w, dy, window, params):
    """The first passes of forward, input and weight gradient against the loops, torch
    and ``others``, the same passes by other kernels."""
    expected, magnitudes = _loop_passes(x, w, dy, window, x.shape[1])
    # an output sums a filter's nine weights; an input-gradient element one product per
    # kernel offset; a weight-gradient element one per sample and output position
    terms = [9, 9, x.shape[0] * int(np.prod(window.output_size))]
    for name, got, other, want, magnitude, oracle, n in zip(
            ["forward", "backward_input", "backward_weight"], passes, others, expected,
            magnitudes, torch_conv_passes(x, w, None, dy, **params), terms):
        where = f"{label} {name}"
        assert_close(got, want.astype(x.dtype), magnitude, n, label=where,
                     reference="loops")
        assert_close(got, oracle, magnitude, n, label=where)
        assert_close(got, other, magnitude, n, label=where, reference="other kernels")


# Problems for the 3x3 depthwise kernels (fastconv._kernels.window3), taken here on any
# width: rows as long as the input's ("same": the rows inside the input one run, with
# and without dilation), shorter ones (no padding; padding on one axis only), strides
# (the forward pass only: the input gradient is not a convolution then), padding past
# the window's extent (the input gradient goes elsewhere; with a stride, no window
# inside the input at all), one input row (every window row but one in the padding),
# and planes large enough for "auto" to take them.
WINDOW3_CASES = [
    ((2, 3, 7, 9), {"padding": 1}),
    ((2, 3, 8, 11), {"padding": 2, "dilation": 2}),
    ((2, 3, 7, 9), {}),
    ((2, 3, 6, 10), {"padding": (0, 1)}),
    ((2, 3, 9, 12), {"padding": 1, "stride": 2}),
    ((2, 3, 10, 13), {"stride": (2, 3), "dilation": (1, 2)}),
    ((1, 2, 5, 6), {"padding": 3}),
    ((1, 2, 3, 2), {"padding": 4, "stride": 3}),
    ((2, 2, 1, 20), {"padding": 1}),
    ((1, 2, 70, 130), {"padding": 1}),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", range(len(WINDOW3_CASES)))
def test_3x3_depthwise_rows_match_torch_the_loops_and_the_other_kernels(case, dtype,
                                                                         monkeypatch):
    params, window, x, w, dy = _depthwise_3x3_problem(*WINDOW3_CASES[case], case, dtype)

    def passes():
        return [fastconv.conv(x, w, **params),
                fastconv.conv_backward_input(dy, w, x.shape, **params)]

    taken = []
    convolve = _kernels._window3.convolve
    monkeypatch.setattr(_kernels._window3, "convolve",
                        lambda *args: taken.append(args[1]) or convolve(*args))
    if _kernels._three_by_three(x[:, :, None].shape, w.reshape(w.shape[0], 9),
                                window.kernel_args()) != "rows":
        _3x3_depthwise_by_rows(monkeypatch)
    rows = passes()
    # the input gradient comes by rows where it is the convolution with turned filters
    turned = _kernels.stacked_planes(three_d(x.shape[2:]), window.kernel_args())
    assert taken == ([False, True] if turned else [False])
    _without_3x3_depthwise_kernels(monkeypatch)
    _assert_3x3_passes_close(f"3x3 rows {case} {np.dtype(dtype)}", rows, passes(),
                             x, w, dy, window, params)


# Problems for the 3x3 depthwise kernels down columns (fastconv._kernels.columns): rows
# of one, of up to 8 (float32 in one vector of 8 lanes) and longer (float32 in vectors
# of 16, float64 of 8), with a partial last vector; one and two input rows; dilation
# down the rows (a walk for each residue, the last rows alone) and along them; no
# padding, padding on one axis, and padding past the window's extent (the input
# gradient goes elsewhere); the largest float64 planes they take; batches and channels
# split unevenly among the threads; stride 2 (the forward pass and the weight gradient:
# each tap the even lanes of a vector twice as wide; the input gradient over the output
# gradient spread out; one input row, 20 outputs a row; no padding, with rows and
# columns that no window reads; padding past the window's extent; planes too large for
# the other passes to go down columns, but for those in float32 with stride 2).
COLUMNS_CASES = [
    ((2, 3, 7, 7), {"padding": 1}),
    ((1, 2, 1, 1), {"padding": 1}),
    ((3, 5, 2, 8), {"padding": 1}),
    ((2, 3, 9, 9), {}),
    ((2, 3, 6, 17), {"padding": (0, 1)}),
    ((2, 2, 11, 20), {"padding": 2, "dilation": 2}),
    ((2, 3, 10, 13), {"padding": (3, 1), "dilation": (3, 1)}),
    ((1, 4, 6, 33), {"padding": (1, 2), "dilation": (1, 2)}),
    ((1, 2, 5, 6), {"padding": 3}),
    ((1, 2, 64, 64), {"padding": 1}),
    ((2, 3, 9, 17), {"padding": 1, "stride": 2}),
    ((2, 2, 10, 13), {"padding": (2, 0), "stride": 2, "dilation": (2, 1)}),
    ((1, 2, 1, 40), {"padding": 1, "stride": 2}),
    ((2, 3, 8, 9), {"stride": 2}),
    ((1, 2, 5, 6), {"padding": 3, "stride": 2}),
    ((1, 2, 66, 67), {"padding": 1, "stride": 2}),
    ((1, 2, 100, 98), {"padding": 1, "stride": 2}),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", range(len(COLUMNS_CASES)))
def test_3x3_depthwise_columns_match_torch_the_loops_and_the_other_kernels(case, dtype,
                                                                            monkeypatch):
    params, window, x, w, dy = _depthwise_3x3_problem(*COLUMNS_CASES[case], case, dtype)

    def passes():
        return [fastconv.conv(x, w, **params),
                fastconv.conv_backward_input(dy, w, x.shape, **params),
                fastconv.conv_backward_weight(dy, x, w.shape, **params)]

    taken = []
    convolve, backward_weight = _kernels._columns.convolve, _kernels._columns.backward_weight
    monkeypatch.setattr(_kernels._columns, "convolve", lambda *args: taken.append(
        "input gradient" if args[1] else "forward") or convolve(*args))
    monkeypatch.setattr(_kernels._columns, "backward_weight", lambda *args: taken.append(
        "weight gradient") or backward_weight(*args))
    columns = passes()
    # The input gradient goes down columns where it is the convolution with turned
    # filters, or with stride 2; the other passes on small planes, and in float32 with
    # stride 2 (on rows shorter than the 3x3 rows take).
    turned = _kernels.stacked_planes(three_d(x.shape[2:]), window.kernel_args())
    others = (x[0, 0].nbytes <= _kernels.COLUMNS_MAX_PLANE_BYTES
              or (x.dtype == np.float32 and window.stride == (2, 2)))
    assert taken == (["forward"] * others
                     + ["input gradient"] * (turned or window.stride == (2, 2))
                     + ["weight gradient"] * others)
    _without_3x3_depthwise_kernels(monkeypatch)
    _assert_3x3_passes_close(f"3x3 columns {case} {np.dtype(dtype)}", columns, passes(),
                             x, w, dy, window, params)


@pytest.mark.skipif(not numba.config.BOUNDSCHECK,
                    reason="an out-of-bounds access is safe to provoke only when bounds-checked")
def test_bounds_checking_stops_the_3x3_columns_outside_their_arrays():
    # The walks' masked loads and stores are not bounds-checked by Numba; bounds-checked
    # builds index each row's first and last element first.
    x = np.zeros((2, 3, 1, 5, 5))
    w = np.zeros((3, 9))
    with pytest.raises(IndexError):  # an output with one sample for two
        _kernels._columns.convolve(0, False, x, w, (1, 1, 1), (1, 1, 1), (0, 1, 1), 1,
                                   np.zeros((1, 3, 1, 5, 5)))
    with pytest.raises(IndexError):  # an input gradient with one sample for two
        _kernels._columns.convolve(0, True, np.zeros((2, 3, 1, 3, 3)), w, (1, 2, 2),
                                   (1, 1, 1), (0, 1, 1), 1, np.zeros((1, 3, 1, 5, 5)))
    with pytest.raises(IndexError):  # an output gradient with two channels for three
        _kernels._columns.backward_weight(0, np.zeros((2, 2, 1, 5, 5)), x, (1, 1, 1),
                                          (1, 1, 1), (0, 1, 1), 1, w)


@pytest.mark.skipif(not numba.config.BOUNDSCHECK,
                    reason="an out-of-bounds access is safe to provoke only when bounds-checked")
def test_bounds_checking_stops_the_stacked_sums_outside_their_buffers():
    # The sums' vector loads and stores are not bounds-checked by Numba; bounds-checked
    # builds index the first and last element that each vector's terms read and write.
    buffers, ext = np.zeros((2, 40)), np.zeros((4, 40))
    starts = np.array([0, 45])  # the second source channel, 5 elements along
    weights = np.zeros(2 * 4)
    stacked._multiply_add(4, starts, weights, buffers, ext, 35)  # reads up to the end
    with pytest.raises(IndexError):  # a length reading past the buffers
        stacked._multiply_add(4, starts, weights, buffers, ext, 36)
    with pytest.raises(IndexError):  # a block of 4 target channels into 3 sums
        stacked._multiply_add(4, starts, weights, buffers, ext[:3], 35)
    # the weight gradient's blocks: 4 output-gradient rows by 4 terms
    terms = np.array([0, 1, 2, 45])
    here, products = np.ones(40), np.zeros(16)
    stacked._products(buffers, terms, 0, ext, here, 35, products)
    with pytest.raises(IndexError):  # a length reading past the buffers
        stacked._products(buffers, terms, 0, ext, here, 36, products)
    with pytest.raises(IndexError):  # 3 output-gradient rows for 4
        stacked._products(buffers, terms, 0, ext[:3], here, 35, products)
    with pytest.raises(IndexError):  # room for 15 sums of 16
        stacked._products(buffers, terms, 0, ext, here, 35, products[:15])


def test_3x3_depthwise_kernels_take_3x3_planes_by_size_and_stride(monkeypatch):
    def kernel(size, kernel=3, out_channels=4, dtype=np.float64, **params):
        window = unfold_window(size, kernel, **params)
        weight = np.empty((out_channels, kernel ** len(size)), dtype)
        return _kernels._three_by_three((2, 4, *three_d(size)), weight, window.kernel_args())

    wide = _kernels.WINDOW3_MIN_WIDTH
    small = _kernels.COLUMNS_MAX_PLANE_BYTES // 8  # float64 elements
    large = (small // wide + 1, wide)
    assert kernel((1, small), padding=1) == "columns"
    assert kernel((2, small // 2), padding=3, dilation=2) == "columns"
    assert kernel((1, small + 1), padding=1) == "rows"  # one element too many
    assert kernel((1, small + 1), padding=1, dtype=np.float32) == "columns"
    assert kernel(large, padding=1) == "rows"
    assert kernel((large[0], 2 * wide + 1), padding=1, stride=2) == "rows"
    assert kernel((2 * large[0], wide - 1), padding=1) is None  # the stacked planes
    assert kernel((5, 5), padding=1, stride=2) == "columns"
    # larger planes with stride 2, where the rows do not take them: float32 only
    assert kernel((2 * large[0], wide), padding=1, stride=2, dtype=np.float32) == "columns"
    assert kernel((2 * large[0], wide), padding=1, stride=2) is None
    assert kernel((5, 5), padding=1, stride=(1, 2)) is None  # the channel blocks
    assert kernel((5, 5), padding=1, stride=3) is None
    assert kernel((5, 5), kernel=5, padding=2) is None
    assert kernel((5, 5), out_channels=8, padding=1) is None  # two outputs per channel
    assert kernel((3, 5, 5), padding=1) is None  # 3-d

    taken = []
    for module, name, label in [(_kernels._window3, "convolve", "rows"),
                                (_kernels._columns, "convolve", "columns"),
                                (_kernels._columns, "backward_weight",
                                 "columns weight gradient"),
                                (_kernels._stacked, "convolve", "stacked"),
                                (_kernels._stacked, "backward_weight",
                                 "stacked weight gradient")]:
        monkeypatch.setattr(module, name, lambda *args, label=label: taken.append(label))
    w = np.ones((4, 1, 3, 3))
    for size in (large, (5, wide)):
        x = np.ones((2, 4, *size))
        fastconv.conv(x, w, padding=1, groups=4)
        fastconv.conv_backward_input(x, w, x.shape, padding=1, groups=4)
        fastconv.conv_backward_weight(x, x, w.shape, padding=1, groups=4)
    # with stride 2 the input gradient goes down columns on planes of any size
    fastconv.conv_backward_input(np.ones((2, 4, *(-(-n // 2) for n in large))), w,
                                 (2, 4, *large), stride=2, padding=1, groups=4)
    assert taken == ["rows", "rows", "stacked weight gradient",
                     "columns", "columns", "columns weight gradient", "columns"]


@pytest.mark.parametrize(("size", "kernel", "stride", "dtype", "taker"), [
    (7, 3, 1, np.float64, "columns"),
    (14, 3, 1, np.float64, "columns"),
    (14, 5, 1, np.float64, "stacked planes"),
    (14, 3, 2, np.float64, "columns"),
    (14, 3, 3, np.float64, "channel blocks"),
    # larger planes with stride 2, the forward pass by rows on the larger one
    (112, 3, 2, np.float64, "plane by plane"),
    (112, 3, 2, np.float32, "columns"),
    (160, 3, 2, np.float32, "columns"),
])
def test_depthwise_weight_gradient_takes_the_direct_kernels_by_window_and_stride(
        monkeypatch, size, kernel, stride, dtype, taker):
    taken = []
    for name, module in [("channel blocks", _kernels._depthwise),
                         ("stacked planes", _kernels._stacked),
                         ("columns", _kernels._columns),
                         ("plane by plane", _kernels._direct)]:
        monkeypatch.setattr(module, "backward_weight",
                            lambda *args, name=name: taken.append(name))
    channels = 16
    x = np.ones((2, channels, size, size), dtype)
    w = np.ones((channels, 1, kernel, kernel), dtype)
    dy = np.ones((2, channels, -(-size // stride), -(-size // stride)), dtype)
    fastconv.conv_backward_weight(dy, x, w.shape, stride=stride, padding=kernel // 2,
                                  groups=channels)
    assert taken == [taker]


@pytest.mark.parametrize("width", [1, 3, 7, 8, 9, 14, 17])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_stacking_copies_rows_in_vectors_and_touches_nothing_else(width, dtype):
    # Rows are copied in masked vectors: exactly the rows' elements are written, in the
    # stack (its padding must stay as it is) and in the planes (the next plane may be
    # another thread's); the array's last plane is read exactly.
    batch, channels, height, top, left, right = 3, 4, 3, 1, 2, 1
    rows, row_length = height + 2 * top, left + width + right
    rng = np.random.default_rng(width)
    planes = random(rng, (batch, channels, 1, height, width), dtype)
    stack = np.full(batch * rows * row_length, np.inf, dtype)
    for channel in (2, channels - 1):  # then the array's last plane, into the same stack
        stacked._stack(planes, 0, batch, channel, top, left, rows, row_length, stack)
        expected = np.full((batch, rows, row_length), np.inf, dtype)
        expected[:, top:top + height, left:left + width] = planes[:, channel, 0]
        np.testing.assert_array_equal(stack, expected.ravel())

    sums = random(rng, stack.shape, dtype)
    target = np.full_like(planes, np.inf)
    stacked._unstack(sums, 1, 2, 1, rows, row_length, target)
    written = np.isfinite(target)
    assert written[1:3, 1].all() and written.sum() == 2 * height * width
    expected = sums[:2 * rows * row_length].reshape(2, rows, row_length)[:, :height, :width]
    np.testing.assert_array_equal(target[1:3, 1, 0], expected)


def test_stacked_planes_take_unit_strides_within_the_windows_extent():
    def stacked(input_size, kernel, **params):
        window = unfold_window(input_size, kernel, **params)
        return _kernels.stacked_planes(three_d(input_size), window.kernel_args())

    assert stacked((7, 7), 3, padding=1)
    assert stacked((7, 7), 3, padding=(2, 0))  # padding as wide as the window's extent
    assert stacked((9,), 3, padding=4, dilation=2)
    assert not stacked((7, 7), 3, padding=3)  # wider: the input gradient would crop
    assert not stacked((7, 7), 3, padding=1, stride=(1, 2))
    assert not stacked((3, 7, 7), 3, padding=1)  # 3-d


def test_depthwise_channel_blocks_take_small_planes_and_leave_large_ones():
    def blocks(size, channels, weight_channels=None, kernel=3):
        window = unfold_window((size, size), kernel, padding=1)
        weight = np.empty((weight_channels or channels, kernel * kernel))
        return _kernels._channel_blocks(channels, weight, window.kernel_args(), 4)

    assert blocks(56, channels=16)  # float32: 58 * 58 rows of 16 lanes, 215 KiB
    assert not blocks(112, channels=16)  # 114 * 114 rows, 832 KiB: plane by plane
    assert not blocks(7, channels=16, weight_channels=32)  # two outputs per channel
    assert not blocks(7, channels=8)  # half a block
