"""Max and average pooling over 1, 2 or 3 spatial dimensions, on the im2col machinery.

Each (sample, channel) plane is unfolded as a one-channel image, so a window's elements
form one column of :func:`~fastconv.im2col`; max pooling reduces the column with
torch's tie and NaN rules, average pooling sums it. Going back, average pooling is
col2im of the spread gradient, and max pooling adds each gradient to the input position
that won. Window rules (``ceil_mode``, padding at most half the kernel, the divisors of
``count_include_pad`` and ``divisor_override``) are those of
``torch.nn.functional.max_pool{1,2,3}d`` and ``avg_pool{1,2,3}d``.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from . import _kernels
from ._arrays import as_float_array
from ._geometry import Window, as_int, pool_divisors, pool_input_shape, pool_window, three_d
from .plan import get_workspace_limit

__all__ = [
    "avg_pool1d",
    "avg_pool1d_backward",
    "avg_pool2d",
    "avg_pool2d_backward",
    "avg_pool3d",
    "avg_pool3d_backward",
    "max_pool1d",
    "max_pool1d_backward",
    "max_pool2d",
    "max_pool2d_backward",
    "max_pool3d",
    "max_pool3d_backward",
]


# -- building blocks ------------------------------------------------------------------------


@functools.lru_cache(maxsize=64)
def _positions(window: Window) -> np.ndarray:
    """``(volume, L)``: the flat input index each kernel offset of each window reads, or
    -1 in the padding."""
    positions = _kernels.window_positions(window.kernel_args(), three_d(window.input_size))
    positions.flags.writeable = False
    return positions


def _chunks(planes: int, window: Window, itemsize: int):
    """Plane ranges whose columns fit the workspace limit (at least one plane each)."""
    per_plane = window.kernel_volume * window.output_volume * itemsize
    step = max(1, get_workspace_limit() // max(per_plane, 1))
    for first in range(0, planes, step):
        yield first, min(first + step, planes)


def _columns(planes: np.ndarray, window: Window) -> np.ndarray:
    """im2col of C-contiguous one-channel ``planes`` ``(m, 1, D, H, W)``:
    ``(volume, m, L)``."""
    cols = np.empty((window.kernel_volume, planes.shape[0], window.output_volume),
                    planes.dtype)
    _kernels.im2col(planes, window.kernel_args(), cols)
    return cols


def _as_planes(x: np.ndarray, window: Window) -> np.ndarray:
    return np.ascontiguousarray(x).reshape(-1, 1, *three_d(window.input_size))


def _avg_divisors(window: Window, count_include_pad, divisor_override, dtype) -> np.ndarray:
    """``(L,)``: what each window's sum is divided by."""
    if not isinstance(count_include_pad, bool):
        raise TypeError(f"count_include_pad must be a bool, got {count_include_pad!r}")
    if divisor_override is not None:
        divisor = as_int(divisor_override, "divisor_override")
        if divisor == 0:
            raise ValueError("divisor_override must not be zero")
        return np.full(window.output_volume, divisor, dtype)
    per_dim = pool_divisors(window, count_include_pad)
    return functools.reduce(np.multiply.outer, [np.asarray(d, dtype) for d in per_dim]).ravel()


def _input_shape(value, rank: int) -> tuple[int, ...]:
    try:
        value = tuple(value)
    except TypeError:
        raise TypeError(f"input_shape must be a sequence of ints, got {value!r}") from None
    return pool_input_shape(value, rank, "input_shape")


def _check_grad(grad_output: np.ndarray, input_shape, window: Window, rank: int) -> None:
    expected = (*input_shape[:-rank], *window.output_size)
    if grad_output.shape != expected:
        raise ValueError(
            f"grad_output must have shape {expected} for input_shape {input_shape}, "
            f"got {grad_output.shape}"
        )


# -- the operations, for any rank ------------------------------------------------------------


def _max_pool(x, rank, kernel_size, stride, padding, dilation, ceil_mode, return_indices):
    x = as_float_array(x, "x")
    shape = pool_input_shape(x.shape, rank, "x")
    window = pool_window(shape[-rank:], kernel_size, stride, padding, dilation, ceil_mode)
    planes = _as_planes(x, window)
    values = np.empty((planes.shape[0], window.output_volume), x.dtype)
    indices = np.empty(values.shape, np.int64)
    positions = _positions(window)
    for first, last in _chunks(planes.shape[0], window, x.itemsize):
        _kernels.max_over_windows(_columns(planes[first:last], window), positions,
                                  values[first:last], indices[first:last])
    out_shape = (*shape[:-rank], *window.output_size)
    if return_indices:
        return values.reshape(out_shape), indices.reshape(out_shape)
    return values.reshape(out_shape)


def _avg_pool(x, rank, kernel_size, stride, padding, ceil_mode, count_include_pad,
              divisor_override):
    x = as_float_array(x, "x")
    shape = pool_input_shape(x.shape, rank, "x")
    window = pool_window(shape[-rank:], kernel_size, stride, padding, 1, ceil_mode)
    divisors = _avg_divisors(window, count_include_pad, divisor_override, x.dtype)
    planes = _as_planes(x, window)
    sums = np.empty((planes.shape[0], window.output_volume), x.dtype)
    for first, last in _chunks(planes.shape[0], window, x.itemsize):
        # Adds the offsets in order, as torch's loop over the window does.
        np.sum(_columns(planes[first:last], window), axis=0, out=sums[first:last])
    return (sums / divisors).reshape(*shape[:-rank], *window.output_size)


