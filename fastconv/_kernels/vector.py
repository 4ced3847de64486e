"""Whole-vector copies, for rows too short for LLVM's vectorised loops.

LLVM vectorises a copy loop in blocks of several vectors and leaves the rest to a scalar
loop, so a row of 7 or 14 elements is copied element by element. :func:`copy_row`
copies a row :data:`LANES` elements at a time, each in one unaligned vector load and
store (LLVM IR through Numba's intrinsics; ``llvmlite`` comes with Numba), and
:func:`clear_vector` zeroes ``LANES`` elements in one store. The intrinsics do not
check bounds; bounds-checked builds (NUMBA_BOUNDSCHECK=1) check each vector first.
"""

import numba
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from .._config import jit

#: Elements a vector holds here: 32 bytes of float32, 64 of float64.
LANES = 8
_CHECKED = numba.config.BOUNDSCHECK


def _vector_pointer(context, builder, array_type, array_value, index):
    array = context.make_array(array_type)(context, builder, array_value)
    vector = ir.VectorType(context.get_data_type(array_type.dtype), LANES)
    return builder.bitcast(builder.gep(array.data, [index]), vector.as_pointer())


@intrinsic
def _copy_vector(typingctx, source, start, target, at):
    """``target[at:at + LANES] = source[start:start + LANES]`` for flat C-contiguous
    arrays of one dtype."""
    if source.dtype != target.dtype:
        return None

    def codegen(context, builder, signature, args):
        loaded = builder.load(_vector_pointer(context, builder, signature.args[0], args[0],
                                              args[1]), align=1)
        builder.store(loaded, _vector_pointer(context, builder, signature.args[2], args[2],
                                              args[3]), align=1)
        return context.get_dummy_value()

    return types.void(source, start, target, at), codegen


@intrinsic
def _clear_vector(typingctx, target, at):
    """``target[at:at + LANES] = 0`` for a flat C-contiguous array."""

    def codegen(context, builder, signature, args):
        pointer = _vector_pointer(context, builder, signature.args[0], args[0], args[1])
        builder.store(ir.Constant(pointer.type.pointee, None), pointer, align=1)
        return context.get_dummy_value()

    return types.void(target, at), codegen


@jit(inline=True)
def _check_vector(array, at):
    """Raise IndexError unless ``array[at:at + LANES]`` is in bounds."""
    array[at]
    array[at + LANES - 1]


@jit(inline=True)
def clear_vector(target, at):
    """``target[at:at + LANES] = 0`` in one store, where a loop of a few scalar stores
    may become a call to memset."""
    if _CHECKED:
        _check_vector(target, at)
    _clear_vector(target, at)


@jit(inline=True)
def copy_row(source, start, target, at, width, whole):
    """``target[at:at + width] = source[start:start + width]``; with ``whole``, in whole
    vectors, which copy up to ``LANES - 1`` elements more."""
    if whole:
        for x in range(0, width, LANES):
            if _CHECKED:
                _check_vector(source, start + x)
                _check_vector(target, at + x)
            _copy_vector(source, start + x, target, at + x)
    else:
        for x in range(width):
            target[at + x] = source[start + x]
