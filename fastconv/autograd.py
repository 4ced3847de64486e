"""fastconv's operators as HIPS autograd primitives, differentiable to any order.

Each function here calls an :func:`autograd.extend.primitive` wrapping its namesake in
:mod:`fastconv`, and has the same signature; arrays may be passed by keyword. The
vector-Jacobian products are built from the same primitives again, so a gradient of a
gradient is more fastconv calls:

- ``conv``: the VJPs are ``conv_backward_input`` (x) and ``conv_backward_weight``
  (weight). Those two are linear in each argument, and their VJPs close the triangle:
  ``conv`` and the other backward function. ``conv_transpose`` and its backward
  functions form the same triangle.
- ``avg_poolNd`` and ``avg_poolNd_backward`` are each other's adjoints.
- ``max_poolNd``'s VJP adds the gradient at the winners (``max_poolNd_backward``),
  whose adjoint gathers at the winners. The winners are held fixed, so second
  derivatives through max pooling are zero, as they are wherever it is differentiable.

Needs the ``autograd`` package: ``pip install "fastconv[autograd]"``.

Examples
--------
>>> import autograd.numpy as anp
>>> from autograd import grad
>>> import numpy as np
>>> from fastconv import autograd as fca
>>> x = np.arange(9.0).reshape(1, 1, 3, 3)
>>> loss = lambda w: anp.sum(fca.conv2d(x, w) ** 2)
>>> grad(loss)(np.ones((1, 1, 2, 2)))[0, 0]
array([[336., 464.],
       [720., 848.]])
"""

from __future__ import annotations

import functools
import inspect

import numpy as np

try:
    import autograd.numpy as anp
    from autograd.extend import defvjp, primitive
    from autograd.tracer import getval
except ModuleNotFoundError as exc:  # pragma: no cover - exercised without the extra
    raise ModuleNotFoundError(
        "fastconv.autograd needs the autograd package: pip install 'fastconv[autograd]'"
    ) from exc

from . import functional as _functional
from . import pooling as _pooling

RANKS = (1, 2, 3)

#: Every convolution and pooling function of fastconv, and their backward functions; not
#: the shape utilities (im2col, col2im) nor the bias gradient, a plain sum.
__all__ = [name for name in (*_functional.__all__, *_pooling.__all__)
           if name not in ("im2col", "col2im", "conv_backward_bias")]


def _primitive(function):
    """``primitive(function)``, showing ``function``'s signature to ``inspect``."""
    wrapped = primitive(function)
    wrapped.__wrapped__ = function
    return wrapped


def _public(wrapped):
    """A primitive as users call it: autograd traces positional arguments only, so
    array arguments given by keyword (``bias=b``) are passed on positionally."""
    function = wrapped.__wrapped__
    signature = inspect.signature(function)

    @functools.wraps(function)
    def call(*args, **kwargs):
        bound = signature.bind(*args, **kwargs)
        return wrapped(*bound.args, **bound.kwargs)

    return call


def _arguments(function, *args, **kwargs) -> dict:
    """The call's arguments by name, defaults filled in."""
    bound = inspect.signature(function).bind(*args, **kwargs)
    bound.apply_defaults()
    return bound.arguments


# -- convolutions: a forward function and its two backward functions --------------------------


def _register_triangle(forwards, backward_input, backward_weight) -> None:
    """Define the VJPs of a convolution-like operator (each of ``forwards``, one per
    rank and the any-rank one) and of its two backward functions.

    The forward is linear in x and in the weight; ``backward_input(dY, W)`` and
    ``backward_weight(dY, X)`` are its adjoints in x and in the weight, so each one's
    VJPs are the forward and the other backward function.
    """

    def unbatched(x, weight) -> bool:
        return np.ndim(x) == np.ndim(weight) - 1

    def batched(array, flag):
        return array[None] if flag else array

    def forward_vjp_x(ans, x, weight, bias=None, **params):
        flag = unbatched(x, weight)
        shape = (1, *np.shape(x)) if flag else np.shape(x)

        def vjp(g):
            dx = backward_input(batched(g, flag), weight, shape, **params)
            return dx[0] if flag else dx

        return vjp

    def forward_vjp_weight(ans, x, weight, bias=None, **params):
        flag = unbatched(x, weight)
        return lambda g: backward_weight(batched(g, flag), batched(x, flag), np.shape(weight),
                                         **params)

    def forward_vjp_bias(ans, x, weight, bias=None, **params):
        channel_axis = 0 if unbatched(x, weight) else 1
        axes = tuple(a for a in range(np.ndim(ans)) if a != channel_axis)
        return lambda g: anp.sum(g, axis=axes)

    for forward in forwards:
        defvjp(forward, forward_vjp_x, forward_vjp_weight, forward_vjp_bias)
    any_rank = forwards[0]
    defvjp(backward_input,
           lambda ans, g, weight, input_shape, **params:
           lambda dx: any_rank(dx, weight, None, **params),
           lambda ans, g, weight, input_shape, **params:
           lambda dx: backward_weight(g, dx, np.shape(weight), **params))
    defvjp(backward_weight,
           lambda ans, g, x, weight_shape, **params:
           lambda dw: any_rank(x, dw, None, **params),
           lambda ans, g, x, weight_shape, **params:
           lambda dw: backward_input(g, dw, np.shape(x), **params))


