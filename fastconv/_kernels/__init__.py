"""Numba kernels and their launchers.

Launchers take validated, C-contiguous arrays of the documented shapes, and the window
as returned by :meth:`fastconv._geometry.Window.kernel_args`. Each kernel runs
threaded or serially by the amount of work (:class:`fastconv._config.Kernel`).
"""

import math

import numba

from . import columns as _columns
from . import depthwise as _depthwise
from . import direct as _direct
from . import pool as _pool
from . import stacked as _stacked
from . import unfold as _unfold
from . import window3 as _window3
from . import winograd as _winograd

#: Output rows at least this long, read with unit stride (in col2im with any stride),
#: are handled by rows (slices); the others by a table of positions (see
#: :mod:`.unfold`). Measured on the suite's layers: positions are faster on rows of 10
#: and 11, slices on rows of 14 and up.
LONG_ROW = 12


def _by_rows(window_args) -> bool:
    _, stride, _, _, output_size = window_args
    return stride[2] == 1 and output_size[2] >= LONG_ROW


def im2col(x, window_args, cols):
    """Fill ``cols`` ``(C*kd*kh*kw, N, L)`` from ``x`` ``(N, C, D, H, W)``."""
    _, stride, _, _, output_size = window_args
    # joined rows are copied a depth slice at a time, however short they are
    by_rows = _by_rows(window_args) or _unfold.joined_rows(stride, output_size, x.shape[4])
    _unfold.im2col(cols.size, by_rows, x, *window_args, cols)


def col2im(cols, window_args, x):
    """Add the scatter of ``cols`` ``(C*kd*kh*kw, N, L)`` into ``x`` ``(N, C, D, H, W)``."""
    # Long strided rows too are added faster by rows than by positions (0.77-0.95 of
    # the time on rows of 28-112 with strides 2 and 3); im2col copies them no faster.
    output_size = window_args[4]
    _unfold.col2im(cols.size, output_size[2] >= LONG_ROW, cols, *window_args, x)


def window_positions(window_args, input_size):
    """``(volume, L)`` flat input positions of a window over a 3-d ``input_size``, -1 in
    the padding."""
    return _unfold.window_positions(*window_args[:4], input_size, window_args[4])


#: Largest block of channels (see :mod:`.depthwise`) worth building: each kernel offset
#: re-reads it, so it has to stay in the L2 cache. Larger planes go plane by plane.
DEPTHWISE_BLOCK_BYTES = 512 * 1024


def _channel_blocks(channels, weight, window_args, itemsize) -> bool:
    """Whether the depthwise kernels take the problem: one input and one output channel
    per group, at least one full block of channels (fewer would leave lanes idle), and
    a block that fits :data:`DEPTHWISE_BLOCK_BYTES`."""
    kernel, stride, dilation, _, output_size = window_args
    if (channels < _depthwise.LANES or weight.shape[0] != channels
            or weight.shape[1] != math.prod(kernel)):
        return False
    rows = _depthwise.block_shape(kernel, stride, dilation, output_size)[3]
    return rows * _depthwise.LANES * itemsize <= DEPTHWISE_BLOCK_BYTES


def stacked_planes(input_size, window_args) -> bool:
    """Whether the stacked-plane kernels (see :mod:`.stacked`) take a problem over the
    3-d ``input_size`` (of the input or its gradient): a 1-d or 2-d window with unit
    strides, and padding within the window's extent on every side (the input gradient
    pads by the extent minus it)."""
    kernel, stride, dilation, pad_low, output_size = window_args
    if kernel[0] != 1 or input_size[0] != 1 or stride != (1, 1, 1):
        return False
    for axis in (1, 2):
        extent = (kernel[axis] - 1) * dilation[axis]
        pad_high = output_size[axis] + extent - input_size[axis] - pad_low[axis]
        if not (0 <= pad_low[axis] <= extent and 0 <= pad_high <= extent):
            return False
    return True


def stacked_positions_per_output(window_args) -> float:
    """Positions the stacked-plane kernels compute per output: each output row is
    computed as wide as the padded input's rows, and each sample's outputs as many rows
    as the padded input has (see :mod:`.stacked`)."""
    kernel, _, dilation, _, output_size = window_args
    computed = math.prod(o + (k - 1) * d for o, k, d in
                         zip(output_size[1:], kernel[1:], dilation[1:]))
    return computed / math.prod(output_size[1:])


