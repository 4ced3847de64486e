"""Masked vectors in LLVM IR, and row copies in them for rows too short for LLVM's
vectorised loops.

:class:`Vectors` emits masked vector loads and stores and fused multiply-adds through
Numba's intrinsics (``llvmlite`` comes with Numba); the kernels of :mod:`.columns` are
written in it. A masked-off lane is neither read nor written, so a vector may start
before a row or reach past it and still touch only the row.

LLVM vectorises a copy loop in blocks of several vectors and leaves the rest to a scalar
loop, so a row of 7 or 14 elements is copied element by element. :func:`copy_row`
copies a row :data:`LANES` elements at a time, each in one unaligned, masked vector
load and store: the last vector's mask leaves the elements past the row alone. The
intrinsics do not check bounds; bounds-checked builds (NUMBA_BOUNDSCHECK=1) check each
vector's first and last element first.
"""

import numba
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from .._config import jit

#: Elements a vector holds here: 32 bytes of float32, 64 of float64.
LANES = 8
_CHECKED = numba.config.BOUNDSCHECK
_INT32 = ir.IntType(32)
_INT64 = ir.IntType(64)


class Vectors:
    """LLVM IR for vectors of ``lanes`` elements of a dtype, emitted by ``builder``:
    splats, lane masks, and masked loads and stores at an element of an array's data,
    all unaligned. A masked-off lane is neither read nor written; it loads as zero."""

    def __init__(self, context, builder, dtype, lanes):
        self.builder = builder
        self.lanes = lanes
        self.type = ir.VectorType(context.get_data_type(dtype), lanes)
        mask_type = ir.VectorType(ir.IntType(1), lanes)
        name = f"v{lanes}f{context.get_abi_sizeof(self.type.element) * 8}"
        pointer = self.type.as_pointer()
        module = builder.module
        self._load = cgutils.get_or_insert_function(
            module, ir.FunctionType(self.type, [pointer, _INT32, mask_type, self.type]),
            f"llvm.masked.load.{name}.p0")
        self._store = cgutils.get_or_insert_function(
            module, ir.FunctionType(ir.VoidType(), [self.type, pointer, _INT32, mask_type]),
            f"llvm.masked.store.{name}.p0")
        self._expand = cgutils.get_or_insert_function(
            module, ir.FunctionType(self.type, [self.type.element.as_pointer(), mask_type,
                                                self.type]),
            f"llvm.masked.expandload.{name}")
        self._fma = cgutils.get_or_insert_function(
            module, ir.FunctionType(self.type, [self.type] * 3), f"llvm.fmuladd.{name}")

    def splat(self, value):
        """``value`` in every lane."""
        vector = ir.VectorType(value.type, self.lanes)
        one = self.builder.insert_element(ir.Constant(vector, None), value,
                                          ir.Constant(_INT32, 0))
        return self.builder.shuffle_vector(
            one, one, ir.Constant(ir.VectorType(_INT32, self.lanes), [0] * self.lanes))

    def lane_numbers(self):
        """The int64 vector ``0, 1, ..., lanes - 1``."""
        return ir.Constant(ir.VectorType(_INT64, self.lanes), list(range(self.lanes)))

    def lanes_below(self, count):
        """The mask of the lanes whose number is below ``count`` (an int64)."""
        return self.builder.icmp_signed("<", self.lane_numbers(), self.splat(count))

    def _pointer(self, data, index):
        return self.builder.bitcast(self.builder.gep(data, [index]), self.type.as_pointer())

    def load(self, data, index, mask):
        return self.builder.call(self._load, [self._pointer(data, index),
                                              ir.Constant(_INT32, 1), mask,
                                              ir.Constant(self.type, None)])

    def expand_load(self, data, index, mask):
        """The lanes of ``mask`` in turn take the elements from ``data[index]`` on; the
        others are zero."""
        return self.builder.call(self._expand, [self.builder.gep(data, [index]), mask,
                                                ir.Constant(self.type, None)])

    def store(self, value, data, index, mask):
        self.builder.call(self._store, [value, self._pointer(data, index),
                                        ir.Constant(_INT32, 1), mask])

    def lane_sum(self, vector):
        """The sum of ``vector``'s lanes, added in halves: the same order every time."""
        builder, width = self.builder, self.lanes
        while width > 1:
            width //= 2
            lanes = ir.VectorType(_INT32, width)
            low = builder.shuffle_vector(vector, vector, ir.Constant(lanes, list(range(width))))
            high = builder.shuffle_vector(vector, vector,
                                          ir.Constant(lanes, list(range(width, 2 * width))))
            vector = builder.fadd(low, high)
        return builder.extract_element(vector, ir.Constant(_INT32, 0))

    def multiply_add(self, a, b, c):
        """``a * b + c``, fused where the CPU can (rounded once, as BLAS rounds it)."""
        return self.builder.call(self._fma, [a, b, c])


