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

:func:`convolve` sums the products of a block of up to eight target channels at once,
in registers (:func:`_block_sums`, LLVM IR through :class:`.vector.Vectors`): for a few
vectors of adjacent positions, each term, a source channel's kernel offset, loads the
buffer's vectors once and multiplies them into the sums of all the block's targets
(fused multiply-adds, rounded once, as BLAS rounds them), and each sum is stored into
``ext`` once. Each task is one group of channels and a group of samples: it stacks the
group's source channels, then sums its target channels block by block. Each worker
thread reuses its buffers from task to task, their padding zeroed once.
:func:`convolve` computes the forward pass and, with the filters turned, the input
gradient; :func:`backward_weight` the weight gradient, whose sums over positions go
four output channels by four terms at a time, 16 vector sums in registers
(:func:`_block_products`), or, for the output channels left over (one per group in
depthwise layers), in loops reassociated so that LLVM vectorises them. Arrays are 5-d
``(N, C, 1, H, W)`` as in :mod:`.unfold`, the weight ``(K, C/G * kh * kw)`` as in
:mod:`.direct`.
"""

import numba
import numpy as np
from llvmlite import ir
from numba import prange, types
from numba.extending import intrinsic

from .._config import jit
from .vector import Vectors, array_data, copy_row, counted_loop, rows_of

#: Samples stacked per task stay within this many bytes, a typical L1 data cache.
L1_BYTES = 32 * 1024
#: Offsets taken together in one pass over the weight gradient's ``ext``.
FUSED = 3
#: Bytes of a vector of :func:`_block_sums`: 16 lanes of float32, 8 of float64.
VECTOR_BYTES = 64
_CHECKED = numba.config.BOUNDSCHECK
_INT64 = ir.IntType(64)


def _int(value):
    return ir.Constant(_INT64, value)


def _vectors(context, builder, dtype):
    """:class:`.vector.Vectors` of :data:`VECTOR_BYTES` of ``dtype``."""
    itemsize = context.get_abi_sizeof(context.get_data_type(dtype))
    return Vectors(context, builder, dtype, VECTOR_BYTES // itemsize)


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


def _block_sums(targets, vectors):
    """An intrinsic: ``vectors`` adjacent vectors of ``targets`` target channels' sums,
    each ``ext[k, e + i] = sum(weights[t * targets + k] * flat[starts[t] + e + i])`` over
    the terms ``t`` (a source channel's kernel offset each) for positions ``i`` below
    ``count``, where ``flat`` is the buffers' data. The sums stay in registers across
    the terms: each term loads its vectors once, for all the targets."""

    @intrinsic
    def block_sums(typingctx, buffers, starts, weights, e, ext, count):
        def codegen(context, builder, signature, args):
            _, _, _, e, _, count = args
            vec = _vectors(context, builder, signature.args[0].dtype)
            flat = array_data(context, builder, signature.args[0], args[0])
            start_data = array_data(context, builder, signature.args[1], args[1])
            weight_data = array_data(context, builder, signature.args[2], args[2])
            ext_data, ext_row = rows_of(context, builder, signature.args[4], args[4])
            terms = builder.extract_value(
                context.make_array(signature.args[1])(context, builder, args[1]).shape, 0)
            masks = [vec.lanes_below(builder.sub(count, _int(v * vec.lanes)))
                     for v in range(vectors)]

            def term(t, sums):
                start = builder.add(builder.load(builder.gep(start_data, [t])), e)
                loaded = [vec.load(flat, builder.add(start, _int(v * vec.lanes)), masks[v])
                          for v in range(vectors)]
                first_weight = builder.mul(t, _int(targets))
                following = []
                for k in range(targets):
                    weight = vec.splat(builder.load(builder.gep(
                        weight_data, [builder.add(first_weight, _int(k))])))
                    following += [vec.multiply_add(weight, x, total) for x, total in
                                  zip(loaded, sums[k * vectors:(k + 1) * vectors])]
                return following

            zero = ir.Constant(vec.type, None)
            sums = counted_loop(builder, terms, _int(1), [zero] * (targets * vectors), term)
            for k in range(targets):
                row = builder.add(builder.mul(ext_row, _int(k)), e)
                for v in range(vectors):
                    vec.store(sums[k * vectors + v], ext_data,
                              builder.add(row, _int(v * vec.lanes)), masks[v])
            return context.get_dummy_value()

        return types.void(buffers, starts, weights, e, ext, count), codegen

    return block_sums


#: Target channels summed together (see :func:`_block_sums`), and the vectors of
#: positions each block sums at once: 16 sums in registers, 8 for a single target.
_BLOCKS = ((8, 2), (4, 4), (2, 8), (1, 8))
_SUMS_8, _SUMS_4, _SUMS_2, _SUMS_1 = (_block_sums(t, v) for t, v in _BLOCKS)


@jit(inline=True)
def _term_starts(sources, offsets, buffer_length, size):
    """Where each term reads in the buffers' data, ``size`` of them: term ``s * volume +
    t``, source channel ``s`` at kernel offset ``t``, at ``s * buffer_length +
    offsets[t]``; the terms past the last at 0, the first position."""
    volume = offsets.size
    starts = np.zeros(size, np.int64)
    for s in range(sources):
        for t in range(volume):
            starts[s * volume + t] = s * buffer_length + offsets[t]
    return starts


@jit(inline=True)
def _block_size(remaining):
    """The largest block of target channels, 8, 4, 2 or 1, not above ``remaining``."""
    size = 8
    while size > remaining:
        size //= 2
    return size


@jit()
def _multiply_add(block, starts, weights, buffers, ext, length):
    """``ext[k, e] = sum(weights[t * block + k] * flat[starts[t] + e])`` for ``k`` below
    ``block`` and ``e`` below ``length``, over the terms ``t``, ``flat`` the buffers'
    data: :func:`_block_sums` along the positions."""
    step = 0
    for size, vectors in _BLOCKS:
        if size == block:
            step = vectors * (VECTOR_BYTES // buffers.itemsize)
    for e in range(0, length, step):
        count = min(step, length - e)
        if _CHECKED:  # the first and last element each term and target reads
            flat = buffers.reshape(-1)
            flat[starts[0] + e], flat[starts[-1] + e + count - 1]
            ext[block - 1, e + count - 1], weights[starts.size * block - 1]
        if block == 8:
            _SUMS_8(buffers, starts, weights, e, ext, count)
        elif block == 4:
            _SUMS_4(buffers, starts, weights, e, ext, count)
        elif block == 2:
            _SUMS_2(buffers, starts, weights, e, ext, count)
        else:
            _SUMS_1(buffers, starts, weights, e, ext, count)


@jit()
def _blocked_weights(turned, weight, groups, sources, targets, volume):
    """The filters as :func:`_multiply_add` takes them, block by block of target channels
    (as :func:`_block_size` cuts them): the block of ``b`` targets from target ``j`` of
    ``group`` at ``(group * targets + j) * terms``, term-major, ``terms = sources *
    volume``. With ``turned``, the filters of the input gradient."""
    terms = sources * volume
    blocks = np.empty(groups * targets * terms, weight.dtype)
    for group in range(groups):
        j = 0
        while j < targets:
            block = _block_size(targets - j)
            at = (group * targets + j) * terms
            for s in range(sources):
                for t in range(volume):
                    for k in range(block):
                        blocks[at + (s * volume + t) * block + k] = (
                            weight[group * sources + s, (j + k + 1) * volume - 1 - t]
                            if turned else weight[group * targets + j + k, s * volume + t])
            j += block
    return blocks


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
    terms = sources * volume
    blocks = _blocked_weights(turned, weight, groups, sources, targets, volume)
    for worker in prange(workers):
        buffers, ext = _buffers(sources, _BLOCKS[0][0], samples, rows, row_length, kernel,
                                dilation, source.dtype)
        starts = _term_starts(sources, offsets, buffers.shape[1], terms)
        for task in _worker_tasks(worker, workers, tasks):
            group, first, count = _task(task, groups, samples, batch)
            for s in range(sources):
                _stack(source, first, count, group * sources + s, top, left, rows,
                       row_length, buffers[s])
            length = ((count - 1) * rows + out_h) * row_length
            j = 0
            while j < targets:  # blocks of target channels, sharing the loads
                block = _block_size(targets - j)
                at = (group * targets + j) * terms
                _multiply_add(block, starts, blocks[at:at + block * terms], buffers, ext,
                              length)
                for k in range(block):
                    _unstack(ext[k], first, count, group * targets + j + k, rows,
                             row_length, target)
                j += block


def _block_products(targets, terms):
    """An intrinsic: the sums of products of ``targets`` output-gradient rows and
    ``terms`` terms, ``out[k * terms + t] = sum(grads[k, e] * flat[starts[first + t] + e])``
    over the positions ``e`` below ``length`` where ``here[e]`` is not zero, ``flat`` the
    buffers' data. Each position's vectors are loaded once for all the pairs, whose
    sums stay in registers along the positions and are added across lanes at the end,
    always in the same order."""

    @intrinsic
    def block_products(typingctx, buffers, starts, first, grads, here, length, out):
        def codegen(context, builder, signature, args):
            _, _, first, _, _, length, _ = args
            vec = _vectors(context, builder, signature.args[0].dtype)
            flat = array_data(context, builder, signature.args[0], args[0])
            start_data = array_data(context, builder, signature.args[1], args[1])
            grad_data, grad_row = rows_of(context, builder, signature.args[3], args[3])
            here_data = array_data(context, builder, signature.args[4], args[4])
            out_data = array_data(context, builder, signature.args[6], args[6])
            starts = [builder.load(builder.gep(start_data, [builder.add(first, _int(t))]))
                      for t in range(terms)]
            zero = ir.Constant(vec.type, None)

            def position(e, sums):
                in_range = vec.lanes_below(builder.sub(length, e))
                # the dropped positions may pair a zero gradient with an input's inf or NaN
                kept = builder.and_(in_range, builder.fcmp_unordered(
                    "!=", vec.load(here_data, e, in_range), zero))
                rows = [vec.load(grad_data, builder.add(builder.mul(grad_row, _int(k)), e),
                                 in_range) for k in range(targets)]
                following = list(sums)
                for t, start in enumerate(starts):
                    inputs = vec.load(flat, builder.add(start, e), kept)
                    for k, row in enumerate(rows):
                        following[k * terms + t] = vec.multiply_add(row, inputs,
                                                                    sums[k * terms + t])
                return following

            sums = counted_loop(builder, length, _int(vec.lanes), [zero] * (targets * terms),
                            position)
            for index, total in enumerate(sums):
                builder.store(vec.lane_sum(total), builder.gep(out_data, [_int(index)]))
            return context.get_dummy_value()

        return types.void(buffers, starts, first, grads, here, length, out), codegen

    return block_products


#: The weight gradient's blocks: output-gradient rows by terms summed together.
PRODUCT_TARGETS, PRODUCT_TERMS = 4, 4
_PRODUCTS = _block_products(PRODUCT_TARGETS, PRODUCT_TERMS)


@jit()
def _products(buffers, starts, first, grads, here, length, out):
    """:func:`_block_products` of the terms from ``first``, bounds-checked where the
    build is."""
    if _CHECKED:  # the last element each term, row and mask reads, and the last sum
        for t in range(first, first + PRODUCT_TERMS):
            buffers.reshape(-1)[starts[t] + length - 1]
        grads[PRODUCT_TARGETS - 1, length - 1], here[length - 1]
        out[PRODUCT_TARGETS * PRODUCT_TERMS - 1]
    _PRODUCTS(buffers, starts, first, grads, here, length, out)


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
    # the sources and a block of output-gradient rows
    samples = _samples_per_task(batch, (sources + PRODUCT_TARGETS) * rows * row_length,
                                x.itemsize)
    sample_groups = -(-batch // samples)
    tasks = groups * sample_groups
    workers = min(threads, tasks)
    output_here = np.zeros(samples * rows * row_length, np.bool_)
    for s in range(samples):
        for y in range(out_h):
            for q in range(out_w):
                output_here[(s * rows + y) * row_length + q] = True
    here = output_here.astype(x.dtype)
    terms = sources * volume
    # blocks of terms padded with the buffers' first position, their sums dropped
    padded_terms = -(-terms // PRODUCT_TERMS) * PRODUCT_TERMS
    sums = np.zeros((sample_groups, dw.shape[0], dw.shape[1]), dw.dtype)
    for worker in prange(workers):
        buffers, ext = _buffers(sources, PRODUCT_TARGETS, samples, rows, row_length, kernel,
                                dilation, x.dtype)
        starts = _term_starts(sources, offsets, buffers.shape[1], padded_terms)
        products = np.empty(PRODUCT_TARGETS * PRODUCT_TERMS, x.dtype)
        for task in _worker_tasks(worker, workers, tasks):
            group, first, count = _task(task, groups, samples, batch)
            task_sums = sums[task // groups]
            for s in range(sources):
                _stack(x, first, count, group * sources + s, top, left, rows, row_length,
                       buffers[s])
            length = ((count - 1) * rows + out_h) * row_length
            j = 0
            while j + PRODUCT_TARGETS <= targets:  # their vectors loaded once for the block
                for k in range(PRODUCT_TARGETS):
                    _stack(grad_output, first, count, group * targets + j + k, 0, 0, rows,
                           row_length, ext[k])
                for t in range(0, padded_terms, PRODUCT_TERMS):
                    _products(buffers, starts, t, ext, here, length, products)
                    for k in range(PRODUCT_TARGETS):
                        for u in range(min(PRODUCT_TERMS, terms - t)):
                            task_sums[group * targets + j + k, t + u] += products[
                                k * PRODUCT_TERMS + u]
                j += PRODUCT_TARGETS
            for target in range(group * targets + j, (group + 1) * targets):
                _stack(grad_output, first, count, target, 0, 0, rows, row_length, ext[0])
                for s in range(sources):
                    _sum_products(offsets, buffers[s], ext[0, :length], output_here,
                                  task_sums[target, s * volume:(s + 1) * volume])
    for k in range(dw.shape[0]):
        for column in range(dw.shape[1]):
            total = sums[0, k, column]
            for sample_group in range(1, sample_groups):
                total += sums[sample_group, k, column]
            dw[k, column] = total
