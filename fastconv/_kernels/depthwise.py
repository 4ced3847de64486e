"""Direct kernels for depthwise convolutions (one input channel per group).

With one input channel per group, the im2col GEMMs degenerate into matrix-vector
products, so these kernels convolve each channel directly instead. Arrays are 5-d
``(N, C, D, H, W)`` as in :mod:`.unfold`; the weight is ``(K, volume)`` with
``K = C * multiplier``: output channel ``k`` reads input channel ``k // multiplier``.
Zero padding is implicit, through the same spans as im2col's. Inner loops run over
1-d slices, a form LLVM vectorises.
"""

import numpy as np
from numba import prange

from .._config import jit
from .unfold import _offset_spans


@jit(parallel=True)
def forward(x, weight, kernel, stride, dilation, pad_low, output_size, y):
    # Overwrites y. Each (sample, output channel) is one task: no races.
    batch, channels, depth, height, width = x.shape
    out_channels = y.shape[1]
    multiplier = out_channels // channels
    sd, sh, sw = stride
    volume = kernel[0] * kernel[1] * kernel[2]
    for task in prange(batch * out_channels):
        n = task // out_channels
        k = task % out_channels
        image = x[n, k // multiplier]
        out = y[n, k]
        out[:] = 0
        for offset in range(volume):
            d_lo, d_hi, h_lo, h_hi, w_lo, w_hi, z0, y0, x0 = _offset_spans(
                offset, kernel, stride, dilation, pad_low, (depth, height, width), output_size)
            alpha = weight[k, offset]
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
    multiplier = grad_output.shape[1] // channels
    sd, sh, sw = stride
    volume = kernel[0] * kernel[1] * kernel[2]
    for task in prange(batch * channels):
        n = task // channels
        c = task % channels
        image = dx[n, c]
        image[:] = 0
        for k in range(c * multiplier, (c + 1) * multiplier):
            grad = grad_output[n, k]
            for offset in range(volume):
                d_lo, d_hi, h_lo, h_hi, w_lo, w_hi, z0, y0, x0 = _offset_spans(
                    offset, kernel, stride, dilation, pad_low, (depth, height, width),
                    output_size)
                alpha = weight[k, offset]
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
    # Overwrites dw (K, volume). Each output channel is one task: no races.
    batch, channels, depth, height, width = x.shape
    out_channels = grad_output.shape[1]
    multiplier = out_channels // channels
    sd, sh, sw = stride
    ow = output_size[2]
    volume = kernel[0] * kernel[1] * kernel[2]
    for k in prange(out_channels):
        c = k // multiplier
        # Products are summed lane-wise over output columns first, which vectorises,
        # then across the lanes.
        lanes = np.zeros(ow, dw.dtype)
        for offset in range(volume):
            d_lo, d_hi, h_lo, h_hi, w_lo, w_hi, z0, y0, x0 = _offset_spans(
                offset, kernel, stride, dilation, pad_low, (depth, height, width), output_size)
            count = w_hi - w_lo
            s0 = w_lo * sw + x0
            lanes[:] = 0
            for n in range(batch):
                grad = grad_output[n, k]
                image = x[n, c]
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
            dw[k, offset] = lanes.sum()
