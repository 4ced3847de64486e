"""Bad input: every public entry point raises TypeError or ValueError naming the argument."""

from __future__ import annotations

import numpy as np
import pytest

import fastconv

X = np.zeros((2, 4, 8, 8))
W = np.zeros((6, 2, 3, 3))
DY = np.zeros((2, 6, 6, 6))

BAD_INPUT = [
    # (call, exception, message fragment)
    (lambda: fastconv.conv(np.zeros((4, 8)), np.zeros((6, 4, 3, 3))), ValueError,
     r"x must have 4 dimensions"),
    (lambda: fastconv.conv(X, np.zeros((6, 4))), ValueError, "weight must have 3, 4 or 5"),
    (lambda: fastconv.conv(X, np.zeros((6, 3, 3, 3))), ValueError,
     r"x has 4 channels but groups \* weight.shape\[1\] = 1 \* 3 = 3"),
    (lambda: fastconv.conv(X, W, groups=0), ValueError, "groups must be positive, got 0"),
    (lambda: fastconv.conv(X, np.zeros((5, 1, 3, 3)), groups=4), ValueError,
     r"groups=4 must divide out_channels \(weight.shape\[0\]\)=5"),
    (lambda: fastconv.conv(X, W, groups=2.0), TypeError, "groups must be made of ints"),
    (lambda: fastconv.conv(X, W, groups=2, stride=0), ValueError, "stride must be positive"),
    (lambda: fastconv.conv(X, W, groups=2, dilation=(1, -1)), ValueError,
     "dilation must be positive"),
    (lambda: fastconv.conv(X, W, groups=2, padding=-1), ValueError,
     "padding must be non-negative, got -1"),
    (lambda: fastconv.conv(X, W, groups=2, stride=1.5), TypeError,
     "stride must be made of ints, got 1.5"),
    (lambda: fastconv.conv(X, W, groups=2, padding=(1, 1, 1)), ValueError,
     r"padding must be an int or a sequence of 2 ints"),
    (lambda: fastconv.conv(X, W, groups=2, padding="full"), ValueError,
     "padding must be an int, a sequence of 2 ints, 'valid' or 'same', got 'full'"),
    (lambda: fastconv.conv(X, W, groups=2, padding="same", stride=2), ValueError,
     "padding='same' needs stride 1"),
    (lambda: fastconv.conv(X, np.zeros((6, 2, 9, 3)), groups=2), ValueError,
     r"x is too small: spatial dimension 0 has size 8 \(8 after padding\), smaller than the "
     r"dilated kernel size 9"),
    (lambda: fastconv.conv(X, W, groups=2, dilation=4), ValueError, "dilated kernel size 9"),
    (lambda: fastconv.conv(X, W, np.zeros(5), groups=2), ValueError,
     r"bias must have shape \(6,\) for this plan, got \(5,\)"),
    (lambda: fastconv.conv(X, W, np.zeros(6, np.float32), groups=2), TypeError,
     "x, weight, bias must share one dtype, got x is float64, weight is float64, bias is float32"),
    (lambda: fastconv.conv(X, W, groups=2, padding_mode="mirror"), ValueError,
     "padding_mode must be one of"),
    (lambda: fastconv.conv(X, W, groups=2, padding=8, padding_mode="reflect"), ValueError,
     r"padding_mode='reflect' needs padding smaller than the input size: x spatial dimension "
     r"0 has size 8, padding is \(8, 8\)"),
    (lambda: fastconv.conv(X, W, groups=2, padding=9, padding_mode="circular"), ValueError,
     "padding_mode='circular' needs padding at most the input size"),
    (lambda: fastconv.conv(X.astype(np.int64), W), TypeError,
     "x must be a float32 or float64 array, got dtype int64"),
    (lambda: fastconv.conv(X, W.astype(np.float16)), TypeError, "weight must be a float32 or"),
    (lambda: fastconv.conv(X.astype(bool), W), TypeError, "got dtype bool"),
    (lambda: fastconv.conv(X.astype(complex), W), TypeError, "got dtype complex128"),
    (lambda: fastconv.conv(X.astype(object), W), TypeError, "got dtype object"),
    (lambda: fastconv.conv([[1.0], [1.0, 2.0]], W), TypeError,
     "x could not be converted to an array"),
    (lambda: fastconv.conv(X, W.astype(np.float32), groups=2), TypeError,
     "x, weight must share one dtype"),
    (lambda: fastconv.conv_backward_input(DY, W, (2, 4, 9, 9), groups=2), ValueError,
     r"grad_output must have shape \(2, 6, 7, 7\) for this plan, got \(2, 6, 6, 6\)"),
    (lambda: fastconv.conv_backward_input(DY, W, (2, 5, 8, 8), groups=2), ValueError,
     r"input_shape has 5 channels"),
    (lambda: fastconv.conv_backward_input(DY, W, (2, 4, 8), groups=2), ValueError,
     "input_shape must have 4 dimensions"),
    (lambda: fastconv.conv_backward_input(DY, W, 8, groups=2), TypeError,
     "input_shape must be a sequence of ints"),
    (lambda: fastconv.conv_backward_weight(DY, X, (6, 2, 3, 4), groups=2), ValueError,
     r"grad_output must have shape \(2, 6, 6, 5\)"),
    (lambda: fastconv.conv_backward_weight(DY, X, (6, 4, 3, 3), groups=2), ValueError,
     r"x has 4 channels but groups \* weight_shape\[1\] = 2 \* 4 = 8"),
    (lambda: fastconv.conv_backward_bias(np.zeros((2, 6))), ValueError,
     "grad_output must have 3, 4 or 5 dimensions"),
    (lambda: fastconv.conv_transpose(X, np.zeros((4, 2, 3, 3)), stride=2, output_padding=2),
     ValueError, "output_padding must be smaller than either stride or dilation"),
    (lambda: fastconv.conv_transpose(X, np.zeros((3, 2, 3, 3))), ValueError,
     r"x has 4 channels but weight.shape\[0\] = 3"),
    (lambda: fastconv.conv_transpose(X, np.zeros((4, 2, 3, 3)), padding="same"), ValueError,
     "padding of a transposed convolution must be an int"),
    (lambda: fastconv.conv_transpose(X, np.zeros((4, 2, 3, 3)), padding=9), ValueError,
     "non-positive output size"),
    (lambda: fastconv.conv_transpose(X, np.zeros((4, 2, 3, 3)), np.zeros(3)), ValueError,
     r"bias must have shape \(2,\)"),
    (lambda: fastconv.im2col(np.zeros((2, 8)), 3), ValueError, "x must have 3, 4 or 5"),
    (lambda: fastconv.im2col(X, (3, 3, 3)), ValueError, "kernel_size must be an int or a"),
    (lambda: fastconv.im2col(X, 9), ValueError, "x is too small"),
    (lambda: fastconv.col2im(np.zeros((1, 7, 4)), (3, 3), 2), ValueError,
     r"cols must have shape \(N, C \* 4, 4\)"),
    (lambda: fastconv.col2im(np.zeros((1, 4, 5)), (3, 3), 2), ValueError,
     "cols must have shape"),
    (lambda: fastconv.col2im(np.zeros((1, 4, 4)), (3, 3, 3, 3), 2), ValueError,
     "col2im supports 1 to 3 spatial dimensions"),
    (lambda: fastconv.col2im(np.zeros((1, 4, 4)), (0, 3), 2), ValueError,
     "output_size must be positive"),
    (lambda: fastconv.ConvPlan((2, 4, 8, 8), (6, 2, 3, 3), groups=2, dtype=np.int32), TypeError,
     "dtype must be float32 or float64, got int32"),
    (lambda: fastconv.ConvPlan((2, 4, 8, 8), (6, 2, 3, 3), groups=2).forward(X, W.astype(
        np.float32)), TypeError, "weight must have dtype float64 for this plan, got float32"),
    (lambda: fastconv.ConvPlan((2, 4, 8, 8), (6, 2, 3, 3), groups=2).forward(X[:1], W),
     ValueError, r"x must have shape \(2, 4, 8, 8\) for this plan, got \(1, 4, 8, 8\)"),
    (lambda: fastconv.ConvPlan((2, 4, 8, 8), (6, 2, 0, 3), groups=2), ValueError,
     "weight_shape must not have empty dimensions"),
    (lambda: fastconv.ConvPlan((2, 0, 8, 8), (6, 2, 3, 3), groups=2), ValueError,
     "input_shape must have non-empty channel and spatial dimensions"),
    (lambda: fastconv.conv1d(X, W), ValueError, "conv1d needs a weight with 3 dimensions"),
]


@pytest.mark.parametrize(("call", "error", "match"), BAD_INPUT,
                         ids=[f"case{i}" for i in range(len(BAD_INPUT))])
def test_bad_input_raises_a_clear_error(call, error, match):
    with pytest.raises(error, match=match):
        call()
