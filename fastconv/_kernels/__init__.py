"""Numba kernels and their launchers.

Launchers take validated, C-contiguous arrays of the documented shapes, and the window
as returned by :meth:`fastconv._geometry.Window.kernel_args`.
"""

from .._config import PARALLEL_LAUNCH_LOCK
from . import depthwise as _depthwise
from . import unfold as _unfold


def im2col(x, window_args, cols):
    """Fill ``cols`` ``(C*kd*kh*kw, N, L)`` from ``x`` ``(N, C, D, H, W)``."""
    with PARALLEL_LAUNCH_LOCK:
        _unfold.im2col(x, *window_args, cols)


def col2im(cols, window_args, x):
    """Add the scatter of ``cols`` ``(C*kd*kh*kw, N, L)`` into ``x`` ``(N, C, D, H, W)``."""
    with PARALLEL_LAUNCH_LOCK:
        _unfold.col2im(cols, *window_args, x)


def depthwise_forward(x, weight, window_args, y):
    """``y`` ``(N, K, D, H, W)`` = depthwise convolution of ``x`` with ``weight`` ``(K, vol)``."""
    with PARALLEL_LAUNCH_LOCK:
        _depthwise.forward(x, weight, *window_args, y)


def depthwise_backward_input(grad_output, weight, window_args, dx):
    """Overwrite ``dx`` ``(N, C, D, H, W)`` with the input gradient."""
    with PARALLEL_LAUNCH_LOCK:
        _depthwise.backward_input(grad_output, weight, *window_args, dx)


def depthwise_backward_weight(grad_output, x, window_args, dw):
    """Overwrite ``dw`` ``(K, vol)`` with the weight gradient."""
    with PARALLEL_LAUNCH_LOCK:
        _depthwise.backward_weight(grad_output, x, *window_args, dw)
