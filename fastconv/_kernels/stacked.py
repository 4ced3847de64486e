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
gradient; :func:`backward_weight` the weight gradient, whose sums
over positions are reassociated so that LLVM vectorises them. Arrays are 5-d
``(N, C, 1, H, W)`` as in :mod:`.unfold`, the weight ``(K, C/G * kh * kw)`` as in
:mod:`.direct`.
"""

import numba
import numpy as np
from llvmlite import ir
from numba import prange, types
from numba.extending import intrinsic

from .._config import jit
from .vector import Vectors, array_data, copy_row

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
            dtype = signature.args[0].dtype
            lanes = VECTOR_BYTES // context.get_abi_sizeof(context.get_data_type(dtype))
            vec = Vectors(context, builder, dtype, lanes)
            flat = array_data(context, builder, signature.args[0], args[0])
            start_data = array_data(context, builder, signature.args[1], args[1])
            weight_data = array_data(context, builder, signature.args[2], args[2])
            ext_array = context.make_array(signature.args[4])(context, builder, args[4])
            ext_row = builder.extract_value(ext_array.strides, 0)
            ext_row = builder.sdiv(ext_row, _int(context.get_abi_sizeof(vec.type.element)))
            terms = builder.extract_value(
                context.make_array(signature.args[1])(context, builder, args[1]).shape, 0)
            masks = [vec.lanes_below(builder.sub(count, _int(v * lanes)))
                     for v in range(vectors)]
            zero = ir.Constant(vec.type, None)
            before = builder.block
            loop = builder.append_basic_block("terms")
            after = builder.append_basic_block("terms.end")
            builder.branch(loop)
            builder.position_at_end(loop)
            t = builder.phi(_INT64)
            sums = [[builder.phi(vec.type) for _ in range(vectors)] for _ in range(targets)]
            start = builder.add(builder.load(builder.gep(start_data, [t])), e)
            loaded = [vec.load(flat, builder.add(start, _int(v * lanes)), masks[v])
                      for v in range(vectors)]
            first_weight = builder.mul(t, _int(targets))
            following = []
            for k in range(targets):
                weight = vec.splat(builder.load(builder.gep(
                    weight_data, [builder.add(first_weight, _int(k))])))
                following.append([vec.multiply_add(weight, x, total)
                                  for x, total in zip(loaded, sums[k])])
            next_t = builder.add(t, _int(1))
            end = builder.block
            t.add_incoming(_int(0), before)
            t.add_incoming(next_t, end)
            for phis, updated in zip(sums, following):
                for phi, value in zip(phis, updated):
                    phi.add_incoming(zero, before)
                    phi.add_incoming(value, end)
            builder.cbranch(builder.icmp_signed("<", next_t, terms), loop, after)
            builder.position_at_end(after)
            for k, totals in enumerate(following):
                row = builder.add(builder.mul(ext_row, _int(k)), e)
                for v, total in enumerate(totals):
                    vec.store(total, ext_array.data, builder.add(row, _int(v * lanes)),
                              masks[v])
            return context.get_dummy_value()

        return types.void(buffers, starts, weights, e, ext, count), codegen

    return block_sums


#: Target channels summed together (see :func:`_block_sums`), and the vectors of
#: positions each block sums at once: 16 sums in registers, 8 for a single target.
_BLOCKS = ((8, 2), (4, 4), (2, 8), (1, 8))
_SUMS_8, _SUMS_4, _SUMS_2, _SUMS_1 = (_block_sums(t, v) for t, v in _BLOCKS)


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
        # term s * volume + t: source channel s at kernel offset t
        starts = np.empty(terms, np.int64)
        for s in range(sources):
            for t in range(volume):
                starts[s * volume + t] = s * buffers.shape[1] + offsets[t]
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
