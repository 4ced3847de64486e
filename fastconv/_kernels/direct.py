"""Direct kernels for convolutions with narrow groups, depthwise ones above all.

With few channels per group, the im2col GEMMs degenerate into thin products that BLAS
runs far below its peak, so these kernels convolve each group directly instead.
Arrays are 5-d ``(N, C, D, H, W)`` as in :mod:`.unfold`; the weight is
``(K, group_channels * volume)``, and output channel ``k`` of group ``g = k // (K / G)``
reads input channels ``g * group_channels ...``. Zero padding is implicit, through the
same spans as im2col's, computed once per kernel offset. Inner loops run over 1-d
slices with unit stride where possible: the form LLVM vectorises.
"""

import numpy as np
from numba import prange

from .._config import jit
from .unfold import _span_table


@jit(inline=True)
def _layout(weight_columns, channels, out_channels, kernel, stride, dilation, pad_low,
            input_size, output_size):
    """Kernel volume, input and output channels per group, and the span table."""
    table = _span_table(kernel, stride, dilation, pad_low, input_size, output_size)
    volume = table.shape[0]
    group_channels = weight_columns // volume
    return volume, group_channels, out_channels * group_channels // channels, table


@jit(parallel=True)
def forward(x, weight, kernel, stride, dilation, pad_low, output_size, y):
    # Overwrites y. Each (sample, output channel) is one task: no races.
    batch, channels, depth, height, width = x.shape
    out_channels = y.shape[1]
    volume, group_channels, group_out, table = _layout(
        weight.shape[1], channels, out_channels, kernel, stride, dilation, pad_low,
        (depth, height, width), output_size)
    sd, sh, sw = stride
    for task in prange(batch * out_channels):
        n = task // out_channels
        k = task % out_channels
        out = y[n, k]
        out[:] = 0
        for c in range(group_channels):
            image = x[n, k // group_out * group_channels + c]
            for offset in range(volume):
                d_lo, d_hi, h_lo, h_hi, w_lo, w_hi, z0, y0, x0 = table[offset]
                alpha = weight[k, c * volume + offset]
                count = w_hi - w_lo
                s0 = w_lo * sw + x0
                for a in range(d_lo, d_hi):
                    for b in range(h_lo, h_hi):
                        target = out[a, b, w_lo:w_hi]
                        source = image[a * sd + z0, b * sh + y0, s0:s0 + (count - 1) * sw + 1]
                        if sw == 1:  # unit stride: the loop LLVM vectorises
                            for q in range(count):
                                target[q] += alpha * source[q]
                        else:
                            for q in range(count):
                                target[q] += alpha * source[q * sw]


@jit(parallel=True)
def backward_input(grad_output, weight, kernel, stride, dilation, pad_low, output_size, dx):
    # Overwrites dx. Each (sample, input channel) is one task: no races.
    batch, channels, depth, height, width = dx.shape
    out_channels = grad_output.shape[1]
    volume, group_channels, group_out, table = _layout(
        weight.shape[1], channels, out_channels, kernel, stride, dilation, pad_low,
        (depth, height, width), output_size)
    sd, sh, sw = stride
    for task in prange(batch * channels):
        n = task // channels
        c = task % channels
        image = dx[n, c]
        image[:] = 0
        first = c // group_channels * group_out
        column = c % group_channels * volume
        for k in range(first, first + group_out):
            grad = grad_output[n, k]
            for offset in range(volume):
                d_lo, d_hi, h_lo, h_hi, w_lo, w_hi, z0, y0, x0 = table[offset]
                alpha = weight[k, column + offset]
                count = w_hi - w_lo
                t0 = w_lo * sw + x0
                for a in range(d_lo, d_hi):
                    for b in range(h_lo, h_hi):
                        target = image[a * sd + z0, b * sh + y0, t0:t0 + (count - 1) * sw + 1]
                        source = grad[a, b, w_lo:w_hi]
                        if sw == 1:
                            for q in range(count):
                                target[q] += alpha * source[q]
                        else:
                            for q in range(count):
                                target[q * sw] += alpha * source[q]


@jit(parallel=True)
def backward_weight(grad_output, x, kernel, stride, dilation, pad_low, output_size, dw):
    # Overwrites dw (K, group_channels * volume). Each output channel is one task.
    batch, channels, depth, height, width = x.shape
    out_channels = grad_output.shape[1]
    volume, group_channels, group_out, table = _layout(
        dw.shape[1], channels, out_channels, kernel, stride, dilation, pad_low,
        (depth, height, width), output_size)
    sd, sh, sw = stride
    ow = output_size[2]
    for k in prange(out_channels):
        # Products are summed lane-wise over output columns first, which vectorises,
        # then across the lanes.
        lanes = np.zeros(ow, dw.dtype)
        for c in range(group_channels):
            channel = k // group_out * group_channels + c
            for offset in range(volume):
                d_lo, d_hi, h_lo, h_hi, w_lo, w_hi, z0, y0, x0 = table[offset]
                count = w_hi - w_lo
                s0 = w_lo * sw + x0
                lanes[:] = 0
                for n in range(batch):
                    grad = grad_output[n, k]
                    image = x[n, channel]
                    for a in range(d_lo, d_hi):
                        for b in range(h_lo, h_hi):
                            line = grad[a, b, w_lo:w_hi]
                            row = image[a * sd + z0, b * sh + y0, s0:s0 + (count - 1) * sw + 1]
                            if sw == 1:
                                for q in range(count):
                                    lanes[q] += line[q] * row[q]
                            else:
                                for q in range(count):
                                    lanes[q] += line[q] * row[q * sw]
                dw[k, c * volume + offset] = lanes.sum()