#: Largest input planes, in bytes, on which 3x3 depthwise layers with strides of 1 or 2
#: go down columns (see :mod:`.columns`): each vector of columns walks the whole plane, and
#: a plane that stays in a typical 32 KiB L1 data cache is read from it again by the
#: next. Measured, 2 threads, 8 samples of 32 channels, columns against rows (forward
#: pass) and against the stacked planes (weight gradient): float32 48 x 48 to 80 x 80
#: (9 to 25 KiB) 0.40 to 0.56 and 0.62 to 0.65 of the time, 96 x 96 (36 KiB) 1.25 and
#: 1.22, 128 x 128 1.49 and 1.38; float64 32 x 32 and 48 x 48 (8 and 18 KiB) 0.45 to
#: 0.58 and 0.56 to 0.57, 64 x 64 (32 KiB) 1.21 and 0.89, 80 x 80 1.69 and 1.49. With
#: stride 2, against the channel blocks, 144 channels: float32 28 x 28 and 56 x 56
#: 0.34 and 0.46 (forward pass), 0.51 and 0.60 (weight gradient); float64 0.47 and
#: 0.79, 0.69 and 1.00; 112 x 112, 32 channels, float32 0.36 and 0.41 (not taken),
#: float64 1.28 and 1.55. In float32, with stride 2, larger planes go down columns too
#: where the rows do not take them (the weight gradient always: see
#: direct_backward_weight): against the channel blocks, 8 samples, 96 x 96 to 112 x 112
#: with 32 to 96 channels, and 80 x 80 with 144, 0.18 to 0.42 of the time (forward pass)
#: and 0.20 to 0.58 (weight gradient); in float64 0.70 to 1.12 and 0.92 to 1.08.
COLUMNS_MAX_PLANE_BYTES = 32 * 1024
#: Narrowest output rows on which the other 3x3 depthwise planes go by rows (see
#: :mod:`.window3`). Measured, 2 threads, 8 samples, forward pass and input gradient
#: against the kernels taken otherwise (stacked planes; channel blocks with strides):
#: 0.68 and 0.70 of the time on MobileNetV2's 112 x 112 layer (float64 0.58 and 0.57),
#: 0.69 and 0.72 on 128 x 128, 0.87 and 0.56 on 64 x 200, 0.95 and 1.07 on 64 x 64; the
#: forward pass 0.35 on 224 x 224 with stride 2 (112 outputs a row).
WINDOW3_MIN_WIDTH = 64


def _depthwise_3x3(input_shape, weight, kernel) -> bool:
    """Whether a problem over a 5-d ``input_shape`` is a 2-d 3x3 convolution with one
    input and one output channel per group."""
    return kernel == (1, 3, 3) and input_shape[2] == 1 and weight.shape == (input_shape[1], 9)


def _three_by_three(input_shape, weight, window_args):
    """Which 3x3 depthwise kernel takes a problem over a 5-d ``input_shape`` (of the
    input or its gradient) and ``weight``, of the arrays' dtype: with a 2-d 3x3 window
    and one input and one output channel per group, planes of at most
    :data:`COLUMNS_MAX_PLANE_BYTES` with strides of 1 or 2 go down columns
    (``"columns"``), output rows of at least :data:`WINDOW3_MIN_WIDTH` otherwise by rows
    (``"rows"``), larger float32 planes with stride 2 down columns too, and the others
    by neither (``None``)."""
    kernel, stride, _, _, output_size = window_args
    if not _depthwise_3x3(input_shape, weight, kernel):
        return None
    plane_bytes = input_shape[3] * input_shape[4] * weight.itemsize
    if stride in ((1, 1, 1), (1, 2, 2)) and plane_bytes <= COLUMNS_MAX_PLANE_BYTES:
        return "columns"
    if output_size[2] >= WINDOW3_MIN_WIDTH:
        return "rows"
    return "columns" if _float32_stride_2(stride, weight) else None


def _float32_stride_2(stride, weight) -> bool:
    """Whether float32 3x3 depthwise planes of any size go down columns (see
    :data:`COLUMNS_MAX_PLANE_BYTES`)."""
    return stride == (1, 2, 2) and weight.itemsize == 4


