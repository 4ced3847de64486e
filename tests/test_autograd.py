"""The autograd primitives: gradients checked numerically to second order (third for
one case), over x, weight and bias, for every rank and the window options."""

from __future__ import annotations

import inspect

import autograd.numpy as anp
import numpy as np
import pytest
from autograd import grad
from autograd.test_util import check_grads

import fastconv
from fastconv import autograd as fca

SIZES = {1: (9,), 2: (7, 6), 3: (5, 4, 5)}

CONV_CASES = {
    "stride and padding": dict(stride=2, padding=1),
    "dilation, same": dict(dilation=2, padding="same"),
    "groups": dict(groups=2, padding=1),
    "reflect": dict(padding=1, padding_mode="reflect"),
    "replicate, stride": dict(padding=2, stride=2, padding_mode="replicate"),
    "circular, dilation": dict(padding=2, dilation=2, padding_mode="circular"),
}
TRANSPOSE_CASES = {
    "stride, output_padding": dict(stride=2, padding=1, output_padding=1),
    "groups, dilation": dict(groups=2, dilation=2),
}
POOL_CASES = {
    "overlapping, padded": dict(kernel_size=3, stride=2, padding=1),
    "ceil_mode": dict(kernel_size=2, ceil_mode=True),
}


def _check(function, *args, order=2):
    """check_grads with respect to every argument together (by default it checks the
    first only)."""
    check_grads(function, modes=["rev"], order=order, argnum=tuple(range(len(args))))(*args)


# (operator, case): convolutions map 4 channels to 6, transposed convolutions too (their
# weight is (in, out // groups, *kernel)).
OPERATOR_CASES = [("conv", case) for case in CONV_CASES] + [
    ("conv_transpose", case) for case in TRANSPOSE_CASES]


@pytest.mark.parametrize(("operator", "case"), OPERATOR_CASES)
@pytest.mark.parametrize("rank", [1, 2, 3])
def test_convolutions_second_order(rank, operator, case):
    params = {**CONV_CASES, **TRANSPOSE_CASES}[case]
    groups = params.get("groups", 1)
    rng = np.random.default_rng(rank)
    x = rng.standard_normal((2, 4, *SIZES[rank]))
    weight_channels = (6, 4 // groups) if operator == "conv" else (4, 6 // groups)
    w = rng.standard_normal((*weight_channels, *(3,) * rank))
    b = rng.standard_normal(6)
    any_rank, fixed = getattr(fca, operator), getattr(fca, f"{operator}{rank}d")
    _check(lambda x, w, b: any_rank(x, w, b, **params), x, w, b)
    _check(lambda x, w, b: fixed(x, w, bias=b, **params), x, w, b)


@pytest.mark.parametrize("rank", [1, 2, 3])
def test_backward_functions_second_order(rank):
    """The backward functions are primitives too, differentiable in both arguments."""
    rng = np.random.default_rng(rank)
    params = dict(stride=2, padding=1)
    x = rng.standard_normal((2, 4, *SIZES[rank]))
    w = rng.standard_normal((6, 4, *(3,) * rank))
    dy = rng.standard_normal(fastconv.conv(x, w, **params).shape)
    _check(lambda dy, w: fca.conv_backward_input(dy, w, x.shape, **params), dy, w)
    _check(lambda dy, x: fca.conv_backward_weight(dy, x, w.shape, **params), dy, x)
    xt = rng.standard_normal((2, 6, *SIZES[rank]))
    params = dict(stride=2, output_padding=1)
    dyt = rng.standard_normal(fastconv.conv_transpose(xt, w, **params).shape)
    _check(lambda dy, w: fca.conv_transpose_backward_input(dy, w, xt.shape, **params), dyt, w)
    _check(lambda dy, x: fca.conv_transpose_backward_weight(dy, x, w.shape, **params), dyt, xt)


@pytest.mark.parametrize("case", list(POOL_CASES))
@pytest.mark.parametrize("rank", [1, 2, 3])
def test_pooling_second_order(rank, case):
    params = POOL_CASES[case]
    x = np.random.default_rng(rank).standard_normal((2, 3, *SIZES[rank]))
    max_pool = getattr(fca, f"max_pool{rank}d")
    avg_pool = getattr(fca, f"avg_pool{rank}d")
    _check(lambda x: max_pool(x, **params) ** 2, x)
    _check(lambda x: avg_pool(x, **params) ** 2, x)
    _check(lambda x: avg_pool(x, count_include_pad=False, divisor_override=None, **params), x)
    y, indices = getattr(fastconv, f"max_pool{rank}d")(x, return_indices=True, **params)
    dy = np.random.default_rng(0).standard_normal(y.shape)
    _check(lambda dy: getattr(fca, f"max_pool{rank}d_backward")(dy, indices, x.shape) ** 2,
           dy)
    _check(lambda dy: getattr(fca, f"avg_pool{rank}d_backward")(dy, x.shape, **params) ** 2,
           dy)


def test_a_small_network_to_third_order():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 2, 8, 8))
    w1, w2 = rng.standard_normal((3, 2, 3, 3)), rng.standard_normal((4, 3, 2, 2))

    def network(x, w1, w2):
        hidden = anp.tanh(fca.conv2d(x, w1, padding=1))
        return fca.conv2d(fca.max_pool2d(hidden, 2), w2, stride=2)

    _check(network, x, w1, w2, order=3)


def test_unbatched_inputs():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 7, 6))
    w = rng.standard_normal((6, 2, 3, 3))
    b = rng.standard_normal(6)
    _check(lambda x, w, b: fca.conv2d(x, w, b, padding=1, groups=2), x, w, b)
    _check(lambda x, w, b: fca.conv_transpose2d(x, w, b[:1], stride=2), x,
           rng.standard_normal((4, 1, 3, 3)), b)
    _check(lambda x: fca.max_pool2d(x, 2) + fca.avg_pool2d(x, 2), x)


def test_first_order_gradients_are_the_backward_functions():
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((2, 3, 6, 6)), rng.standard_normal((4, 3, 3, 3))
    dy = rng.standard_normal((2, 4, 3, 3))
    loss = lambda x, w: anp.sum(fca.conv2d(x, w, stride=2, padding=1) * dy)  # noqa: E731
    np.testing.assert_array_equal(grad(loss, 0)(x, w), fastconv.conv_backward_input(
        dy, w, x.shape, stride=2, padding=1))
    np.testing.assert_array_equal(grad(loss, 1)(x, w), fastconv.conv_backward_weight(
        dy, x, w.shape, stride=2, padding=1))


def test_signatures_match_the_functional_api():
    for name in fca.__all__:
        assert inspect.signature(getattr(fca, name)) == inspect.signature(
            getattr(fastconv, name)), name


def test_max_pool_with_indices_is_refused():
    with pytest.raises(ValueError, match="differentiates the maxima only"):
        fca.max_pool2d(np.zeros((1, 1, 4, 4)), 2, return_indices=True)
