"""Depthwise 3x3 kernels on small planes: down columns of masked vectors.

A *chunk* is up to :data:`NARROW` or :data:`WIDE` adjacent output columns of a plane,
one vector. For each chunk the kernels walk down the plane's output rows: output row
``r`` takes the three input rows its windows cover, each read as three vectors shifted
by the dilation, in masked loads whose masks drop the columns in the padding and past
the chunk. Going down, an input row is loaded once and kept in registers for the three
output rows that read it, so an output row costs three loads, nine fused multiply-adds
and one masked store. Nothing is copied: the padding is in the masks, where the stacked
planes (:mod:`.stacked`) copy each plane into a padded buffer and pass over it once per
three offsets. With a dilation ``d`` the output rows ``r, r + d, r + 2d, ...`` read
their input rows in turn, so each residue of ``r`` modulo ``d`` is a walk of its own.
With stride 2 (in rows and columns) a tap's vector is the even lanes of a masked load
twice as wide, and each output row loads its three input rows. Each chunk walks the
whole plane, so the kernels take planes that stay in the L1 cache
(``COLUMNS_MAX_PLANE_BYTES`` in :mod:`fastconv._kernels`). The input gradient of a
convolution with stride 2 is the convolution, with unit stride, of the output gradient
spread out, a zero between adjacent elements: a tap's vector is an expanding load, its
elements in every other lane, and every other input row is zero. It reads the output
gradient, a quarter of the plane, and takes planes of any size.

The walks are LLVM IR (:class:`.vector.Vectors`): Numba has no vector type, and LLVM
fully unrolls a Numba loop over a chunk's lanes into scalar code before its vectoriser
sees it. A chunk is a 64-byte vector, 16 lanes of float32 or 8 of float64, or 8 lanes
of float32 for rows of up to 8.

:func:`convolve` computes the forward pass and, with the filters turned by 180 degrees,
the input gradient; planes are tasks, split into contiguous ranges
among the threads as on the stacked planes. :func:`backward_weight` adds each walk's
products into nine vector sums, one per kernel offset, held in registers; a channel's
samples go to one thread, and its sums are added across lanes at the end, in a fixed
order. Arrays are 5-d ``(N, C, 1, H, W)`` as in :mod:`.unfold`, one output channel per
input channel, the weight ``(C, 9)``.
"""

import numba
import numpy as np
from llvmlite import ir
from numba import prange, types
from numba.extending import intrinsic

from .._config import jit
from .stacked import _worker_tasks
from .vector import Vectors, array_data, counted_loop

#: Kernel rows and columns.
TAPS = 3
#: Lanes of a chunk: float32 rows of up to NARROW, and float64; wider float32 rows.
NARROW, WIDE = 8, 16
_CHECKED = numba.config.BOUNDSCHECK
_INT64 = ir.IntType(64)


def _int(value):
    return ir.Constant(_INT64, value)


