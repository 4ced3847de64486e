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
Each chunk walks the whole plane, so the kernels take planes that stay in the L1 cache
(``COLUMNS_MAX_PLANE_BYTES`` in :mod:`fastconv._kernels`).

The walks are LLVM IR (:class:`.vector.Vectors`): Numba has no vector type, and LLVM
fully unrolls a Numba loop over a chunk's lanes into scalar code before its vectoriser
sees it. A chunk is a 64-byte vector, 16 lanes of float32 or 8 of float64, or 8 lanes
of float32 for rows of up to 8.

:func:`convolve` computes the forward pass (unit strides) and, with the filters turned
by 180 degrees, the input gradient; planes are tasks, split into contiguous ranges
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
from .vector import Vectors, array_data

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
    output rows that keeps the input rows it has loaded.

    ``plane`` is the plane's first element in the flat array whose data is ``data``,
    ``column`` the input column of the chunk's first window's first tap (negative in the
    padding), ``count`` the chunk's lanes in use; ``width`` and ``height`` are the input
    plane's, ``dilation_w`` the step between a window's columns."""

    def __init__(self, vectors, data, plane, height, width, column, dilation_w, count):
        builder = vectors.builder
        self.vectors, self.builder = vectors, builder
        self.data, self.plane, self.height, self.width = data, plane, height, width
        self.column = column
        self.in_use = vectors.lanes_below(count)
        columns = builder.add(vectors.splat(column), vectors.lane_numbers())
        self.shifts = [builder.mul(dilation_w, _int(j)) for j in range(TAPS)]
        self.masks = []
        for shift in self.shifts:
            tap_columns = builder.add(columns, vectors.splat(shift))
            inside = builder.and_(
                builder.icmp_signed(">=", tap_columns, vectors.splat(_int(0))),
                builder.icmp_signed("<", tap_columns, vectors.splat(width)))
            self.masks.append(builder.and_(inside, self.in_use))

    def input_row(self, y):
        """The three shifted vectors of input row ``y``: zeros if it is outside the
        plane."""
        builder, vectors = self.builder, self.vectors
        inside = vectors.splat(builder.and_(builder.icmp_signed(">=", y, _int(0)),
                                            builder.icmp_signed("<", y, self.height)))
        start = builder.add(builder.add(self.plane, builder.mul(y, self.width)), self.column)
        return [vectors.load(self.data, builder.add(start, shift), builder.and_(mask, inside))
                for shift, mask in zip(self.shifts, self.masks)]

    def down(self, first_y, dilation_h, rows, carried, body):
        """Emit the loop over ``rows`` output rows: output row ``r`` reads input rows
        ``first_y + (r + i) * dilation_h``, ``i < 3``. ``body(r, window, values)`` emits
        a row's work, ``window`` the three input rows' vectors, ``values`` those
        ``carried`` from the row before, and returns the values for the next row.
        Returns the values after the last row (``carried`` if ``rows`` is 0)."""
        builder, vector_type = self.builder, self.vectors.type
        first = [self.input_row(first_y), self.input_row(builder.add(first_y, dilation_h))]
        before = builder.block
        loop = builder.append_basic_block("walk.row")
        after = builder.append_basic_block("walk.end")
        builder.cbranch(builder.icmp_signed(">", rows, _int(0)), loop, after)
        builder.position_at_end(loop)
        r = builder.phi(_INT64)
        kept = [[builder.phi(vector_type) for _ in range(TAPS)] for _ in first]
        values = [builder.phi(value.type) for value in carried]
        last = self.input_row(builder.add(first_y,
                                          builder.mul(builder.add(r, _int(2)), dilation_h)))
        following = body(r, (*kept, last), values)
        next_r = builder.add(r, _int(1))
        end = builder.block
        r.add_incoming(_int(0), before)
        r.add_incoming(next_r, end)
        for phis, start, moved in zip(kept, first, (kept[1], last)):
            for phi, a, b in zip(phis, start, moved):
                phi.add_incoming(a, before)
                phi.add_incoming(b, end)
        for phi, a, b in zip(values, carried, following):
            phi.add_incoming(a, before)
            phi.add_incoming(b, end)
        builder.cbranch(builder.icmp_signed("<", next_r, rows), loop, after)
        builder.position_at_end(after)
        results = []
        for a, b in zip(carried, following):
            result = builder.phi(a.type)
            result.add_incoming(a, before)
            result.add_incoming(b, end)
            results.append(result)
        return results


def _convolve_walk(lanes):
    """An intrinsic: a walk of the forward pass down a chunk of ``lanes``."""

    @intrinsic
    def walk(typingctx, source, plane, height, width, first_y, column, dilation_h,
             dilation_w, filters, first_filter, target, at, out_step, rows, count):
        # Output row r of the walk goes to target[at + r * out_step + lane]; the filter
        # is filters[first_filter:first_filter + 9].
        def codegen(context, builder, signature, args):
            (_, plane, height, width, first_y, column, dilation_h, dilation_w, _,
             first_filter, _, at, out_step, rows, count) = args
            vectors = Vectors(context, builder, signature.args[0].dtype, lanes)
            chunk = _Walk(vectors, array_data(context, builder, signature.args[0], args[0]),
                          plane, height, width, column, dilation_w, count)
            filter_data = array_data(context, builder, signature.args[8], args[8])
            taps = [vectors.splat(builder.load(builder.gep(
                filter_data, [builder.add(first_filter, _int(t))]))) for t in range(TAPS ** 2)]
            target_data = array_data(context, builder, signature.args[10], args[10])

            def output_row(r, window, _):
                total = ir.Constant(vectors.type, None)
                for i, row in enumerate(window):
                    for j, shifted in enumerate(row):
                        total = vectors.multiply_add(taps[TAPS * i + j], shifted, total)
                vectors.store(total, target_data, builder.add(at, builder.mul(r, out_step)),
                              chunk.in_use)
                return []

            chunk.down(first_y, dilation_h, rows, [], output_row)
            return context.get_dummy_value()

        return types.void(source, plane, height, width, first_y, column, dilation_h,
                          dilation_w, filters, first_filter, target, at, out_step, rows,
                          count), codegen

    return walk


def _products_walk(lanes):
    """An intrinsic: a walk of the weight gradient down a chunk of ``lanes``."""

    @intrinsic
    def walk(typingctx, grad, at, out_step, source, plane, height, width, first_y, column,
             dilation_h, dilation_w, rows, count, sums):
        # Adds grad[at + r * out_step + lane] times each tap's input vector into
        # sums[t * lanes + lane], for kernel offset t.
        def codegen(context, builder, signature, args):
            (_, at, out_step, _, plane, height, width, first_y, column, dilation_h,
             dilation_w, rows, count, _) = args
            vectors = Vectors(context, builder, signature.args[0].dtype, lanes)
            chunk = _Walk(vectors, array_data(context, builder, signature.args[3], args[3]),
                          plane, height, width, column, dilation_w, count)
            grad_data = array_data(context, builder, signature.args[0], args[0])
            sums_data = array_data(context, builder, signature.args[13], args[13])
            every_lane = vectors.lanes_below(_int(lanes))
            starts = [_int(t * lanes) for t in range(TAPS ** 2)]
            totals = [vectors.load(sums_data, start, every_lane) for start in starts]

            def output_row(r, window, totals):
                grad_row = vectors.load(grad_data, builder.add(at, builder.mul(r, out_step)),
                                        chunk.in_use)
                return [vectors.multiply_add(grad_row, shifted, totals[TAPS * i + j])
                        for i, row in enumerate(window) for j, shifted in enumerate(row)]

            totals = chunk.down(first_y, dilation_h, rows, totals, output_row)
            for total, start in zip(totals, starts):
                vectors.store(total, sums_data, start, every_lane)
            return context.get_dummy_value()

        return types.void(grad, at, out_step, source, plane, height, width, first_y, column,
                          dilation_h, dilation_w, rows, count, sums), codegen

    return walk


_convolve_narrow, _convolve_wide = _convolve_walk(NARROW), _convolve_walk(WIDE)
_products_narrow, _products_wide = _products_walk(NARROW), _products_walk(WIDE)


@jit(inline=True)
def _lanes(out_w, itemsize):
    """A chunk's lanes (see the module's docstring)."""
    return WIDE if itemsize == 4 and out_w > NARROW else NARROW


@jit(inline=True)
def _check_walk(planes, plane, height, width, first_y, column, dilation, rows, count,
                outputs, at, out_step):
    """In bounds-checked builds, index the first and last element that a walk reads in
    each input row and reads or writes in each output row."""
    dilation_h, dilation_w = dilation[1], dilation[2]
    first = max(0, column)
    last = min(width, column + count + (TAPS - 1) * dilation_w)
    for m in range(rows + TAPS - 1):
        y = first_y + m * dilation_h
        if 0 <= y < height and first < last:
            planes[plane + y * width + first], planes[plane + y * width + last - 1]
    for r in range(rows):
        outputs[at + r * out_step], outputs[at + r * out_step + count - 1]


@jit(inline=True)
def _walks(out_h, out_w, lanes, dilation_h, pad_low):
    """Each walk down a plane: the input row and column of its first window's first tap,
    its first output's place in the output plane, its rows and its lanes in use."""
    walks = []
    for column in range(0, out_w, lanes):
        for residue in range(min(dilation_h, out_h)):
            walks.append((residue - pad_low[1], column - pad_low[2], residue * out_w + column,
                          (out_h - 1 - residue) // dilation_h + 1, min(lanes, out_w - column)))
    return walks


@jit(parallel=True)
def convolve(turned, source, weight, dilation, pad_low, threads, target):
    # The forward pass, x (source) into y (target); with ``turned`` the input gradient:
    # dy into dx, the filters turned, pad_low the turned padding. Unit strides.
    # Overwrites target.
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
    walks = _walks(out_h, out_w, lanes, dilation[1], pad_low)
    out_step = dilation[1] * out_w
    planes = batch * channels
    workers = min(threads, planes)
    for worker in prange(workers):
        for p in _worker_tasks(worker, workers, planes):
            plane, out_plane = p * height * width, p * out_h * out_w
            for first_y, first_x, first_out, rows, count in walks:
                at = out_plane + first_out
                if _CHECKED:
                    _check_walk(sources, plane, height, width, first_y, first_x, dilation,
                                rows, count, targets, at, out_step)
                walk_args = (sources, plane, height, width, first_y, first_x, dilation[1],
                             dilation[2], filters, p % channels * volume, targets, at,
                             out_step, rows, count)
                if lanes == WIDE:
                    _convolve_wide(*walk_args)
                else:
                    _convolve_narrow(*walk_args)


@jit(parallel=True)
def backward_weight(grad_output, x, dilation, pad_low, threads, dw):
    # Overwrites dw (C, 9). Unit strides.
    batch, channels = x.shape[:2]
    height, width = x.shape[3], x.shape[4]
    out_h, out_w = grad_output.shape[3], grad_output.shape[4]
    inputs, grads = x.reshape(-1), grad_output.reshape(-1)
    lanes = _lanes(out_w, x.itemsize)
    walks = _walks(out_h, out_w, lanes, dilation[1], pad_low)
    out_step = dilation[1] * out_w
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
                                    dilation, rows, count, grads, at, out_step)
                    walk_args = (grads, at, out_step, inputs, plane, height, width, first_y,
                                 first_x, dilation[1], dilation[2], rows, count, sums)
                    if lanes == WIDE:
                        _products_wide(*walk_args)
                    else:
                        _products_narrow(*walk_args)
            for t in range(TAPS * TAPS):
                total = sums[t * lanes]
                for lane in range(1, lanes):
                    total += sums[t * lanes + lane]
                dw[c, t] = total
