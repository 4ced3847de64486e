"""Shape arithmetic and argument validation for sliding-window operators.

Everything here works on ints and tuples, never on arrays, so the rules can be read
and tested on their own. The Numba kernels index memory without bounds checks:
a geometry that leaves this module is one they can run safely.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence
from dataclasses import dataclass

PADDING_MODES = ("zeros", "reflect", "replicate", "circular")
KERNEL_RANK = 3  # kernels see every problem as 3-d, with leading singleton dimensions


def _index(value, name: str, given):
    """``operator.index`` with an error that names the argument; bools are refused."""
    if isinstance(value, bool):
        raise TypeError(f"{name} must be made of ints, got {given!r}")
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be made of ints, got {given!r}") from None


def as_int(value, name: str) -> int:
    """Return ``value`` as a Python int, or raise a ``TypeError`` naming ``name``."""
    return _index(value, name, value)


def as_tuple(value, rank: int, name: str) -> tuple[int, ...]:
    """Expand an int, or check a sequence, into a tuple of ``rank`` ints."""
    if isinstance(value, Sequence) and not isinstance(value, str):
        if len(value) != rank:
            raise ValueError(
                f"{name} must be an int or a sequence of {rank} ints for a {rank}-d operation, "
                f"got {tuple(value)!r} of length {len(value)}"
            )
        return tuple(_index(v, name, value) for v in value)
    return (_index(value, name, value),) * rank


def positive_tuple(value, rank: int, name: str) -> tuple[int, ...]:
    values = as_tuple(value, rank, name)
    if min(values) <= 0:
        raise ValueError(f"{name} must be positive, got {value!r}")
    return values


def nonnegative_tuple(value, rank: int, name: str) -> tuple[int, ...]:
    values = as_tuple(value, rank, name)
    if min(values) < 0:
        raise ValueError(f"{name} must be non-negative, got {value!r}")
    return values


def resolve_padding(padding, rank: int, kernel_size, stride, dilation):
    """Return ``(low, high)`` padding per dimension for torch's ``padding`` argument.

    ``"same"`` pads ``dilation * (kernel - 1)`` in total and puts the odd element on the
    high side, exactly as ``torch.nn.functional.conv2d(padding="same")`` does.
    """
    if isinstance(padding, str):
        if padding == "valid":
            zeros = (0,) * rank
            return zeros, zeros
        if padding == "same":
            if any(s != 1 for s in stride):
                raise ValueError(
                    f"padding='same' needs stride 1 in every dimension, got stride={stride}"
                )
            total = [d * (k - 1) for k, d in zip(kernel_size, dilation)]
            low = tuple(t // 2 for t in total)
            return low, tuple(t - lo for t, lo in zip(total, low))
        raise ValueError(
            f"padding must be an int, a sequence of {rank} ints, 'valid' or 'same', "
            f"got {padding!r}"
        )
    values = nonnegative_tuple(padding, rank, "padding")
    return values, values


@dataclass(frozen=True)
class Window:
    """A sliding window over ``rank`` spatial dimensions.

    Output position ``o`` of dimension ``i`` reads input positions
    ``o * stride[i] - pad_low[i] + j * dilation[i]`` for kernel offsets ``j``.
    """

    input_size: tuple[int, ...]
    kernel_size: tuple[int, ...]
    stride: tuple[int, ...]
    dilation: tuple[int, ...]
    pad_low: tuple[int, ...]
    pad_high: tuple[int, ...]
    output_size: tuple[int, ...]

    @property
    def rank(self) -> int:
        return len(self.input_size)

    @property
    def kernel_volume(self) -> int:
        return math.prod(self.kernel_size)

    @property
    def output_volume(self) -> int:
        return math.prod(self.output_size)

    @property
    def padded_size(self) -> tuple[int, ...]:
        return tuple(n + lo + hi for n, lo, hi in zip(self.input_size, self.pad_low, self.pad_high))

    @property
    def is_padded(self) -> bool:
        return any(self.pad_low) or any(self.pad_high)

    def without_padding(self) -> Window:
        """The same window over the explicitly padded input."""
        zeros = (0,) * self.rank
        return Window(self.padded_size, self.kernel_size, self.stride, self.dilation,
                      zeros, zeros, self.output_size)

    def kernel_args(self) -> tuple[tuple[int, int, int], ...]:
        """``(kernel, stride, dilation, pad_low, output)`` as 3-tuples for the kernels."""
        lead = (0,) * (KERNEL_RANK - self.rank)
        return (three_d(self.kernel_size), three_d(self.stride), three_d(self.dilation),
                (*lead, *self.pad_low), three_d(self.output_size))


def three_d(size) -> tuple[int, ...]:
    """A spatial size with singleton dimensions prepended up to three, as kernels see it."""
    return (1,) * (KERNEL_RANK - len(size)) + tuple(size)


def five_d(shape) -> tuple[int, ...]:
    """``(N, C, *spatial)`` with singleton spatial dimensions prepended up to three."""
    return (*shape[:2], *three_d(shape[2:]))


def output_length(size: int, kernel: int, stride: int, dilation: int, pad_low: int,
                  pad_high: int) -> int:
    """Output length of one dimension, as torch computes it."""
    return (size + pad_low + pad_high - dilation * (kernel - 1) - 1) // stride + 1


def make_window(input_size, kernel_size, stride, dilation, pad_low, pad_high,
                input_name: str = "x") -> Window:
    """Build a window from validated tuples, checking that it fits the padded input."""
    output_size = []
    for dim, (n, k, s, d, lo, hi) in enumerate(
        zip(input_size, kernel_size, stride, dilation, pad_low, pad_high)
    ):
        if n + lo + hi < d * (k - 1) + 1:
            raise ValueError(
                f"{input_name} is too small: spatial dimension {dim} has size {n} "
                f"({n + lo + hi} after padding), smaller than the dilated kernel size "
                f"{d * (k - 1) + 1} (kernel {k}, dilation {d})"
            )
        output_size.append(output_length(n, k, s, d, lo, hi))
    return Window(tuple(input_size), tuple(kernel_size), tuple(stride), tuple(dilation),
                  tuple(pad_low), tuple(pad_high), tuple(output_size))


@dataclass(frozen=True)
class ConvGeometry:
    """Everything a convolution's three passes need to know about shapes."""

    batch: int
    in_channels: int
    out_channels: int
    groups: int
    window: Window
    padding_mode: str = "zeros"

    @property
    def rank(self) -> int:
        return self.window.rank

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (self.batch, self.in_channels, *self.window.input_size)

    @property
    def weight_shape(self) -> tuple[int, ...]:
        return (self.out_channels, self.in_channels // self.groups, *self.window.kernel_size)

    @property
    def output_shape(self) -> tuple[int, ...]:
        return (self.batch, self.out_channels, *self.window.output_size)

    @property
    def col_rows(self) -> int:
        """Rows of the im2col matrix: one per (input channel, kernel offset)."""
        return self.in_channels * self.window.kernel_volume

    @property
    def needs_explicit_padding(self) -> bool:
        return self.padding_mode != "zeros" and self.window.is_padded


def _shape(value, name: str) -> tuple[int, ...]:
    if not isinstance(value, Sequence) or isinstance(value, str):
        raise TypeError(f"{name} must be a sequence of ints, got {value!r}")
    shape = tuple(_index(v, name, value) for v in value)
    if min(shape, default=0) < 0:
        raise ValueError(f"{name} must not have negative sizes, got {shape}")
    return shape


def weight_rank(weight_shape, name: str = "weight") -> int:
    """Spatial rank of a convolution weight ``(out, in/groups, *kernel)``."""
    shape = _shape(weight_shape, f"{name} shape")
    if not 3 <= len(shape) <= 5:
        raise ValueError(
            f"{name} must have 3, 4 or 5 dimensions (out_channels, in_channels/groups, "
            f"*kernel_size) for a 1-, 2- or 3-d convolution, got shape {shape}"
        )
    if min(shape) == 0:
        raise ValueError(f"{name} must not have empty dimensions, got shape {shape}")
    return len(shape) - 2


def check_input_shape(input_shape, rank: int, name: str) -> tuple[int, ...]:
    """Check a batched ``(N, C, *spatial)`` shape; the batch may be empty."""
    shape = _shape(input_shape, f"{name} shape")
    if len(shape) != rank + 2:
        raise ValueError(
            f"{name} must have {rank + 2} dimensions (N, C, *spatial) for a {rank}-d "
            f"operation, got shape {shape}"
        )
    if min(shape[1:]) == 0:
        raise ValueError(
            f"{name} must have non-empty channel and spatial dimensions, got shape {shape}"
        )
    return shape


def _dim(name: str, index: int) -> str:
    """How to write dimension ``index`` of a shape argument or an array argument."""
    return f"{name}[{index}]" if name.endswith("_shape") else f"{name}.shape[{index}]"


def _check_groups(groups, channels: int, channels_name: str) -> int:
    groups = as_int(groups, "groups")
    if groups <= 0:
        raise ValueError(f"groups must be positive, got {groups}")
    if channels % groups:
        raise ValueError(f"groups={groups} must divide {channels_name}={channels}")
    return groups


def _check_padding_mode(padding_mode, pad_low, pad_high, input_size, input_name) -> str:
    if padding_mode not in PADDING_MODES:
        raise ValueError(f"padding_mode must be one of {PADDING_MODES}, got {padding_mode!r}")
    limits = {"reflect": ("smaller than", lambda p, n: p < n),
              "circular": ("at most", lambda p, n: p <= n)}
    if padding_mode in limits:
        relation, fits = limits[padding_mode]
        for dim, (lo, hi, n) in enumerate(zip(pad_low, pad_high, input_size)):
            if not (fits(lo, n) and fits(hi, n)):
                raise ValueError(
                    f"padding_mode={padding_mode!r} needs padding {relation} the input size: "
                    f"{input_name} spatial dimension {dim} has size {n}, padding is ({lo}, {hi})"
                )
    return padding_mode


def conv_geometry(input_shape, weight_shape, *, stride=1, padding=0, dilation=1, groups=1,
                  padding_mode="zeros", input_name="x", weight_name="weight") -> ConvGeometry:
    """Validate the arguments of a convolution and derive its geometry."""
    rank = weight_rank(weight_shape, weight_name)
    weight_shape = tuple(weight_shape)
    input_shape = check_input_shape(input_shape, rank, input_name)
    out_channels, group_channels, *kernel_size = weight_shape
    groups = _check_groups(groups, out_channels, f"out_channels ({_dim(weight_name, 0)})")
    if input_shape[1] != groups * group_channels:
        raise ValueError(
            f"{input_name} has {input_shape[1]} channels but groups * {_dim(weight_name, 1)} = "
            f"{groups} * {group_channels} = {groups * group_channels}"
        )
    stride = positive_tuple(stride, rank, "stride")
    dilation = positive_tuple(dilation, rank, "dilation")
    pad_low, pad_high = resolve_padding(padding, rank, kernel_size, stride, dilation)
    input_size = input_shape[2:]
    padding_mode = _check_padding_mode(padding_mode, pad_low, pad_high, input_size, input_name)
    window = make_window(input_size, kernel_size, stride, dilation, pad_low, pad_high, input_name)
    return ConvGeometry(input_shape[0], input_shape[1], out_channels, groups, window,
                        padding_mode)


def transpose_geometry(input_shape, weight_shape, *, stride=1, padding=0, output_padding=0,
                       groups=1, dilation=1) -> ConvGeometry:
    """Geometry of the convolution whose input gradient a transposed convolution computes.

    The transposed convolution's input plays the role of that convolution's output,
    and its output the role of that convolution's input.
    """
    rank = weight_rank(weight_shape)
    in_channels, group_out_channels, *kernel_size = tuple(weight_shape)
    input_shape = check_input_shape(input_shape, rank, "x")
    groups = _check_groups(groups, in_channels, "in_channels (weight.shape[0])")
    if input_shape[1] != in_channels:
        raise ValueError(
            f"x has {input_shape[1]} channels but weight.shape[0] = {in_channels}; "
            "a transposed convolution's weight is (in_channels, out_channels/groups, *kernel)"
        )
    stride = positive_tuple(stride, rank, "stride")
    dilation = positive_tuple(dilation, rank, "dilation")
    if isinstance(padding, str):
        raise ValueError(
            f"padding of a transposed convolution must be an int or a sequence of {rank} ints, "
            f"got {padding!r}"
        )
    padding = nonnegative_tuple(padding, rank, "padding")
    output_padding = nonnegative_tuple(output_padding, rank, "output_padding")
    for op, s, d in zip(output_padding, stride, dilation):
        if op >= s and op >= d:
            raise ValueError(
                f"output_padding must be smaller than either stride or dilation in every "
                f"dimension, got output_padding={output_padding}, stride={stride}, "
                f"dilation={dilation}"
            )
    output_size = tuple(
        (n - 1) * s - 2 * p + d * (k - 1) + op + 1
        for n, s, p, d, k, op in zip(input_shape[2:], stride, padding, dilation, kernel_size,
                                     output_padding)
    )
    if min(output_size) <= 0:
        raise ValueError(
            f"x of shape {input_shape} gives a non-positive output size {output_size} with "
            f"kernel {tuple(kernel_size)}, stride {stride}, padding {padding}, "
            f"dilation {dilation}"
        )
    window = Window(output_size, tuple(kernel_size), stride, dilation, padding, padding,
                    input_shape[2:])
    return ConvGeometry(input_shape[0], groups * group_out_channels, in_channels, groups, window)


def unfold_window(input_size, kernel_size, *, stride=1, padding=0, dilation=1,
                  input_name="x") -> Window:
    """Validate the arguments of ``im2col`` / ``col2im`` and derive the window."""
    rank = len(input_size)
    kernel_size = positive_tuple(kernel_size, rank, "kernel_size")
    stride = positive_tuple(stride, rank, "stride")
    dilation = positive_tuple(dilation, rank, "dilation")
    if isinstance(padding, str):
        raise ValueError(f"padding must be an int or a sequence of {rank} ints, got {padding!r}")
    padding = nonnegative_tuple(padding, rank, "padding")
    return make_window(input_size, kernel_size, stride, dilation, padding, padding, input_name)


def fold_rank(output_size, kernel_size) -> int:
    """Spatial rank of ``col2im``: from whichever size is a sequence; 2 when both are ints."""
    for value in (output_size, kernel_size):
        if isinstance(value, Sequence) and not isinstance(value, str):
            if not 1 <= len(value) <= KERNEL_RANK:
                raise ValueError(f"col2im supports 1 to 3 spatial dimensions, got {value!r}")
            return len(value)
    return 2


def pool_window(input_size, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
                input_name="x") -> Window:
    """Validate the arguments of a pooling operator and derive its window, as torch does.

    ``stride=None`` (or an empty sequence) means ``kernel_size``. Padding may be at most
    half the kernel size. With ``ceil_mode`` the output length rounds up, except that
    the last window must start inside the input or its low padding; ``pad_high`` is then
    what that window reads past the input.
    """
    rank = len(input_size)
    kernel_size = positive_tuple(kernel_size, rank, "kernel_size")
    if stride is None or (isinstance(stride, Sequence) and len(stride) == 0):
        stride = kernel_size
    else:
        stride = positive_tuple(stride, rank, "stride")
    dilation = positive_tuple(dilation, rank, "dilation")
    padding = nonnegative_tuple(padding, rank, "padding")
    if not isinstance(ceil_mode, bool):
        raise TypeError(f"ceil_mode must be a bool, got {ceil_mode!r}")
    for k, p in zip(kernel_size, padding):
        if p > k // 2:
            raise ValueError(
                f"padding must be at most half of kernel_size, got padding={padding}, "
                f"kernel_size={kernel_size}"
            )
    output_size, pad_high = [], []
    for dim, (n, k, s, d, p) in enumerate(zip(input_size, kernel_size, stride, dilation,
                                              padding)):
        span = d * (k - 1) + 1
        length = (n + 2 * p - span + (s - 1 if ceil_mode else 0)) // s + 1
        if ceil_mode and (length - 1) * s >= n + p:
            length -= 1
        if length < 1:
            raise ValueError(
                f"{input_name} is too small: spatial dimension {dim} has size {n} "
                f"({n + 2 * p} after padding), smaller than the dilated kernel size {span} "
                f"(kernel {k}, dilation {d})"
            )
        for start in range(-p, 0, s):  # only windows starting in the padding can miss x
            if not any(0 <= start + j * d < n for j in range(k)):
                raise ValueError(
                    f"every window must read an element of {input_name}, but with "
                    f"padding={padding} and dilation={dilation} the window at {start} "
                    f"of spatial dimension {dim} (size {n}) reads only padding"
                )
        output_size.append(length)
        pad_high.append(max(0, (length - 1) * s - p + span - n))
    return Window(tuple(input_size), kernel_size, stride, dilation, padding, tuple(pad_high),
                  tuple(output_size))


def pool_divisors(window: Window, count_include_pad: bool) -> tuple[tuple[int, ...], ...]:
    """Per dimension and output position, the count an average divides by: the window's
    extent clipped to the padded input, or to the input alone without
    ``count_include_pad``. The divisor of a window is the product over dimensions."""
    divisors = []
    for n, k, s, p, length in zip(window.input_size, window.kernel_size, window.stride,
                                  window.pad_low, window.output_size):
        counts = []
        for o in range(length):
            start = o * s - p
            stop = min(start + k, n + p)
            if not count_include_pad:
                start, stop = max(start, 0), min(stop, n)
            counts.append(stop - start)
        divisors.append(tuple(counts))
    return tuple(divisors)


def pool_input_shape(shape, rank: int, name: str) -> tuple[int, ...]:
    """Check a pooling input ``(N, C, *spatial)`` or unbatched ``(C, *spatial)``."""
    shape = _shape(shape, f"{name} shape")
    if len(shape) not in (rank + 1, rank + 2):
        raise ValueError(
            f"{name} must have {rank + 1} or {rank + 2} dimensions ((C, *spatial) or "
            f"(N, C, *spatial)) for a {rank}-d pooling, got shape {shape}"
        )
    if min(shape[-rank - 1:]) == 0:
        raise ValueError(
            f"{name} must have non-empty channel and spatial dimensions, got shape {shape}"
        )
    return shape


@dataclass(frozen=True)
class Tile:
    """A piece of a convolution's output that fits in the workspace.

    Either whole outputs of samples ``[first, last)``, or, when one sample's columns
    exceed the budget, a slab ``[start, stop)`` of one output axis of a single sample.
    ``window_args`` are the kernel arguments for that piece: a slab is the same window
    with fewer output positions and its low padding moved by ``start * stride``.
    """

    first: int
    last: int
    axis: int  # 0-2 in the kernels' 3-d view; -1 for whole outputs
    start: int
    stop: int
    window_args: tuple

    @property
    def columns(self) -> int:
        """Output positions per sample in this tile."""
        _, _, _, _, output_size = self.window_args
        return math.prod(output_size)


def plan_tiles(samples: range, window: Window, bytes_per_column: int, bytes_per_sample: int,
               budget: int) -> list[Tile]:
    """Cut ``window``'s output for ``samples`` (a unit-step range) into tiles that need
    at most ``budget`` bytes of workspace (or one output line), where each output
    position of a tile takes ``bytes_per_column`` and each sample ``bytes_per_sample``
    more."""
    args = window.kernel_args()
    per_sample = bytes_per_column * window.output_volume + bytes_per_sample
    if per_sample <= budget or window.output_volume == 1:
        step = max(1, budget // per_sample) if per_sample else max(len(samples), 1)
        return [Tile(n, min(n + step, samples.stop), -1, 0, 0, args)
                for n in range(samples.start, samples.stop, step)]
    kernel, stride, dilation, pad_low, output_size = args
    # Slabs cut the first axis longer than one, so that each is contiguous in the output;
    # the smallest is one line of it, even where that line alone exceeds the budget.
    axis = next(a for a in range(KERNEL_RANK) if output_size[a] > 1)
    inner = math.prod(output_size[axis + 1:]) * bytes_per_column
    step = max(1, (budget - bytes_per_sample) // inner)
    tiles = []
    for n in samples:
        for start in range(0, output_size[axis], step):
            stop = min(start + step, output_size[axis])
            size = (*output_size[:axis], stop - start, *output_size[axis + 1:])
            low = (*pad_low[:axis], pad_low[axis] - start * stride[axis], *pad_low[axis + 1:])
            tiles.append(Tile(n, n + 1, axis, start, stop,
                              (kernel, stride, dilation, low, size)))
    return tiles
