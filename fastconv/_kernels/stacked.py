"""Direct kernels for unit strides (narrow groups, and depthwise layers where the 3x3
kernels of :mod:`.window3` and :mod:`.columns` do not apply): a channel's planes
stacked, zero-padded, in one long run.

With unit strides, output ``(y, x)`` reads the padded input at ``(y + i*dh, x + j*dw)``.
Copy a channel's padded planes, one sample after the other, into a flat *buffer* whose
rows are the padded rows (``row_length`` long), and lay the outputs out on the same
rows: kernel offset ``(i, j)`` is then the fixed distance ``i*dh*row_length + j*dw``
from each output, so every offset is one long unit-stride multiply-add over the whole
stack, which LLVM vectorises, however short the planes' own rows. The outputs'
extended layout, ``ext``, holds the columns past the output's width and the rows
between the samples' outputs too; they are computed and dropped.

Offsets are taken three at a time, so that each pass over ``ext`` loads and stores it
once for three products, and target channels two at a time, each pair of ``ext`` from
the same loads of the buffer; the multiply-adds are fused (fastmath's ``contract``
flag alone: rounded once, as BLAS rounds them). Each task is one group of channels and
a group of samples: it stacks the group's source channels, then sums its target
channels in ``ext``. Each worker thread reuses its buffers from task to task, their
padding zeroed once. :func:`convolve` computes the forward pass and, with the filters
turned, the input gradient; :func:`backward_weight` the weight gradient, whose sums
over positions are reassociated so that LLVM vectorises them. Arrays are 5-d
``(N, C, 1, H, W)`` as in :mod:`.unfold`, the weight ``(K, C/G * kh * kw)`` as in
:mod:`.direct`.
"""

import numpy as np
from numba import prange

from .._config import jit
from .vector import copy_row

#: Samples stacked per task stay within this many bytes, a typical L1 data cache.
L1_BYTES = 32 * 1024
#: Offsets taken together in one pass over ``ext``.
FUSED = 3