class _Walk:
    """IR for a walk down one chunk of a plane: the chunk's masks, and a loop over its
    output rows.

    ``plane`` is the plane's first element in the flat array whose data is ``data``,
    ``column`` the input column of the chunk's first window's first tap (negative in the
    padding), ``count`` the chunk's lanes in use; ``width`` and ``height`` are the input
    plane's, ``dilation_w`` the step between a window's columns, ``stride`` (1 or 2)
    the step between the windows of adjacent outputs, in rows and columns. With stride
    2 a window row's taps are the even lanes of masked loads twice as wide.

    With ``spread`` 2 (and stride 1) the walk reads the plane spread out, a zero between
    adjacent elements in rows and columns (``2 * height - 1`` by ``2 * width - 1``), as
    the input gradient of a convolution with stride 2 does: a tap's vector is an
    expanding load into the lanes that fall on the plane's elements, and the rows
    between them are zero."""

    def __init__(self, context, vectors, dtype, data, plane, height, width, column,
                 dilation_w, count, stride, spread=1):
        builder = vectors.builder
        self.vectors, self.builder, self.stride = vectors, builder, stride
        self.data, self.plane, self.width = data, plane, width
        self.spread, self.height = spread, height
        self.column = column
        self.in_use = vectors.lanes_below(count)
        self.loads = vectors if stride == 1 else Vectors(context, builder, dtype,
                                                         stride * vectors.lanes)
        lanes = self.loads.lane_numbers()
        in_use = self.loads.lanes_below(builder.mul(count, _int(stride)))
        if stride > 1:  # the lanes that the taps take
            taken = [lane % stride == 0 for lane in range(self.loads.lanes)]
            in_use = builder.and_(in_use, ir.Constant(in_use.type, taken))
        columns = builder.add(self.loads.splat(column), lanes)
        self.shifts = [builder.mul(dilation_w, _int(j)) for j in range(TAPS)]
        self.masks, self.firsts = [], []
        for shift in self.shifts:
            tap_columns = builder.add(columns, self.loads.splat(shift))
            inside = builder.and_(
                builder.icmp_signed(">=", tap_columns, self.loads.splat(_int(0))),
                builder.icmp_signed("<", tap_columns,
                                    self.loads.splat(self._spread_out(width))))
            if spread == 2:  # not the columns between the plane's
                inside = builder.and_(inside, builder.icmp_signed(
                    "==", builder.and_(tap_columns, self.loads.splat(_int(1))),
                    self.loads.splat(_int(0))))
                # the tap's first element: the plane's first at or after its first lane
                first = builder.ashr(builder.add(builder.add(column, shift), _int(1)), _int(1))
                self.firsts.append(builder.select(builder.icmp_signed("<", first, _int(0)),
                                                  _int(0), first))
            self.masks.append(builder.and_(inside, in_use))

    def _spread_out(self, size):
        """The spread plane's rows or columns for ``size`` of the plane's."""
        if self.spread == 1:
            return size
        return self.builder.sub(self.builder.mul(size, _int(2)), _int(1))

    def input_row(self, y):
        """The three vectors of input row ``y`` that a window row's taps read: zeros if
        it is outside the plane (or between its rows, spread out)."""
        builder, loads = self.builder, self.loads
        inside = builder.and_(builder.icmp_signed(">=", y, _int(0)),
                              builder.icmp_signed("<", y, self._spread_out(self.height)))
        if self.spread == 2:
            inside = builder.and_(inside, builder.icmp_signed(
                "==", builder.and_(y, _int(1)), _int(0)))
            start = builder.add(self.plane, builder.mul(builder.ashr(y, _int(1)), self.width))
            inside = loads.splat(inside)
            return [loads.expand_load(self.data, builder.add(start, first),
                                      builder.and_(mask, inside))
                    for first, mask in zip(self.firsts, self.masks)]
        inside = loads.splat(inside)
        start = builder.add(builder.add(self.plane, builder.mul(y, self.width)), self.column)
        row = [loads.load(self.data, builder.add(start, shift), builder.and_(mask, inside))
               for shift, mask in zip(self.shifts, self.masks)]
        if self.stride == 1:
            return row
        taken = ir.Constant(ir.VectorType(ir.IntType(32), self.vectors.lanes),
                            list(range(0, loads.lanes, self.stride)))
        return [builder.shuffle_vector(vector, vector, taken) for vector in row]

    def down(self, first_y, row_step, dilation_h, rows, carried, body):
        """Emit the loop over ``rows`` output rows: output row ``r`` reads input rows
        ``first_y + r * row_step + i * dilation_h``, ``i < 3``. ``body(r, window,
        values)`` emits a row's work, ``window`` the three input rows' vectors,
        ``values`` those ``carried`` from the row before, and returns the values for the
        next row. Returns the values after the last row (``carried`` if ``rows`` is 0).
        With stride 1 (``row_step`` then equal to ``dilation_h``) an input row is loaded
        once and kept for the three output rows that read it."""
        builder = self.builder
        kept_rows = TAPS - 1 if self.stride == 1 else 0
        first = [self.input_row(builder.add(first_y, builder.mul(dilation_h, _int(i))))
                 for i in range(kept_rows)]
        kept_values = kept_rows * TAPS

        def output_row(r, values):
            kept = [values[TAPS * i:TAPS * (i + 1)] for i in range(kept_rows)]
            top = builder.add(first_y, builder.mul(r, row_step))
            loaded = [self.input_row(builder.add(top, builder.mul(dilation_h, _int(i))))
                      for i in range(kept_rows, TAPS)]
            window = (*kept, *loaded)
            moved = [vector for row in window[1:kept_rows + 1] for vector in row]
            return moved + body(r, window, values[kept_values:])

        initial = [vector for row in first for vector in row] + list(carried)
        return counted_loop(builder, rows, _int(1), initial, output_row)[kept_values:]


