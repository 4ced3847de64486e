"""Winograd's minimal filtering F(2x2, 3x3): 2-d 3x3 convolutions with unit stride and
dilation in 16 multiplications per 2 x 2 outputs instead of 36.

Each 4 x 4 tile ``d`` of the zero-padded input, one for every 2 x 2 block of outputs
(tiles overlap by two rows and two columns), becomes ``B^T d B``; each 3 x 3 filter
``g`` becomes ``G g G^T``; the 16 elementwise products, summed over input channels, are
16 GEMMs; and ``A^T m A`` turns each 4 x 4 sum back into its 2 x 2 outputs, with

    B^T = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]]
    G   = [[1, 0, 0], [1/2, 1/2, 1/2], [1/2, -1/2, 1/2], [0, 0, 1]]
    A^T = [[1, 1, 1, 0], [0, 1, -1, -1]]

(Lavin and Gray, "Fast Algorithms for Convolutional Neural Networks", 2016). Transformed
arrays put the 16 tile positions first: the input ``(16, C, N * tiles)``, the filters
``(16, K, C)``, their products ``(16, K, N * tiles)``, tiles row-major within a sample.
Arrays are 4-d ``(N, C, H, W)``.

The weight gradient is the correlation of the padded input with the output gradient,
3 x 3 outputs from 2 x 2 "filters": F(3x3, 2x2) on the same 4 x 4 input tiles, one per
2 x 2 block of the output gradient. Its input transform is the one above with the
fourth row negated, its filter transform and output transform

    G   = [[1, 0], [1/2, 1/2], [1/2, -1/2], [0, 1]]
    A^T = [[1, 1, 1, 0], [0, 1, -1, 0], [0, 1, 1, 1]]

so the forward pass's transformed tiles serve it, with the sign folded into ``A^T``'s
last column. Transformed gradient tiles are ``(16, K, N * tiles)``; the 16 GEMMs sum
over tiles, into ``(16, K, C)``.
"""

import numpy as np
from numba import prange

from .._config import jit

#: Outputs per tile side, and the tile side: F(2x2, 3x3).
TILE_OUTPUTS, TILE = 2, 4


@jit(parallel=True)
def transform_input(x, pad_top, pad_left, tiles_h, tiles_w, v):
    # Overwrites v (16, C, N * tiles_h * tiles_w). Each (sample, channel) is one task.
    batch, channels, height, width = x.shape
    tiles = tiles_h * tiles_w
    padded_h, padded_w = 2 * tiles_h + 2, 2 * tiles_w + 2
    for task in prange(batch * channels):
        n = task // channels
        c = task % channels
        plane = x[n, c]
        # the zero-padded plane, cut or extended to exactly the tiles' extent
        padded = np.zeros((padded_h, padded_w), x.dtype)
        rows = max(0, min(height, padded_h - pad_top))
        columns = max(0, min(width, padded_w - pad_left))
        for r in range(rows):
            target = padded[r + pad_top, pad_left:pad_left + columns]
            source = plane[r, :columns]
            for q in range(columns):
                target[q] = source[q]
        # B^T d: combinations of a tile row's four input rows, for whole rows at once
        combined = np.empty((TILE, padded_w), x.dtype)
        for i in range(tiles_h):
            d0, d1, d2, d3 = padded[2 * i], padded[2 * i + 1], padded[2 * i + 2], padded[2 * i + 3]
            for q in range(padded_w):
                combined[0, q] = d0[q] - d2[q]
                combined[1, q] = d1[q] + d2[q]
                combined[2, q] = d2[q] - d1[q]
                combined[3, q] = d1[q] - d3[q]
            first = n * tiles + i * tiles_w
            # (B^T d) B: the same combinations of each tile's four columns
            for a in range(TILE):
                t = combined[a]
                v0 = v[TILE * a, c, first:first + tiles_w]
                v1 = v[TILE * a + 1, c, first:first + tiles_w]
                v2 = v[TILE * a + 2, c, first:first + tiles_w]
                v3 = v[TILE * a + 3, c, first:first + tiles_w]
                for j in range(tiles_w):
                    v0[j] = t[2 * j] - t[2 * j + 2]
                    v1[j] = t[2 * j + 1] + t[2 * j + 2]
                    v2[j] = t[2 * j + 2] - t[2 * j + 1]
                    v3[j] = t[2 * j + 1] - t[2 * j + 3]


@jit(inline=True)
def _g_row(v0, v1, v2, a, half):
    """Row ``a`` of ``G`` times the column ``(v0, v1, v2)``; ``half`` is 1/2 in their
    dtype, so that float32 stays float32."""
    if a == 0:
        return v0
    if a == 1:
        return (v0 + v1 + v2) * half
    if a == 2:
        return (v0 - v1 + v2) * half
    return v2


@jit(parallel=True)
def transform_filters(w, u):
    # Overwrites u (16, K, C) with G g G^T of every filter g = w[k, c] (3 x 3), in
    # scalars: an array per filter would be a heap allocation in each of K * C tasks.
    out_channels, channels = w.shape[:2]
    half = np.full(1, 0.5, w.dtype)[0]
    for task in prange(out_channels * channels):
        k = task // channels
        c = task % channels
        g = w[k, c]
        for a in range(TILE):
            # row a of G g, then that row times G^T
            r0 = _g_row(g[0, 0], g[1, 0], g[2, 0], a, half)
            r1 = _g_row(g[0, 1], g[1, 1], g[2, 1], a, half)
            r2 = _g_row(g[0, 2], g[1, 2], g[2, 2], a, half)
            for e in range(TILE):
                u[TILE * a + e, k, c] = _g_row(r0, r1, r2, e, half)


