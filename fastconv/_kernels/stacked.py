"""Depthwise kernels for unit strides: a channel's planes stacked, zero-padded, in one
long run.

With unit strides, output ``(y, x)`` reads the padded input at ``(y + i*dh, x + j*dw)``.
Copy a channel's padded planes, one sample after the other, into a flat *buffer* whose
rows are the padded rows (``row_length`` long), and lay the outputs out on the same
rows: kernel offset ``(i, j)`` is then the fixed distance ``i*dh*row_length + j*dw``
from each output, so every offset is one long unit-stride multiply-add over the whole
stack, which LLVM vectorises, however short the planes' own rows. The outputs'
extended layout, ``ext``, holds the columns past the output's width and the rows
between the samples' outputs too; they are computed and dropped.

Offsets are taken three at a time, so that each pass over ``ext`` loads and stores it
once for three products. Each task is one channel and a group of samples; each worker
thread reuses its buffers from task to task, their padding zeroed once.
:func:`convolve` computes the forward pass and, with the filters turned, the input
gradient. Arrays are 5-d ``(N, C, 1, H, W)`` as in :mod:`.unfold`, the weight
``(C, kh * kw)``.
"""

import numpy as np
from numba import prange

from .._config import jit

#: Samples stacked per task stay within this many bytes, a typical L1 data cache.
L1_BYTES = 32 * 1024
#: Offsets taken together in one pass over ``ext``.
FUSED = 3


@jit(inline=True)
def _samples_per_task(batch, plane_elements, itemsize):
    """Samples stacked in a task: as many as fit :data:`L1_BYTES`."""
    return max(1, min(batch, L1_BYTES // (plane_elements * itemsize)))


@jit(inline=True)
def _offsets(kernel, dilation, row_length):
    """Each kernel offset's distance in the buffer from its output."""
    kh, kw = kernel[1], kernel[2]
    offsets = np.empty(kh * kw, np.int64)
    for i in range(kh):
        for j in range(kw):
            offsets[i * kw + j] = i * dilation[1] * row_length + j * dilation[2]
    return offsets


# The copies and the loops over ext are functions of their own, called from the
# parallel loops: inlined into a parallel region, they ran up to 6 times slower.

@jit()
def _stack(planes, first, count, channel, top, left, rows, row_length, stack):
    """Copy ``planes[first:first + count, channel]`` (``(N, C, 1, h, w)``) into
    ``stack``, sample ``s``'s element ``(y, x)`` at row ``s * rows + top + y``, column
    ``left + x``."""
    height, width = planes.shape[3], planes.shape[4]
    for s in range(count):
        for y in range(height):
            line = stack[((s * rows) + top + y) * row_length + left:]
            source = planes[first + s, channel, 0, y]
            for x in range(width):
                line[x] = source[x]


@jit()
def _unstack(stack, first, count, channel, rows, row_length, planes):
    """The inverse of :func:`_stack` at ``top = left = 0``, into ``planes``."""
    height, width = planes.shape[3], planes.shape[4]
    for s in range(count):
        for y in range(height):
            line = stack[(s * rows + y) * row_length:]
            target = planes[first + s, channel, 0, y]
            for x in range(width):
                target[x] = line[x]


@jit(inline=True)
def _task(task, channels, samples, batch):
    """A task's channel, first sample and number of samples."""
    first = task // channels * samples
    return task % channels, first, min(samples, batch - first)


@jit(inline=True)
def _worker_tasks(worker, workers, tasks):
    """The contiguous range of tasks a worker takes."""
    per_worker = -(-tasks // workers)
    return range(worker * per_worker, min(tasks, (worker + 1) * per_worker))


@jit(inline=True)
def _buffers(samples, rows, row_length, kernel, dilation, dtype):
    """A worker's zeroed buffer, whose last output's windows end ``(kw - 1) * dw``
    past its last row, and its ``ext``."""
    stacked = samples * rows * row_length
    return (np.zeros(stacked + (kernel[2] - 1) * dilation[2], dtype),
            np.zeros(stacked, dtype))



@jit()
def _multiply_add(offsets, taps, buffer, out):
    """``out[e] = sum(taps[t] * buffer[offsets[t] + e])`` over the kernel offsets ``t``."""
    length = out.size
    out[:] = 0
    t = 0
    while t + FUSED <= offsets.size:
        w0, w1, w2 = taps[t], taps[t + 1], taps[t + 2]
        s0 = buffer[offsets[t]:offsets[t] + length]
        s1 = buffer[offsets[t + 1]:offsets[t + 1] + length]
        s2 = buffer[offsets[t + 2]:offsets[t + 2] + length]
        for e in range(length):
            out[e] += w0 * s0[e] + w1 * s1[e] + w2 * s2[e]
        t += FUSED
    for rest in range(t, offsets.size):
        w0 = taps[rest]
        s0 = buffer[offsets[rest]:offsets[rest] + length]
        for e in range(length):
            out[e] += w0 * s0[e]


@jit(parallel=True)
def convolve(turned, source, weight, kernel, dilation, top, left, threads, target):
    # target[n, c] = the unit-stride convolution of source[n, c], placed at (top, left)
    # in zeros as high and wide as the target plus the kernel's extent, with filter c
    # (turned by 180 degrees if ``turned``: the input gradient). Overwrites target.
    batch, channels = source.shape[:2]
    out_h, out_w = target.shape[3], target.shape[4]
    rows = out_h + (kernel[1] - 1) * dilation[1]
    row_length = out_w + (kernel[2] - 1) * dilation[2]
    offsets = _offsets(kernel, dilation, row_length)
    volume = offsets.size
    samples = _samples_per_task(batch, rows * row_length, source.itemsize)
    tasks = channels * -(-batch // samples)
    workers = min(threads, tasks)
    for worker in prange(workers):
        buffer, ext = _buffers(samples, rows, row_length, kernel, dilation, source.dtype)
        taps = np.empty(volume, source.dtype)
        for task in _worker_tasks(worker, workers, tasks):
            channel, first, count = _task(task, channels, samples, batch)
            for t in range(volume):
                taps[t] = weight[channel, volume - 1 - t if turned else t]
            _stack(source, first, count, channel, top, left, rows, row_length, buffer)
            _multiply_add(offsets, taps, buffer,
                          ext[:((count - 1) * rows + out_h) * row_length])
            _unstack(ext, first, count, channel, rows, row_length, target)
