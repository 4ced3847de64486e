"""Compile every kernel ahead of first use."""

from __future__ import annotations

import time

import numpy as np

from . import _config, pooling
from .plan import ConvPlan

# One small problem per code path: the im2col GEMM path (short rows and long rows, with
# implicit and explicit padding), Winograd's, the 1x1 GEMM path, the direct kernels on
# stacked planes (unit strides; several channels, and depthwise), by rows (3x3
# depthwise, large planes), down columns (3x3 depthwise, small planes), by channel
# blocks (depthwise, other strides) and plane by plane.
_PROBLEMS = (
    ((1, 8, 5, 5), (8, 8, 3, 3), {"padding": 1, "algorithm": "gemm"}),
    ((1, 16, 5, 5), (16, 16, 3, 3), {"padding": 1, "algorithm": "winograd"}),
    ((1, 8, 3, 40), (8, 8, 3, 3), {"padding": 1, "algorithm": "gemm"}),
    ((1, 8, 5, 5), (8, 8, 3, 3), {"padding": 1, "padding_mode": "reflect",
                                  "algorithm": "gemm"}),
    ((1, 8, 5, 5), (8, 8, 1, 1), {}),
    ((1, 8, 5, 5), (8, 8, 3, 3), {"padding": 1}),
    ((1, 8, 5, 5), (8, 1, 5, 5), {"padding": 2, "groups": 8}),
    ((1, 1, 130, 64), (1, 1, 3, 3), {"padding": 1}),
    ((1, 8, 5, 5), (8, 1, 3, 3), {"padding": 1, "groups": 8}),
    ((1, 16, 5, 5), (16, 1, 3, 3), {"padding": 1, "groups": 16, "stride": 3}),
    ((1, 2, 5, 5), (4, 1, 3, 3), {"padding": 1, "groups": 2, "stride": 2}),
)


def warmup(dtypes=(np.float32, np.float64)) -> float:
    """Compile (or load from the disk cache) every kernel for ``dtypes``: convolutions
    and pooling.

    Numba compiles a kernel on its first call; calling this at start-up moves that
    cost out of the first training step.

    Parameters
    ----------
    dtypes : sequence of dtype, optional
        Default: float32 and float64.

    Returns
    -------
    float
        Seconds it took.

    Examples
    --------
    >>> import fastconv
    >>> seconds = fastconv.warmup()
    """
    start = time.perf_counter()
    default = _config.PARALLEL_MIN_WORK
    try:
        # The problems are small: run them once on the serial builds and once on the
        # threaded ones.
        for threshold in (default, 0):
            _config.PARALLEL_MIN_WORK = threshold
            for dtype in dtypes:
                _run_every_path(np.dtype(dtype))
    finally:
        _config.PARALLEL_MIN_WORK = default
    return time.perf_counter() - start


def _run_every_path(dtype: np.dtype) -> None:
    for input_shape, weight_shape, params in _PROBLEMS:
        plan = ConvPlan(input_shape, weight_shape, dtype=dtype, **params)
        x = np.ones(plan.input_shape, dtype)
        w = np.ones(plan.weight_shape, dtype)
        y = plan.forward(x, w)
        plan.backward_input(y, w)
        plan.backward_weight(y, x)
    x = np.ones((1, 2, 4, 4), dtype)
    y, indices = pooling.max_pool2d(x, 2, return_indices=True)
    pooling.max_pool2d_backward(y, indices, x.shape)
    pooling.avg_pool2d_backward(pooling.avg_pool2d(x, 2), x.shape, 2)