def _convolve_walk(lanes, stride, spread=1):
    """An intrinsic: a walk of the forward pass down a chunk of ``lanes``, with
    ``stride`` (or of the input gradient of a stride-2 convolution, with ``spread`` 2:
    see :class:`_Walk`)."""

    @intrinsic
    def walk(typingctx, source, plane, height, width, first_y, column, row_step,
             dilation_h, dilation_w, filters, first_filter, target, at, out_step, rows,
             count):
        # Output row r of the walk goes to target[at + r * out_step + lane]; the filter
        # is filters[first_filter:first_filter + 9].
        def codegen(context, builder, signature, args):
            (_, plane, height, width, first_y, column, row_step, dilation_h, dilation_w, _,
             first_filter, _, at, out_step, rows, count) = args
            dtype = signature.args[0].dtype
            vectors = Vectors(context, builder, dtype, lanes)
            chunk = _Walk(context, vectors, dtype,
                          array_data(context, builder, signature.args[0], args[0]), plane,
                          height, width, column, dilation_w, count, stride, spread)
            filter_data = array_data(context, builder, signature.args[9], args[9])
            taps = [vectors.splat(builder.load(builder.gep(
                filter_data, [builder.add(first_filter, _int(t))]))) for t in range(TAPS ** 2)]
            target_data = array_data(context, builder, signature.args[11], args[11])

            def output_row(r, window, _):
                total = ir.Constant(vectors.type, None)
                for i, row in enumerate(window):
                    for j, shifted in enumerate(row):
                        total = vectors.multiply_add(taps[TAPS * i + j], shifted, total)
                vectors.store(total, target_data, builder.add(at, builder.mul(r, out_step)),
                              chunk.in_use)
                return []

            chunk.down(first_y, row_step, dilation_h, rows, [], output_row)
            return context.get_dummy_value()

        return types.void(source, plane, height, width, first_y, column, row_step,
                          dilation_h, dilation_w, filters, first_filter, target, at,
                          out_step, rows, count), codegen

    return walk