def _max_pool_backward(grad_output, indices, input_shape, rank):
    grad_output = as_float_array(grad_output, "grad_output")
    input_shape = _input_shape(input_shape, rank)
    indices = np.asarray(indices)
    if indices.dtype.kind not in "iu":
        raise TypeError(f"indices must be an integer array, got dtype {indices.dtype}")
    if indices.shape != grad_output.shape:
        raise ValueError(
            f"indices must have grad_output's shape {grad_output.shape}, got {indices.shape}"
        )
    lead = input_shape[:-rank]
    if grad_output.shape[:-rank] != lead or grad_output.ndim != len(input_shape):
        raise ValueError(
            f"grad_output must have input_shape's leading dimensions {lead} and "
            f"{rank} spatial dimensions, got shape {grad_output.shape}"
        )
    plane = math.prod(input_shape[-rank:])
    if indices.size and not (indices.min() >= 0 and indices.max() < plane):
        raise ValueError(
            f"indices must lie in [0, {plane}) (flat positions in a spatial plane of "
            f"{input_shape[-rank:]}), got values from {indices.min()} to {indices.max()}"
        )
    planes = math.prod(lead)
    dx = np.zeros((planes, plane), grad_output.dtype)
    _kernels.scatter_add(np.ascontiguousarray(grad_output).reshape(planes, -1),
                         np.ascontiguousarray(indices, np.int64).reshape(planes, -1), dx)
    return dx.reshape(input_shape)


def _avg_pool_backward(grad_output, input_shape, rank, kernel_size, stride, padding, ceil_mode,
                       count_include_pad, divisor_override):
    grad_output = as_float_array(grad_output, "grad_output")
    input_shape = _input_shape(input_shape, rank)
    window = pool_window(input_shape[-rank:], kernel_size, stride, padding, 1, ceil_mode,
                         input_name="input_shape")
    _check_grad(grad_output, input_shape, window, rank)
    divisors = _avg_divisors(window, count_include_pad, divisor_override, grad_output.dtype)
    spread = grad_output.reshape(-1, window.output_volume) / divisors
    dx = np.zeros((spread.shape[0], 1, *three_d(window.input_size)), grad_output.dtype)
    for first, last in _chunks(spread.shape[0], window, grad_output.itemsize):
        # every kernel offset of a window receives the window's share
        dcols = np.broadcast_to(spread[first:last],
                                (window.kernel_volume, last - first, window.output_volume))
        _kernels.col2im(np.ascontiguousarray(dcols), window.kernel_args(), dx[first:last])
    return dx.reshape(input_shape)


# -- the public functions, one per rank -------------------------------------------------------

_SHAPES = {1: "(N, C, L)", 2: "(N, C, H, W)", 3: "(N, C, D, H, W)"}
_EXAMPLE_INPUT = {1: "(1, 1, 4)", 2: "(1, 1, 4, 4)", 3: "(1, 1, 4, 4, 4)"}
_EXAMPLE_OUTPUT = {1: "(1, 1, 2)", 2: "(1, 1, 2, 2)", 3: "(1, 1, 2, 2, 2)"}

_WINDOW_PARAMETERS = """x : array_like
        float32 or float64, ``{shape}`` or unbatched without ``N``.
    kernel_size : int or tuple of int
        Window size per spatial dimension.
    stride : int or tuple of int, optional
        Default ``kernel_size``.
    padding : int or tuple of int, optional
        Implicit padding on both sides ({fill}), at most half of ``kernel_size``.
        Default 0."""

_CEIL_MODE = """ceil_mode : bool, optional
        Round the output size up, keeping only windows that start inside the input or
        its low padding. Default False."""

_MAX_POOL_DOC = """{rank}-d max pooling, like :func:`torch.nn.functional.max_pool{rank}d`.

    Parameters
    ----------
    {window}
    dilation : int or tuple of int, optional
        Spacing of the window's elements. Default 1.
    {ceil_mode}
    return_indices : bool, optional
        Also return where each maximum was, as flat indices into its input plane.

    Returns
    -------
    numpy.ndarray or tuple of numpy.ndarray
        The maxima; with ``return_indices``, also their int64 indices, which
        :func:`max_pool{rank}d_backward` takes. Of equal maxima the first in the window
        (row-major) wins, and NaN wins over numbers, as in torch.

    Examples
    --------
    >>> import numpy as np
    >>> import fastconv
    >>> x = np.arange(4.0 ** {rank}).reshape{example_input}
    >>> fastconv.max_pool{rank}d(x, 2).shape
    {example_output}
    """

