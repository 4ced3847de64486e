"""``ConvPlan``: a convolution descriptor built once, validated once, run many times.

A plan fixes the input shape, weight shape, window parameters and dtype. Its three
passes are GEMMs around im2col columns ``cols`` (``C*prod(k)`` rows, one column per
output position), computed per group ``g``:

- forward:          ``y[g]     = W[g] @ cols[g]``
- backward_weight:  ``dW[g]    = dY[g] @ cols[g].T``
- backward_input:   ``dcols[g] = W[g].T @ dY[g]``, then ``dX = col2im(dcols)``

``col2im``'s scatter-add is the "full" convolution with the rotated filter that the
input gradient needs. The columns are built tile by tile (:func:`plan_tiles`), so the
workspace stays under a limit. A 1x1, stride-1, unpadded convolution needs no columns: the input
is its own column matrix.
"""

from __future__ import annotations

import functools
import itertools
import math
import sys

import numba
import numpy as np

from . import _kernels, _workers
from ._arrays import as_float_array, as_float_dtype, check_array
from ._geometry import (
    ConvGeometry,
    Tile,
    Window,
    as_int,
    conv_geometry,
    plan_tiles,
    three_d,
    transpose_geometry,
)
from ._padding import pad, pad_adjoint

#: Default cap on a plan's workspace, in bytes; see :func:`set_workspace_limit`.
DEFAULT_WORKSPACE_LIMIT = 128 * 2**20
#: Workspace of one tile on a worker thread: columns this size are still in the cache
#: when the GEMM reads them...
WORKER_TILE_BYTES = 2 * 2**20
#: ...unless that leaves fewer output positions than this, too few for an efficient GEMM.
WORKER_TILE_COLUMNS = 1024
#: Fewest multiply-adds of a pass split among worker threads: handing a piece to a
#: worker and waiting for it takes 0.05 to 0.1 ms.
WORKER_MIN_WORK = 1 << 22
#: Each worker's GEMMs pack the whole weight matrix: below this many output positions
#: per filter in a worker's share (ResNet-50's strided 1x1 layer: 98 positions for 2048
#: filters), packing it twice costs more than the workers gain, and a pass runs in one go.
MIN_WORKER_POSITIONS_PER_FILTER = 0.25

_workspace_limit = DEFAULT_WORKSPACE_LIMIT


def set_workspace_limit(nbytes: int) -> None:
    """Cap the temporary memory of plans built from now on (default 128 MiB).

    Parameters
    ----------
    nbytes : int
        Positive. A pass then allocates at most about this much besides its result.

    Examples
    --------
    >>> import fastconv
    >>> fastconv.set_workspace_limit(64 * 2**20)
    >>> fastconv.ConvPlan((64, 3, 224, 224), (64, 3, 7, 7), stride=2).workspace_nbytes <= 64 * 2**20
    True
    >>> fastconv.set_workspace_limit(128 * 2**20)  # the default
    """
    global _workspace_limit
    nbytes = as_int(nbytes, "nbytes")
    if nbytes <= 0:
        raise ValueError(f"nbytes must be positive, got {nbytes}")
    _workspace_limit = nbytes