@jit(parallel=True)
def transform_output(m, tiles_h, tiles_w, y):
    # Overwrites y (N, K, H, W) with A^T m A of each tile of m (16, K, N * tiles), the
    # outputs past y's edges dropped. Each (sample, output channel) is one task.
    batch, out_channels, height, width = y.shape
    tiles = tiles_h * tiles_w
    for task in prange(batch * out_channels):
        n = task // out_channels
        k = task % out_channels
        plane = y[n, k]
        # A^T m: two rows of four per tile, for a tile row at once
        combined = np.empty((2 * TILE, tiles_w), y.dtype)
        outputs = np.empty((TILE_OUTPUTS, TILE_OUTPUTS * tiles_w), y.dtype)
        for i in range(tiles_h):
            first = n * tiles + i * tiles_w
            for b in range(TILE):
                m0 = m[b, k, first:first + tiles_w]
                m1 = m[TILE + b, k, first:first + tiles_w]
                m2 = m[2 * TILE + b, k, first:first + tiles_w]
                m3 = m[3 * TILE + b, k, first:first + tiles_w]
                upper, lower = combined[b], combined[TILE + b]
                for j in range(tiles_w):
                    upper[j] = m0[j] + m1[j] + m2[j]
                    lower[j] = m1[j] - m2[j] - m3[j]
            # (A^T m) A
            for h in range(TILE_OUTPUTS):
                s0, s1, s2, s3 = (combined[TILE * h], combined[TILE * h + 1],
                                  combined[TILE * h + 2], combined[TILE * h + 3])
                row = outputs[h]
                for j in range(tiles_w):
                    row[2 * j] = s0[j] + s1[j] + s2[j]
                    row[2 * j + 1] = s1[j] - s2[j] - s3[j]
                r = TILE_OUTPUTS * i + h
                if r < height:
                    target = plane[r]
                    for q in range(width):
                        target[q] = row[q]


@jit(inline=True)
def _gradient_row(v0, v1, a, half):
    """Row ``a`` of F(3x3, 2x2)'s ``G`` times the column ``(v0, v1)``."""
    if a == 0:
        return v0
    if a == 1:
        return (v0 + v1) * half
    if a == 2:
        return (v0 - v1) * half
    return v1


@jit(parallel=True)
def transform_gradient(grad_output, tiles_h, tiles_w, u):
    # Overwrites u (16, K, N * tiles_h * tiles_w) with G g G^T of each 2 x 2 block g of
    # the output gradient, zero past its edges. Each (sample, output channel) is one task.
    batch, out_channels, height, width = grad_output.shape
    tiles = tiles_h * tiles_w
    half = np.full(1, 0.5, u.dtype)[0]
    for task in prange(batch * out_channels):
        n = task // out_channels
        k = task % out_channels
        plane = grad_output[n, k]
        # G g: combinations of a tile row's two gradient rows, for whole rows at once;
        # the column past an odd width stays zero, as does a missing last row
        combined = np.zeros((TILE, TILE_OUTPUTS * tiles_w), u.dtype)
        missing = np.zeros(width, u.dtype)
        for i in range(tiles_h):
            top = plane[TILE_OUTPUTS * i]
            bottom = plane[TILE_OUTPUTS * i + 1] if TILE_OUTPUTS * i + 1 < height else missing
            for a in range(TILE):
                row = combined[a]
                for q in range(width):
                    row[q] = _gradient_row(top[q], bottom[q], a, half)
            first = n * tiles + i * tiles_w
            # (G g) G^T: the same combinations of each block's two columns
            for a in range(TILE):
                t = combined[a]
                for e in range(TILE):
                    target = u[TILE * a + e, k, first:first + tiles_w]
                    for j in range(tiles_w):
                        target[j] = _gradient_row(t[2 * j], t[2 * j + 1], e, half)


@jit(inline=True)
def _weight_row(v0, v1, v2, v3, h):
    """Row ``h`` of F(3x3, 2x2)'s ``A^T``, its last column negated for the forward
    pass's input transform, times the column ``(v0, v1, v2, v3)``."""
    if h == 0:
        return v0 + v1 + v2
    if h == 1:
        return v1 - v2
    return v1 + v2 - v3


@jit(parallel=True)
def transform_weight_gradient(m, dw):
    # Overwrites dw (K, C, 3, 3) with A^T m A of each 4 x 4 sum m[:, k, c], in scalars
    # like transform_filters.
    out_channels, channels = dw.shape[:2]
    for task in prange(out_channels * channels):
        k = task // channels
        c = task % channels
        for h in range(3):
            r0 = _weight_row(m[0, k, c], m[4, k, c], m[8, k, c], m[12, k, c], h)
            r1 = _weight_row(m[1, k, c], m[5, k, c], m[9, k, c], m[13, k, c], h)
            r2 = _weight_row(m[2, k, c], m[6, k, c], m[10, k, c], m[14, k, c], h)
            r3 = _weight_row(m[3, k, c], m[7, k, c], m[11, k, c], m[15, k, c], h)
            for e in range(3):
                dw[k, c, h, e] = _weight_row(r0, r1, r2, r3, e)
