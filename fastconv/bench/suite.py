"""The benchmark layer suite: real layers from published networks (``shapes.csv``)."""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from importlib import resources

import numpy as np

#: Everyday subset: one layer of each family, quick to run.
QUICK = (
    "lenet5_c2",
    "cifar_r20_3x3_16",
    "r50_3x3_64",
    "r50_1x1_256_64",
    "mnv2_dw_144_56s2",
    "resnext_g32_128",
    "speech_1d_k5",
    "c3d_conv2",
    "dcgan_up",
)

PASSES = ("forward", "backward_input", "backward_weight")


@dataclass(frozen=True)
class Layer:
    """One convolution layer of the suite, in torch's terms."""

    name: str
    op: str  # "conv" or "conv_transpose"
    batch: int
    in_channels: int
    out_channels: int
    spatial: tuple[int, ...]
    kernel: tuple[int, ...]
    stride: int
    padding: int
    dilation: int
    groups: int
    source: str

    @property
    def rank(self) -> int:
        return len(self.spatial)

    @property
    def is_depthwise(self) -> bool:
        return self.groups > 1 and self.groups == self.in_channels

    @property
    def params(self) -> dict:
        return {"stride": self.stride, "padding": self.padding, "dilation": self.dilation,
                "groups": self.groups}

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (self.batch, self.in_channels, *self.spatial)

    @property
    def weight_shape(self) -> tuple[int, ...]:
        if self.op == "conv_transpose":
            return (self.in_channels, self.out_channels // self.groups, *self.kernel)
        return (self.out_channels, self.in_channels // self.groups, *self.kernel)

    @property
    def output_size(self) -> tuple[int, ...]:
        s, p, d = self.stride, self.padding, self.dilation
        if self.op == "conv_transpose":
            return tuple((n - 1) * s - 2 * p + d * (k - 1) + 1
                         for n, k in zip(self.spatial, self.kernel))
        return tuple((n + 2 * p - d * (k - 1) - 1) // s + 1
                     for n, k in zip(self.spatial, self.kernel))

    @property
    def output_shape(self) -> tuple[int, ...]:
        return (self.batch, self.out_channels, *self.output_size)

    def gemm_shapes(self) -> dict[str, tuple[int, int, int, int]]:
        """Per pass, ``(groups, M, N, K)`` of the GEMMs an im2col convolution runs.

        For a transposed convolution the roles of its input and output swap.
        """
        transposed = self.op == "conv_transpose"
        # the output of the convolution whose GEMMs these are
        conv_output = self.spatial if transposed else self.output_size
        columns = self.batch * math.prod(conv_output)
        conv_in, conv_out = ((self.out_channels, self.in_channels) if transposed
                             else (self.in_channels, self.out_channels))
        rows = conv_in // self.groups * math.prod(self.kernel)
        filters = conv_out // self.groups
        g = self.groups
        shapes = {"forward": (g, filters, columns, rows),
                  "backward_input": (g, rows, columns, filters),
                  "backward_weight": (g, filters, rows, columns)}
        if transposed:  # its forward is the conv's backward_input
            shapes["forward"], shapes["backward_input"] = (shapes["backward_input"],
                                                           shapes["forward"])
        return shapes

    def flops(self, pass_name: str) -> int:
        g, m, n, k = self.gemm_shapes()[pass_name]
        return 2 * g * m * n * k

    def arrays(self, dtype, rng=None) -> dict[str, np.ndarray]:
        """Random inputs with a scale that keeps values far from denormals."""
        rng = np.random.default_rng(0) if rng is None else rng
        fan_in = self.weight_shape[1] * math.prod(self.kernel)
        return {
            "x": rng.standard_normal(self.input_shape).astype(dtype),
            "weight": (rng.standard_normal(self.weight_shape) / math.sqrt(fan_in)).astype(dtype),
            "grad_output": rng.standard_normal(self.output_shape).astype(dtype),
        }


def _size(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split("x"))


def load_suite(names=None) -> list[Layer]:
    """The layers of ``shapes.csv``, in file order; only ``names`` when given."""
    with resources.files(__package__).joinpath("shapes.csv").open(newline="") as f:
        layers = [
            Layer(row["name"], row["op"], int(row["N"]), int(row["C"]), int(row["K"]),
                  _size(row["spatial"]), _size(row["kernel"]), int(row["stride"]),
                  int(row["padding"]), int(row["dilation"]), int(row["groups"]), row["source"])
            for row in csv.DictReader(f)
        ]
    if names is None:
        return layers
    by_name = {layer.name: layer for layer in layers}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise ValueError(f"unknown layer names {unknown}; the suite has {sorted(by_name)}")
    return [by_name[n] for n in names]
