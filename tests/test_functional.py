"""The public functions against PyTorch, over ranks, dtypes and every argument form."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import fastconv
from fastconv import _kernels

from .oracle import (
    assert_close,
    assert_nonfinite_like,
    random,
    torch_conv_passes,
    torch_conv_transpose_passes,
)

# Per rank: input spatial size and a kernel with an even extent, so that padding="same"
# must pad asymmetrically somewhere.
SPATIAL = {1: ((11,), (4,)), 2: ((7, 6), (3, 2)), 3: ((5, 4, 6), (2, 3, 2))}
BATCH, CHANNELS, OUT_CHANNELS = 2, 4, 8

CONV_CASES = {
    "defaults": {},
    "stride2": {"stride": 2},
    "pad1": {"padding": 1},
    "valid": {"padding": "valid"},
    "same": {"padding": "same"},
    "same_dilated": {"padding": "same", "dilation": 2},
    "stride_pad_dilation": {"stride": 2, "padding": 1, "dilation": 2},
    "groups2": {"groups": 2, "padding": 1},
    "depthwise": {"groups": CHANNELS, "padding": 1},
    "reflect": {"padding": 2, "padding_mode": "reflect"},
    "replicate_stride": {"padding": 1, "padding_mode": "replicate", "stride": 2},
    "circular_same": {"padding": "same", "padding_mode": "circular", "dilation": 2},
    "reflect_groups": {"padding": "same", "padding_mode": "reflect", "groups": 2},
    "tuples": "per-dimension tuples",
}


def _case(rank, name):
    """A case's parameters; "tuples" gives every dimension its own stride/padding/dilation."""
    if name == "tuples":
        return {"stride": (1, 2, 1)[:rank], "padding": (2, 0, 1)[:rank],
                "dilation": (2, 1, 1)[:rank]}
    return CONV_CASES[name]


