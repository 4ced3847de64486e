"""im2col and col2im for 1-, 2- and 3-d windows, compiled with Numba.

The kernels see every problem as 3-d: ``x`` is ``(N, C, D, H, W)`` and the window
tuples are ``(depth, height, width)``, with singleton leading dimensions for ranks 1
and 2. The columns are indexed ``cols[row, n, l]``, ``(C * kd * kh * kw, N, L)`` with
``L = od * oh * ow``: row ``(c, i, j, k)`` of sample ``n`` holds, for every output
position, the input element that kernel offset ``(i, j, k)`` of channel ``c`` sees, or
zero in the padding. Rows are ordered channel-major as in
``torch.nn.functional.unfold``; a C-contiguous ``cols`` is the matrix the GEMMs use.

Every kernel here and in :mod:`.direct` works in one of two forms, chosen by the
launcher through its ``by_rows`` argument:

- by rows, for long rows: each output row is a slice of an input row, and padding is
  skipped by index ranges computed once per kernel offset (the span table). col2im
  takes strided slices too; the other kernels take rows read with unit stride only;
- by positions, for the rest, where per-row overhead would dominate: a ``(volume, L)``
  table of flat input positions (-1 in the padding), built once per call, drives an
  element loop.

Indices computed from offsets are cast to ``uintp``: Numba wraps negative indices
around, and that branch on every element keeps LLVM from vectorising the row loops.
"""

import numpy as np
from numba import prange, uintp

from .._config import jit


