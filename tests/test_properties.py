"""Property tests: random valid configurations against the loop reference, in float64."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import assume, given
from hypothesis import strategies as st

import fastconv
from fastconv._geometry import resolve_padding

from . import reference
from .oracle import assert_close


@st.composite
def conv_problems(draw):
    rank = draw(st.integers(1, 3))
    groups = draw(st.integers(1, 3))
    channels = groups * draw(st.integers(1, 2))
    out_channels = groups * draw(st.integers(1, 2))
    kernel = tuple(draw(st.integers(1, 3)) for _ in range(rank))
    dilation = tuple(draw(st.integers(1, 2)) for _ in range(rank))
    size = tuple(draw(st.integers(1, 7 if rank < 3 else 5)) for _ in range(rank))
    mode = draw(st.sampled_from(["zeros", "reflect", "replicate", "circular"]))
    if draw(st.booleans()):
        padding, stride = "same", (1,) * rank
    else:
        padding = tuple(draw(st.integers(0, 2)) for _ in range(rank))
        stride = tuple(draw(st.integers(1, 3)) for _ in range(rank))
    low, high = resolve_padding(padding, rank, kernel, stride, dilation)
    limit = {"reflect": lambda p, n: p < n, "circular": lambda p, n: p <= n}.get(
        mode, lambda p, n: True)
    assume(all(limit(lo, n) and limit(hi, n) for lo, hi, n in zip(low, high, size)))
    assume(all(n + lo + hi >= d * (k - 1) + 1
               for n, lo, hi, d, k in zip(size, low, high, dilation, kernel)))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    batch = draw(st.integers(1, 2))
    x = rng.standard_normal((batch, channels, *size))
    w = rng.standard_normal((out_channels, channels // groups, *kernel))
    b = rng.standard_normal(out_channels)
    params = {"stride": stride, "padding": padding, "dilation": dilation, "groups": groups,
              "padding_mode": mode}
    reference_params = {"stride": stride, "pad_low": low, "dilation": dilation,
                        "groups": groups, "mode": mode}
    return x, w, b, params, reference_params, high


@given(conv_problems())
def test_conv_and_its_gradients_match_the_loop_reference(problem):
    x, w, b, params, ref, pad_high = problem
    y = fastconv.conv(x, w, b, **params)
    expected = reference.conv(x, w, b, pad_high=pad_high, **ref)
    magnitude = reference.conv(np.abs(x), np.abs(w), np.abs(b), pad_high=pad_high, **ref)
    kernel = math.prod(w.shape[2:])
    assert_close(y, expected, magnitude, w.shape[1] * kernel + 1, label="forward",
                 reference="loops")
    dy = np.random.default_rng(0).standard_normal(y.shape)
    dx = fastconv.conv_backward_input(dy, w, x.shape, **params)
    assert_close(dx, reference.conv_backward_input(dy, w, x.shape, **ref),
                 reference.conv_backward_input(np.abs(dy), np.abs(w), x.shape, **ref),
                 w.shape[0] * kernel, label="backward_input", reference="loops")
    dw = fastconv.conv_backward_weight(dy, x, w.shape, **params)
    assert_close(dw, reference.conv_backward_weight(dy, x, w.shape, **ref),
                 reference.conv_backward_weight(np.abs(dy), np.abs(x), w.shape, **ref),
                 dy.shape[0] * math.prod(dy.shape[2:]), label="backward_weight",
                 reference="loops")


@st.composite
def transpose_problems(draw):
    rank = draw(st.integers(1, 3))
    groups = draw(st.integers(1, 2))
    channels = groups * draw(st.integers(1, 2))
    kernel = tuple(draw(st.integers(1, 3)) for _ in range(rank))
    stride = tuple(draw(st.integers(1, 3)) for _ in range(rank))
    dilation = tuple(draw(st.integers(1, 2)) for _ in range(rank))
    padding = tuple(draw(st.integers(0, 1)) for _ in range(rank))
    output_padding = tuple(draw(st.integers(0, max(s, d) - 1)) for s, d in zip(stride, dilation))
    size = tuple(draw(st.integers(1, 5)) for _ in range(rank))
    assume(all((n - 1) * s - 2 * p + d * (k - 1) + op + 1 > 0
               for n, s, p, d, k, op in zip(size, stride, padding, dilation, kernel,
                                            output_padding)))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    x = rng.standard_normal((2, channels, *size))
    w = rng.standard_normal((channels, draw(st.integers(1, 2)), *kernel))
    return x, w, {"stride": stride, "padding": padding, "output_padding": output_padding,
                  "dilation": dilation, "groups": groups}


@given(transpose_problems())
def test_conv_transpose_matches_the_loop_reference(problem):
    x, w, params = problem
    y = fastconv.conv_transpose(x, w, **params)
    expected = reference.conv_transpose(x, w, **params)
    magnitude = reference.conv_transpose(np.abs(x), np.abs(w), **params)
    assert_close(y, expected, magnitude, x.shape[1] * math.prod(w.shape[2:]),
                 label="conv_transpose", reference="loops")
