"""Direct kernels for depthwise convolutions (groups == input channels).

With one input channel per group, the im2col GEMMs degenerate into matrix-vector
products, so these kernels convolve each channel directly instead. Arrays are 5-d
``(N, C, D, H, W)`` as in :mod:`.unfold`; the weight is ``(K, volume)`` with
``K = C * multiplier``: output channel ``k`` reads input channel ``k // multiplier``.
Zero padding is implicit, through the same spans as im2col's.
"""

from numba import prange

from .._config import jit
from .unfold import _offset_spans


@jit(inline=True)
def _axpy(alpha, source, s0, s_step, target, t0, t_step, count):
    """``target[t0 + q * t_step] += alpha * source[s0 + q * s_step]`` for ``q < count``."""
    if s_step == 1 and t_step == 1:  # the common case, as a loop LLVM vectorises
        for q in range(count):
            target[t0 + q] += alpha * source[s0 + q]
    else:
        for q in range(count):
            target[t0 + q * t_step] += alpha * source[s0 + q * s_step]


@jit(parallel=True)
def forward(x, weight, kernel, stride, dilation, pad_low, output_size, y):
    # Overwrites y. Each (sample, output channel) is one task: no races.
    batch, channels, depth, height, width = x.shape
    out_channels = y.shape[1]
    multiplier = out_channels // channels
    sd, sh, sw = stride
    volume = kernel[0] * kernel[1] * kernel[2]
    for task in prange(batch * out_channels):
        n = task // out_channels
        k = task % out_channels
        image = x[n, k // multiplier]
        out = y[n, k]
        out[:] = 0
        for offset in range(volume):
            d_lo, d_hi, h_lo, h_hi, w_lo, w_hi, z0, y0, x0 = _offset_spans(
                offset, kernel, stride, dilation, pad_low, (depth, height, width), output_size)
            alpha = weight[k, offset]
            for a in range(d_lo, d_hi):
                for b in range(h_lo, h_hi):
                    _axpy(alpha, image[a * sd + z0, b * sh + y0], w_lo * sw + x0, sw,
                          out[a, b], w_lo, 1, w_hi - w_lo)


@jit(parallel=True)
def backward_input(grad_output, weight, kernel, stride, dilation, pad_low, output_size, dx):
    # Overwrites dx. Each (sample, input channel) is one task: no races.
    batch, channels, depth, height, width = dx.shape
    multiplier = grad_output.shape[1] // channels
    sd, sh, sw = stride
    volume = kernel[0] * kernel[1] * kernel[2]
    for task in prange(batch * channels):
        n = task // channels
        c = task % channels
        image = dx[n, c]
        image[:] = 0
        for k in range(c * multiplier, (c + 1) * multiplier):
            grad = grad_output[n, k]
            for offset in range(volume):
                d_lo, d_hi, h_lo, h_hi, w_lo, w_hi, z0, y0, x0 = _offset_spans(
                    offset, kernel, stride, dilation, pad_low, (depth, height, width),
                    output_size)
                alpha = weight[k, offset]
                for a in range(d_lo, d_hi):
                    for b in range(h_lo, h_hi):
                        _axpy(alpha, grad[a, b], w_lo, 1, image[a * sd + z0, b * sh + y0],
                              w_lo * sw + x0, sw, w_hi - w_lo)


@jit(parallel=True)
def backward_weight(grad_output, x, kernel, stride, dilation, pad_low, output_size, dw):
    # Overwrites dw (K, volume). Each output channel is one task: no races.
    batch, channels, depth, height, width = x.shape
    out_channels = grad_output.shape[1]
    multiplier = out_channels // channels
    sd, sh, sw = stride
    volume = kernel[0] * kernel[1] * kernel[2]
    for k in prange(out_channels):
        c = k // multiplier
        for offset in range(volume):
            d_lo, d_hi, h_lo, h_hi, w_lo, w_hi, z0, y0, x0 = _offset_spans(
                offset, kernel, stride, dilation, pad_low, (depth, height, width), output_size)
            total = 0.0
            for n in range(batch):
                grad = grad_output[n, k]
                image = x[n, c]
                for a in range(d_lo, d_hi):
                    for b in range(h_lo, h_hi):
                        row = image[a * sd + z0, b * sh + y0]
                        line = grad[a, b]
                        for q in range(w_lo, w_hi):
                            total += line[q] * row[q * sw + x0]
            dw[k, offset] = total