def _products_walk(lanes, stride):
    """An intrinsic: a walk of the weight gradient down a chunk of ``lanes``, with
    ``stride``."""

    @intrinsic
    def walk(typingctx, grad, at, out_step, source, plane, height, width, first_y, column,
             row_step, dilation_h, dilation_w, rows, count, sums):
        # Adds grad[at + r * out_step + lane] times each tap's input vector into
        # sums[t * lanes + lane], for kernel offset t.
        def codegen(context, builder, signature, args):
            (_, at, out_step, _, plane, height, width, first_y, column, row_step,
             dilation_h, dilation_w, rows, count, _) = args
            dtype = signature.args[0].dtype
            vectors = Vectors(context, builder, dtype, lanes)
            chunk = _Walk(context, vectors, dtype,
                          array_data(context, builder, signature.args[3], args[3]), plane,
                          height, width, column, dilation_w, count, stride)
            grad_data = array_data(context, builder, signature.args[0], args[0])
            sums_data = array_data(context, builder, signature.args[14], args[14])
            every_lane = vectors.lanes_below(_int(lanes))
            starts = [_int(t * lanes) for t in range(TAPS ** 2)]
            totals = [vectors.load(sums_data, start, every_lane) for start in starts]

            def output_row(r, window, totals):
                grad_row = vectors.load(grad_data, builder.add(at, builder.mul(r, out_step)),
                                        chunk.in_use)
                return [vectors.multiply_add(grad_row, shifted, totals[TAPS * i + j])
                        for i, row in enumerate(window) for j, shifted in enumerate(row)]

            totals = chunk.down(first_y, row_step, dilation_h, rows, totals, output_row)
            for total, start in zip(totals, starts):
                vectors.store(total, sums_data, start, every_lane)
            return context.get_dummy_value()

        return types.void(grad, at, out_step, source, plane, height, width, first_y, column,
                          row_step, dilation_h, dilation_w, rows, count, sums), codegen

    return walk


_convolve_narrow, _convolve_wide = _convolve_walk(NARROW, 1), _convolve_walk(WIDE, 1)
_convolve_narrow_2, _convolve_wide_2 = _convolve_walk(NARROW, 2), _convolve_walk(WIDE, 2)
_spread_narrow, _spread_wide = _convolve_walk(NARROW, 1, 2), _convolve_walk(WIDE, 1, 2)
_products_narrow, _products_wide = _products_walk(NARROW, 1), _products_walk(WIDE, 1)
_products_narrow_2, _products_wide_2 = _products_walk(NARROW, 2), _products_walk(WIDE, 2)


@jit(inline=True)
def _convolve_chunk(lanes, stride, spread, walk_args):
    if spread == 2:
        if lanes == WIDE:
            _spread_wide(*walk_args)
        else:
            _spread_narrow(*walk_args)
    elif stride == 1:
        if lanes == WIDE:
            _convolve_wide(*walk_args)
        else:
            _convolve_narrow(*walk_args)
    elif lanes == WIDE:
        _convolve_wide_2(*walk_args)
    else:
        _convolve_narrow_2(*walk_args)


@jit(inline=True)
def _products_chunk(lanes, stride, walk_args):
    if stride == 1:
        if lanes == WIDE:
            _products_wide(*walk_args)
        else:
            _products_narrow(*walk_args)
    elif lanes == WIDE:
        _products_wide_2(*walk_args)
    else:
        _products_narrow_2(*walk_args)


@jit(inline=True)
def _lanes(out_w, itemsize):
    """A chunk's lanes (see the module's docstring)."""
    return WIDE if itemsize == 4 and out_w > NARROW else NARROW


@jit(inline=True)
def _check_walk(planes, plane, height, width, first_y, column, stride, spread, row_step,
                dilation, rows, count, outputs, at, out_step):
    """In bounds-checked builds, index the first and last element that a walk reads in
    each input row and reads or writes in each output row (see :class:`_Walk`)."""
    first = max(0, column)
    last = min(spread * (width - 1) + 1,
               column + stride * (count - 1) + (TAPS - 1) * dilation[2] + 1)
    first, last = (first + spread - 1) // spread, (last - 1) // spread + 1  # the plane's
    for r in range(rows):
        outputs[at + r * out_step], outputs[at + r * out_step + count - 1]
        for i in range(TAPS):
            y = first_y + r * row_step + i * dilation[1]
            if 0 <= y < spread * (height - 1) + 1 and y % spread == 0 and first < last:
                y //= spread
                planes[plane + y * width + first], planes[plane + y * width + last - 1]


