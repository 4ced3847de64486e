"""Numba kernels and their launchers.

Launchers take validated, C-contiguous arrays of the documented shapes, and the window
as returned by :meth:`fastconv._geometry.Window.kernel_args`. Each kernel runs
threaded or serially by the amount of work (:class:`fastconv._config.Kernel`).
"""

import math

from . import depthwise as _depthwise
from . import unfold as _unfold


def im2col(x, window_args, cols):
    """Fill ``cols`` ``(C*kd*kh*kw, N, L)`` from ``x`` ``(N, C, D, H, W)``."""
    _unfold.im2col(cols.size, x, *window_args, cols)


def col2im(cols, window_args, x):
    """Add the scatter of ``cols`` ``(C*kd*kh*kw, N, L)`` into ``x`` ``(N, C, D, H, W)``."""
    _unfold.col2im(cols.size, cols, *window_args, x)


def _depthwise_work(grad_or_y, window_args) -> int:
    return grad_or_y.size * math.prod(window_args[0])


def depthwise_forward(x, weight, window_args, y):
    """``y`` ``(N, K, D, H, W)`` = depthwise convolution of ``x`` with ``weight`` ``(K, vol)``."""
    _depthwise.forward(_depthwise_work(y, window_args), x, weight, *window_args, y)


def depthwise_backward_input(grad_output, weight, window_args, dx):
    """Overwrite ``dx`` ``(N, C, D, H, W)`` with the input gradient."""
    _depthwise.backward_input(_depthwise_work(grad_output, window_args), grad_output, weight,
                              *window_args, dx)


def depthwise_backward_weight(grad_output, x, window_args, dw):
    """Overwrite ``dw`` ``(K, vol)`` with the weight gradient."""
    _depthwise.backward_weight(_depthwise_work(grad_output, window_args), grad_output, x,
                               *window_args, dw)
