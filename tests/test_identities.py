"""The identities fastconv is built on, and float64 finite-difference gradient checks."""

from __future__ import annotations

import numpy as np
import pytest

import fastconv

from .oracle import random

RANK_SHAPES = {1: ((10,), (3,)), 2: ((7, 6), (3, 2)), 3: ((5, 4, 6), (2, 3, 2))}


def _problem(rank, seed=0, channels=3, out_channels=2, batch=2):
    rng = np.random.default_rng(seed)
    size, kernel = RANK_SHAPES[rank]
    return (random(rng, (batch, channels, *size)), random(rng, (out_channels, channels, *kernel)),
            rng)


@pytest.mark.parametrize("padding", [0, 1])
@pytest.mark.parametrize("rank", [1, 2, 3])
def test_weight_gradient_is_the_conv_of_x_with_dy_as_filter(rank, padding):
    """dW[k, c] = x[:, c] correlated with dY[:, k], the batch playing the channel role."""
    x, w, rng = _problem(rank)
    dy = random(rng, fastconv.conv(x, w, padding=padding).shape)
    dw = fastconv.conv_backward_weight(dy, x, w.shape, padding=padding)
    # Batch as channels: input (C, N, *size), filters (K, N, *out) -> (C, K, *kernel).
    as_conv = fastconv.conv(np.swapaxes(x, 0, 1), np.swapaxes(dy, 0, 1), padding=padding)
    np.testing.assert_allclose(dw, np.swapaxes(as_conv, 0, 1), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("padding", [0, 1])
@pytest.mark.parametrize("rank", [1, 2, 3])
def test_input_gradient_is_the_full_conv_with_the_rotated_filter(rank, padding):
    """dX = "full" convolution of dY with W rotated 180 degrees, channels swapped."""
    x, w, rng = _problem(rank)
    dy = random(rng, fastconv.conv(x, w, padding=padding).shape)
    dx = fastconv.conv_backward_input(dy, w, x.shape, padding=padding)
    spatial = tuple(range(2, w.ndim))
    rotated = np.flip(np.swapaxes(w, 0, 1), axis=spatial)
    full = tuple(k - 1 - padding for k in w.shape[2:])
    np.testing.assert_allclose(dx, fastconv.conv(dy, rotated, padding=full),
                               rtol=1e-12, atol=1e-12)


FD_CASES = [
    {"stride": 2, "padding": 1},
    {"dilation": 2, "padding": "same"},
    {"groups": 3, "padding": 1, "padding_mode": "reflect"},
    {"stride": 2, "padding": 2, "padding_mode": "replicate"},
    {"padding": "same", "padding_mode": "circular"},
]


@pytest.mark.parametrize("case", range(len(FD_CASES)))
@pytest.mark.parametrize("rank", [1, 2, 3])
def test_gradients_match_finite_differences(rank, case):
    """L = sum(r * conv(x, w, b)) is linear in each argument, so central differences are
    exact up to rounding: about eps * |L| / h."""
    params = FD_CASES[case]
    x, w, rng = _problem(rank, seed=case, out_channels=3)
    w = w[:, : 3 // params.get("groups", 1)].copy()
    b = random(rng, (3,))
    r = random(rng, fastconv.conv(x, w, b, **params).shape)

    def loss(x=x, w=w, b=b):
        return float(np.sum(r * fastconv.conv(x, w, b, **params)))

    analytic = {
        "x": fastconv.conv_backward_input(r, w, x.shape, **params),
        "w": fastconv.conv_backward_weight(r, x, w.shape, **params),
        "b": fastconv.conv_backward_bias(r),
    }
    h = 1e-3
    for name, value in {"x": x, "w": w, "b": b}.items():
        numeric = np.zeros_like(value)
        for index in np.ndindex(value.shape):
            plus, minus = value.copy(), value.copy()
            plus[index] += h
            minus[index] -= h
            numeric[index] = (loss(**{name: plus}) - loss(**{name: minus})) / (2 * h)
        np.testing.assert_allclose(analytic[name], numeric, rtol=1e-7, atol=1e-8,
                                   err_msg=f"d/d{name}")