_conv = _primitive(_functional.conv)
_conv_of_rank = tuple(_primitive(getattr(_functional, f"conv{r}d")) for r in RANKS)
_conv_backward_input = _primitive(_functional.conv_backward_input)
_conv_backward_weight = _primitive(_functional.conv_backward_weight)
_register_triangle((_conv, *_conv_of_rank), _conv_backward_input, _conv_backward_weight)

_transpose = _primitive(_functional.conv_transpose)
_transpose_of_rank = tuple(_primitive(getattr(_functional, f"conv_transpose{r}d"))
                           for r in RANKS)
_transpose_backward_input = _primitive(_functional.conv_transpose_backward_input)
_transpose_backward_weight = _primitive(_functional.conv_transpose_backward_weight)
_register_triangle((_transpose, *_transpose_of_rank), _transpose_backward_input,
                   _transpose_backward_weight)

conv, conv_backward_input, conv_backward_weight = map(
    _public, (_conv, _conv_backward_input, _conv_backward_weight))
conv1d, conv2d, conv3d = map(_public, _conv_of_rank)
conv_transpose, conv_transpose_backward_input, conv_transpose_backward_weight = map(
    _public, (_transpose, _transpose_backward_input, _transpose_backward_weight))
conv_transpose1d, conv_transpose2d, conv_transpose3d = map(_public, _transpose_of_rank)


# -- pooling ------------------------------------------------------------------------------------

_AVG_WINDOW = ("kernel_size", "stride", "padding", "ceil_mode", "count_include_pad",
               "divisor_override")


def _register_avg_pool(rank: int):
    """``avg_pool{rank}d`` and its backward function, each the other's VJP."""
    forward = _primitive(getattr(_pooling, f"avg_pool{rank}d"))
    backward = _primitive(getattr(_pooling, f"avg_pool{rank}d_backward"))

    def forward_vjp(ans, x, *args, **kwargs):
        arguments = _arguments(forward, x, *args, **kwargs)
        window = {name: arguments[name] for name in _AVG_WINDOW}
        return lambda g: backward(g, np.shape(x), **window)

    def backward_vjp(ans, g, *args, **kwargs):
        arguments = _arguments(backward, g, *args, **kwargs)
        window = {name: arguments[name] for name in _AVG_WINDOW}
        return lambda dx: forward(dx, **window)

    defvjp(forward, forward_vjp)
    defvjp(backward, backward_vjp)
    return forward, backward


def _register_max_pool(rank: int):
    """``max_pool{rank}d``, whose VJP scatters to the winners, and that scatter
    (``max_pool{rank}d_backward``), whose VJP gathers from them."""
    pool = getattr(_pooling, f"max_pool{rank}d")
    backward = _primitive(getattr(_pooling, f"max_pool{rank}d_backward"))

    @primitive
    def gather(x, indices):
        """``x``'s values at the winners, each spatial plane indexed by ``indices``."""
        planes = np.asarray(x).reshape(*np.shape(x)[:-rank], -1)
        winners = np.asarray(indices).reshape(*np.shape(indices)[:-rank], -1)
        return np.take_along_axis(planes, winners, axis=-1).reshape(np.shape(indices))

    def forward(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
                return_indices=False):
        if return_indices:
            raise ValueError(
                f"fastconv.autograd.max_pool{rank}d differentiates the maxima only; call "
                f"fastconv.max_pool{rank}d(..., return_indices=True) for the indices"
            )
        return pool(x, kernel_size, stride, padding, dilation, ceil_mode)

    forward.__name__ = forward.__qualname__ = pool.__name__
    forward.__doc__ = pool.__doc__
    forward = _primitive(forward)

    def forward_vjp(ans, x, *args, **kwargs):
        arguments = _arguments(pool, x, *args, **kwargs)
        arguments.update(x=getval(x), return_indices=True)  # x may be boxed by an outer grad
        _, indices = pool(**arguments)
        return lambda g: backward(g, indices, np.shape(x))

    defvjp(forward, forward_vjp)
    defvjp(backward, lambda ans, g, indices, input_shape:
           lambda dx: gather(dx, indices))
    defvjp(gather, lambda ans, x, indices: lambda g: backward(g, indices, np.shape(x)))
    return forward, backward


avg_pool1d, avg_pool1d_backward = map(_public, _register_avg_pool(1))
avg_pool2d, avg_pool2d_backward = map(_public, _register_avg_pool(2))
avg_pool3d, avg_pool3d_backward = map(_public, _register_avg_pool(3))
max_pool1d, max_pool1d_backward = map(_public, _register_max_pool(1))
max_pool2d, max_pool2d_backward = map(_public, _register_max_pool(2))
max_pool3d, max_pool3d_backward = map(_public, _register_max_pool(3))