def _direct_work(grad_or_y, weight) -> int:
    """Multiply-adds of a direct pass: each output element takes a weight row."""
    return grad_or_y.size * weight.shape[1]


#: Multiply-adds on stacked planes per unit of a kernel's work (see
#: fastconv._config.Kernel): they run many to a vector, so their serial builds stay
#: ahead longer. Measured, 2 threads, each pass serial against threaded: on 8 samples of
#: 0.4 to 0.9 million multiply-adds (depthwise 9x9 and 14x14 planes, 1 to 6 and 3 to 16
#: channels) serial took 0.3 to 0.6 of the time in float32 and float64 (the threaded
#: build took at least 0.16 ms); from 1.3 to 1.8 million (depthwise 7x7 and 14x14 with
#: 128 and 384 channels) 0.5 to 1.2; at 7 million (3 to 16 channels at 32 x 32) 0.65 to
#: 1.28; MobileNetV2's 7x7 and 14x14 layers (3.4 and 5.4 million) ran faster threaded.
STACKED_MULTIPLY_ADDS_PER_WORK = 16


def _stacked_work(grad_or_y, weight) -> int:
    """A stacked-plane pass's work: its multiply-adds, in units of
    :data:`STACKED_MULTIPLY_ADDS_PER_WORK`."""
    return _direct_work(grad_or_y, weight) // STACKED_MULTIPLY_ADDS_PER_WORK


def direct_forward(x, weight, window_args, y):
    """``y`` ``(N, K, D, H, W)`` = grouped convolution of ``x`` with ``weight``
    ``(K, C/G * vol)``."""
    kernel, stride, dilation, pad_low, _ = window_args
    three_by_three = _three_by_three(x.shape, weight, window_args)
    if three_by_three == "rows":
        _window3.convolve(_direct_work(y, weight), False, x, weight, stride, dilation,
                          pad_low, numba.get_num_threads(), y)
        return
    if three_by_three == "columns":
        _columns.convolve(_direct_work(y, weight), False, x, weight, stride, dilation,
                          pad_low, numba.get_num_threads(), y)
        return
    if stacked_planes(x.shape[2:], window_args):
        _stacked.convolve(_stacked_work(y, weight), False, x, weight, kernel, dilation,
                          pad_low[1], pad_low[2], numba.get_num_threads(), y)
        return
    if _channel_blocks(x.shape[1], weight, window_args, x.itemsize):
        _depthwise.convolve(_direct_work(y, weight), False, x, weight, *window_args, y)
        return
    _direct.forward(_direct_work(y, weight), _by_rows(window_args), x, weight, *window_args, y)


def direct_backward_input(grad_output, weight, window_args, dx):
    """Overwrite ``dx`` ``(N, C, D, H, W)`` with the input gradient."""
    kernel, stride, dilation, pad_low, _ = window_args
    # the convolution of the output gradient with the turned filters: padded by the
    # window's extent minus the padding, spread out by the stride
    top, left = ((kernel[a] - 1) * dilation[a] - pad_low[a] for a in (1, 2))
    # With stride 2, 3x3 depthwise planes of any size go down columns over the output
    # gradient spread out (see .columns): the walks read the output gradient, a quarter
    # of the plane. Measured, 2 threads, against the channel blocks: float32 0.21 to 0.65
    # of the time on planes of 28 x 28 to 224 x 224 with 3 to 192 channels (MobileNetV2's
    # 56 x 56 layer 0.47 and 0.49), float64 0.34 to 0.80.
    if stride == (1, 2, 2) and _depthwise_3x3(dx.shape, weight, kernel):
        _columns.convolve(_direct_work(dx, weight), True, grad_output, weight, stride,
                          dilation, (0, top, left), numba.get_num_threads(), dx)
        return
    if stacked_planes(dx.shape[2:], window_args):
        turned_args = (kernel, (1, 1, 1), dilation, (0, top, left), dx.shape[2:])
        three_by_three = _three_by_three(dx.shape, weight, turned_args)
        if three_by_three == "rows":
            _window3.convolve(_direct_work(grad_output, weight), True, grad_output, weight,
                              (1, 1, 1), dilation, (0, top, left), numba.get_num_threads(),
                              dx)
            return
        if three_by_three == "columns":
            _columns.convolve(_direct_work(grad_output, weight), True, grad_output, weight,
                              (1, 1, 1), dilation, (0, top, left), numba.get_num_threads(),
                              dx)
            return
        _stacked.convolve(_stacked_work(grad_output, weight), True, grad_output, weight,
                          kernel, dilation, top, left, numba.get_num_threads(), dx)
        return
    if _channel_blocks(dx.shape[1], weight, window_args, dx.itemsize):
        _depthwise.convolve(_direct_work(grad_output, weight), True, grad_output, weight,
                            *window_args, dx)
        return
    _direct.backward_input(_direct_work(grad_output, weight), _by_rows(window_args),
                           grad_output, weight, *window_args, dx)


