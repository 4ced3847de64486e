"""Reductions over im2col columns for pooling, and the scatter of max pooling's gradient.

Pooling sees each (sample, channel) plane as its own one-channel image, so the columns
are ``(volume, planes, L)`` with ``L`` windows per plane: kernel offset ``r`` of window
``w`` of plane ``m`` is ``cols[r, m, w]``. ``positions[r, w]`` is the flat input index
that offset reads, or -1 where it reads padding; it is the same for every plane.
"""

import numpy as np
from numba import prange

from .._config import jit


@jit(parallel=True)
def max_over_windows(cols, positions, values, indices):
    # Overwrites values and indices (planes, L). torch's rule, scanning offsets in order:
    # a value wins if it is greater than the best so far or NaN, so the first of equal
    # maxima wins, and NaN propagates. A window of -inf keeps its first input position.
    volume, planes, length = cols.shape
    for m in prange(planes):
        for w in range(length):
            values[m, w] = -np.inf
            r = 0
            while positions[r, w] < 0:
                r += 1
            indices[m, w] = positions[r, w]
        for r in range(volume):
            for w in range(length):
                v = cols[r, m, w]
                if positions[r, w] >= 0 and (v > values[m, w] or np.isnan(v)):
                    values[m, w] = v
                    indices[m, w] = positions[r, w]


@jit(parallel=True)
def scatter_add(grad, indices, dx):
    # Adds grad (planes, L) into dx (planes, P) at the flat indices. One task per
    # plane: no races. The caller checks 0 <= indices < P.
    planes, length = grad.shape
    for m in prange(planes):
        for w in range(length):
            dx[m, indices[m, w]] += grad[m, w]
