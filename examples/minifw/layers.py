"""Layers: parameters, initialised as torch initialises them, around the operations."""

from __future__ import annotations

import math

import numpy as np

import fastconv

from .tensor import Tensor, conv2d, flatten, linear, max_pool2d, relu


class Module:
    """A callable with parameters; its own and those of its child modules."""

    def parameters(self) -> list[Tensor]:
        found = []
        for value in vars(self).values():
            if isinstance(value, Tensor) and value.requires_grad:
                found.append(value)
            elif isinstance(value, Module):
                found.extend(value.parameters())
            elif isinstance(value, list):
                found.extend(p for m in value if isinstance(m, Module) for p in m.parameters())
        return found


def _torch_uniform(rng, shape, fan_in, dtype) -> Tensor:
    """torch's default for Linear and Conv weights and biases: kaiming_uniform_ with
    a = sqrt(5), which is U(-1/sqrt(fan_in), 1/sqrt(fan_in)), as the biases too."""
    bound = 1 / math.sqrt(fan_in)
    return Tensor(rng.uniform(-bound, bound, shape).astype(dtype), requires_grad=True)


class Conv2d(Module):
    """A 2-d convolution layer; one :class:`fastconv.ConvPlan` per input shape, built on
    first use and reused."""

    def __init__(self, in_channels, out_channels, kernel_size, *, stride=1, padding=0,
                 rng=None, dtype=np.float32):
        rng = np.random.default_rng() if rng is None else rng
        shape = (out_channels, in_channels, kernel_size, kernel_size)
        fan_in = in_channels * kernel_size * kernel_size
        self.weight = _torch_uniform(rng, shape, fan_in, dtype)
        self.bias = _torch_uniform(rng, (out_channels,), fan_in, dtype)
        self.stride, self.padding, self.dtype = stride, padding, dtype
        self._plans = {}

    def plan(self, input_shape) -> fastconv.ConvPlan:
        if input_shape not in self._plans:
            self._plans[input_shape] = fastconv.ConvPlan(
                input_shape, self.weight.shape, stride=self.stride, padding=self.padding,
                dtype=self.dtype)
        return self._plans[input_shape]

    def __call__(self, x: Tensor) -> Tensor:
        return conv2d(x, self.weight, self.bias, self.plan(x.shape))


class Linear(Module):
    def __init__(self, in_features, out_features, *, rng=None, dtype=np.float32):
        rng = np.random.default_rng() if rng is None else rng
        self.weight = _torch_uniform(rng, (out_features, in_features), in_features, dtype)
        self.bias = _torch_uniform(rng, (out_features,), in_features, dtype)

    def __call__(self, x: Tensor) -> Tensor:
        return linear(x, self.weight, self.bias)


class ReLU(Module):
    def __call__(self, x: Tensor) -> Tensor:
        return relu(x)


class MaxPool2d(Module):
    def __init__(self, kernel_size, stride=None):
        self.kernel_size, self.stride = kernel_size, stride

    def __call__(self, x: Tensor) -> Tensor:
        return max_pool2d(x, self.kernel_size, self.stride)


class Flatten(Module):
    def __call__(self, x: Tensor) -> Tensor:
        return flatten(x)


class Sequential(Module):
    def __init__(self, *layers: Module):
        self.layers = list(layers)

    def __call__(self, x: Tensor) -> Tensor:
        for layer in self.layers:
            x = layer(x)
        return x
