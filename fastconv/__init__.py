"""fastconv: PyTorch-exact N-d convolution for NumPy, compiled with Numba.

The forward pass of a convolution and both of its backward passes are one GEMM each
around an im2col column matrix; the input gradient's "full convolution with the
rotated filter" is col2im's scatter-add.
"""

from . import functional, pooling
from ._threads import get_num_threads, set_num_threads
from ._warmup import warmup
from .functional import *  # noqa: F403  (the public functions; their list is functional.__all__)
from .plan import ConvPlan, get_workspace_limit, set_workspace_limit
from .pooling import *  # noqa: F403  (pooling.__all__)

__version__ = "0.1.0"

__all__ = ["ConvPlan", "get_num_threads", "get_workspace_limit", "set_num_threads",
           "set_workspace_limit", "warmup", *functional.__all__, *pooling.__all__]