def _problem(rank, dtype, params, *, bias=True, seed=0):
    rng = np.random.default_rng(seed)
    size, kernel = SPATIAL[rank]
    groups = params.get("groups", 1)
    x = random(rng, (BATCH, CHANNELS, *size), dtype)
    w = random(rng, (OUT_CHANNELS, CHANNELS // groups, *kernel), dtype)
    b = random(rng, (OUT_CHANNELS,), dtype) if bias else None
    return x, w, b


def _check_conv_passes(x, w, b, params, label):
    """Forward and the three backward passes of fastconv against torch autograd."""
    rng = np.random.default_rng(1)
    y = fastconv.conv(x, w, b, **params)
    dy = random(rng, y.shape, x.dtype)
    expected = torch_conv_passes(x, w, b, dy, **params)
    magnitude = torch_conv_passes(np.abs(x), np.abs(w), None if b is None else np.abs(b),
                                  np.abs(dy), **params)
    kernel_terms = w.shape[1] * math.prod(w.shape[2:])
    per_channel = y.shape[0] * math.prod(y.shape[2:])
    assert_close(y, expected[0], magnitude[0], kernel_terms + 1, label=f"{label} forward")
    dx = fastconv.conv_backward_input(dy, w, x.shape, **params)
    group_out = w.shape[0] // params.get("groups", 1)
    assert_close(dx, expected[1], magnitude[1], group_out * math.prod(w.shape[2:]),
                 label=f"{label} backward_input")
    dw = fastconv.conv_backward_weight(dy, x, w.shape, **params)
    assert_close(dw, expected[2], magnitude[2], per_channel, label=f"{label} backward_weight")
    if b is not None:
        db = fastconv.conv_backward_bias(dy)
        assert_close(db, expected[3], magnitude[3], per_channel, label=f"{label} backward_bias")


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("case", list(CONV_CASES))
@pytest.mark.parametrize("rank", [1, 2, 3])
def test_conv_matches_torch(rank, case, dtype, bias):
    params = _case(rank, case)
    x, w, b = _problem(rank, dtype, params, bias=bias)
    _check_conv_passes(x, w, b, params, f"rank{rank} {case} {np.dtype(dtype)}")


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("case", ["pad1", "same_dilated", "reflect_groups", "depthwise", "tuples"])
@pytest.mark.parametrize("rank", [1, 2, 3])
def test_long_rows_match_torch(rank, case, dtype):
    """Rows long enough for the kernels' slice-copy form (the cases above have short
    rows, which take the table of positions)."""
    params = _case(rank, case)
    rng = np.random.default_rng(2)
    size = (*SPATIAL[rank][0][:-1], 3 * _kernels.LONG_ROW + 3)  # also with stride 2
    groups = params.get("groups", 1)
    x = random(rng, (BATCH, CHANNELS, *size), dtype)
    w = random(rng, (OUT_CHANNELS, CHANNELS // groups, *SPATIAL[rank][1]), dtype)
    _check_conv_passes(x, w, random(rng, (OUT_CHANNELS,), dtype), params,
                       f"rank{rank} long rows {case} {np.dtype(dtype)}")


@pytest.mark.parametrize("rank", [1, 2, 3])
def test_fixed_rank_functions(rank):
    x, w, b = _problem(rank, np.float64, {})
    expected = fastconv.conv(x, w, b, padding=1)
    fixed = getattr(fastconv, f"conv{rank}d")
    np.testing.assert_array_equal(fixed(x, w, b, padding=1), expected)
    other = getattr(fastconv, f"conv{rank % 3 + 1}d")
    with pytest.raises(ValueError, match=f"needs a weight with {rank % 3 + 3} dimensions"):
        other(x, w)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("rank", [1, 2, 3])
def test_backward_functions_match_torch_nn_grad(rank, dtype):
    params = {"stride": 2, "padding": 1, "dilation": 2, "groups": 2}
    x, w, _ = _problem(rank, dtype, params)
    y = fastconv.conv(x, w, **params)
    dy = random(np.random.default_rng(3), y.shape, dtype)
    grad_input = getattr(torch.nn.grad, f"conv{rank}d_input")
    grad_weight = getattr(torch.nn.grad, f"conv{rank}d_weight")
    tx, tw, tdy = map(torch.from_numpy, (x, w, dy))
    expected_dx = grad_input(x.shape, tw, tdy, **params).numpy()
    expected_dw = grad_weight(tx, w.shape, tdy, **params).numpy()
    magnitude_dx = grad_input(x.shape, tw.abs(), tdy.abs(), **params).numpy()
    magnitude_dw = grad_weight(tx.abs(), w.shape, tdy.abs(), **params).numpy()
    assert_close(fastconv.conv_backward_input(dy, w, x.shape, **params), expected_dx,
                 magnitude_dx, 4 * math.prod(w.shape[2:]), label="nn.grad input")
    assert_close(fastconv.conv_backward_weight(dy, x, w.shape, **params), expected_dw,
                 magnitude_dw, BATCH * math.prod(y.shape[2:]), label="nn.grad weight")


TRANSPOSE_CASES = {
    "defaults": {},
    "stride2": {"stride": 2},
    "stride_pad_outpad": {"stride": 3, "padding": 1, "output_padding": 2},
    "dilation_outpad": {"dilation": 2, "output_padding": 1},  # output_padding >= stride
    "groups": {"groups": 2, "stride": 2, "padding": 1, "output_padding": 1},
    "depthwise": {"groups": CHANNELS, "stride": 2},
    "tuples": {"stride": (2, 1, 3), "padding": (1, 0, 2), "dilation": (1, 2, 1)},
}


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("case", list(TRANSPOSE_CASES))
@pytest.mark.parametrize("rank", [1, 2, 3])
def test_conv_transpose_and_its_backward_functions_match_torch(rank, case, dtype):
    params = {k: v[:rank] if isinstance(v, tuple) else v
              for k, v in TRANSPOSE_CASES[case].items()}
    groups = params.get("groups", 1)
    rng = np.random.default_rng(4)
    size, kernel = SPATIAL[rank]
    x = random(rng, (BATCH, CHANNELS, *size), dtype)
    w = random(rng, (CHANNELS, 6 // groups if groups < CHANNELS else 2, *kernel), dtype)
    b = random(rng, (w.shape[1] * groups,), dtype)
    y = fastconv.conv_transpose(x, w, b, **params)
    dy = random(rng, y.shape, dtype)
    expected, expected_dx, expected_dw = torch_conv_transpose_passes(x, w, b, dy, **params)
    magnitude, magnitude_dx, magnitude_dw = torch_conv_transpose_passes(
        np.abs(x), np.abs(w), np.abs(b), np.abs(dy), **params)
    terms = CHANNELS // groups * math.prod(kernel) + 1
    assert_close(y, expected, magnitude, terms, label=f"conv_transpose rank{rank} {case}")
    fixed = getattr(fastconv, f"conv_transpose{rank}d")
    np.testing.assert_array_equal(fixed(x, w, b, **params), y)
    dx = fastconv.conv_transpose_backward_input(dy, w, x.shape, **params)
    dw = fastconv.conv_transpose_backward_weight(dy, x, w.shape, **params)
    assert_close(dx, expected_dx, magnitude_dx, w.shape[1] * math.prod(kernel),
                 label=f"conv_transpose_backward_input rank{rank} {case}")
    assert_close(dw, expected_dw, magnitude_dw, BATCH * math.prod(size),
                 label=f"conv_transpose_backward_weight rank{rank} {case}")


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("case", ["defaults", "stride2", "stride_pad_outpad", "groups"])
@pytest.mark.parametrize("rank", [1, 2, 3])
def test_conv_transpose_gradients_are_conv_and_backward_weight(rank, case, dtype):
    """d/dx of a transposed conv is the conv; d/dW is conv_backward_weight, roles swapped."""
    params = TRANSPOSE_CASES[case]
    conv_params = {k: v for k, v in params.items() if k != "output_padding"}
    groups = params.get("groups", 1)
    rng = np.random.default_rng(5)
    size, kernel = SPATIAL[rank]
    x = random(rng, (BATCH, CHANNELS, *size), dtype)
    w = random(rng, (CHANNELS, 6 // groups, *kernel), dtype)
    y = fastconv.conv_transpose(x, w, **params)
    dy = random(rng, y.shape, dtype)
    _, expected_dx, expected_dw = torch_conv_transpose_passes(x, w, None, dy, **params)
    _, magnitude_dx, magnitude_dw = torch_conv_transpose_passes(np.abs(x), np.abs(w), None,
                                                                np.abs(dy), **params)
    dx = fastconv.conv(dy, w, **conv_params)
    dw = fastconv.conv_backward_weight(x, dy, w.shape, **conv_params)
    assert_close(dx, expected_dx, magnitude_dx, 6 // groups * math.prod(kernel),
                 label=f"conv_transpose dx rank{rank} {case}")
    assert_close(dw, expected_dw, magnitude_dw, BATCH * math.prod(size),
                 label=f"conv_transpose dw rank{rank} {case}")


# -- arrays: dtypes, layouts, array-likes ------------------------------------------------


def _layouts(a):
    """The same values in every memory layout a caller may hand over."""
    readonly = a.copy()
    readonly.flags.writeable = False
    reversed_copy = a[..., ::-1].copy()
    return {
        "fortran": np.asfortranarray(a),
        "negative_strides": reversed_copy[..., ::-1],
        "strided": np.repeat(a, 2, axis=-1)[..., ::2],
        "channels_last_view": np.moveaxis(np.ascontiguousarray(np.moveaxis(a, 0, -1)), -1, 0),
        "readonly": readonly,
        "list": a.tolist(),
    }


@pytest.mark.parametrize("layout", list(_layouts(np.zeros((1, 1, 1)))))
@pytest.mark.parametrize("rank", [1, 2, 3])
def test_any_layout_gives_the_contiguous_answer(rank, layout):
    params = {"stride": 2, "padding": 1, "groups": 2}
    x, w, b = _problem(rank, np.float64, params)
    y = fastconv.conv(x, w, b, **params)
    dy = random(np.random.default_rng(6), y.shape)
    expected = (y, fastconv.conv_backward_input(dy, w, x.shape, **params),
                fastconv.conv_backward_weight(dy, x, w.shape, **params))
    lx, lw, lb, ldy = (_layouts(a)[layout] for a in (x, w, b, dy))
    got = (fastconv.conv(lx, lw, lb, **params),
           fastconv.conv_backward_input(ldy, lw, x.shape, **params),
           fastconv.conv_backward_weight(ldy, lx, w.shape, **params))
    for g, e in zip(got, expected):
        np.testing.assert_array_equal(g, e)


@pytest.mark.parametrize("rank", [1, 2, 3])
def test_unbatched_input(rank):
    x, w, b = _problem(rank, np.float64, {})
    y = fastconv.conv(x[1], w, b, padding="same")
    torch_conv = getattr(torch.nn.functional, f"conv{rank}d")
    expected = torch_conv(torch.from_numpy(x[1]), torch.from_numpy(w), torch.from_numpy(b),
                          padding="same").numpy()
    assert y.shape == expected.shape == (OUT_CHANNELS, *SPATIAL[rank][0])
    np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-12)
    # w is (OUT_CHANNELS, CHANNELS, *k): a transposed conv from y's channels back to x's
    np.testing.assert_array_equal(fastconv.conv_transpose(y, w, stride=2),
                                  fastconv.conv_transpose(y[np.newaxis], w, stride=2)[0])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_result_dtype_follows_inputs(dtype):
    x, w, b = _problem(2, dtype, {})
    y = fastconv.conv(x, w, b)
    assert y.dtype == dtype
    assert fastconv.conv_backward_input(y, w, x.shape).dtype == dtype
    assert fastconv.conv_backward_weight(y, x, w.shape).dtype == dtype
    assert fastconv.conv_backward_bias(y).dtype == dtype
    assert fastconv.im2col(x, 3).dtype == dtype


def test_inputs_are_never_modified():
    params = {"padding": 2, "padding_mode": "reflect", "groups": 2}
    x, w, b = _problem(2, np.float64, params)
    y = fastconv.conv(x, w, b, **params)
    dy = random(np.random.default_rng(7), y.shape)
    arrays = {"x": x, "w": w, "b": b, "dy": dy, "y": y}
    before = {k: v.copy() for k, v in arrays.items()}
    fastconv.conv(x, w, b, **params)
    fastconv.conv_backward_input(dy, w, x.shape, **params)
    fastconv.conv_backward_weight(dy, x, w.shape, **params)
    fastconv.conv_backward_bias(dy)
    fastconv.conv_transpose(y, w, b[:CHANNELS], stride=2, groups=2)
    cols = fastconv.im2col(x, 3, padding=1)
    cols_before = cols.copy()
    fastconv.col2im(cols, x.shape[2:], 3, padding=1)
    np.testing.assert_array_equal(cols, cols_before)
    for k, v in arrays.items():
        np.testing.assert_array_equal(v, before[k], err_msg=k)


@pytest.mark.parametrize("params", [{"padding": 1, "groups": 2}, {"padding": 1}],
                         ids=["direct", "gemm"])
def test_empty_batch(params):
    _, w, b = _problem(2, np.float32, params)
    x = np.zeros((0, CHANNELS, *SPATIAL[2][0]), np.float32)
    y = fastconv.conv(x, w, b, **params)
    expected = torch_conv_passes(x, w, b, np.zeros((0, OUT_CHANNELS, 7, 7), np.float32),
                                 **params)
    assert y.shape == expected[0].shape == (0, OUT_CHANNELS, 7, 7)
    np.testing.assert_array_equal(fastconv.conv_backward_weight(y, x, w.shape, **params),
                                  np.zeros_like(w))
    np.testing.assert_array_equal(fastconv.conv_backward_bias(y), np.zeros_like(b))
    assert fastconv.conv_backward_input(y, w, x.shape, **params).shape == x.shape


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_nan_and_inf_propagate_like_torch(dtype):
    params = {"padding": 1}
    x, w, b = _problem(2, dtype, params)
    x[0, 1, 2, 3] = np.nan
    x[1, 2, 5, 1] = np.inf
    y = fastconv.conv(x, w, b, **params)
    expected = torch_conv_passes(x, w, b, np.ones(y.shape, dtype), **params)[0]
    assert_nonfinite_like(y, expected, 1e-4)


def test_same_padding_puts_the_extra_element_high():
    x = np.arange(6.0).reshape(1, 1, 6)
    w = np.array([[[1.0, 10.0]]])
    # total padding 1 goes on the high side: outputs x[i] + 10 * x[i + 1], last one x[5]
    np.testing.assert_array_equal(fastconv.conv(x, w, padding="same")[0, 0],
                                  [10.0, 21.0, 32.0, 43.0, 54.0, 5.0])