@jit(inline=True)
def _walks(out_h, out_w, lanes, stride, dilation_h, pad_low):
    """The walks down a plane, each the input row and column of its first window's first
    tap, its first output's place in the output plane, its rows and its lanes in use;
    the output rows between a walk's rows, and the input rows. With stride 1 a walk
    takes every ``dilation_h``-th output row, whose windows share input rows."""
    between = dilation_h if stride == 1 else 1
    walks = []
    for column in range(0, out_w, lanes):
        for residue in range(min(between, out_h)):
            walks.append((residue * stride - pad_low[1], column * stride - pad_low[2],
                          residue * out_w + column, (out_h - 1 - residue) // between + 1,
                          min(lanes, out_w - column)))
    return walks, between, between * stride


@jit(parallel=True)
def convolve(turned, source, weight, stride, dilation, pad_low, threads, target):
    # The forward pass, x (source) into y (target), strides 1 or 2; with ``turned`` the
    # input gradient, dy into dx: the filters turned, pad_low the turned padding, dy read
    # spread out by the stride (see _Walk). Overwrites target.
    batch, channels = source.shape[:2]
    height, width = source.shape[3], source.shape[4]
    out_h, out_w = target.shape[3], target.shape[4]
    sources, targets = source.reshape(-1), target.reshape(-1)
    volume = TAPS * TAPS
    filters = np.empty(channels * volume, source.dtype)
    for c in range(channels):
        for t in range(volume):
            filters[c * volume + t] = weight[c, volume - 1 - t if turned else t]
    lanes = _lanes(out_w, source.itemsize)
    walk_stride, spread = (1, stride[2]) if turned else (stride[2], 1)
    walks, between, row_step = _walks(out_h, out_w, lanes, walk_stride, dilation[1], pad_low)
    out_step = between * out_w
    planes = batch * channels
    workers = min(threads, planes)
    for worker in prange(workers):
        for p in _worker_tasks(worker, workers, planes):
            plane, out_plane = p * height * width, p * out_h * out_w
            for first_y, first_x, first_out, rows, count in walks:
                at = out_plane + first_out
                if _CHECKED:
                    _check_walk(sources, plane, height, width, first_y, first_x, walk_stride,
                                spread, row_step, dilation, rows, count, targets, at,
                                out_step)
                _convolve_chunk(lanes, walk_stride, spread, (
                    sources, plane, height, width, first_y, first_x, row_step, dilation[1],
                    dilation[2], filters, p % channels * volume, targets, at, out_step, rows,
                    count))


@jit(parallel=True)
def backward_weight(grad_output, x, stride, dilation, pad_low, threads, dw):
    # Overwrites dw (C, 9). Strides 1 or 2.
    batch, channels = x.shape[:2]
    height, width = x.shape[3], x.shape[4]
    out_h, out_w = grad_output.shape[3], grad_output.shape[4]
    inputs, grads = x.reshape(-1), grad_output.reshape(-1)
    lanes = _lanes(out_w, x.itemsize)
    walks, between, row_step = _walks(out_h, out_w, lanes, stride[2], dilation[1], pad_low)
    out_step = between * out_w
    workers = min(threads, channels)
    for worker in prange(workers):
        sums = np.empty(TAPS * TAPS * lanes, x.dtype)
        for c in _worker_tasks(worker, workers, channels):
            sums[:] = 0
            for n in range(batch):
                p = n * channels + c
                plane, out_plane = p * height * width, p * out_h * out_w
                for first_y, first_x, first_out, rows, count in walks:
                    at = out_plane + first_out
                    if _CHECKED:
                        _check_walk(inputs, plane, height, width, first_y, first_x,
                                    stride[2], 1, row_step, dilation, rows, count, grads, at,
                                    out_step)
                    _products_chunk(lanes, stride[2], (
                        grads, at, out_step, inputs, plane, height, width, first_y, first_x,
                        row_step, dilation[1], dilation[2], rows, count, sums))
            for t in range(TAPS * TAPS):
                total = sums[t * lanes]
                for lane in range(1, lanes):
                    total += sums[t * lanes + lane]
                dw[c, t] = total