def direct_backward_weight(grad_output, x, window_args, dw):
    """Overwrite ``dw`` ``(K, C/G * vol)`` with the weight gradient."""
    kernel, stride, dilation, pad_low, _ = window_args
    # Also in float32 with stride 2 where the forward pass goes by rows: against the
    # channel blocks, 8 samples, 160 x 160 and 224 x 224 with 32 and 16 channels, 0.56
    # and 0.63 of the time.
    if _three_by_three(x.shape, dw, window_args) == "columns" or (
            _float32_stride_2(stride, dw) and _depthwise_3x3(x.shape, dw, kernel)):
        _columns.backward_weight(_direct_work(grad_output, dw), grad_output, x, stride,
                                 dilation, pad_low, numba.get_num_threads(), dw)
        return
    if stacked_planes(x.shape[2:], window_args):
        _stacked.backward_weight(_stacked_work(grad_output, dw), grad_output, x, kernel,
                                 dilation, pad_low[1], pad_low[2], numba.get_num_threads(),
                                 dw)
        return
    if _channel_blocks(x.shape[1], dw, window_args, x.itemsize):
        _depthwise.backward_weight(_direct_work(grad_output, dw), grad_output, x,
                                   *window_args, dw)
        return
    _direct.backward_weight(_direct_work(grad_output, dw), _by_rows(window_args), grad_output,
                            x, *window_args, dw)


def winograd_input(x, pad_low, tiles, v):
    """Overwrite ``v`` ``(16, C, N * tiles_h * tiles_w)`` with the Winograd transform of
    the tiles of ``x`` ``(N, C, H, W)``, zero-padded by ``pad_low`` before its rows and
    columns and as far as the tiles reach after them."""
    _winograd.transform_input(v.size, x, *pad_low, *tiles, v)


def winograd_filters(weight, u):
    """Overwrite ``u`` ``(16, K, C)`` with the Winograd transform of ``weight``
    ``(K, C, 3, 3)``."""
    _winograd.transform_filters(u.size, weight, u)


def winograd_output(m, tiles, y):
    """Overwrite ``y`` ``(N, K, H, W)`` with the outputs of the transformed products ``m``
    ``(16, K, N * tiles_h * tiles_w)``."""
    _winograd.transform_output(m.size, m, *tiles, y)


def winograd_gradient(grad_output, tiles, u):
    """Overwrite ``u`` ``(16, K, N * tiles_h * tiles_w)`` with the weight gradient's
    transform of the 2 x 2 blocks of ``grad_output`` ``(N, K, H, W)``."""
    _winograd.transform_gradient(u.size, grad_output, *tiles, u)


def winograd_weight_gradient(m, dw):
    """Overwrite ``dw`` ``(K, C, 3, 3)`` with the weight gradient of the tile products
    ``m`` ``(16, K, C)``, summed over tiles."""
    _winograd.transform_weight_gradient(dw.size, m, dw)


def max_over_windows(cols, positions, values, indices):
    """Max pooling of ``cols`` ``(volume, planes, L)``: overwrite ``values`` and the flat
    input ``indices`` of the winners, both ``(planes, L)``."""
    _pool.max_over_windows(cols.size, cols, positions, values, indices)


def scatter_add(grad, indices, dx):
    """``dx[m, indices[m, l]] += grad[m, l]``; ``indices`` must lie in ``dx``'s rows."""
    _pool.scatter_add(grad.size, grad, indices, dx)
