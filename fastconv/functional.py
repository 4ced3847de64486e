"""The public functions, with the signatures and semantics of ``torch.nn.functional``.

Each call converts its arguments, fetches a :class:`~fastconv.plan.ConvPlan` for the
shapes from a small cache, and runs one of the plan's passes.
"""

from __future__ import annotations

import functools

import numpy as np

from . import _kernels
from ._arrays import as_float_array, float_arrays
from ._geometry import (
    conv_geometry,
    five_d,
    fold_rank,
    positive_tuple,
    unfold_window,
    weight_rank,
)
from .plan import ConvPlan

__all__ = [
    "col2im",
    "conv",
    "conv1d",
    "conv2d",
    "conv3d",
    "conv_backward_bias",
    "conv_backward_input",
    "conv_backward_weight",
    "conv_transpose",
    "conv_transpose1d",
    "conv_transpose2d",
    "conv_transpose3d",
    "conv_transpose_backward_input",
    "conv_transpose_backward_weight",
    "im2col",
]

PLAN_CACHE_SIZE = 128


def _freeze(value):
    """Lists become tuples so that arguments can key the plan cache."""
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    return value


@functools.lru_cache(maxsize=PLAN_CACHE_SIZE)
def _cached_plan(build, args):
    return build(*args)


def _plan(build, *args) -> ConvPlan:
    """``build(*args)``, reused while the same arguments come back."""
    try:
        hash(args)
    except TypeError:
        args = tuple(_freeze(a) for a in args)
        try:
            hash(args)
        except TypeError:  # e.g. an array as stride: validate it, uncached
            return build(*args)
    return _cached_plan(build, args)


def _conv_plan(input_shape, weight_shape, dtype, input_name, weight_name, stride, padding,
               dilation, groups, padding_mode) -> ConvPlan:
    geometry = conv_geometry(input_shape, weight_shape, stride=stride, padding=padding,
                             dilation=dilation, groups=groups, padding_mode=padding_mode,
                             input_name=input_name, weight_name=weight_name)
    return ConvPlan.from_geometry(geometry, dtype)


def _transpose_plan(input_shape, weight_shape, dtype, stride, padding, output_padding, groups,
                    dilation) -> ConvPlan:
    return ConvPlan.transposed(input_shape, weight_shape, stride=stride, padding=padding,
                               output_padding=output_padding, groups=groups,
                               dilation=dilation, dtype=dtype)


def clear_plan_cache() -> None:
    """Forget every cached plan."""
    _cached_plan.cache_clear()


def _shape_tuple(value, name: str) -> tuple:
    try:
        return tuple(value)
    except TypeError:
        raise TypeError(f"{name} must be a sequence of ints, got {value!r}") from None


def _batched(x: np.ndarray, rank: int) -> tuple[np.ndarray, bool]:
    """Add the batch axis to an unbatched ``(C, *spatial)`` input, as torch accepts it."""
    if x.ndim == rank + 1:
        return x[np.newaxis], True
    return x, False


# -- im2col / col2im --------------------------------------------------------------------


def im2col(x, kernel_size, *, stride=1, padding=0, dilation=1) -> np.ndarray:
    """Extract sliding windows into columns, like :func:`torch.nn.functional.unfold`.

    Parameters
    ----------
    x : array_like
        Batched input ``(N, C, *spatial)`` with 1, 2 or 3 spatial dimensions.
    kernel_size : int or tuple of int
        Window size per spatial dimension.
    stride, dilation : int or tuple of int, optional
        Positive. Default 1.
    padding : int or tuple of int, optional
        Implicit zeros on both sides. Default 0.

    Returns
    -------
    numpy.ndarray
        ``(N, C * prod(kernel_size), L)``, rows ordered channel-major then kernel
        offset, ``L`` the number of window positions.

    Examples
    --------
    >>> import numpy as np
    >>> import fastconv
    >>> x = np.arange(9.0).reshape(1, 1, 3, 3)
    >>> fastconv.im2col(x, 2)[0]
    array([[0., 1., 3., 4.],
           [1., 2., 4., 5.],
           [3., 4., 6., 7.],
           [4., 5., 7., 8.]])
    """
    x = as_float_array(x, "x")
    if not 3 <= x.ndim <= 5:
        raise ValueError(
            f"x must have 3, 4 or 5 dimensions (N, C, *spatial), got shape {x.shape}"
        )
    window = unfold_window(x.shape[2:], kernel_size, stride=stride, padding=padding,
                           dilation=dilation)
    batch, channels = x.shape[:2]
    cols = np.empty((batch, channels * window.kernel_volume, window.output_volume), x.dtype)
    _kernels.im2col(np.ascontiguousarray(x).reshape(five_d(x.shape)), window.kernel_args(),
                    cols.transpose(1, 0, 2))
    return cols