def array_data(context, builder, array_type, array_value):
    """The data pointer of an array argument of an intrinsic."""
    return context.make_array(array_type)(context, builder, array_value).data


def rows_of(context, builder, array_type, array_value):
    """The data pointer of a 2-d array argument of an intrinsic, and the elements from
    one row to the next."""
    array = context.make_array(array_type)(context, builder, array_value)
    itemsize = ir.Constant(_INT64, context.get_abi_sizeof(context.get_data_type(
        array_type.dtype)))
    return array.data, builder.sdiv(builder.extract_value(array.strides, 0), itemsize)


def counted_loop(builder, stop, step, initial, body):
    """Emit ``for i in range(0, stop, step)`` (int64s) carrying values, ``initial`` on
    entry: ``body(i, values)`` emits an iteration and returns the values for the next.
    Returns the values after the loop (``initial`` if it ran no iteration)."""
    before = builder.block
    loop = builder.append_basic_block("loop")
    after = builder.append_basic_block("loop.end")
    start = ir.Constant(_INT64, 0)
    builder.cbranch(builder.icmp_signed("<", start, stop), loop, after)
    builder.position_at_end(loop)
    index = builder.phi(_INT64)
    carried = [builder.phi(value.type) for value in initial]
    updated = body(index, carried)
    following = builder.add(index, step)
    end = builder.block
    index.add_incoming(start, before)
    index.add_incoming(following, end)
    for phi, first, value in zip(carried, initial, updated):
        phi.add_incoming(first, before)
        phi.add_incoming(value, end)
    builder.cbranch(builder.icmp_signed("<", following, stop), loop, after)
    builder.position_at_end(after)
    results = []
    for first, value in zip(initial, updated):
        result = builder.phi(value.type)
        result.add_incoming(first, before)
        result.add_incoming(value, end)
        results.append(result)
    return results


@intrinsic
def _copy_vector(typingctx, source, start, target, at, count):
    """``target[at:at + count] = source[start:start + count]`` for flat C-contiguous
    arrays of one dtype, ``count <= LANES``, in one masked load and store."""
    if source.dtype != target.dtype or source.layout != "C" or target.layout != "C":
        return None

    def codegen(context, builder, signature, args):
        vectors = Vectors(context, builder, signature.args[0].dtype, LANES)
        mask = vectors.lanes_below(args[4])
        loaded = vectors.load(array_data(context, builder, signature.args[0], args[0]),
                              args[1], mask)
        vectors.store(loaded, array_data(context, builder, signature.args[2], args[2]),
                      args[3], mask)
        return context.get_dummy_value()

    return types.void(source, start, target, at, count), codegen


@jit(inline=True)
def copy_row(source, start, target, at, width):
    """``target[at:at + width] = source[start:start + width]`` in masked vectors."""
    for x in range(0, width, LANES):
        count = min(LANES, width - x)
        if _CHECKED:  # the first and last element of each vector
            source[start + x], source[start + x + count - 1]
            target[at + x], target[at + x + count - 1]
        _copy_vector(source, start + x, target, at + x, count)
