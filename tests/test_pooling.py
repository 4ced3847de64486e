"""Pooling against torch and against the loop reference: values, tie-breaking, NaN,
ceil_mode windows, divisors, and both backward functions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st

import fastconv

from . import reference
from .oracle import assert_close

F = torch.nn.functional
MAX_POOL = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}
AVG_POOL = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}
DTYPES = [np.float32, np.float64]

# (spatial size, kernel, stride, padding, dilation, ceil_mode), written for rank 2 and
# cut to the first `rank` entries; stride None is the default (the kernel size).
WINDOWS = {
    "default stride": ((8, 7), (2, 2), None, (0, 0), (1, 1), False),
    "stride 2 padding 1": ((9, 8), (3, 3), (2, 2), (1, 1), (1, 1), False),
    "ceil_mode adds a window": ((8, 8), (3, 3), (2, 2), (1, 1), (1, 1), True),
    "ceil_mode drops the window in the padding": ((5, 5), (2, 2), (2, 2), (1, 1), (1, 1), True),
    "ceil_mode, no padding": ((7, 6), (2, 3), (2, 2), (0, 0), (1, 1), True),
    "stride beyond the kernel": ((9, 10), (2, 2), (3, 4), (0, 1), (1, 1), False),
    "per-dimension": ((10, 7), (4, 3), (1, 2), (2, 0), (1, 1), True),
}
DILATED = {
    "dilation 2": ((9, 9), (3, 3), (1, 1), (1, 1), (2, 2), False),
    "dilation and ceil_mode": ((10, 9), (2, 3), (3, 2), (1, 1), (3, 2), True),
}


def _window(name, rank, table):
    size, kernel, stride, padding, dilation, ceil_mode = table[name]
    cut = lambda t: None if t is None else tuple((t * 2)[:rank])  # noqa: E731
    return cut(size), dict(kernel_size=cut(kernel), stride=cut(stride), padding=cut(padding),
                           dilation=cut(dilation), ceil_mode=ceil_mode)


def _torch_max_pool(x, dy, rank, params):
    xt = torch.tensor(x, requires_grad=True)
    y, indices = MAX_POOL[rank](xt, return_indices=True, **params)
    y.backward(torch.from_numpy(dy))
    return y.detach().numpy(), indices.numpy(), xt.grad.numpy()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", [*WINDOWS, *DILATED])
@pytest.mark.parametrize("rank", [1, 2, 3])
@pytest.mark.parametrize("values", ["ties", "random"])
def test_max_pool_matches_torch(rank, name, dtype, values):
    size, params = _window(name, rank, {**WINDOWS, **DILATED})
    rng = np.random.default_rng(rank)
    shape = (2, 3, *size)
    # Few distinct values make ties in most windows: the first maximum must win.
    x = (rng.integers(0, 3, shape) if values == "ties" else rng.standard_normal(shape))
    x = x.astype(dtype)
    y, indices = getattr(fastconv, f"max_pool{rank}d")(x, return_indices=True, **params)
    dy = rng.standard_normal(y.shape).astype(dtype)
    ty, tindices, tdx = _torch_max_pool(x, dy, rank, params)
    np.testing.assert_array_equal(y, ty)
    np.testing.assert_array_equal(indices, tindices)
    dx = getattr(fastconv, f"max_pool{rank}d_backward")(dy, indices, x.shape)
    magnitude = getattr(fastconv, f"max_pool{rank}d_backward")(np.abs(dy), indices, x.shape)
    assert_close(dx, tdx, magnitude, int(np.prod(params["kernel_size"])),
                 label=f"max_pool{rank}d {name} backward")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", list(WINDOWS))
@pytest.mark.parametrize("rank", [1, 2, 3])
@pytest.mark.parametrize("divisor", ["include pad", "exclude pad", "override"])
def test_avg_pool_matches_torch(rank, name, dtype, divisor):
    size, params = _window(name, rank, WINDOWS)
    del params["dilation"]
    params["count_include_pad"] = divisor == "include pad"
    rng = np.random.default_rng(rank)
    x = rng.standard_normal((2, 3, *size)).astype(dtype)
    xt = torch.tensor(x, requires_grad=True)
    if divisor == "override":
        params["divisor_override"] = 5
    if divisor == "override" and rank == 1:  # avg_pool1d has no divisor_override
        lead = {"kernel_size": 1, "stride": 1, "padding": 0}
        ty = F.avg_pool2d(xt[:, :, None], **{k: (lead[k], *v) if isinstance(v, tuple) else v
                                             for k, v in params.items()})[:, :, 0]
    else:
        ty = AVG_POOL[rank](xt, **params)
    y = getattr(fastconv, f"avg_pool{rank}d")(x, **params)
    terms = int(np.prod(params["kernel_size"]))
    assert_close(y, ty.detach().numpy(), getattr(fastconv, f"avg_pool{rank}d")(np.abs(x), **params),
                 terms, label=f"avg_pool{rank}d {name} {divisor}")
    dy = rng.standard_normal(y.shape).astype(dtype)
    ty.backward(torch.from_numpy(dy))
    backward = getattr(fastconv, f"avg_pool{rank}d_backward")
    assert_close(backward(dy, x.shape, **params), xt.grad.numpy(),
                 backward(np.abs(dy), x.shape, **params), terms,
                 label=f"avg_pool{rank}d {name} {divisor} backward")


@pytest.mark.parametrize("rank", [1, 2, 3])
def test_max_pool_nan_wins_and_the_last_nan_is_reported(rank):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 2, *(6,) * rank))
    flat = x.reshape(-1)
    flat[rng.choice(flat.size, flat.size // 5, replace=False)] = np.nan
    params = dict(kernel_size=3, stride=2, padding=1)
    y, indices = getattr(fastconv, f"max_pool{rank}d")(x, return_indices=True, **params)
    ty, tindices = MAX_POOL[rank](torch.from_numpy(x), return_indices=True, **params)
    np.testing.assert_array_equal(y, ty.numpy())
    np.testing.assert_array_equal(indices, tindices.numpy())
    assert np.isnan(y).any()


def test_max_pool_of_minus_infinity_points_at_the_first_input_element():
    x = np.full((1, 1, 5, 5), -np.inf)
    y, indices = fastconv.max_pool2d(x, 3, 2, 1, return_indices=True)
    ty, tindices = F.max_pool2d(torch.from_numpy(x), 3, 2, 1, return_indices=True)
    np.testing.assert_array_equal(y, ty.numpy())
    np.testing.assert_array_equal(indices, tindices.numpy())


@pytest.mark.parametrize("rank", [1, 2, 3])
def test_unbatched_input_and_empty_batch(rank):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, *(5,) * rank))
    for name in ("max", "avg"):
        pool = getattr(fastconv, f"{name}_pool{rank}d")
        np.testing.assert_array_equal(pool(x, 2, padding=1), pool(x[None], 2, padding=1)[0])
        empty = pool(np.zeros((0, 3, *(5,) * rank)), 2)
        assert empty.shape == (0, 3, *(2,) * rank)


def test_layouts_and_the_callers_array_is_untouched():
    rng = np.random.default_rng(0)
    base = rng.standard_normal((2, 3, 9, 12))
    views = {"strided": base[:, :, ::2, ::3], "fortran": np.asfortranarray(base),
             "channels last": np.ascontiguousarray(base.transpose(0, 2, 3, 1)).transpose(
                 0, 3, 1, 2), "list": base.tolist()}
    for name, x in views.items():
        before = np.array(x, copy=True)
        expected = fastconv.max_pool2d(np.ascontiguousarray(before), 2)
        np.testing.assert_array_equal(fastconv.max_pool2d(x, 2), expected, err_msg=name)
        np.testing.assert_array_equal(np.asarray(x), before, err_msg=name)


def test_chunked_pooling_equals_one_pass(monkeypatch):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 5, 12, 12))
    whole_max = fastconv.max_pool2d(x, 3, 1, 1, return_indices=True)
    whole_avg = fastconv.avg_pool2d(x, 3, 1, 1)
    whole_back = fastconv.avg_pool2d_backward(whole_avg, x.shape, 3, 1, 1)
    fastconv.set_workspace_limit(3 * 9 * 144 * 8)  # three planes of columns per chunk
    try:
        chunked_max = fastconv.max_pool2d(x, 3, 1, 1, return_indices=True)
        chunked_avg = fastconv.avg_pool2d(x, 3, 1, 1)
        chunked_back = fastconv.avg_pool2d_backward(whole_avg, x.shape, 3, 1, 1)
    finally:
        fastconv.set_workspace_limit(fastconv.plan.DEFAULT_WORKSPACE_LIMIT)
    for whole, chunked in zip((*whole_max, whole_avg, whole_back),
                              (*chunked_max, chunked_avg, chunked_back)):
        np.testing.assert_array_equal(whole, chunked)


@st.composite
def pool_cases(draw):
    rank = draw(st.integers(1, 3))
    kernel = draw(st.lists(st.integers(1, 3), min_size=rank, max_size=rank))
    stride = draw(st.lists(st.integers(1, 3), min_size=rank, max_size=rank))
    padding = [draw(st.integers(0, k // 2)) for k in kernel]
    dilation = draw(st.lists(st.integers(1, 2), min_size=rank, max_size=rank))
    size = draw(st.lists(st.integers(1, 7), min_size=rank, max_size=rank))
    ceil_mode = draw(st.booleans())
    out = reference.pool_output_size(size, kernel, stride, padding, dilation, ceil_mode)
    assume(min(out) >= 1)
    # windows that read only padding are refused; see test_validation
    assume(all(any(0 <= a + j * d < n for j in range(k))
               for n, k, s, p, d in zip(size, kernel, stride, padding, dilation)
               for a in range(-p, 0, s)))
    return size, dict(kernel_size=tuple(kernel), stride=tuple(stride), padding=tuple(padding),
                      dilation=tuple(dilation), ceil_mode=ceil_mode)


@given(pool_cases(), st.booleans(), st.sampled_from([None, 3]))
def test_pooling_matches_the_loop_reference(case, count_include_pad, divisor_override):
    size, params = case
    rank = len(size)
    x = np.random.default_rng(rank).integers(-2, 3, (2, 2, *size)).astype(np.float64)
    y, indices = getattr(fastconv, f"max_pool{rank}d")(x, return_indices=True, **params)
    ry, rindices = reference.max_pool(x, params["kernel_size"], stride=params["stride"],
                                      padding=params["padding"], dilation=params["dilation"],
                                      ceil_mode=params["ceil_mode"])
    np.testing.assert_array_equal(y, ry)
    np.testing.assert_array_equal(indices, rindices)
    del params["dilation"]
    avg = getattr(fastconv, f"avg_pool{rank}d")(x, count_include_pad=count_include_pad,
                                               divisor_override=divisor_override, **params)
    expected = reference.avg_pool(x, params["kernel_size"], stride=params["stride"],
                                  padding=params["padding"], ceil_mode=params["ceil_mode"],
                                  count_include_pad=count_include_pad,
                                  divisor_override=divisor_override)
    # small integers: the sums are exact, only the division rounds
    np.testing.assert_array_equal(avg, expected)


@given(pool_cases())
def test_backward_functions_are_adjoint_to_the_forward(case):
    """<dy, pool(x)> = <backward(dy), x> for the linear average and for max pooling with
    its winners fixed."""
    size, params = case
    rank = len(size)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 2, *size))
    y, indices = getattr(fastconv, f"max_pool{rank}d")(x, return_indices=True, **params)
    dy = rng.standard_normal(y.shape)
    dx = getattr(fastconv, f"max_pool{rank}d_backward")(dy, indices, x.shape)
    np.testing.assert_allclose(np.vdot(dy, y), np.vdot(dx, x), rtol=1e-12, atol=1e-12)
    del params["dilation"]
    avg = getattr(fastconv, f"avg_pool{rank}d")(x, **params)
    dy = rng.standard_normal(avg.shape)
    dx = getattr(fastconv, f"avg_pool{rank}d_backward")(dy, x.shape, **params)
    np.testing.assert_allclose(np.vdot(dy, avg), np.vdot(dx, x), rtol=1e-12, atol=1e-12)
