"""Slow, obvious convolutions written from the definitions.

An oracle independent of both im2col and torch: every function loops over output
positions and kernel offsets and maps each padded coordinate back to the input
element it stands for. Only the channel contractions use numpy.
"""

from __future__ import annotations

import itertools

import numpy as np


def source_index(position: int, size: int, mode: str) -> int | None:
    """The input index a padded coordinate reads, or None for a zero."""
    if 0 <= position < size:
        return position
    if mode == "zeros":
        return None
    if mode == "reflect":
        return -position if position < 0 else 2 * (size - 1) - position
    if mode == "replicate":
        return min(max(position, 0), size - 1)
    if mode == "circular":
        return position % size
    raise ValueError(mode)


def output_size(size, kernel, stride, pad_low, pad_high, dilation):
    return tuple((n + lo + hi - d * (k - 1) - 1) // s + 1
                 for n, k, s, lo, hi, d in zip(size, kernel, stride, pad_low, pad_high, dilation))


def _taps(out_size, kernel, stride, pad_low, dilation, size, mode):
    """Yield (output position, kernel offset, input index) for every tap that reads input."""
    for out in itertools.product(*map(range, out_size)):
        for offset in itertools.product(*map(range, kernel)):
            index = tuple(source_index(o * s - lo + j * d, n, mode)
                          for o, s, lo, j, d, n in zip(out, stride, pad_low, offset, dilation,
                                                       size))
            if None not in index:
                yield out, offset, index


def _group_taps(weight_shape, groups, size, out_size, stride, pad_low, dilation, mode):
    """Yield (x index, y index, w index) for every tap of every group: the convolution is
    ``y[y index] += x[x index] @ w[w index].T`` summed over the taps."""
    out_channels, group_channels, *kernel = weight_shape
    group_out = out_channels // groups
    for g in range(groups):
        cin = slice(g * group_channels, (g + 1) * group_channels)
        cout = slice(g * group_out, (g + 1) * group_out)
        for out, offset, index in _taps(out_size, kernel, stride, pad_low, dilation, size, mode):
            yield ((slice(None), cin, *index), (slice(None), cout, *out),
                   (cout, slice(None), *offset))


def conv(x, w, b=None, *, stride, pad_low, pad_high, dilation, groups=1, mode="zeros"):
    """y[n, k, o] = sum over c, j of x[n, c, o*s - p + j*d] * w[k, c, j] (+ b[k])."""
    size = x.shape[2:]
    out_size = output_size(size, w.shape[2:], stride, pad_low, pad_high, dilation)
    y = np.zeros((x.shape[0], w.shape[0], *out_size))
    for xi, yi, wi in _group_taps(w.shape, groups, size, out_size, stride, pad_low, dilation,
                                  mode):
        y[yi] += x[xi] @ w[wi].T
    if b is not None:
        y += b.reshape((-1,) + (1,) * len(size))
    return y


def conv_backward_input(dy, w, input_shape, *, stride, pad_low, dilation, groups=1,
                        mode="zeros"):
    """The adjoint of :func:`conv` in x: each tap adds its product back onto its source."""
    dx = np.zeros(input_shape)
    for xi, yi, wi in _group_taps(w.shape, groups, input_shape[2:], dy.shape[2:], stride,
                                  pad_low, dilation, mode):
        dx[xi] += dy[yi] @ w[wi]
    return dx


def conv_backward_weight(dy, x, weight_shape, *, stride, pad_low, dilation, groups=1,
                         mode="zeros"):
    """The adjoint of :func:`conv` in w."""
    dw = np.zeros(weight_shape)
    for xi, yi, wi in _group_taps(weight_shape, groups, x.shape[2:], dy.shape[2:], stride,
                                  pad_low, dilation, mode):
        dw[wi] += dy[yi].T @ x[xi]
    return dw