def get_workspace_limit() -> int:
    """The workspace cap given to plans built without ``workspace_limit``.

    Returns
    -------
    int
        Bytes; 128 MiB unless :func:`set_workspace_limit` changed it.

    Examples
    --------
    >>> import fastconv
    >>> fastconv.get_workspace_limit() // 2**20
    128
    """
    return _workspace_limit


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
    workspace_limit : int, optional
        Cap on the temporary memory of one pass, in bytes. Default
        :func:`get_workspace_limit` (128 MiB).
    algorithm : {"auto", "gemm", "direct", "winograd"}, optional
        ``"gemm"``: im2col and BLAS GEMMs. ``"direct"``: Numba kernels that convolve each
        group directly. ``"winograd"``: for 2-d 3x3 convolutions with unit stride and
        dilation, one group and zero padding of at most 2 per side, the forward pass and
        the input gradient by Winograd's F(2x2, 3x3), in 16 GEMMs of transformed tiles
        with 4/9 of the multiplications, and the weight gradient by F(3x3, 2x2) on the
        same input tiles. ``"auto"`` (default) takes ``"direct"`` where the GEMMs would
        be thin: at most :data:`DIRECT_MAX_GROUP_CHANNELS` input and output channels per
        group, depthwise layers among them, and, with unit strides and padding within
        the window's extent, a window of several positions and at most
        :data:`STACKED_MAX_CHANNEL_PAIRS` pairs of an input and an output channel per
        group (a first layer from 1 or 3 channels, say), unless the outputs are so small
        beside the window that the direct kernels would compute more than
        :data:`STACKED_MAX_POSITIONS_PER_OUTPUT` positions per output (with a 2-d window
        up to :data:`STACKED_2D_MAX_CHANNEL_PAIRS` pairs); ``"winograd"``
        where it applies, with at least :data:`WINOGRAD_MIN_CHANNELS` input and output
        channels and outputs at least :data:`WINOGRAD_MIN_OUTPUT_SIDE` wide and high (by
        dtype), if a sample's transformed tiles per thread fit the workspace limit; else
        ``"gemm"``. Where it takes one of these two, it picks the weight gradient's on
        its own: Winograd where it applies with at least :data:`WINOGRAD_WEIGHT_MIN_CHANNELS`
        channels and outputs at least :data:`WINOGRAD_WEIGHT_MIN_OUTPUT_SIDE` wide and
        high (its GEMMs sum over tiles, so they stay wide on small outputs), else im2col.

    Attributes
    ----------
    input_shape, weight_shape, output_shape : tuple of int
        The shapes the plan's passes take and return.
    dtype : numpy.dtype
    algorithm : str
        The algorithm chosen: ``"gemm"``, ``"direct"`` or ``"winograd"``.
    backward_weight_algorithm : str
        The weight gradient's, which ``"auto"`` picks on its own: ``"gemm"``,
        ``"direct"`` or ``"winograd"``.
    workspace_nbytes : int
        Bytes of temporary memory one pass allocates at most, besides its result and
        besides a contiguous copy of an input that is not C-contiguous: the larger of a
        pass run in one go and a pass split among worker threads (each with its tiles,
        its own weight-gradient sum and, for a single sample, all but the first with an
        input gradient of its own), for any thread count. The direct
        kernels' scratch is not counted: a table of window positions per call; for
        depthwise layers, a block of 16 channels and its output per thread (each at most
        about 512 KiB); with unit strides, a group's zero-padded input planes and one
        output plane per thread, for as many samples as fit 32 KiB and at least one;
        for 3x3 depthwise layers down columns, the filters and, per thread, nine
        vectors of weight-gradient sums.

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
                 padding_mode="zeros", dtype=np.float64, workspace_limit=None, algorithm="auto"):
        geometry = conv_geometry(input_shape, weight_shape, stride=stride, padding=padding,
                                 dilation=dilation, groups=groups, padding_mode=padding_mode,
                                 input_name="input_shape", weight_name="weight_shape")
        self._setup(geometry, as_float_dtype(dtype), workspace_limit, algorithm)

    @classmethod
    def from_geometry(cls, geometry: ConvGeometry, dtype, workspace_limit=None,
                      algorithm="auto") -> ConvPlan:
        """A plan for a geometry already validated by :mod:`fastconv._geometry`."""
        plan = cls.__new__(cls)
        plan._setup(geometry, as_float_dtype(dtype), workspace_limit, algorithm)
        return plan

    @classmethod
    def transposed(cls, input_shape, weight_shape, *, stride=1, padding=0, output_padding=0,
                   groups=1, dilation=1, dtype=np.float64, workspace_limit=None,
                   algorithm="auto") -> ConvPlan:
        """The plan whose ``backward_input`` is ``conv_transpose`` of ``input_shape``.

        ``weight_shape`` is the transposed convolution's ``(in, out // groups, *kernel)``;
        the plan's ``output_shape`` is ``input_shape`` and its ``input_shape`` is the
        shape the transposed convolution returns.
        """
        return cls.from_geometry(
            transpose_geometry(input_shape, weight_shape, stride=stride, padding=padding,
                               output_padding=output_padding, groups=groups, dilation=dilation),
            dtype, workspace_limit, algorithm,
        )

    def _setup(self, geometry: ConvGeometry, dtype: np.dtype, workspace_limit, algorithm) -> None:
        self.geometry = geometry
        self.dtype = dtype
        self.input_shape = geometry.input_shape
        self.weight_shape = geometry.weight_shape
        self.output_shape = geometry.output_shape
        if workspace_limit is None:
            workspace_limit = get_workspace_limit()
        elif as_int(workspace_limit, "workspace_limit") <= 0:
            raise ValueError(f"workspace_limit must be positive, got {workspace_limit}")
        self.workspace_limit = int(workspace_limit)
        g = geometry
        window = g.window
        # Non-zero padding modes pad explicitly; the kernels then see an unpadded window.
        kernel_window = window.without_padding() if g.needs_explicit_padding else window
        self._explicit_padding = g.needs_explicit_padding
        self._kernel_input_size = kernel_window.input_size
        self._kernel_spatial = three_d(kernel_window.input_size)
        self._output_spatial = three_d(window.output_size)
        self.algorithm = _choose_algorithm(algorithm, g, dtype, kernel_window)
        self.backward_weight_algorithm = _choose_weight_algorithm(algorithm, g, dtype,
                                                                  self.algorithm)
        # (a direct plan computes the weight gradient directly too)
        direct = self.algorithm == "direct"
        # A 1x1 window that visits every input position once needs no im2col, and the
        # direct kernels need none at all.
        self._needs_columns = not direct and (
            window.kernel_volume > 1 or any(s > 1 for s in window.stride)
            or window.is_padded or window.input_size != window.output_size)
        itemsize = dtype.itemsize
        # Per output position, the GEMM path holds a column of im2col and a reordered
        # column of the output or its gradient (a 1x1 convolution without columns
        # reorders nothing, and holds less); per sample, the explicitly padded input or,
        # going back, its gradient and the up to three copies that fold the padding back
        # (see pad_adjoint). Run in one go, tiles
        # are as large as the limit allows: each switch between a Numba kernel and a
        # threaded GEMM costs more (BLAS threads spin on after their GEMM) than cache
        # misses do. Split among worker threads (see _pieces), they are cache-sized. The
        # direct kernels need no columns: one tile.
        padded = 4 * g.in_channels * math.prod(kernel_window.input_size) * itemsize \
            if self._explicit_padding else 0
        self._kernel_window = kernel_window
        self._pieces_by_count: dict[int, list[list[Tile]]] = {}
        # OpenBLAS's float32 GEMMs run a thin product faster with the longer side first:
        # the weight gradient as (rows x n) @ (n x out) where rows > out, transposed at
        # the end. Measured on the suite, 2 threads: 0.58 to 0.80 of the time on layers
        # with 6 to 64 output channels (LeNet, CIFAR ResNet-20, ResNet-50's 3x3/64, the
        # 3-D U-Net, VGG-16's conv1_2), 0.81 to 0.94 with 96 and 128. Not with more
        # output channels, where the GEMMs gained less than the transposed copy of the
        # result costs (ResNet-50's 3x3/512: 12 ms), nor in float64, where it took 1.1
        # to 1.2 times as long on layers of 256 channels and more.
        self._weight_gradient_transposed = (
            dtype == np.float32 and g.col_rows > g.out_channels
            and g.out_channels // g.groups <= WEIGHT_GRADIENT_TRANSPOSED_MAX_OUT)
        if not direct:
            self._per_column = (g.col_rows + g.out_channels) * itemsize
            self._per_sample = padded
            # backward_weight sums tiles through a weight-sized partial product
            weight_bytes = math.prod(self.weight_shape) * itemsize
            self._tiles = plan_tiles(range(g.batch), kernel_window, self._per_column, padded,
                                     self.workspace_limit - weight_bytes)
            self.workspace_nbytes = weight_bytes + self._tiles_nbytes(self._tiles)
            self._worker_budget = self._worker_tile_budget(weight_bytes)
            if "winograd" in (self.algorithm, self.backward_weight_algorithm):
                self._setup_winograd(requested_auto=algorithm == "auto")
        else:
            self._tiles = plan_tiles(range(g.batch), kernel_window, 0, 0, sys.maxsize)
            self._worker_budget = 0
            self.workspace_nbytes = 0

    def _setup_winograd(self, requested_auto: bool) -> None:
        """Samples per chunk of the Winograd passes, each sample with its transformed
        input tiles and those of the other side, products or output gradient (as many
        as the larger of the forward pass and the input gradient has): enough for GEMMs
        of :data:`WORKER_TILE_COLUMNS` tiles or for :data:`WORKER_TILE_BYTES`, as many
        as the workspace limit holds besides the filters or the weight gradient's sums
        with a chunk per thread. If not even one sample fits, "auto" falls back to
        "gemm" for every pass."""
        g = self.geometry
        itemsize = self.dtype.itemsize
        tile_count = max(math.prod(_winograd_tiles(g.window.output_size)),
                         math.prod(_winograd_tiles(g.window.input_size)))
        per_sample = 16 * (g.in_channels + g.out_channels) * tile_count * itemsize
        threads = max(1, min(numba.config.NUMBA_NUM_THREADS, g.batch))
        # the transformed filters and the turned ones the input gradient transforms;
        # in the weight gradient, each thread's 16 sums of tile products and a product
        filters = max(16 + 9, 17 * threads) * g.in_channels * g.out_channels * itemsize
        fitting = (self.workspace_limit - filters) // (per_sample * threads)
        if fitting < 1:
            if requested_auto:
                self.algorithm = self.backward_weight_algorithm = "gemm"
                return
            raise ValueError(
                f"workspace_limit of {self.workspace_limit} bytes is too small for "
                f"algorithm='winograd': one sample per thread needs "
                f"{filters + threads * per_sample} bytes")
        wanted = max(-(-WORKER_TILE_COLUMNS // tile_count), WORKER_TILE_BYTES // per_sample)
        self._winograd_samples = max(1, min(g.batch, fitting, wanted))
        self.workspace_nbytes = max(self.workspace_nbytes,
                                    filters + threads * self._winograd_samples * per_sample)

    def _worker_tile_budget(self, weight_bytes: int) -> int:
        """The workspace of one tile on a worker thread, 0 if the passes should always
        run in one go; raises ``workspace_nbytes`` to what the workers take at most."""
        if not self._needs_columns:
            # Workers gain by keeping columns in cache and by never starting a Numba
            # kernel while BLAS threads spin; a 1x1 convolution has neither, and its
            # batch-wide threaded GEMMs are faster than per-sample serial ones.
            return 0
        batch = self.geometry.batch
        # A worker also keeps its own sum of the weight gradient; with as many workers
        # as Numba has threads, all of them stay under the limit. A single sample is
        # split into slabs.
        most_workers = min(numba.config.NUMBA_NUM_THREADS, batch if batch > 1 else sys.maxsize)
        # each worker but the first scatters a single sample into a gradient of its own
        own_gradient = math.prod(self.input_shape) * self.dtype.itemsize if batch == 1 else 0
        budget = max(1, min(max(WORKER_TILE_BYTES, WORKER_TILE_COLUMNS * self._per_column),
                            self.workspace_limit // most_workers - 2 * weight_bytes
                            - own_gradient))
        side_by_side = [
            # the largest tile is among those of the longest run of samples
            workers * (2 * weight_bytes + self._tiles_nbytes(plan_tiles(
                range(-(-batch // workers)), self._kernel_window, self._per_column,
                self._per_sample, budget))) + (workers - 1) * own_gradient
            for workers in range(2, most_workers + 1)]
        if max(side_by_side, default=0) > self.workspace_limit:
            return 0  # even tiles of one output line would not fit
        self.workspace_nbytes = max([self.workspace_nbytes, *side_by_side])
        return budget

    def _tiles_nbytes(self, tiles: list[Tile]) -> int:
        """Workspace of the largest of ``tiles``: its columns, its GEMM output and its
        samples' padding."""
        return max(((t.last - t.first) * (t.columns * self._per_column + self._per_sample)
                    for t in tiles), default=0)

    def _pieces(self, workers: int) -> list[list[Tile]] | None:
        """The tiles of each of ``workers`` worker threads (fewer if there are fewer
        samples or slabs), or None when the pass should run in one go instead.

        Each worker takes consecutive samples, so that no two add into the same
        sample's input gradient; a single sample is split into runs of slabs of its
        output (their windows overlap in the input gradient: each worker but the first
        adds into a gradient of its own).
        """
        g = self.geometry
        if g.batch > 1:
            workers = min(workers, g.batch)
        if workers < 2 or self._worker_budget <= 0:
            return None
        positions = self._kernel_window.output_volume
        multiply_adds = g.out_channels * g.col_rows // g.groups * g.batch * positions
        share = g.batch * positions // workers
        if (multiply_adds < WORKER_MIN_WORK
                or share < MIN_WORKER_POSITIONS_PER_FILTER * g.out_channels // g.groups):
            return None
        if workers not in self._pieces_by_count:
            self._pieces_by_count[workers] = (
                self._sample_runs(workers) if g.batch > 1 else self._slab_runs(workers))
        pieces = self._pieces_by_count[workers]
        return pieces if len(pieces) > 1 else None  # one slab: nothing to split

    def _sample_runs(self, workers: int) -> list[list[Tile]]:
        batch = self.geometry.batch
        return [plan_tiles(range(batch * w // workers, batch * (w + 1) // workers),
                           self._kernel_window, self._per_column, self._per_sample,
                           self._worker_budget)
                for w in range(workers)]

    def _slab_runs(self, workers: int) -> list[list[Tile]]:
        slabs = plan_tiles(range(1), self._kernel_window, self._per_column, self._per_sample,
                           self._worker_budget)
        workers = min(workers, len(slabs))
        return [slabs[len(slabs) * w // workers:len(slabs) * (w + 1) // workers]
                for w in range(workers)]

    def _run_pieces(self, work) -> list:
        """``work(tiles, piece)`` over all of the plan's tiles: split among worker
        threads when the calling thread has several (see :meth:`_pieces`), else in one
        go as piece 0. One result per piece."""
        pieces = self._pieces(_workers.available_workers())
        if pieces is None:
            return [work(self._tiles, 0)]
        return _workers.run([functools.partial(work, tiles, piece)
                             for piece, tiles in enumerate(pieces)])

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

    def _kernel_input(self, x: np.ndarray, tile: Tile) -> np.ndarray:
        """The tile's samples of ``x``, padded as the mode asks, C-contiguous, 5-d."""
        x = x[tile.first:tile.last]
        if self._explicit_padding:
            w = self.geometry.window
            x = pad(x, w.pad_low, w.pad_high, self.geometry.padding_mode)
        return np.ascontiguousarray(x).reshape(*x.shape[:2], *self._kernel_spatial)

    def _grouped(self, array: np.ndarray, tile: Tile) -> np.ndarray:
        """The tile's piece of an ``(N, channels, *out)`` array (or of the input of a 1x1
        convolution, which has the output's size) as ``(samples, groups,
        channels // groups, columns)``."""
        groups = self.geometry.groups
        samples = tile.last - tile.first
        array = array.reshape(array.shape[0], groups, -1, *self._output_spatial)
        piece = array[tile.first:tile.last]
        if tile.axis >= 0:
            index = [slice(None)] * piece.ndim
            index[3 + tile.axis] = slice(tile.start, tile.stop)
            piece = piece[tuple(index)]
        # On the plan's own C-contiguous results this is a view, as the GEMMs write
        # into it: tiles cut only the first non-singleton axis. Inputs may be copied.
        return piece.reshape(samples, groups, piece.shape[2], tile.columns)

    def _weight_matrices(self, weight: np.ndarray) -> np.ndarray:
        """``(groups, out // groups, in // groups * prod(k))``."""
        g = self.geometry
        return np.ascontiguousarray(weight).reshape(g.groups, g.out_channels // g.groups, -1)

    def _channel_major(self, array: np.ndarray, tile: Tile) -> np.ndarray:
        """The tile's piece of an ``(N, channels, *out)`` array as ``(groups,
        channels // groups, samples * columns)``; a copy unless it holds one sample."""
        return _channel_major(self._grouped(array, tile))

    def _columns(self, x: np.ndarray, tile: Tile, workspace: np.ndarray) -> np.ndarray:
        """im2col of the tile as ``(groups, rows // groups, samples * columns)``: the
        layout in which each pass is one GEMM per group over the whole tile."""
        samples = tile.last - tile.first
        g = self.geometry
        cols = workspace[:samples * g.col_rows * tile.columns]
        _kernels.im2col(self._kernel_input(x, tile), tile.window_args,
                        _by_sample(cols, samples, tile.columns))
        return cols.reshape(g.groups, -1, samples * tile.columns)

    def _workspace(self, tiles: list[Tile]) -> np.ndarray:
        """A flat buffer for the columns of the largest of ``tiles``."""
        if not self._needs_columns:
            return np.empty(0, self.dtype)
        return np.empty(self.geometry.col_rows * _largest_tile_columns(tiles), self.dtype)

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
        run = {"direct": self._direct_forward, "winograd": self._winograd_forward}.get(
            self.algorithm, self._gemm_forward)
        y = run(x, weight)
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
        run = {"direct": self._direct_backward_input,
               "winograd": self._winograd_backward_input}.get(self.algorithm,
                                                              self._gemm_backward_input)
        return run(grad_output, weight)

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
        run = {"direct": self._direct_backward_weight,
               "winograd": self._winograd_backward_weight}.get(self.backward_weight_algorithm,
                                                               self._gemm_backward_weight)
        return run(grad_output, x).reshape(self.weight_shape)

    def backward_bias(self, grad_output) -> np.ndarray:
        """Gradient of the loss with respect to ``bias``: ``grad_output`` summed over all
        but the channel axis."""
        grad_output = self._array(grad_output, "grad_output", self.output_shape)
        return grad_output.sum(axis=(0, *range(2, grad_output.ndim)))

    # -- the GEMM algorithm ------------------------------------------------------------

    def _gemm_forward(self, x, weight) -> np.ndarray:
        y = np.empty(self.output_shape, self.dtype)
        matrices = self._weight_matrices(weight)
        self._run_pieces(lambda tiles, _: self._forward_tiles(x, matrices, tiles, y))
        return y

    def _forward_tiles(self, x, matrices, tiles, y) -> None:
        workspace = self._workspace(tiles)
        # where GEMMs write straight into y, an output-sized buffer left unused still
        # cost a 1x1 layer's forward pass up to half its time in fresh pages for y
        product = (np.empty(self.geometry.out_channels * _largest_tile_columns(tiles),
                            self.dtype) if self._needs_columns else None)
        for tile in tiles:
            out = self._grouped(y, tile)  # (samples, groups, out // groups, columns)
            samples, groups, filters, columns = out.shape
            if not self._needs_columns:  # one GEMM per sample, straight into y
                np.matmul(matrices, self._grouped(x, tile), out=out)
            elif samples == 1:
                np.matmul(matrices, self._columns(x, tile, workspace), out=out[0])
            else:  # one GEMM for all the tile's samples, then back to batch-major
                tile_product = product[:groups * filters * samples * columns].reshape(
                    groups, filters, samples * columns)
                np.matmul(matrices, self._columns(x, tile, workspace), out=tile_product)
                out[...] = tile_product.reshape(groups, filters, samples, columns).transpose(
                    2, 0, 1, 3)

    def _gemm_backward_input(self, grad_output, weight) -> np.ndarray:
        transposed = self._weight_matrices(weight).transpose(0, 2, 1)
        dx = np.empty(self.input_shape, self.dtype)

        def scatter(tiles, piece):
            target = dx if piece == 0 or self.geometry.batch > 1 else np.empty_like(dx)
            self._backward_input_tiles(grad_output, transposed, tiles, target)
            return target

        for target in self._run_pieces(scatter)[1:]:
            if target is not dx:  # a single sample's slabs, scattered apart
                dx += target
        return dx

    def _backward_input_tiles(self, grad_output, transposed, tiles, dx) -> None:
        g = self.geometry
        if not self._needs_columns:  # dx has the output's spatial shape
            for tile in tiles:
                np.matmul(transposed, self._grouped(grad_output, tile),
                          out=self._grouped(dx, tile))
            return
        workspace = self._workspace(tiles)
        # Slabs of one sample add into the same image: group the tiles by sample range.
        for (first, last), same_samples in itertools.groupby(tiles, lambda t: (t.first, t.last)):
            if self._explicit_padding:
                padded = np.zeros((last - first, g.in_channels, *self._kernel_spatial),
                                  self.dtype)
            else:  # implicit zero padding: scatter straight into dx
                padded = dx[first:last].reshape(last - first, g.in_channels,
                                                *self._kernel_spatial)
                padded[...] = 0
            for tile in same_samples:
                samples = tile.last - tile.first
                dcols = workspace[:samples * g.col_rows * tile.columns]
                np.matmul(transposed, self._channel_major(grad_output, tile),
                          out=dcols.reshape(g.groups, -1, samples * tile.columns))
                _kernels.col2im(_by_sample(dcols, samples, tile.columns), tile.window_args,
                                padded)
            if self._explicit_padding:
                padded = padded.reshape(last - first, g.in_channels, *self._kernel_input_size)
                dx[first:last] = pad_adjoint(padded, g.window.pad_low, g.window.pad_high,
                                             g.padding_mode)

    def _gemm_backward_weight(self, grad_output, x) -> np.ndarray:
        sums = self._run_pieces(
            lambda tiles, _: self._backward_weight_tiles(grad_output, x, tiles))
        dw = sums[0]
        for piece_sum in sums[1:]:  # in piece order: the same sum on every call
            dw += piece_sum
        if self._weight_gradient_transposed:
            return np.ascontiguousarray(dw.transpose(0, 2, 1))
        return dw

    def _backward_weight_tiles(self, grad_output, x, tiles) -> np.ndarray:
        """The tiles' weight gradient ``(groups, out // groups, rows // groups)``, or its
        transpose (see :meth:`_weight_products`)."""
        dw = partial = None
        # The first product is dw: on layers with large weights, zeroing dw and adding a
        # partial product into it cost a good part of a GEMM.
        for left, right in self._weight_products(grad_output, x, tiles):
            if dw is None:
                dw = np.matmul(left, right)
                continue
            if partial is None:
                partial = np.empty_like(dw)
            np.matmul(left, right, out=partial)
            dw += partial
        if dw is None:  # no samples
            g = self.geometry
            shape = (g.out_channels // g.groups, g.col_rows // g.groups)
            dw = np.zeros((g.groups, *(shape[::-1] if self._weight_gradient_transposed
                                       else shape)), self.dtype)
        return dw

    def _weight_products(self, grad_output, x, tiles):
        """The pairs of matrices whose products sum to the tiles' weight gradient, each
        ``(groups, out // groups, n) @ (groups, n, rows // groups)``, or, where
        :attr:`_weight_gradient_transposed`, the transposed products
        ``(groups, rows // groups, n) @ (groups, n, out // groups)``. A pair is only
        valid until the next is taken (their columns share the workspace)."""
        workspace = self._workspace(tiles)
        for tile in tiles:
            if not self._needs_columns:
                # One GEMM per sample on the arrays as they lie: reordering both
                # channel-major first took as long as the GEMMs.
                pairs = zip(self._grouped(grad_output, tile), self._grouped(x, tile))
            else:
                pairs = [(self._channel_major(grad_output, tile),
                          self._columns(x, tile, workspace))]
            for grads, inputs in pairs:
                if self._weight_gradient_transposed:
                    yield inputs, grads.transpose(0, 2, 1)
                else:
                    yield grads, inputs.transpose(0, 2, 1)

    # -- Winograd's F(2x2, 3x3): chunks of samples ------------------------------------

    def _winograd_forward(self, x, weight) -> np.ndarray:
        return self._winograd(x, weight, self.geometry.window.pad_low, self.output_shape)

    def _winograd_backward_input(self, grad_output, weight) -> np.ndarray:
        # The input gradient of a unit-stride convolution is the convolution of the
        # output gradient, padded by 2 - pad on each side, with the filters turned by
        # 180 degrees and input and output channels swapped.
        turned = weight.transpose(1, 0, 2, 3)[:, :, ::-1, ::-1]
        return self._winograd(grad_output, turned,
                              tuple(2 - p for p in self.geometry.window.pad_low),
                              self.input_shape)

    def _winograd(self, x, weight, pad_low, out_shape) -> np.ndarray:
        """The 3x3 convolution of ``x`` with ``weight`` ``(K, C, 3, 3)``, zero-padded by
        ``pad_low`` before and as far as ``out_shape`` ``(N, K, H, W)`` needs after.
        Split among worker threads like the GEMM passes, by runs of samples."""
        x = np.ascontiguousarray(x)
        out = np.empty(out_shape, self.dtype)
        filters = np.empty((16, out_shape[1], x.shape[1]), self.dtype)
        _kernels.winograd_filters(np.ascontiguousarray(weight), filters)

        def convolve(tiles, _):
            self._winograd_chunks(x, filters, pad_low, tiles[0].first, tiles[-1].last, out)

        self._run_sample_runs(convolve)
        return out

    def _run_sample_runs(self, work) -> list:
        """``work(tiles, piece)`` over runs of samples, as :meth:`_run_pieces` splits
        them among worker threads; a single sample in one go, as Winograd's tiles of
        slabs of it would overlap. One result per piece, none without samples."""
        if self.geometry.batch > 1:
            return self._run_pieces(work)
        return [work(self._tiles, 0)] if self.geometry.batch == 1 else []

    def _winograd_chunks(self, x, filters, pad_low, first, last, out) -> None:
        """Samples ``first`` to ``last`` of ``out``: transformed tiles, 16 GEMMs,
        outputs."""
        tiles = _winograd_tiles(out.shape[2:])
        for start, stop, v, m in self._winograd_buffers(filters.shape[2], filters.shape[1],
                                                        tiles, first, last):
            _kernels.winograd_input(x[start:stop], pad_low, tiles, v)
            np.matmul(filters, v, out=m)
            _kernels.winograd_output(m, tiles, out[start:stop])

    def _winograd_buffers(self, channels, out_channels, tiles, first, last):
        """Chunks of :attr:`_winograd_samples` of samples ``first`` to ``last``: each
        chunk's ``(start, stop)`` and its buffers for the transformed input tiles
        ``(16, channels, columns)`` and for the other side ``(16, out_channels,
        columns)``, ``columns`` tiles in all, valid until the next chunk."""
        per_sample = tiles[0] * tiles[1]
        chunk = min(self._winograd_samples, last - first) * per_sample
        inputs = np.empty(16 * channels * chunk, self.dtype)
        others = np.empty(16 * out_channels * chunk, self.dtype)
        for start in range(first, last, self._winograd_samples):
            stop = min(last, start + self._winograd_samples)
            columns = (stop - start) * per_sample
            yield (start, stop, inputs[:16 * channels * columns].reshape(16, channels, columns),
                   others[:16 * out_channels * columns].reshape(16, out_channels, columns))

    def _winograd_backward_weight(self, grad_output, x) -> np.ndarray:
        # F(3x3, 2x2): per worker thread, the 16 (out_channels, channels) sums of the
        # tiles' products; their sum, in piece order, then transformed once.
        g = self.geometry
        x, grad_output = np.ascontiguousarray(x), np.ascontiguousarray(grad_output)
        if g.batch == 0:
            return np.zeros(self.weight_shape, self.dtype)
        pad_low = g.window.pad_low
        tiles = _winograd_tiles(g.window.output_size)

        def tile_sums(piece_tiles, _):
            total = partial = None
            for start, stop, v, u in self._winograd_buffers(
                    g.in_channels, g.out_channels, tiles, piece_tiles[0].first,
                    piece_tiles[-1].last):
                _kernels.winograd_input(x[start:stop], pad_low, tiles, v)
                _kernels.winograd_gradient(grad_output[start:stop], tiles, u)
                if total is None:
                    total = np.matmul(u, v.transpose(0, 2, 1))
                    continue
                if partial is None:  # one position at a time: 1/16 of the memory
                    partial = np.empty_like(total[0])
                for position in range(16):
                    np.matmul(u[position], v[position].T, out=partial)
                    total[position] += partial
            return total

        sums = self._run_sample_runs(tile_sums)
        for piece_sum in sums[1:]:
            sums[0] += piece_sum
        dw = np.empty(self.weight_shape, self.dtype)
        _kernels.winograd_weight_gradient(sums[0], dw)
        return dw

    # -- the direct algorithm: one tile, the whole batch -----------------------------------

    def _direct_forward(self, x, weight) -> np.ndarray:
        y = np.empty(self.output_shape, self.dtype)
        for tile in self._tiles:
            _kernels.direct_forward(self._kernel_input(x, tile), self._flat(weight),
                                    tile.window_args, self._five_d_view(y))
        return y

    def _direct_backward_input(self, grad_output, weight) -> np.ndarray:
        g = self.geometry
        dx = np.empty((g.batch, g.in_channels, *self._kernel_input_size), self.dtype)
        for tile in self._tiles:
            _kernels.direct_backward_input(
                self._five_d_view(np.ascontiguousarray(grad_output)), self._flat(weight),
                tile.window_args, dx.reshape(*dx.shape[:2], *self._kernel_spatial))
        if self._explicit_padding:
            dx = pad_adjoint(dx, g.window.pad_low, g.window.pad_high, g.padding_mode)
        return dx

    def _direct_backward_weight(self, grad_output, x) -> np.ndarray:
        g = self.geometry
        dw = np.zeros((g.out_channels, g.col_rows // g.groups), self.dtype)
        for tile in self._tiles:
            _kernels.direct_backward_weight(
                self._five_d_view(np.ascontiguousarray(grad_output)),
                self._kernel_input(x, tile), tile.window_args, dw)
        return dw

    def _flat(self, weight: np.ndarray) -> np.ndarray:
        """``(out_channels, in_channels // groups * prod(kernel))``, as the direct kernels
        take a weight."""
        return np.ascontiguousarray(weight).reshape(self.geometry.out_channels, -1)

    def _five_d_view(self, output: np.ndarray) -> np.ndarray:
        """A C-contiguous ``(N, K, *out)`` array as ``(N, K, od, oh, ow)``."""
        return output.reshape(*output.shape[:2], *self._output_spatial)


ALGORITHMS = ("auto", "gemm", "direct", "winograd")
#: Most output channels per group for which float32 GEMM plans compute the weight
#: gradient transposed (see ConvPlan._setup).
WEIGHT_GRADIENT_TRANSPOSED_MAX_OUT = 128
#: Most input and most output channels per group for which "auto" picks the direct
#: kernels (depthwise layers, ResNeXt's 4 x 4 groups): there each group's GEMM is too
#: thin for BLAS. With more output channels, even from a single input channel, im2col
#: and the GEMMs are faster.
DIRECT_MAX_GROUP_CHANNELS = 4
#: With unit strides, "auto" also picks the direct kernels, on stacked planes, for
#: groups of at most this many input-output channel pairs with a 1-d window (see
#: STACKED_2D_MAX_CHANNEL_PAIRS for 2-d ones). Training step (all three passes, on the
#: stacked planes' earlier loops), 2 threads, direct against the GEMM path, one
#: process interleaved, float32 /
#: float64: 32 samples of 32 x 32, 3x3: 3 to 8 channels 0.54, 6 to 6 0.42, 8 to 8 0.60 /
#: 0.58, 3 to 16 0.60 / 0.54 (also with reflect padding: 0.65 / 0.65); LeNet-5's conv1
#: (1 to 6, 5x5 on 28 x 28) 0.56 / 0.90; 1-d, length 4000, 4 to 16 0.54 / 0.60; 8 to 8,
#: 7x7 on 128 x 128, 0.51 / 0.70. From 96 pairs it varies: 6 to 16 0.75 / 0.64, 8 to 16
#: dilated 0.71 / 1.24, 1-d 8 to 16 1.87 / 1.20; 16 to 16 took 1.14 times as long, 8 to
#: 64 1.39 / 1.23. 1x1 windows, which need no im2col, are left to the GEMMs (3.2 to 3.8
#: times as long on stacked planes).
STACKED_MAX_CHANNEL_PAIRS = 64
#: With a 2-d window, "auto" takes the stacked planes up to this many pairs. Forward
#: pass and input gradient, 2 threads, one process interleaved, against the path
#: "auto" took otherwise: float32, 16 to 16
#: channels, 3x3, on 32 x 32 (CIFAR ResNet-20's first layer) 0.84 of the time with the
#: stacked planes' earlier loops, and the sums held in registers (see
#: fastconv._kernels.stacked) took 0.48 to 0.84 of those loops' time on 4 to 8 and 16 to
#: 16 channels; float64 CIFAR ResNet-20's first layer 0.53 of Winograd's time, LeNet-5's
#: conv2 (6 to 16, 5x5 on 14 x 14) 0.67 and 0.73 of im2col's. With 4096 pairs and more
#: they took 0.74 to 2.65 times as long (ResNet-50's 3x3/64 and 3x3/256, VGG-16's
#: conv1_2 and conv3_2, convnet-benchmarks L2 and L3, DeepLab's dilated layer): the
#: GEMMs run wide there, the stacked planes compute the padding's products too, and
#: large planes leave the cache. The weight gradient, its sums of 4 x 4 products held in
#: registers, against the faster of im2col and Winograd: float32 0.57 to 1.12 of the
#: time (CIFAR ResNet-20's first layer 0.66, LeNet-5's conv2 0.85; 8 samples of 16 to
#: 16 channels on 56 x 56 0.93, 16 samples of 3 to 64 and 8 to 32 on 32 x 32 1.07 and
#: 1.12), float64 0.53 to 0.96.
STACKED_2D_MAX_CHANNEL_PAIRS = 256
#: ... unless they would compute more positions than this per output (see
#: fastconv._kernels.stacked_positions_per_output): LeNet-5's conv2, unpadded (1.96 per
#: output), forward pass and input gradient 0.60 and 0.64 of im2col's time in float32,
#: 0.67 and 0.73 in float64.
STACKED_MAX_POSITIONS_PER_OUTPUT = 2.0
#: Fewest input and output channels, and output rows and columns by dtype, for which
#: "auto" picks Winograd. Measured on the suite's 3x3 layers, 2 threads, forward pass
#: and input gradient: 0.58 to 0.92 of im2col's time on 32 x 32 and 56 x 56 outputs
#: (CIFAR ResNet-20, VGG-16's conv3_2); on 14 x 14 outputs with 256 and 512 channels,
#: whose 16 GEMMs are narrow, 0.94 to 1.16 in float32 but 0.80 to 0.93 in float64;
#: 1.23 to 1.67 times on 7 x 7.
WINOGRAD_MIN_CHANNELS = 16
WINOGRAD_MIN_OUTPUT_SIDE = {"float32": 28, "float64": 14}
#: Fewest input and output channels, by dtype, and output rows and columns for which
#: "auto" computes the weight gradient of a 3x3 layer by Winograd. Measured on the
#: suite's 3x3 layers against im2col's weight gradient, 2 threads: in float64 0.62 to
#: 1.02 of its time on outputs of 11 x 11 to 56 x 56 with 16 to 512 channels; in
#: float32, where im2col's thin GEMMs run transposed (see ConvPlan._setup), 0.70 to 0.93
#: with 256 and 512 channels but 1.04 to 1.14 with 16 and 64; both took longer on
#: 7 x 7 outputs (1.09 to 1.22 times, 512 channels).
WINOGRAD_WEIGHT_MIN_CHANNELS = {"float32": 128, "float64": 16}
WINOGRAD_WEIGHT_MIN_OUTPUT_SIDE = 10


def _winograd_applies(geometry: ConvGeometry) -> bool:
    """Whether Winograd's transforms compute the passes: a 2-d 3x3 window with unit
    stride and dilation, one group, and zero padding of at most 2 per side (the input
    gradient pads by 2 minus it)."""
    w = geometry.window
    return (w.kernel_size == (3, 3) and w.stride == (1, 1) and w.dilation == (1, 1)
            and geometry.groups == 1 and not geometry.needs_explicit_padding
            and max(w.pad_low + w.pad_high) <= 2)


def _winograd_pays(geometry: ConvGeometry, min_channels: int, min_output_side: int) -> bool:
    """Whether Winograd applies, with at least ``min_channels`` input and output
    channels and outputs at least ``min_output_side`` wide and high."""
    g = geometry
    return (_winograd_applies(g) and min(g.in_channels, g.out_channels) >= min_channels
            and min(g.window.output_size) >= min_output_side)


def _winograd_tiles(size) -> tuple[int, int]:
    """Tiles along each side of a 2-d output of ``size``."""
    return tuple(-(-n // 2) for n in size)


def _choose_algorithm(requested, geometry: ConvGeometry, dtype: np.dtype,
                      kernel_window: Window) -> str:
    """The plan's algorithm: ``direct`` for narrow groups, ``winograd`` for 3x3 layers
    with enough channels, unless asked otherwise. ``kernel_window`` is the window the
    kernels see (unpadded where the padding is explicit)."""
    if requested not in ALGORITHMS:
        raise ValueError(f"algorithm must be one of {ALGORITHMS}, got {requested!r}")
    g = geometry
    if requested == "winograd" and not _winograd_applies(g):
        w = g.window
        raise ValueError(
            "algorithm='winograd' needs a 2-d 3x3 convolution with unit stride and "
            "dilation, one group and zero padding of at most 2 per side; got kernel "
            f"{w.kernel_size}, stride {w.stride}, dilation {w.dilation}, groups {g.groups}, "
            f"padding {tuple(zip(w.pad_low, w.pad_high))}, padding_mode {g.padding_mode!r}")
    if requested != "auto":
        return requested
    if _direct_pays(g, kernel_window):
        return "direct"
    if _winograd_pays(g, WINOGRAD_MIN_CHANNELS, WINOGRAD_MIN_OUTPUT_SIDE[dtype.name]):
        return "winograd"
    return "gemm"


def _direct_pays(geometry: ConvGeometry, kernel_window: Window) -> bool:
    """Whether "auto" takes the direct kernels: for groups of at most
    :data:`DIRECT_MAX_GROUP_CHANNELS` channels, or on stacked planes for groups of at
    most :data:`STACKED_MAX_CHANNEL_PAIRS` input-output channel pairs
    (:data:`STACKED_2D_MAX_CHANNEL_PAIRS` with a 2-d window)."""
    g = geometry
    max_pairs = STACKED_2D_MAX_CHANNEL_PAIRS if g.rank == 2 else STACKED_MAX_CHANNEL_PAIRS
    if max(g.in_channels, g.out_channels) // g.groups <= DIRECT_MAX_GROUP_CHANNELS:
        return True
    window_args = kernel_window.kernel_args()
    return (kernel_window.kernel_volume > 1
            and (g.in_channels // g.groups) * (g.out_channels // g.groups) <= max_pairs
            and _kernels.stacked_planes(three_d(kernel_window.input_size), window_args)
            and _kernels.stacked_positions_per_output(window_args)
            <= STACKED_MAX_POSITIONS_PER_OUTPUT)


def _choose_weight_algorithm(requested, geometry: ConvGeometry, dtype: np.dtype,
                             chosen: str) -> str:
    """The weight gradient's algorithm: ``chosen`` unless "auto" was requested and chose
    im2col or Winograd; then Winograd or im2col by :data:`WINOGRAD_WEIGHT_MIN_CHANNELS`
    and :data:`WINOGRAD_WEIGHT_MIN_OUTPUT_SIDE`."""
    if requested != "auto" or chosen == "direct":
        return chosen
    if _winograd_pays(geometry, WINOGRAD_WEIGHT_MIN_CHANNELS[dtype.name],
                      WINOGRAD_WEIGHT_MIN_OUTPUT_SIDE):
        return "winograd"
    return "gemm"


def _largest_tile_columns(tiles: list[Tile]) -> int:
    """Output positions of the largest of ``tiles``, all its samples together."""
    return max(((t.last - t.first) * t.columns for t in tiles), default=0)


def _channel_major(piece: np.ndarray) -> np.ndarray:
    """``(samples, groups, channels, columns)`` as ``(groups, channels, samples * columns)``;
    a copy unless there is one sample."""
    samples, groups, channels, columns = piece.shape
    if samples == 1:
        return piece[0]
    return np.ascontiguousarray(piece.transpose(1, 2, 0, 3)).reshape(
        groups, channels, samples * columns)


def _by_sample(cols: np.ndarray, samples: int, columns: int) -> np.ndarray:
    """A flat column buffer as the ``(rows, samples, columns)`` array the kernels take."""
    return cols.reshape(-1, samples, columns)

