"""A NumPy-only convolution, as small frameworks usually write it.

This is the comparison fastconv has to beat besides torch: the Chainer / CS231n
style. im2col pads the input and takes one strided slice per kernel offset; the GEMM
is ``np.tensordot``; col2im adds each offset's slice back with ``+=``. Zero padding
only, every rank, groups by a loop.
"""

from __future__ import annotations

import itertools

import numpy as np


def _windows(shape, kernel, stride, padding, dilation):
    """Output size, and per kernel offset the strided slices of the padded input it reads."""
    size = shape[2:]
    out = tuple((n + 2 * p - d * (k - 1) - 1) // s + 1
                for n, k, s, p, d in zip(size, kernel, stride, padding, dilation))
    slices = {
        offset: (slice(None), slice(None),
                 *(slice(j * d, j * d + s * (o - 1) + 1, s)
                   for j, d, s, o in zip(offset, dilation, stride, out)))
        for offset in itertools.product(*map(range, kernel))
    }
    return out, slices


def im2col(x, kernel, stride, padding, dilation):
    """``(N, C, *kernel, *out)`` columns of ``x``."""
    out, slices = _windows(x.shape, kernel, stride, padding, dilation)
    padded = np.pad(x, [(0, 0), (0, 0), *((p, p) for p in padding)])
    cols = np.empty((*x.shape[:2], *kernel, *out), x.dtype)
    for offset, window in slices.items():
        cols[(slice(None), slice(None), *offset)] = padded[window]
    return cols


def col2im(cols, input_shape, kernel, stride, padding, dilation):
    """Sum ``(N, C, *kernel, *out)`` columns back into ``input_shape`` images."""
    _, slices = _windows(input_shape, kernel, stride, padding, dilation)
    padded = np.zeros((*input_shape[:2], *(n + 2 * p for n, p in zip(input_shape[2:], padding))),
                      cols.dtype)
    for offset, window in slices.items():
        padded[window] += cols[(slice(None), slice(None), *offset)]
    crop = tuple(slice(p, p + n) for p, n in zip(padding, input_shape[2:]))
    return padded[(slice(None), slice(None), *crop)]


def _groups(count, *arrays_and_axes):
    """Split each (array, axis) into ``count`` equal parts along ``axis``; zip the parts."""
    return zip(*(np.split(a, count, axis=axis) for a, axis in arrays_and_axes))


def conv_forward(x, w, b=None, *, stride, padding, dilation, groups=1):
    rank = w.ndim - 2
    cols = im2col(x, w.shape[2:], stride, padding, dilation)
    reduce_axes = tuple(range(1, rank + 2))
    parts = [np.tensordot(cols_g, w_g, axes=(reduce_axes, reduce_axes))
             for cols_g, w_g in _groups(groups, (cols, 1), (w, 0))]
    y = np.moveaxis(np.concatenate(parts, axis=-1), -1, 1)
    if b is not None:
        y = y + b.reshape((-1,) + (1,) * rank)
    return y


def conv_backward_weight(dy, x, weight_shape, *, stride, padding, dilation, groups=1):
    rank = len(weight_shape) - 2
    cols = im2col(x, weight_shape[2:], stride, padding, dilation)
    out_axes = tuple(range(rank + 2, 2 * rank + 2))
    parts = [np.tensordot(dy_g, cols_g, axes=((0, *range(2, rank + 2)), (0, *out_axes)))
             for dy_g, cols_g in _groups(groups, (dy, 1), (cols, 1))]
    return np.concatenate(parts, axis=0)


def conv_backward_input(dy, w, input_shape, *, stride, padding, dilation, groups=1):
    rank = w.ndim - 2
    parts = [np.tensordot(w_g, dy_g, axes=(0, 1))  # (Cg, *kernel, N, *out)
             for w_g, dy_g in _groups(groups, (w, 0), (dy, 1))]
    dcols = np.moveaxis(np.concatenate(parts, axis=0), rank + 1, 0)
    return col2im(dcols, input_shape, w.shape[2:], stride, padding, dilation)