def conv_transpose(x, w, *, stride, padding, output_padding, dilation, groups=1):
    """y[n, co, i*s - p + j*d] += x[n, ci, i] * w[ci, co, j], from the definition."""
    batch, in_channels, *size = x.shape
    _, group_out, *kernel = w.shape
    out_size = tuple((n - 1) * s - 2 * p + d * (k - 1) + op + 1
                     for n, s, p, d, k, op in zip(size, stride, padding, dilation, kernel,
                                                  output_padding))
    y = np.zeros((batch, group_out * groups, *out_size))
    group_in = in_channels // groups
    for g in range(groups):
        cin = slice(g * group_in, (g + 1) * group_in)
        cout = slice(g * group_out, (g + 1) * group_out)
        for i in itertools.product(*map(range, size)):
            for offset in itertools.product(*map(range, kernel)):
                o = tuple(a * s - p + j * d
                          for a, s, p, j, d in zip(i, stride, padding, offset, dilation))
                if all(0 <= v < n for v, n in zip(o, out_size)):
                    y[(slice(None), cout, *o)] += (x[(slice(None), cin, *i)]
                                                   @ w[(cin, slice(None), *offset)])
    return y


def unfold(x, kernel, *, stride, padding, dilation):
    """im2col from the definition: (N, C * prod(kernel), L), rows channel-major."""
    batch, channels, *size = x.shape
    out_size = output_size(size, kernel, stride, padding, padding, dilation)
    positions = list(itertools.product(*map(range, out_size)))
    offsets = list(itertools.product(*map(range, kernel)))
    cols = np.zeros((batch, channels, len(offsets), len(positions)), x.dtype)
    for column, out in enumerate(positions):
        for row, offset in enumerate(offsets):
            index = tuple(source_index(o * s - p + j * d, n, "zeros")
                          for o, s, p, j, d, n in zip(out, stride, padding, offset, dilation, size))
            if None not in index:
                cols[:, :, row, column] = x[(slice(None), slice(None), *index)]
    return cols.reshape(batch, channels * len(offsets), len(positions))


def pool_output_size(size, kernel, stride, padding, dilation, ceil_mode):
    """torch's pooling output length per dimension, from its definition."""
    out = []
    for n, k, s, p, d in zip(size, kernel, stride, padding, dilation):
        reach = n + 2 * p - d * (k - 1) - 1
        length = (-(-reach // s) if ceil_mode else reach // s) + 1
        if ceil_mode and (length - 1) * s >= n + p:  # the last window must start inside
            length -= 1
        out.append(length)
    return tuple(out)


def max_pool(x, kernel, *, stride, padding, dilation, ceil_mode):
    """Maxima and flat plane indices, scanning each window row-major: a value replaces
    the best so far if it is larger or NaN."""
    size = x.shape[2:]
    out_size = pool_output_size(size, kernel, stride, padding, dilation, ceil_mode)
    values = np.empty((*x.shape[:2], *out_size), x.dtype)
    indices = np.empty(values.shape, np.int64)
    for lead in itertools.product(*map(range, x.shape[:2])):
        for out in itertools.product(*map(range, out_size)):
            best, where = -np.inf, None
            for offset in itertools.product(*map(range, kernel)):
                position = tuple(o * s - p + j * d for o, s, p, j, d in
                                 zip(out, stride, padding, offset, dilation))
                if not all(0 <= i < n for i, n in zip(position, size)):
                    continue
                value = x[(*lead, *position)]
                if where is None:
                    where = position
                if value > best or np.isnan(value):
                    best, where = value, position
            values[(*lead, *out)] = best
            indices[(*lead, *out)] = np.ravel_multi_index(where, size)
    return values, indices


def avg_pool(x, kernel, *, stride, padding, ceil_mode, count_include_pad, divisor_override):
    """Window sums over the input elements, divided by the override, by the window's
    extent within the padded input, or by its count of input elements."""
    size = x.shape[2:]
    out_size = pool_output_size(size, kernel, stride, padding, (1,) * len(size), ceil_mode)
    y = np.zeros((*x.shape[:2], *out_size), x.dtype)
    for out in itertools.product(*map(range, out_size)):
        starts = [o * s - p for o, s, p in zip(out, stride, padding)]
        padded = [min(a + k, n + p) - a for a, k, n, p in zip(starts, kernel, size, padding)]
        inside = [range(max(a, 0), min(a + k, n)) for a, k, n in zip(starts, kernel, size)]
        total = np.zeros(x.shape[:2], x.dtype)
        for position in itertools.product(*inside):
            total += x[(slice(None), slice(None), *position)]
        if divisor_override is not None:
            divisor = divisor_override
        elif count_include_pad:
            divisor = int(np.prod(padded))
        else:
            divisor = int(np.prod([len(r) for r in inside]))
        y[(slice(None), slice(None), *out)] = total / x.dtype.type(divisor)
    return y
