"""Depthwise kernels (one input and one output channel per group), vectorised across
channels.

Convolving a plane on its own gives LLVM one short row at a time to vectorise, and on
the small planes of late depthwise layers (14 x 14, 7 x 7) per-row overhead dominates.
These kernels take a block of :data:`LANES` channels of one sample and copy it,
channels innermost and zero-padded, into a *block* ``(rows, LANES)``; each kernel
offset then multiplies whole runs of outputs at once, in one long unit-stride loop.

Block rows are the padded input's positions, with each row's columns split by their
phase modulo the width stride, so that the columns a kernel offset reads for
consecutive outputs of a row are consecutive block rows. Outputs live in an *extended*
layout, ``ext`` ``(rows, LANES)``: for unit strides the whole output is one run, whose
windows step one block row at a time (ext then also holds the columns between the
output's rows, computed and dropped); otherwise each output row is a run.

:func:`convolve` computes the forward pass and, as its adjoint, the input gradient;
:func:`backward_weight` the weight gradient. Arrays are 5-d ``(N, C, D, H, W)`` as in
:mod:`.unfold`, the weight ``(C, volume)``.
"""

import numpy as np
from numba import prange

from .._config import jit

#: Channels handled together: two AVX2 vectors of float32, four of float64.
LANES = 16
#: Output rows per inner loop: the expanded weights cover this many.
CHUNK = 32
#: Fewest tasks worth splitting a batch for.
MIN_TASKS = 16
#: A typical L1 data cache: see :func:`_row_by_row`.
L1_BYTES = 32 * 1024
#: Which factor :func:`_multiply_runs` adds the products to.
INTO_EXT, INTO_BLOCK, INTO_WEIGHTS = 0, 1, 2


@jit()
def block_shape(kernel, stride, dilation, output_size):
    """The extents in depth and height of the padded input that the windows read, the
    block rows per phase of a row, and the block's rows, its spare row included."""
    extent_d = (output_size[0] - 1) * stride[0] + (kernel[0] - 1) * dilation[0] + 1
    extent_h = (output_size[1] - 1) * stride[1] + (kernel[1] - 1) * dilation[1] + 1
    per_phase = output_size[2] + (kernel[2] - 1) * dilation[2] // stride[2]
    return extent_d, extent_h, per_phase, extent_d * extent_h * stride[2] * per_phase + 1


@jit()
def block_layout(kernel, stride, dilation, pad_low, input_size, output_size):
    """Tables that place a problem in the block and in ``ext``.

    Returns the block's number of rows, the last of them a spare row that no window
    reads; ``input_slots`` ``(D*H*W,)``: each input position's block row, the spare
    row when no window reads it; ``taps`` ``(volume,)``: each kernel offset's distance
    in block rows from a window's first element; ``output_slots`` ``(L,)``: each output
    position's row in ``ext``; ``runs`` ``(R, 3)``: the ``ext`` row, block row and
    length of each run; and the rows of ``ext``.
    """
    kd, kh, kw = kernel
    sd, sh, sw = stride
    dd, dh, dw = dilation
    od, oh, ow = output_size
    depth, height, width = input_size
    extent_d, extent_h, per_phase, rows = block_shape(kernel, stride, dilation, output_size)
    row_length = sw * per_phase
    spare = rows - 1
    input_slots = np.full(depth * height * width, spare, np.int64)
    for z in range(min(depth, extent_d - pad_low[0])):
        for y in range(min(height, extent_h - pad_low[1])):
            base = ((z + pad_low[0]) * extent_h + y + pad_low[1]) * row_length
            for w in range(width):
                column = w + pad_low[2]  # sits in phase column % sw, at column // sw
                if column // sw < per_phase:
                    input_slots[(z * height + y) * width + w] = \
                        base + column % sw * per_phase + column // sw
    taps = np.empty(kd * kh * kw, np.int64)
    for i in range(kd):
        for j in range(kh):
            for k in range(kw):
                taps[(i * kh + j) * kw + k] = (
                    (i * dd * extent_h + j * dh) * sw + k * dw % sw) * per_phase + k * dw // sw
    output_slots = np.empty(od * oh * ow, np.int64)
    if sd == sh == sw == 1:
        for a in range(od):
            for b in range(oh):
                for q in range(ow):
                    output_slots[(a * oh + b) * ow + q] = (a * extent_h + b) * per_phase + q
        runs = np.zeros((1, 3), np.int64)
        runs[0, 2] = output_slots[-1] + 1
    else:
        output_slots[:] = np.arange(output_slots.size)
        runs = np.empty((od * oh, 3), np.int64)
        for a in range(od):
            for b in range(oh):
                runs[a * oh + b] = ((a * oh + b) * ow,
                                    (a * sd * extent_h + b * sh) * row_length, ow)
    return rows, input_slots, taps, output_slots, runs, runs[-1, 0] + runs[-1, 2]