_AVG_POOL_DOC = """{rank}-d average pooling, like :func:`torch.nn.functional.avg_pool{rank}d`.

    Parameters
    ----------
    {window}
    {ceil_mode}
    count_include_pad : bool, optional
        Count the zero padding in a window's divisor (not what ``ceil_mode`` adds past
        the padding). Default True.
    divisor_override : int, optional
        Divide every sum by this instead.

    Returns
    -------
    numpy.ndarray
        The window averages.

    Examples
    --------
    >>> import numpy as np
    >>> import fastconv
    >>> x = np.ones({example_input})
    >>> fastconv.avg_pool{rank}d(x, 2, padding=1).shape
    {example_output_padded}
    """

_MAX_BACKWARD_DOC = """Gradient of :func:`max_pool{rank}d` with respect to its input.

    Parameters
    ----------
    grad_output : array_like
        Gradient with respect to the pooled output.
    indices : array_like of int
        The indices ``max_pool{rank}d(..., return_indices=True)`` returned.
    input_shape : tuple of int
        Shape of the pooled input, ``{shape}`` or unbatched without ``N``.

    Returns
    -------
    numpy.ndarray
        ``input_shape``: each gradient added at the position its maximum came from.

    Examples
    --------
    >>> import numpy as np
    >>> import fastconv
    >>> x = np.arange(4.0 ** {rank}).reshape{example_input}
    >>> y, indices = fastconv.max_pool{rank}d(x, 2, return_indices=True)
    >>> dx = fastconv.max_pool{rank}d_backward(np.ones_like(y), indices, x.shape)
    >>> float(dx.sum()), float(dx.ravel()[-1])
    ({windows}.0, 1.0)
    """

_AVG_BACKWARD_DOC = """Gradient of :func:`avg_pool{rank}d` with respect to its input.

    Parameters
    ----------
    grad_output : array_like
        Gradient with respect to the pooled output.
    input_shape : tuple of int
        Shape of the pooled input, ``{shape}`` or unbatched without ``N``.
    kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override
        The forward call's arguments.

    Returns
    -------
    numpy.ndarray
        ``input_shape``: each window's gradient, divided as its average was, added to
        every input element of the window.

    Examples
    --------
    >>> import numpy as np
    >>> import fastconv
    >>> dx = fastconv.avg_pool{rank}d_backward(np.ones({example_output}), {example_input}, 2)
    >>> float(dx.min()), float(dx.max())
    ({share}, {share})
    """


def _document(function, name: str, template: str, rank: int):
    fill = "-inf" if name.startswith("max") else "zeros"
    function.__name__ = function.__qualname__ = name
    function.__doc__ = template.format(
        rank=rank, shape=_SHAPES[rank], ceil_mode=_CEIL_MODE,
        window=_WINDOW_PARAMETERS.format(fill=fill, shape=_SHAPES[rank]),
        example_input=_EXAMPLE_INPUT[rank], example_output=_EXAMPLE_OUTPUT[rank],
        # the examples pool a 4-wide input with 2-wide windows (3 with padding 1)
        example_output_padded=_EXAMPLE_OUTPUT[rank].replace("2", "3"),
        windows=2 ** rank, share=1 / 2 ** rank)
    return function


def _max_pool_of_rank(rank: int):
    def max_pool(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
                 return_indices=False):
        return _max_pool(x, rank, kernel_size, stride, padding, dilation, ceil_mode,
                         return_indices)

    return _document(max_pool, f"max_pool{rank}d", _MAX_POOL_DOC, rank)


def _avg_pool_of_rank(rank: int):
    def avg_pool(x, kernel_size, stride=None, padding=0, ceil_mode=False,
                 count_include_pad=True, divisor_override=None):
        return _avg_pool(x, rank, kernel_size, stride, padding, ceil_mode, count_include_pad,
                         divisor_override)

    return _document(avg_pool, f"avg_pool{rank}d", _AVG_POOL_DOC, rank)


def _max_pool_backward_of_rank(rank: int):
    def max_pool_backward(grad_output, indices, input_shape):
        return _max_pool_backward(grad_output, indices, input_shape, rank)

    return _document(max_pool_backward, f"max_pool{rank}d_backward", _MAX_BACKWARD_DOC, rank)


def _avg_pool_backward_of_rank(rank: int):
    def avg_pool_backward(grad_output, input_shape, kernel_size, stride=None, padding=0,
                          ceil_mode=False, count_include_pad=True, divisor_override=None):
        return _avg_pool_backward(grad_output, input_shape, rank, kernel_size, stride, padding,
                                  ceil_mode, count_include_pad, divisor_override)

    return _document(avg_pool_backward, f"avg_pool{rank}d_backward", _AVG_BACKWARD_DOC, rank)


max_pool1d, max_pool2d, max_pool3d = (_max_pool_of_rank(r) for r in (1, 2, 3))
avg_pool1d, avg_pool2d, avg_pool3d = (_avg_pool_of_rank(r) for r in (1, 2, 3))
max_pool1d_backward, max_pool2d_backward, max_pool3d_backward = (
    _max_pool_backward_of_rank(r) for r in (1, 2, 3))
avg_pool1d_backward, avg_pool2d_backward, avg_pool3d_backward = (
    _avg_pool_backward_of_rank(r) for r in (1, 2, 3))
