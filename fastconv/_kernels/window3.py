"""Depthwise 3x3 forward pass and input gradient on wide planes, read straight from the
arrays.

Each output row is summed from the three input rows its windows cover, in one loop
along the row that takes all nine kernel offsets for each output: each output is
stored once, and nothing is copied, where the stacked planes (:mod:`.stacked`) copy
every plane into a padded buffer and pass over its outputs once per three offsets. A
window row that falls in the padding reads a row of zeros instead; the outputs whose
windows reach into the padding at the start or end of a row are summed one at a time.
With unit strides and output rows as long as the input's, the rows whose windows lie
in the input are one run. Any stride, dilation and padding; planes are tasks, split
into contiguous ranges among the threads as on the stacked planes. Planes that fit the
L1 cache go down columns instead, with unit strides (:mod:`.columns`; see
``COLUMNS_MAX_PLANE_BYTES`` and ``WINDOW3_MIN_WIDTH`` in :mod:`fastconv._kernels`).

:func:`convolve` computes the forward pass and, with the filters turned by 180 degrees
and unit strides, the input gradient. Arrays are 5-d ``(N, C, 1, H, W)`` as in
:mod:`.unfold`, one output channel per input channel, the weight ``(C, 9)``. Indices
into the rows are unsigned: Numba checks a signed index for wrap-around from the end,
and that check keeps LLVM from vectorising.
"""

import numpy as np
from numba import prange

from .._config import jit
from .stacked import _worker_tasks

#: Kernel rows and columns.
TAPS = 3


@jit(inline=True)
def _inside(outputs, inputs, stride, dilation, pad_low):
    """The outputs ``[first, last)`` along an axis whose windows lie in the input;
    ``first <= outputs``."""
    first = min(outputs, -(-pad_low // stride))
    reach = inputs - 1 + pad_low - (TAPS - 1) * dilation
    last = min(outputs, reach // stride + 1) if reach >= 0 else 0
    return first, max(first, last)


@jit(inline=True)
def _window_row(flat, zero_row, plane, height, width, y):
    """The array and start of input row ``y`` of the plane that starts at
    ``flat[plane]``, or of ``zero_row`` if ``y`` falls outside."""
    return (flat, plane + y * width) if 0 <= y < height else (zero_row, 0)


@jit(inline=True)
def _unsigned_run(starts, shift, stride, count, dilation):
    """:func:`_sum_run`'s arguments, unsigned: the three rows' starts moved by
    ``shift``, the step, the number of outputs and the dilation."""
    return ((np.uint64(starts[0] + shift), np.uint64(starts[1] + shift),
             np.uint64(starts[2] + shift)),
            np.uint64(stride), np.uint64(count), np.uint64(dilation))


# The loops are functions of their own, called from the parallel loop, as on the
# stacked planes (see .stacked).

@jit(contract=True)
def _sum_run(rows, starts, step, count, dilation, weights, target, at):
    """``target[at + q]`` = the sum over ``i, j < 3`` of ``weights[3i + j] *
    rows[i][starts[i] + j * dilation + q * step]``, for ``q < count``; all unsigned."""
    r0, r1, r2 = rows
    s0, s1, s2 = starts
    w00, w01, w02 = weights[0], weights[1], weights[2]
    w10, w11, w12 = weights[3], weights[4], weights[5]
    w20, w21, w22 = weights[6], weights[7], weights[8]
    d1, d2 = dilation, dilation + dilation
    for q in range(count):
        e = q * step
        a, b, c = s0 + e, s1 + e, s2 + e
        target[at + q] = (w00 * r0[a] + w01 * r0[a + d1] + w02 * r0[a + d2]
                          + w10 * r1[b] + w11 * r1[b + d1] + w12 * r1[b + d2]
                          + w20 * r2[c] + w21 * r2[c + d1] + w22 * r2[c + d2])


@jit()
def _convolve_plane(sources, plane, height, width, weights, stride, dilation, pad_low,
                    zero_row, targets, out_plane, out_h, out_w):
    """The plane that starts at ``sources[plane]`` convolved with the nine ``weights``
    into the one that starts at ``targets[out_plane]``."""
    sh, sw = stride[1], stride[2]
    dh, dw = dilation[1], dilation[2]
    rows = _inside(out_h, height, sh, dh, pad_low[1])
    columns = _inside(out_w, width, sw, dw, pad_low[2])
    shift = columns[0] * sw - pad_low[2]
    joined = sw == 1 and out_w == width and columns[1] > columns[0] and rows[1] > rows[0]
    if joined:
        # The rows whose windows lie in the input are one run, from their first output
        # whose window lies in the input to their last; the outputs between, at the
        # rows' ends, read the neighbouring row and are summed again below.
        top = plane + (rows[0] * sh - pad_low[1]) * width
        starts, step, count, dilation_u = _unsigned_run(
            (top, top + dh * width, top + 2 * dh * width), shift, 1,
            (rows[1] - rows[0] - 1) * out_w + columns[1] - columns[0], dw)
        _sum_run((sources, sources, sources), starts, step, count, dilation_u, weights,
                 targets, np.uint64(out_plane + rows[0] * out_w + columns[0]))
    zero = zero_row[0]
    for oy in range(out_h):
        top = oy * sh - pad_low[1]
        r0, s0 = _window_row(sources, zero_row, plane, height, width, top)
        r1, s1 = _window_row(sources, zero_row, plane, height, width, top + dh)
        r2, s2 = _window_row(sources, zero_row, plane, height, width, top + 2 * dh)
        row = out_plane + oy * out_w
        if columns[1] > columns[0] and not (joined and rows[0] <= oy < rows[1]):
            starts, step, count, dilation_u = _unsigned_run(
                (s0, s1, s2), shift, sw, columns[1] - columns[0], dw)
            _sum_run((r0, r1, r2), starts, step, count, dilation_u, weights, targets,
                     np.uint64(row + columns[0]))
        for edge in (range(columns[0]), range(columns[1], out_w)):
            for q in edge:
                total = zero
                for j in range(TAPS):
                    x = q * sw - pad_low[2] + j * dw
                    if 0 <= x < width:
                        total += (weights[j] * r0[s0 + x] + weights[TAPS + j] * r1[s1 + x]
                                  + weights[2 * TAPS + j] * r2[s2 + x])
                targets[row + q] = total


@jit(parallel=True)
def convolve(turned, source, weight, stride, dilation, pad_low, threads, target):
    # The forward pass, x (source) into y (target); with ``turned`` the input gradient
    # (unit strides): dy into dx, the filters turned, pad_low the turned padding.
    # Overwrites target.
    batch, channels = source.shape[:2]
    height, width = source.shape[3], source.shape[4]
    out_h, out_w = target.shape[3], target.shape[4]
    sources, targets = source.reshape(-1), target.reshape(-1)
    planes = batch * channels
    workers = min(threads, planes)
    for worker in prange(workers):
        zero_row = np.zeros(width, source.dtype)
        weights = np.empty(TAPS * TAPS, source.dtype)
        for p in _worker_tasks(worker, workers, planes):
            for t in range(TAPS * TAPS):
                weights[t] = weight[p % channels, TAPS * TAPS - 1 - t if turned else t]
            _convolve_plane(sources, p * height * width, height, width, weights, stride,
                            dilation, pad_low, zero_row, targets, p * out_h * out_w, out_h,
                            out_w)