def col2im(cols, output_size, kernel_size, *, stride=1, padding=0, dilation=1) -> np.ndarray:
    """Sum columns back into images, like :func:`torch.nn.functional.fold`.

    The adjoint of :func:`im2col`: entries that several windows share are summed.

    Parameters
    ----------
    cols : array_like
        ``(N, C * prod(kernel_size), L)``.
    output_size : int or tuple of int
        Spatial size of the images.
    kernel_size, stride, padding, dilation
        As for :func:`im2col`. The rank is the length of ``output_size`` or
        ``kernel_size``, whichever is a tuple, and 2 when both are ints.

    Returns
    -------
    numpy.ndarray
        ``(N, C, *output_size)``.

    Examples
    --------
    >>> import numpy as np
    >>> import fastconv
    >>> fastconv.col2im(np.ones((1, 4, 4)), (3, 3), 2)[0, 0]
    array([[1., 2., 1.],
           [2., 4., 2.],
           [1., 2., 1.]])
    """
    cols = as_float_array(cols, "cols")
    rank = fold_rank(output_size, kernel_size)
    output_size = positive_tuple(output_size, rank, "output_size")
    window = unfold_window(output_size, kernel_size, stride=stride, padding=padding,
                           dilation=dilation, input_name="output_size")
    volume = window.kernel_volume
    if cols.ndim != 3 or cols.shape[1] % volume or cols.shape[2] != window.output_volume:
        raise ValueError(
            f"cols must have shape (N, C * {volume}, {window.output_volume}) for kernel_size "
            f"{window.kernel_size} and output_size {output_size} (C * prod(kernel_size) rows, "
            f"one column per window position), got shape {cols.shape}"
        )
    images = np.zeros((cols.shape[0], cols.shape[1] // volume, *output_size), cols.dtype)
    _kernels.col2im(np.ascontiguousarray(cols.transpose(1, 0, 2)), window.kernel_args(),
                    images.reshape(five_d(images.shape)))
    return images


# -- convolution --------------------------------------------------------------------------


def conv(x, weight, bias=None, *, stride=1, padding=0, dilation=1, groups=1,
         padding_mode="zeros") -> np.ndarray:
    """N-d convolution (cross-correlation), like ``torch.nn.functional.conv{1,2,3}d``.

    Parameters
    ----------
    x : array_like
        ``(N, C, *spatial)``, or unbatched ``(C, *spatial)``.
    weight : array_like
        ``(out_channels, C // groups, *kernel_size)``; ``weight.ndim - 2`` is the rank
        (1, 2 or 3).
    bias : array_like, optional
        ``(out_channels,)``.
    stride, dilation : int or tuple of int, optional
        Positive. Default 1.
    padding : int, tuple of int, {"valid", "same"}, optional
        Padding on both sides of each spatial dimension. ``"same"`` keeps the spatial
        size (stride 1 only); with an even dilated kernel the extra element goes on the
        high side, as torch does it. Default 0.
    groups : int, optional
        Split channels into this many independent groups. Default 1.
    padding_mode : {"zeros", "reflect", "replicate", "circular"}, optional
        How padded values are made, as in :class:`torch.nn.Conv2d`. Default "zeros".

    Returns
    -------
    numpy.ndarray
        ``(N, out_channels, *out)`` (no batch axis for unbatched ``x``), in the dtype
        shared by all the arguments: float32 or float64.

    Raises
    ------
    TypeError
        An argument has a non-float dtype, the dtypes differ, or a size is not an int.
    ValueError
        Shapes or parameters are inconsistent; the message names the argument.

    Examples
    --------
    >>> import numpy as np
    >>> import fastconv
    >>> x = np.arange(9.0).reshape(1, 1, 3, 3)
    >>> w = np.ones((1, 1, 2, 2))
    >>> fastconv.conv(x, w)
    array([[[[ 8., 12.],
             [20., 24.]]]])
    >>> fastconv.conv(x, w, padding="same").shape
    (1, 1, 3, 3)
    """
    x, weight, bias = float_arrays(x=x, weight=weight, bias=bias)
    x, unbatched = _batched(x, weight.ndim - 2)  # a wrong weight.ndim fails in the plan
    plan = _plan(_conv_plan, x.shape, weight.shape, x.dtype, "x", "weight", stride, padding,
                 dilation, groups, padding_mode)
    y = plan.forward(x, weight, bias)
    return y[0] if unbatched else y


def conv_backward_input(grad_output, weight, input_shape, *, stride=1, padding=0, dilation=1,
                        groups=1, padding_mode="zeros") -> np.ndarray:
    """Gradient of a convolution with respect to its input, like
    ``torch.nn.grad.conv{1,2,3}d_input``.

    Parameters
    ----------
    grad_output : array_like
        ``(N, out_channels, *out)``: the loss gradient with respect to the output.
    weight : array_like
        The forward pass's filters.
    input_shape : tuple of int
        The forward pass's batched input shape ``(N, C, *spatial)``.
    stride, padding, dilation, groups, padding_mode
        The forward pass's arguments (see :func:`conv`). For non-zero padding modes the
        gradient flows through the padding back onto the input elements it copied.

    Returns
    -------
    numpy.ndarray
        ``input_shape``: the "full" convolution of ``grad_output`` with the spatially
        rotated filters, computed as ``col2im(W.T @ grad_output)``.

    Examples
    --------
    >>> import numpy as np
    >>> import fastconv
    >>> dy = np.ones((1, 1, 2, 2))
    >>> w = np.array([[[[1.0, 2.0], [3.0, 4.0]]]])
    >>> fastconv.conv_backward_input(dy, w, (1, 1, 3, 3))[0, 0]
    array([[ 1.,  3.,  2.],
           [ 4., 10.,  6.],
           [ 3.,  7.,  4.]])
    """
    grad_output, weight = float_arrays(grad_output=grad_output, weight=weight)
    plan = _plan(_conv_plan, _shape_tuple(input_shape, "input_shape"), weight.shape,
                 weight.dtype, "input_shape", "weight", stride, padding, dilation, groups,
                 padding_mode)
    return plan.backward_input(grad_output, weight)


def conv_backward_weight(grad_output, x, weight_shape, *, stride=1, padding=0, dilation=1,
                         groups=1, padding_mode="zeros") -> np.ndarray:
    """Gradient of a convolution with respect to its weight, like
    ``torch.nn.grad.conv{1,2,3}d_weight``.

    Parameters
    ----------
    grad_output : array_like
        ``(N, out_channels, *out)``.
    x : array_like
        The forward pass's batched input.
    weight_shape : tuple of int
        ``(out_channels, C // groups, *kernel_size)``.
    stride, padding, dilation, groups, padding_mode
        The forward pass's arguments (see :func:`conv`).

    Returns
    -------
    numpy.ndarray
        ``weight_shape``: ``grad_output @ im2col(x).T`` per group, the "valid"
        correlation of the input with the output gradient.

    Examples
    --------
    >>> import numpy as np
    >>> import fastconv
    >>> x = np.arange(9.0).reshape(1, 1, 3, 3)
    >>> fastconv.conv_backward_weight(np.ones((1, 1, 2, 2)), x, (1, 1, 2, 2))[0, 0]
    array([[ 8., 12.],
           [20., 24.]])
    """
    grad_output, x = float_arrays(grad_output=grad_output, x=x)
    plan = _plan(_conv_plan, x.shape, _shape_tuple(weight_shape, "weight_shape"), x.dtype, "x",
                 "weight_shape", stride, padding, dilation, groups, padding_mode)
    return plan.backward_weight(grad_output, x)


def conv_backward_bias(grad_output) -> np.ndarray:
    """Gradient of a convolution with respect to its bias: ``grad_output`` summed over the
    batch and spatial axes.

    Parameters
    ----------
    grad_output : array_like
        ``(N, out_channels, *out)`` with 1 to 3 spatial dimensions.

    Returns
    -------
    numpy.ndarray
        ``(out_channels,)``.

    Examples
    --------
    >>> import numpy as np
    >>> import fastconv
    >>> fastconv.conv_backward_bias(np.ones((2, 3, 4, 4)))
    array([32., 32., 32.])
    """
    grad_output = as_float_array(grad_output, "grad_output")
    if not 3 <= grad_output.ndim <= 5:
        raise ValueError(
            f"grad_output must have 3, 4 or 5 dimensions (N, C, *spatial), "
            f"got shape {grad_output.shape}"
        )
    return grad_output.sum(axis=(0, *range(2, grad_output.ndim)))


def conv_transpose(x, weight, bias=None, *, stride=1, padding=0, output_padding=0, groups=1,
                   dilation=1) -> np.ndarray:
    """Transposed convolution, like ``torch.nn.functional.conv_transpose{1,2,3}d``.

    It is the input gradient of the convolution with the same weight: a GEMM with the
    transposed weight, then col2im. Its own gradients are therefore :func:`conv`
    (with respect to ``x``) and :func:`conv_backward_weight` with ``x`` and the output
    gradient in swapped roles (with respect to ``weight``).

    Parameters
    ----------
    x : array_like
        ``(N, in_channels, *spatial)``, or unbatched ``(in_channels, *spatial)``.
    weight : array_like
        ``(in_channels, out_channels // groups, *kernel_size)``.
    bias : array_like, optional
        ``(out_channels,)``.
    stride, dilation : int or tuple of int, optional
        Positive. Default 1.
    padding : int or tuple of int, optional
        ``dilation * (kernel_size - 1) - padding`` zeros are added around the input.
        Default 0.
    output_padding : int or tuple of int, optional
        Extra size added on the high side of the output; smaller than stride or
        dilation. Default 0.
    groups : int, optional
        Default 1.

    Returns
    -------
    numpy.ndarray
        ``(N, out_channels, *out)`` with
        ``out = (in - 1) * stride - 2 * padding + dilation * (kernel_size - 1)
        + output_padding + 1``.

    Examples
    --------
    >>> import numpy as np
    >>> import fastconv
    >>> fastconv.conv_transpose(np.ones((1, 1, 2, 2)), np.ones((1, 1, 2, 2)), stride=2)[0, 0]
    array([[1., 1., 1., 1.],
           [1., 1., 1., 1.],
           [1., 1., 1., 1.],
           [1., 1., 1., 1.]])
    """
    x, weight, bias = float_arrays(x=x, weight=weight, bias=bias)
    rank = weight_rank(weight.shape)
    x, unbatched = _batched(x, rank)
    plan = _plan(_transpose_plan, x.shape, weight.shape, x.dtype, stride, padding,
                 output_padding, groups, dilation)
    out_channels = plan.input_shape[1]
    if bias is not None and bias.shape != (out_channels,):
        raise ValueError(f"bias must have shape ({out_channels},), got shape {bias.shape}")
    y = plan.backward_input(x, weight)
    if bias is not None:
        y += bias.reshape((-1,) + (1,) * rank)
    return y[0] if unbatched else y


def conv_transpose_backward_input(grad_output, weight, input_shape, *, stride=1, padding=0,
                                  output_padding=0, groups=1, dilation=1) -> np.ndarray:
    """Gradient of a transposed convolution with respect to its input.

    The transposed convolution is the adjoint of a convolution, so this is that
    convolution: im2col of ``grad_output`` and a GEMM with the weight.

    Parameters
    ----------
    grad_output : array_like
        ``(N, out_channels, *out)``: the loss gradient with respect to the output of
        :func:`conv_transpose`.
    weight : array_like
        ``(in_channels, out_channels // groups, *kernel_size)``.
    input_shape : tuple of int
        The forward pass's batched input shape ``(N, in_channels, *spatial)``.
    stride, padding, output_padding, groups, dilation
        The forward pass's arguments (see :func:`conv_transpose`).

    Returns
    -------
    numpy.ndarray
        ``input_shape``.

    Examples
    --------
    >>> import numpy as np
    >>> import fastconv
    >>> w = np.ones((1, 1, 2, 2))
    >>> fastconv.conv_transpose_backward_input(np.ones((1, 1, 4, 4)), w, (1, 1, 2, 2),
    ...                                        stride=2)[0, 0]
    array([[4., 4.],
           [4., 4.]])
    """
    grad_output, weight = float_arrays(grad_output=grad_output, weight=weight)
    plan = _plan(_transpose_plan, _shape_tuple(input_shape, "input_shape"), weight.shape,
                 weight.dtype, stride, padding, output_padding, groups, dilation)
    _require_shape(grad_output, "grad_output", plan.input_shape)
    return plan.forward(grad_output, weight)


def conv_transpose_backward_weight(grad_output, x, weight_shape, *, stride=1, padding=0,
                                   output_padding=0, groups=1, dilation=1) -> np.ndarray:
    """Gradient of a transposed convolution with respect to its weight.

    It is the weight gradient of the convolution the transposed one is the adjoint of,
    with ``x`` and ``grad_output`` in swapped roles.

    Parameters
    ----------
    grad_output : array_like
        ``(N, out_channels, *out)``.
    x : array_like
        The forward pass's batched input ``(N, in_channels, *spatial)``.
    weight_shape : tuple of int
        ``(in_channels, out_channels // groups, *kernel_size)``.
    stride, padding, output_padding, groups, dilation
        The forward pass's arguments (see :func:`conv_transpose`).

    Returns
    -------
    numpy.ndarray
        ``weight_shape``.

    Examples
    --------
    >>> import numpy as np
    >>> import fastconv
    >>> x = np.ones((1, 1, 2, 2))
    >>> fastconv.conv_transpose_backward_weight(np.ones((1, 1, 4, 4)), x, (1, 1, 2, 2),
    ...                                         stride=2)[0, 0]
    array([[4., 4.],
           [4., 4.]])
    """
    grad_output, x = float_arrays(grad_output=grad_output, x=x)
    plan = _plan(_transpose_plan, x.shape, _shape_tuple(weight_shape, "weight_shape"), x.dtype,
                 stride, padding, output_padding, groups, dilation)
    _require_shape(grad_output, "grad_output", plan.input_shape)
    return plan.backward_weight(x, grad_output)


def _require_shape(array: np.ndarray, name: str, shape: tuple) -> None:
    if array.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {array.shape}")


def _fixed_rank(function, rank: int):
    """``function`` restricted to weights of one spatial rank, e.g. ``conv2d``."""
    name = f"{function.__name__}{rank}d"

    @functools.wraps(function)
    def fixed(x, weight, *args, **kwargs):
        weight_ndim = np.ndim(weight)
        if weight_ndim != rank + 2:
            raise ValueError(
                f"{name} needs a weight with {rank + 2} dimensions, got {weight_ndim} "
                f"(shape {np.shape(weight)})"
            )
        return function(x, weight, *args, **kwargs)

    fixed.__name__ = fixed.__qualname__ = name
    size = 3 if function is conv else 2  # the example's input: 2-wide windows fit
    output = (1, 1, *(size - 1 if function is conv else size + 1,) * rank)
    fixed.__doc__ = f"""{rank}-d :func:`{function.__name__}`: the same call, with a {rank + 2}-d
    weight required.

    See :func:`{function.__name__}` for the parameters and the result.

    Examples
    --------
    >>> import numpy as np
    >>> import fastconv
    >>> x, w = np.ones((1, 1, *({size},) * {rank})), np.ones((1, 1, *(2,) * {rank}))
    >>> fastconv.{name}(x, w).shape
    {output}
    """
    return fixed


conv1d, conv2d, conv3d = (_fixed_rank(conv, rank) for rank in (1, 2, 3))
conv_transpose1d, conv_transpose2d, conv_transpose3d = (
    _fixed_rank(conv_transpose, rank) for rank in (1, 2, 3)
)