@jit(inline=True)
def _tasks(batch, channels):
    """Blocks of channels, samples per task and groups of samples: a task takes several
    samples of one block, so that its expanded weights serve them all, unless that
    leaves fewer than :data:`MIN_TASKS` tasks. There is at least one group."""
    blocks = -(-channels // LANES)
    wanted_groups = max(1, min(batch, -(-MIN_TASKS // blocks)))
    samples = max(1, -(-batch // wanted_groups))
    return blocks, samples, max(1, -(-batch // samples))


@jit(inline=True)
def _chunk_rows(runs):
    """Output rows per inner loop: :data:`CHUNK`, or the longest run if shorter."""
    return min(CHUNK, runs[:, 2].max())


@jit(inline=True)
def _expanded_weights(weight, first, chunk, dtype):
    """``(volume, chunk * LANES)``: channel ``first + lane``'s weight at each offset,
    repeated for every row of a chunk (zero past the last channel)."""
    channels, volume = weight.shape
    expanded = np.zeros((volume, chunk * LANES), dtype)
    for lane in range(min(LANES, channels - first)):
        for t in range(volume):
            expanded[t, lane] = weight[first + lane, t]
    filled = LANES
    while filled < expanded.shape[1]:
        count = min(filled, expanded.shape[1] - filled)
        expanded[:, filled:filled + count] = expanded[:, :count]
        filled += count
    return expanded


@jit(inline=True)
def _row_by_row(slots, rows):
    """Whether to fill or empty ``rows`` a row of channels at a time rather than a
    channel at a time: when it is larger than :data:`L1_BYTES`, as a channel at a time
    passes over it :data:`LANES` times."""
    return slots.size * rows.shape[1] * rows.itemsize > L1_BYTES


@jit(inline=True)
def _transpose(planes, n, first, slots, rows, into_rows):
    """``rows[slots[p], lane] = planes[n, first + lane, p]`` for every lane in use if
    ``into_rows``, else the other way round. Callers pass a constant ``into_rows``, so
    that after inlining LLVM drops the branches on it."""
    lanes = min(LANES, planes.shape[1] - first)
    if _row_by_row(slots, rows):
        channels = planes[n, first:first + lanes]
        for p in range(slots.size):
            row = rows[slots[p]]
            for lane in range(lanes):
                if into_rows:
                    row[lane] = channels[lane, p]
                else:
                    channels[lane, p] = row[lane]
        return
    for lane in range(lanes):
        plane = planes[n, first + lane]
        for p in range(slots.size):
            if into_rows:
                rows[slots[p], lane] = plane[p]
            else:
                plane[p] = rows[slots[p], lane]


@jit(inline=True)
def _multiply_runs(runs, taps, chunk, weights, ext, block, into):
    """For every run and kernel offset ``t``, the elementwise products of two of
    ``weights[t]``, ``ext`` and ``block`` (at the rows the offset pairs), added to the
    third: the one ``into`` names (:data:`INTO_EXT`, :data:`INTO_BLOCK` or
    :data:`INTO_WEIGHTS`)."""
    flat_ext = ext.reshape(-1)
    flat_block = block.reshape(-1)
    for run in range(runs.shape[0]):
        ext_row, block_row, length = runs[run]
        for start in range(0, length, chunk):
            count = min(chunk, length - start) * LANES
            e0 = (ext_row + start) * LANES
            for t in range(taps.size):
                b0 = (block_row + start + taps[t]) * LANES
                at_weights = weights[t, :count]
                at_ext = flat_ext[e0:e0 + count]
                at_block = flat_block[b0:b0 + count]
                if into == INTO_EXT:
                    target, left, right = at_ext, at_weights, at_block
                elif into == INTO_BLOCK:
                    target, left, right = at_block, at_weights, at_ext
                else:
                    target, left, right = at_weights, at_ext, at_block
                for e in range(count):
                    target[e] += left[e] * right[e]


@jit(inline=True)
def _planes(array):
    """A 5-d array as ``(N, C, D*H*W)``."""
    return array.reshape(array.shape[0], array.shape[1], -1)


@jit(inline=True)
def _samples(task, blocks, samples, batch):
    """The samples of a task."""
    return range(task // blocks * samples, min(batch, (task // blocks + 1) * samples))


@jit(parallel=True)
def convolve(adjoint, source, weight, kernel, stride, dilation, pad_low, output_size, target):
    # The convolution of x (source) into y (target), or with ``adjoint`` its adjoint:
    # the input gradient (target) from the output gradient (source). Overwrites target.
    # Each (block of channels, group of samples) is one task: no races.
    batch, channels = source.shape[:2]
    block_rows, input_slots, taps, output_slots, runs, ext_rows = block_layout(
        kernel, stride, dilation, pad_low, target.shape[2:] if adjoint else source.shape[2:],
        output_size)
    chunk = _chunk_rows(runs)
    blocks, samples, groups = _tasks(batch, channels)
    sources, targets = _planes(source), _planes(target)
    for task in prange(blocks * groups):
        first = task % blocks * LANES
        weights = _expanded_weights(weight, first, chunk, source.dtype)
        # Rows that are never loaded stay zero: the padding and ext's dropped columns;
        # in the adjoint also the block's spare row, which gives 0 to the input
        # positions that no window reads.
        block = np.zeros((block_rows, LANES), source.dtype)
        ext = np.zeros((ext_rows, LANES), source.dtype)
        for n in _samples(task, blocks, samples, batch):
            if adjoint:
                _transpose(sources, n, first, output_slots, ext, True)
                block[:] = 0
            else:
                _transpose(sources, n, first, input_slots, block, True)
                ext[:] = 0
            _multiply_runs(runs, taps, chunk, weights, ext, block,
                           INTO_BLOCK if adjoint else INTO_EXT)
            if adjoint:
                _transpose(targets, n, first, input_slots, block, False)
            else:
                _transpose(targets, n, first, output_slots, ext, False)


@jit(parallel=True)
def backward_weight(grad_output, x, kernel, stride, dilation, pad_low, output_size, dw):
    # Overwrites dw (C, volume). Each (block of channels, group of samples) is one task
    # with its own sums, added up afterwards in a fixed order.
    batch, channels = x.shape[:2]
    block_rows, input_slots, taps, output_slots, runs, ext_rows = block_layout(
        kernel, stride, dilation, pad_low, x.shape[2:], output_size)
    chunk = _chunk_rows(runs)
    blocks, samples, groups = _tasks(batch, channels)
    sums = np.zeros((groups, blocks, taps.size, LANES), x.dtype)
    inputs, grads = _planes(x), _planes(grad_output)
    for task in prange(blocks * groups):
        first = task % blocks * LANES
        block = np.zeros((block_rows, LANES), x.dtype)
        ext = np.zeros((ext_rows, LANES), x.dtype)
        # lane-wise sums over the rows of a chunk, added across the rows at the end
        partial = np.zeros((taps.size, chunk * LANES), x.dtype)
        for n in _samples(task, blocks, samples, batch):
            _transpose(inputs, n, first, input_slots, block, True)
            _transpose(grads, n, first, output_slots, ext, True)
            _multiply_runs(runs, taps, chunk, partial, ext, block, INTO_WEIGHTS)
        total = sums[task // blocks, task % blocks]
        for t in range(taps.size):
            for row in range(chunk):
                for lane in range(LANES):
                    total[t, lane] += partial[t, row * LANES + lane]
    for block_index in range(blocks):
        first = block_index * LANES
        for lane in range(min(LANES, channels - first)):
            for t in range(taps.size):
                total = sums[0, block_index, t, lane]
                for group in range(1, groups):
                    total += sums[group, block_index, t, lane]
                dw[first + lane, t] = total