@jit(inline=True)
def _samples_per_task(batch, elements, itemsize):
    """Samples stacked in a task: as many as fit :data:`L1_BYTES`, each taking
    ``elements`` (its planes of a group's source channels)."""
    return max(1, min(batch, L1_BYTES // (elements * itemsize)))


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
# parallel loop: inlined into it, they made the threaded build twice as slow as the
# serial one on a single thread (MobileNetV2's 14x14 depthwise forward pass).

@jit()
def _stack(planes, first, count, channel, top, left, rows, row_length, stack):
    """Copy ``planes[first:first + count, channel]`` (``(N, C, 1, h, w)``) into
    ``stack``, sample ``s``'s element ``(y, x)`` at row ``s * rows + top + y``, column
    ``left + x``; the rest of ``stack`` is left as it is."""
    height, width = planes.shape[3], planes.shape[4]
    source = planes.reshape(-1)
    for s in range(count):
        plane = ((first + s) * planes.shape[1] + channel) * height * width
        for y in range(height):
            copy_row(source, plane + y * width, stack,
                     (s * rows + top + y) * row_length + left, width)


@jit()
def _unstack(stack, first, count, channel, rows, row_length, planes):
    """The inverse of :func:`_stack` at ``top = left = 0``, into ``planes``."""
    height, width = planes.shape[3], planes.shape[4]
    target = planes.reshape(-1)
    for s in range(count):
        plane = ((first + s) * planes.shape[1] + channel) * height * width
        for y in range(height):
            copy_row(stack, (s * rows + y) * row_length, target, plane + y * width, width)


@jit(inline=True)
def _task(task, groups, samples, batch):
    """A task's group, first sample and number of samples."""
    first = task // groups * samples
    return task % groups, first, min(samples, batch - first)


@jit(inline=True)
def _worker_tasks(worker, workers, tasks):
    """The contiguous range of tasks a worker takes."""
    per_worker = -(-tasks // workers)
    return range(worker * per_worker, min(tasks, (worker + 1) * per_worker))


@jit(inline=True)
def _buffers(sources, exts, samples, rows, row_length, kernel, dilation, dtype):
    """A worker's zeroed buffers, one per source channel of a group, whose last
    output's windows end ``(kw - 1) * dw`` past their last row, and ``exts`` ext."""
    stacked = samples * rows * row_length
    return (np.zeros((sources, stacked + (kernel[2] - 1) * dilation[2]), dtype),
            np.zeros((exts, stacked), dtype))


@jit(contract=True)
def _multiply_add(offsets, taps, pair, buffers, first, second):
    """``first[e] = sum(taps[0, s, t] * buffers[s, offsets[t] + e])`` over the source
    channels ``s`` and the kernel offsets ``t``; with ``pair``, ``second`` likewise from
    ``taps[1]``, from the same loads."""
    length = first.size
    first[:] = 0
    if pair:
        second[:] = 0
    for source in range(buffers.shape[0]):
        buffer, weights, others = buffers[source], taps[0, source], taps[1, source]
        t = 0
        while t + FUSED <= offsets.size:
            w0, w1, w2 = weights[t], weights[t + 1], weights[t + 2]
            v0, v1, v2 = others[t], others[t + 1], others[t + 2]
            s0 = buffer[offsets[t]:offsets[t] + length]
            s1 = buffer[offsets[t + 1]:offsets[t + 1] + length]
            s2 = buffer[offsets[t + 2]:offsets[t + 2] + length]
            for e in range(length):
                a, b, c = s0[e], s1[e], s2[e]
                first[e] += w0 * a + w1 * b + w2 * c
                if pair:
                    second[e] += v0 * a + v1 * b + v2 * c
            t += FUSED
        for rest in range(t, offsets.size):
            w0, v0 = weights[rest], others[rest]
            s0 = buffer[offsets[rest]:offsets[rest] + length]
            for e in range(length):
                first[e] += w0 * s0[e]
                if pair:
                    second[e] += v0 * s0[e]


@jit(parallel=True)
def convolve(turned, source, weight, kernel, dilation, top, left, threads, target):
    # Each target channel of a group sums the unit-stride convolutions of the group's
    # source channels, each placed at (top, left) in zeros as high and wide as the
    # target plus the kernel's extent. The forward pass: source x, target y, weight
    # (K, C/G * volume); with ``turned`` the input gradient: source dy, target dx, the
    # same weight, its filters turned by 180 degrees. Overwrites target.
    batch, source_channels = source.shape[:2]
    target_channels = target.shape[1]
    out_h, out_w = target.shape[3], target.shape[4]
    rows = out_h + (kernel[1] - 1) * dilation[1]
    row_length = out_w + (kernel[2] - 1) * dilation[2]
    offsets = _offsets(kernel, dilation, row_length)
    volume = offsets.size
    if turned:
        targets = weight.shape[1] // volume
        groups = target_channels // targets
        sources = source_channels // groups
    else:
        sources = weight.shape[1] // volume
        groups = source_channels // sources
        targets = target_channels // groups
    samples = _samples_per_task(batch, sources * rows * row_length, source.itemsize)
    tasks = groups * -(-batch // samples)
    workers = min(threads, tasks)
    for worker in prange(workers):
        buffers, ext = _buffers(sources, 2, samples, rows, row_length, kernel, dilation,
                                source.dtype)
        taps = np.zeros((2, sources, volume), source.dtype)
        for task in _worker_tasks(worker, workers, tasks):
            group, first, count = _task(task, groups, samples, batch)
            for s in range(sources):
                _stack(source, first, count, group * sources + s, top, left, rows,
                       row_length, buffers[s])
            length = ((count - 1) * rows + out_h) * row_length
            for j in range(0, targets, 2):  # target channels in pairs, sharing loads
                pair = j + 1 < targets
                for k in range(2 if pair else 1):
                    for s in range(sources):
                        for t in range(volume):
                            if turned:
                                taps[k, s, t] = weight[group * sources + s,
                                                       (j + k + 1) * volume - 1 - t]
                            else:
                                taps[k, s, t] = weight[group * targets + j + k,
                                                       s * volume + t]
                _multiply_add(offsets, taps, pair, buffers, ext[0, :length],
                              ext[1, :length])
                for k in range(2 if pair else 1):
                    _unstack(ext[k], first, count, group * targets + j + k, rows,
                             row_length, target)


@jit(reassociate=True)
def _sum_products(offsets, buffer, grad, output_here, totals):
    """``totals[t] += sum(grad[e] * buffer[offsets[t] + e])`` over ``grad``'s positions
    ``e`` where ``output_here``: the dropped ones may pair a zero with an input's inf or
    NaN. Three offsets at a time; the sums reassociated, so that they vectorise."""
    zero = np.zeros(1, totals.dtype)[0]
    length = grad.size
    here = output_here[:length]
    t = 0
    while t + FUSED <= offsets.size:
        s0 = buffer[offsets[t]:offsets[t] + length]
        s1 = buffer[offsets[t + 1]:offsets[t + 1] + length]
        s2 = buffer[offsets[t + 2]:offsets[t + 2] + length]
        a0 = a1 = a2 = zero
        for e in range(length):
            a0 += grad[e] * s0[e] if here[e] else zero
            a1 += grad[e] * s1[e] if here[e] else zero
            a2 += grad[e] * s2[e] if here[e] else zero
        totals[t] += a0
        totals[t + 1] += a1
        totals[t + 2] += a2
        t += FUSED
    for rest in range(t, offsets.size):
        s0 = buffer[offsets[rest]:offsets[rest] + length]
        a0 = zero
        for e in range(length):
            a0 += grad[e] * s0[e] if here[e] else zero
        totals[rest] += a0


@jit(parallel=True)
def backward_weight(grad_output, x, kernel, dilation, top, left, threads, dw):
    # Overwrites dw (K, C/G * volume). Each task adds its samples' products into sums of
    # its own, added up afterwards in a fixed order.
    batch, channels = x.shape[:2]
    out_h, out_w = grad_output.shape[3], grad_output.shape[4]
    rows = out_h + (kernel[1] - 1) * dilation[1]
    row_length = out_w + (kernel[2] - 1) * dilation[2]
    offsets = _offsets(kernel, dilation, row_length)
    volume = offsets.size
    sources = dw.shape[1] // volume
    groups = channels // sources
    targets = dw.shape[0] // groups
    samples = _samples_per_task(batch, (sources + targets) * rows * row_length, x.itemsize)
    sample_groups = -(-batch // samples)
    tasks = groups * sample_groups
    workers = min(threads, tasks)
    output_here = np.zeros(samples * rows * row_length, np.bool_)
    for s in range(samples):
        for y in range(out_h):
            for q in range(out_w):
                output_here[(s * rows + y) * row_length + q] = True
    sums = np.zeros((sample_groups, dw.shape[0], dw.shape[1]), dw.dtype)
    for worker in prange(workers):
        buffers, exts = _buffers(sources, 1, samples, rows, row_length, kernel, dilation,
                                 x.dtype)
        ext = exts[0]
        for task in _worker_tasks(worker, workers, tasks):
            group, first, count = _task(task, groups, samples, batch)
            for s in range(sources):
                _stack(x, first, count, group * sources + s, top, left, rows, row_length,
                       buffers[s])
            length = ((count - 1) * rows + out_h) * row_length
            for j in range(targets):
                _stack(grad_output, first, count, group * targets + j, 0, 0, rows,
                       row_length, ext)
                for s in range(sources):
                    _sum_products(offsets, buffers[s], ext[:length], output_here,
                                  sums[task // groups, group * targets + j,
                                       s * volume:(s + 1) * volume])
    for k in range(dw.shape[0]):
        for column in range(dw.shape[1]):
            total = sums[0, k, column]
            for sample_group in range(1, sample_groups):
                total += sums[sample_group, k, column]
            dw[k, column] = total
