"""Row copies in masked vectors, for rows too short for LLVM's vectorised loops.

LLVM vectorises a copy loop in blocks of several vectors and leaves the rest to a scalar
loop, so a row of 7 or 14 elements is copied element by element. :func:`copy_row`
copies a row :data:`LANES` elements at a time, each in one unaligned, masked vector
load and store (LLVM IR through Numba's intrinsics; ``llvmlite`` comes with Numba):
the last vector's mask leaves the elements past the row alone, unread and unwritten,
so a copy touches exactly the row. The intrinsic does not check bounds; bounds-checked
builds (NUMBA_BOUNDSCHECK=1) check each vector first.
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


def _vector_pointer(context, builder, array_type, array_value, index):
    array = context.make_array(array_type)(context, builder, array_value)
    vector = ir.VectorType(context.get_data_type(array_type.dtype), LANES)
    return builder.bitcast(builder.gep(array.data, [index]), vector.as_pointer())


def _lanes_below(builder, count):
    """The mask of the lanes whose index is below ``count`` (an int64)."""
    lanes = ir.VectorType(count.type, LANES)
    splat = builder.insert_element(ir.Constant(lanes, None), count, ir.Constant(_INT32, 0))
    splat = builder.shuffle_vector(splat, splat, ir.Constant(ir.VectorType(_INT32, LANES),
                                                             [0] * LANES))
    return builder.icmp_signed("<", ir.Constant(lanes, list(range(LANES))), splat)


@intrinsic
def _copy_vector(typingctx, source, start, target, at, count):
    """``target[at:at + count] = source[start:start + count]`` for flat C-contiguous
    arrays of one dtype, ``count <= LANES``, in one masked load and store."""
    if source.dtype != target.dtype or source.layout != "C" or target.layout != "C":
        return None

    def codegen(context, builder, signature, args):
        source_pointer = _vector_pointer(context, builder, signature.args[0], args[0],
                                         args[1])
        target_pointer = _vector_pointer(context, builder, signature.args[2], args[2],
                                         args[3])
        vector = source_pointer.type.pointee
        mask = _lanes_below(builder, args[4])
        name = f"v{LANES}f{context.get_abi_sizeof(vector.element) * 8}.p0"
        load = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(vector, [source_pointer.type, _INT32, mask.type,
                                                     vector]), "llvm.masked.load." + name)
        store = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [vector, target_pointer.type,
                                                            _INT32, mask.type]),
            "llvm.masked.store." + name)
        alignment = ir.Constant(_INT32, 1)
        loaded = builder.call(load, [source_pointer, alignment, mask,
                                     ir.Constant(vector, None)])
        builder.call(store, [loaded, target_pointer, alignment, mask])
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
