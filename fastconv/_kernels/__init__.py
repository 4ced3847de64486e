"""Numba kernels and their launchers.

Launchers take validated, C-contiguous arrays of the documented shapes, and the window
as returned by :meth:`fastconv._geometry.Window.kernel_args`.
"""

from .._config import PARALLEL_LAUNCH_LOCK
from . import unfold as _unfold


def im2col(x, window_args, cols):
    """Fill ``cols`` ``(N, C*kd*kh*kw, L)`` from ``x`` ``(N, C, D, H, W)``."""
    with PARALLEL_LAUNCH_LOCK:
        _unfold.im2col(x, *window_args, cols)


def col2im(cols, window_args, x):
    """Add the scatter of ``cols`` ``(N, C*kd*kh*kw, L)`` into ``x`` ``(N, C, D, H, W)``."""
    with PARALLEL_LAUNCH_LOCK:
        _unfold.col2im(cols, *window_args, x)