@jit(inline=True)
def _valid_outputs(pad_low, offset, stride, input_len, output_len):
    """Output positions ``o`` in ``[lo, hi)`` that read inside the input:
    ``0 <= o * stride - pad_low + offset < input_len``."""
    start = pad_low - offset
    lo = max(0, -(-start // stride))
    hi = min(output_len, (input_len - 1 + start) // stride + 1)
    return lo, max(lo, hi)


@jit(inline=True)
def _offset_spans(offset, kernel, stride, dilation, pad_low, input_size, output_size):
    """For flat kernel offset ``offset`` = (i, j, k): per dimension, the valid output
    range ``[lo, hi)`` and the input coordinate of output position 0."""
    _, kh, kw = kernel
    i, j, k = offset // (kh * kw), offset // kw % kh, offset % kw
    d_lo, d_hi = _valid_outputs(pad_low[0], i * dilation[0], stride[0], input_size[0],
                                output_size[0])
    h_lo, h_hi = _valid_outputs(pad_low[1], j * dilation[1], stride[1], input_size[1],
                                output_size[1])
    w_lo, w_hi = _valid_outputs(pad_low[2], k * dilation[2], stride[2], input_size[2],
                                output_size[2])
    z0 = i * dilation[0] - pad_low[0]
    y0 = j * dilation[1] - pad_low[1]
    x0 = k * dilation[2] - pad_low[2]
    return d_lo, d_hi, h_lo, h_hi, w_lo, w_hi, z0, y0, x0


@jit(inline=True)
def _span_table(kernel, stride, dilation, pad_low, input_size, output_size):
    """``_offset_spans`` of every kernel offset, as a ``(volume, 9)`` table: computed once
    per call, as the integer divisions in it cost more than a short row's copy."""
    volume = kernel[0] * kernel[1] * kernel[2]
    table = np.empty((volume, 9), np.int64)
    for offset in range(volume):
        spans = _offset_spans(offset, kernel, stride, dilation, pad_low, input_size,
                              output_size)
        for i in range(9):
            table[offset, i] = spans[i]
    return table


@jit()
def window_positions(kernel, stride, dilation, pad_low, input_size, output_size):
    """``(volume, L)``: the flat index into a ``(D, H, W)`` plane that each kernel
    offset reads at each output position, or -1 where it reads padding."""
    _, height, width = input_size
    od, oh, ow = output_size
    sd, sh, sw = stride
    table = _span_table(kernel, stride, dilation, pad_low, input_size, output_size)
    positions = np.full((table.shape[0], od * oh * ow), -1, np.int64)
    for offset in range(table.shape[0]):
        d_lo, d_hi, h_lo, h_hi, w_lo, w_hi, z0, y0, x0 = table[offset]
        for a in range(d_lo, d_hi):
            for b in range(h_lo, h_hi):
                source = ((a * sd + z0) * height + b * sh + y0) * width + x0
                start = (a * oh + b) * ow
                for q in range(w_lo, w_hi):
                    positions[offset, start + q] = source + q * sw
    return positions


@jit(inline=True)
def window_tables(x, by_rows, kernel, stride, dilation, pad_low, output_size):
    """The span table; the table of positions for the positions form (empty for the
    rows form); ``x`` as ``(N, C, D*H*W)`` planes, which both forms index; the kernel
    volume."""
    batch, channels, depth, height, width = x.shape
    size = (depth, height, width)
    table = _span_table(kernel, stride, dilation, pad_low, size, output_size)
    if by_rows:
        positions = np.empty((0, 0), np.int64)
    else:
        positions = window_positions(kernel, stride, dilation, pad_low, size, output_size)
    return (table, positions, x.reshape(batch, channels, depth * height * width),
            table.shape[0])


@jit(inline=True)
def input_start(x, a, b, sd, sh, z0, y0, x0):
    """Flat position, in a plane of ``x``, of output row ``(a, b)``'s first input element
    (for output column 0, which may lie in the padding)."""
    _, _, _, height, width = x.shape
    return ((a * sd + z0) * height + b * sh + y0) * width + x0


@jit(inline=True)
def joined_rows(stride, output_size, input_width):
    """Whether output rows are as long as input rows, both read with unit stride: then
    consecutive rows of a window offset are consecutive in the input too, and im2col
    copies a depth slice of them at once (:func:`_copy_joined_rows`)."""
    return stride[1] == 1 and stride[2] == 1 and output_size[2] == input_width


@jit(inline=True)
def _copy_joined_rows(line, plane, base, source, h_lo, h_hi, w_lo, w_hi, size, ow):
    """im2col of one depth slice of ``size`` outputs that starts at ``line[base]``, when
    its rows are as long as the input's: output row ``b`` in ``[h_lo, h_hi)`` reads
    ``plane[source + (b - h_lo) * ow + q]``, valid for columns ``q`` in ``[w_lo, w_hi)``.
    One copy runs from the first valid element to the last, passing over the padding
    columns between rows (it reads their wrapped neighbours, inside the plane); those
    are then zeroed, with the rows outside ``[h_lo, h_hi)``."""
    first = base + h_lo * ow + w_lo
    stop = base + (h_hi - 1) * ow + w_hi
    start = source + w_lo
    for q in range(first - base):
        line[uintp(base + q)] = 0
    for q in range(stop - first):
        line[uintp(first + q)] = plane[uintp(start + q)]
    for q in range(base + size - stop):
        line[uintp(stop + q)] = 0
    for b in range(h_lo, h_hi - 1):
        gap = base + b * ow + w_hi
        for q in range(ow - w_hi + w_lo):
            line[uintp(gap + q)] = 0


@jit(parallel=True)
def im2col(by_rows, x, kernel, stride, dilation, pad_low, output_size, cols):
    batch, channels = x.shape[:2]
    od, oh, ow = output_size
    sd, sh, _ = stride
    table, positions, planes, volume = window_tables(x, by_rows, kernel, stride, dilation,
                                                     pad_low, output_size)
    joined = joined_rows(stride, output_size, x.shape[4])
    for task in prange(batch * channels * volume):
        row = task // batch
        n = task % batch
        offset = row % volume
        plane = planes[n, row // volume]
        line = cols[row, n]
        if by_rows:
            d_lo, d_hi, h_lo, h_hi, w_lo, w_hi, z0, y0, x0 = table[offset]
            for a in range(od):
                if joined and d_lo <= a < d_hi and h_lo < h_hi and w_lo < w_hi:
                    _copy_joined_rows(line, plane, a * oh * ow,
                                      input_start(x, a, h_lo, sd, sh, z0, y0, x0),
                                      h_lo, h_hi, w_lo, w_hi, oh * ow, ow)
                    continue
                for b in range(oh):
                    start = (a * oh + b) * ow
                    if d_lo <= a < d_hi and h_lo <= b < h_hi:
                        source = input_start(x, a, b, sd, sh, z0, y0, x0)
                        for q in range(w_lo):
                            line[uintp(start + q)] = 0
                        for q in range(w_lo, w_hi):
                            line[uintp(start + q)] = plane[uintp(source + q)]
                        for q in range(w_hi, ow):
                            line[uintp(start + q)] = 0
                    else:
                        for q in range(ow):
                            line[uintp(start + q)] = 0
        else:
            for w in range(positions.shape[1]):
                p = positions[offset, w]
                line[w] = plane[uintp(p)] if p >= 0 else 0


@jit(parallel=True)
def col2im(by_rows, cols, kernel, stride, dilation, pad_low, output_size, x):
    # Adds into x. Each (sample, channel) image is written by one iteration only,
    # so the scatter-add has no races. Iterations go channel by channel, so that
    # consecutive ones read neighbouring pieces of the same rows of cols.
    batch, channels = x.shape[:2]
    _, oh, ow = output_size
    sd, sh, sw = stride
    table, positions, planes, volume = window_tables(x, by_rows, kernel, stride, dilation,
                                                     pad_low, output_size)
    for task in prange(batch * channels):
        c = task // batch
        n = task % batch
        plane = planes[n, c]
        for offset in range(volume):
            line = cols[c * volume + offset, n]
            if by_rows:
                d_lo, d_hi, h_lo, h_hi, w_lo, w_hi, z0, y0, x0 = table[offset]
                for a in range(d_lo, d_hi):
                    for b in range(h_lo, h_hi):
                        start = (a * oh + b) * ow
                        target = input_start(x, a, b, sd, sh, z0, y0, x0)
                        if sw == 1:  # a loop of its own, which LLVM vectorises
                            for q in range(w_lo, w_hi):
                                plane[uintp(target + q)] += line[uintp(start + q)]
                        else:
                            for q in range(w_lo, w_hi):
                                plane[uintp(target + q * sw)] += line[uintp(start + q)]
            else:
                for w in range(positions.shape[1]):
                    p = positions[offset, w]
                    if p >= 0:
                        plane[uintp(p)] += line[w]
