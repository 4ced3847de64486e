"""``ConvPlan``: a convolution descriptor built once, validated once, run many times.

A plan fixes the input shape, weight shape, window parameters and dtype. Its three
passes are GEMMs around one column matrix ``cols`` of shape ``(C*prod(k), N*L)``
(``L`` output positions per sample), computed per group ``g``:

- forward:          ``y[g]    = W[g] @ cols[g]``
- backward_weight:  ``dW[g]   = dY[g] @ cols[g].T``
- backward_input:   ``dcols[g] = W[g].T @ dY[g]``, then ``dX = col2im(dcols)``

``col2im``'s scatter-add is the "full" convolution with the rotated filter that
the input gradient needs.
"""

from __future__ import annotations

import math

import numpy as np

from . import _kernels
from ._arrays import as_float_array, as_float_dtype, check_array
from ._geometry import ConvGeometry, conv_geometry, transpose_geometry
from ._padding import pad, pad_adjoint


class ConvPlan:
    """A convolution of fixed shapes, like a cuDNN convolution descriptor.

    Parameters
    ----------
    input_shape : tuple of int
        Batched input shape ``(N, C, *spatial)`` with 1, 2 or 3 spatial dimensions.
    weight_shape : tuple of int
        ``(out_channels, C // groups, *kernel_size)``; its length sets the rank.
    stride, dilation : int or tuple of int, optional
        Positive, per spatial dimension. Default 1.
    padding : int, tuple of int, {"valid", "same"}, optional
        As in :func:`torch.nn.functional.conv2d`. Default 0.
    groups : int, optional
        Number of channel groups; divides both channel counts. Default 1.
    padding_mode : {"zeros", "reflect", "replicate", "circular"}, optional
        As in :class:`torch.nn.Conv2d`. Default ``"zeros"``.
    dtype : {numpy.float32, numpy.float64}, optional
        Dtype of every array the plan takes and returns. Default float64.

    Attributes
    ----------
    input_shape, weight_shape, output_shape : tuple of int
        The shapes the plan's passes take and return.
    dtype : numpy.dtype
    workspace_nbytes : int
        Bytes of temporary memory one pass allocates at most, besides its result.

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv import ConvPlan
    >>> plan = ConvPlan((8, 3, 32, 32), (16, 3, 3, 3), padding=1, dtype=np.float32)
    >>> plan.output_shape
    (8, 16, 32, 32)
    >>> x = np.ones(plan.input_shape, np.float32)
    >>> w = np.ones(plan.weight_shape, np.float32)
    >>> y = plan.forward(x, w)
    >>> float(y[0, 0, 5, 5]), float(y[0, 0, 0, 0])
    (27.0, 12.0)
    >>> plan.backward_weight(np.ones_like(y), x).shape
    (16, 3, 3, 3)
    """

    def __init__(self, input_shape, weight_shape, *, stride=1, padding=0, dilation=1, groups=1,
                 padding_mode="zeros", dtype=np.float64):
        geometry = conv_geometry(input_shape, weight_shape, stride=stride, padding=padding,
                                 dilation=dilation, groups=groups, padding_mode=padding_mode,
                                 input_name="input_shape", weight_name="weight_shape")
        self._setup(geometry, as_float_dtype(dtype))

    @classmethod
    def from_geometry(cls, geometry: ConvGeometry, dtype) -> ConvPlan:
        """A plan for a geometry already validated by :mod:`fastconv._geometry`."""
        plan = cls.__new__(cls)
        plan._setup(geometry, as_float_dtype(dtype))
        return plan

    @classmethod
    def transposed(cls, input_shape, weight_shape, *, stride=1, padding=0, output_padding=0,
                   groups=1, dilation=1, dtype=np.float64) -> ConvPlan:
        """The plan whose ``backward_input`` is ``conv_transpose`` of ``input_shape``.

        ``weight_shape`` is the transposed convolution's ``(in, out // groups, *kernel)``;
        the plan's ``output_shape`` is ``input_shape`` and its ``input_shape`` is the
        shape the transposed convolution returns.
        """
        return cls.from_geometry(
            transpose_geometry(input_shape, weight_shape, stride=stride, padding=padding,
                               output_padding=output_padding, groups=groups, dilation=dilation),
            dtype,
        )

    def _setup(self, geometry: ConvGeometry, dtype: np.dtype) -> None:
        self.geometry = geometry
        self.dtype = dtype
        self.input_shape = geometry.input_shape
        self.weight_shape = geometry.weight_shape
        self.output_shape = geometry.output_shape
        window = geometry.window
        # Non-zero padding modes pad explicitly; the kernels then see an unpadded window.
        self._kernel_window = window.without_padding() if geometry.needs_explicit_padding \
            else window
        self._window_args = self._kernel_window.kernel_args()
        self._kernel_input_shape = (geometry.batch, geometry.in_channels,
                                    *self._kernel_window.input_size)
        columns = geometry.batch * window.output_volume
        self._columns = columns
        padded = math.prod(self._kernel_input_shape) if geometry.needs_explicit_padding else 0
        self.workspace_nbytes = dtype.itemsize * (
            geometry.col_rows * columns + geometry.out_channels * columns + padded
        )

    def __repr__(self) -> str:
        g = self.geometry
        w = g.window
        return (f"ConvPlan(input_shape={self.input_shape}, weight_shape={self.weight_shape}, "
                f"stride={w.stride}, padding={tuple(zip(w.pad_low, w.pad_high))}, "
                f"dilation={w.dilation}, groups={g.groups}, padding_mode={g.padding_mode!r}, "
                f"dtype={self.dtype})")

    # -- argument checks -------------------------------------------------------------

    def _array(self, value, name: str, shape) -> np.ndarray:
        array = as_float_array(value, name)
        check_array(array, name, shape, self.dtype)
        return array

    # -- building blocks -------------------------------------------------------------

    def _as_kernel_input(self, x: np.ndarray) -> np.ndarray:
        """``x`` padded as the mode asks, C-contiguous and viewed as 5-d for the kernels."""
        g = self.geometry
        if g.needs_explicit_padding:
            x = pad(x, g.window.pad_low, g.window.pad_high, g.padding_mode)
        return np.ascontiguousarray(x).reshape(_five_d(self._kernel_input_shape))

    def _im2col(self, x: np.ndarray) -> np.ndarray:
        cols = np.empty((self.geometry.col_rows, self._columns), self.dtype)
        _kernels.im2col(self._as_kernel_input(x), self._window_args, cols)
        return cols

    def _per_group(self, matrix: np.ndarray) -> np.ndarray:
        """View a ``(rows, columns)`` matrix as ``(groups, rows // groups, columns)``."""
        groups = self.geometry.groups
        return matrix.reshape(groups, matrix.shape[0] // groups, matrix.shape[1])

    def _weight_matrices(self, weight: np.ndarray) -> np.ndarray:
        """``(groups, out // groups, in // groups * prod(k))``."""
        return np.ascontiguousarray(weight).reshape(self.geometry.groups,
                                                    self.geometry.out_channels //
                                                    self.geometry.groups, -1)

    def _channel_major(self, y: np.ndarray) -> np.ndarray:
        """``(N, K, *out)`` to the ``(K, N*L)`` matrix the GEMMs use."""
        g = self.geometry
        y = y.reshape(g.batch, g.out_channels, g.window.output_volume)
        return np.ascontiguousarray(y.transpose(1, 0, 2)).reshape(g.out_channels, self._columns)

    def _batch_major(self, y: np.ndarray) -> np.ndarray:
        """``(K, N*L)`` back to ``(N, K, *out)``."""
        g = self.geometry
        y = y.reshape(g.out_channels, g.batch, g.window.output_volume).transpose(1, 0, 2)
        return np.ascontiguousarray(y).reshape(self.output_shape)

    # -- the three passes --------------------------------------------------------------

    def forward(self, x, weight, bias=None) -> np.ndarray:
        """Convolution output ``(N, out_channels, *out)``.

        Parameters
        ----------
        x : array_like
            Input of shape ``input_shape`` and the plan's dtype.
        weight : array_like
            Filters of shape ``weight_shape``.
        bias : array_like, optional
            Shape ``(out_channels,)``.
        """
        x = self._array(x, "x", self.input_shape)
        weight = self._array(weight, "weight", self.weight_shape)
        if bias is not None:
            bias = self._array(bias, "bias", (self.geometry.out_channels,))
        cols = self._per_group(self._im2col(x))
        out = np.empty((self.geometry.out_channels, self._columns), self.dtype)
        np.matmul(self._weight_matrices(weight), cols, out=self._per_group(out))
        y = self._batch_major(out)
        if bias is not None:
            y += bias.reshape((-1,) + (1,) * self.geometry.rank)
        return y

    def backward_input(self, grad_output, weight) -> np.ndarray:
        """Gradient of the loss with respect to ``x``, shape ``input_shape``.

        Parameters
        ----------
        grad_output : array_like
            Gradient with respect to the output, shape ``output_shape``.
        weight : array_like
            The filters of the forward pass, shape ``weight_shape``.
        """
        grad_output = self._array(grad_output, "grad_output", self.output_shape)
        weight = self._array(weight, "weight", self.weight_shape)
        g = self.geometry
        dy = self._per_group(self._channel_major(grad_output))
        dcols = np.empty((g.col_rows, self._columns), self.dtype)
        np.matmul(self._weight_matrices(weight).transpose(0, 2, 1), dy,
                  out=self._per_group(dcols))
        dx = np.empty(self._kernel_input_shape, self.dtype)
        _kernels.col2im(dcols, self._window_args, dx.reshape(_five_d(dx.shape)))
        if g.needs_explicit_padding:
            dx = pad_adjoint(dx, g.window.pad_low, g.window.pad_high, g.padding_mode)
        return dx

    def backward_weight(self, grad_output, x) -> np.ndarray:
        """Gradient of the loss with respect to ``weight``, shape ``weight_shape``.

        Parameters
        ----------
        grad_output : array_like
            Gradient with respect to the output, shape ``output_shape``.
        x : array_like
            The input of the forward pass, shape ``input_shape``.
        """
        grad_output = self._array(grad_output, "grad_output", self.output_shape)
        x = self._array(x, "x", self.input_shape)
        cols = self._per_group(self._im2col(x))
        dy = self._per_group(self._channel_major(grad_output))
        return np.matmul(dy, cols.transpose(0, 2, 1)).reshape(self.weight_shape)

    def backward_bias(self, grad_output) -> np.ndarray:
        """Gradient of the loss with respect to ``bias``: ``grad_output`` summed over all
        but the channel axis."""
        grad_output = self._array(grad_output, "grad_output", self.output_shape)
        return grad_output.sum(axis=(0, *range(2, grad_output.ndim)))


def _five_d(shape) -> tuple[int, ...]:
    """``(N, C, *spatial)`` with singleton spatial dimensions prepended up to three."""
    return (*shape[:2], *(1,) * (5 - len(shape)), *shape[2:])
