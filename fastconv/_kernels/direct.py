"""Direct kernels for convolutions with narrow groups, depthwise ones above all.

With few channels per group, the im2col GEMMs degenerate into thin products that BLAS
runs far below its peak, so these kernels convolve each group directly instead.
Arrays are 5-d ``(N, C, D, H, W)`` as in :mod:`.unfold`; the weight is
``(K, group_channels * volume)``, and output channel ``k`` of group ``g = k // (K / G)``
reads input channels ``g * group_channels ...``. Zero padding is implicit, through the
same tables as im2col's, and each kernel has the same two forms, by rows (unit-stride
slices, the loops LLVM vectorises) and by positions.
"""

import numpy as np
from numba import prange

from .._config import jit
from .unfold import input_start, window_tables


@jit(inline=True)
def _layout(by_rows, x, weight_columns, out_channels, kernel, stride, dilation, pad_low,
            output_size):
    """:func:`window_tables` of ``x`` (the input or its gradient), and the input and
    output channels per group."""
    table, positions, planes, volume = window_tables(x, by_rows, kernel, stride, dilation,
                                                     pad_low, output_size)
    group_channels = weight_columns // volume
    return (table, positions, planes, volume, group_channels,
            out_channels * group_channels // x.shape[1])


@jit(parallel=True)
def forward(by_rows, x, weight, kernel, stride, dilation, pad_low, output_size, y):
    # Overwrites y. Each (sample, output channel) is one task: no races.
    batch, out_channels = y.shape[:2]
    _, oh, ow = output_size
    sd, sh, _ = stride
    table, positions, planes, volume, group_channels, group_out = _layout(
        by_rows, x, weight.shape[1], out_channels, kernel, stride, dilation, pad_low,
        output_size)
    outputs = y.reshape(batch, out_channels, -1)
    for task in prange(batch * out_channels):
        n = task // out_channels
        k = task % out_channels
        out = outputs[n, k]
        out[:] = 0
        for c in range(group_channels):
            plane = planes[n, k // group_out * group_channels + c]
            for offset in range(volume):
                alpha = weight[k, c * volume + offset]
                if by_rows:
                    d_lo, d_hi, h_lo, h_hi, w_lo, w_hi, z0, y0, x0 = table[offset]
                    for a in range(d_lo, d_hi):
                        for b in range(h_lo, h_hi):
                            target = out[(a * oh + b) * ow + w_lo:(a * oh + b) * ow + w_hi]
                            source = input_start(x, a, b, sd, sh, z0, y0, x0)
                            source_row = plane[source + w_lo:source + w_hi]
                            for q in range(w_hi - w_lo):
                                target[q] += alpha * source_row[q]
                else:
                    for w in range(positions.shape[1]):
                        p = positions[offset, w]
                        if p >= 0:
                            out[w] += alpha * plane[p]


@jit(parallel=True)
def backward_input(by_rows, grad_output, weight, kernel, stride, dilation, pad_low,
                   output_size, dx):
    # Overwrites dx. Each (sample, input channel) is one task: no races.
    batch, channels = dx.shape[:2]
    out_channels = grad_output.shape[1]
    _, oh, ow = output_size
    sd, sh, _ = stride
    table, positions, planes, volume, group_channels, group_out = _layout(
        by_rows, dx, weight.shape[1], out_channels, kernel, stride, dilation, pad_low,
        output_size)
    grads = grad_output.reshape(batch, out_channels, -1)
    for task in prange(batch * channels):
        n = task // channels
        c = task % channels
        plane = planes[n, c]
        plane[:] = 0
        first = c // group_channels * group_out
        column = c % group_channels * volume
        for k in range(first, first + group_out):
            grad = grads[n, k]
            for offset in range(volume):
                alpha = weight[k, column + offset]
                if by_rows:
                    d_lo, d_hi, h_lo, h_hi, w_lo, w_hi, z0, y0, x0 = table[offset]
                    for a in range(d_lo, d_hi):
                        for b in range(h_lo, h_hi):
                            target = input_start(dx, a, b, sd, sh, z0, y0, x0)
                            target_row = plane[target + w_lo:target + w_hi]
                            source = grad[(a * oh + b) * ow + w_lo:(a * oh + b) * ow + w_hi]
                            for q in range(w_hi - w_lo):
                                target_row[q] += alpha * source[q]
                else:
                    for w in range(positions.shape[1]):
                        p = positions[offset, w]
                        if p >= 0:
                            plane[p] += alpha * grad[w]


@jit(parallel=True)
def backward_weight(by_rows, grad_output, x, kernel, stride, dilation, pad_low, output_size,
                    dw):
    # Overwrites dw (K, group_channels * volume). Each output channel is one task.
    batch, out_channels = grad_output.shape[:2]
    _, oh, ow = output_size
    sd, sh, _ = stride
    table, positions, planes, volume, group_channels, group_out = _layout(
        by_rows, x, dw.shape[1], out_channels, kernel, stride, dilation, pad_low, output_size)
    grads = grad_output.reshape(batch, out_channels, -1)
    for k in prange(out_channels):
        # By rows, products are summed lane-wise over output columns first, which
        # vectorises, then across the lanes.
        lanes = np.zeros(ow, dw.dtype)
        for c in range(group_channels):
            channel = k // group_out * group_channels + c
            for offset in range(volume):
                lanes[:] = 0
                d_lo, d_hi, h_lo, h_hi, w_lo, w_hi, z0, y0, x0 = table[offset]
                for n in range(batch):
                    grad = grads[n, k]
                    plane = planes[n, channel]
                    if by_rows:
                        for a in range(d_lo, d_hi):
                            for b in range(h_lo, h_hi):
                                line = grad[(a * oh + b) * ow + w_lo:(a * oh + b) * ow + w_hi]
                                source = input_start(x, a, b, sd, sh, z0, y0, x0)
                                row = plane[source + w_lo:source + w_hi]
                                for q in range(w_hi - w_lo):
                                    lanes[q] += line[q] * row[q]
                    else:
                        total = lanes[0]
                        for w in range(positions.shape[1]):
                            p = positions[offset, w]
                            if p >= 0:
                                total += grad[w] * plane[p]
                        lanes[0] = total
                dw[k, c * volume + offset] = lanes.sum()
