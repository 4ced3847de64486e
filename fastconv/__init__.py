"""fastconv: PyTorch-exact N-d convolution for NumPy, compiled with Numba.

The forward pass of a convolution and both of its backward passes are one GEMM each
around an im2col column matrix; the input gradient's "full convolution with the
rotated filter" is col2im's scatter-add.
"""

from .functional import (
    col2im,
    conv,
    conv1d,
    conv2d,
    conv3d,
    conv_backward_bias,
    conv_backward_input,
    conv_backward_weight,
    conv_transpose,
    conv_transpose1d,
    conv_transpose2d,
    conv_transpose3d,
    im2col,
)
from .plan import ConvPlan

__version__ = "0.1.0"

__all__ = [
    "ConvPlan",
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
    "im2col",
]
