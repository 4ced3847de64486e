"""Explicit padding for the non-zero padding modes, and its adjoint.

Each mode maps every padded position to the input position it copies, one axis at a
time, as ``torch.nn.functional.pad`` does. The adjoint adds each padded position's
gradient back onto that source position.
"""

from __future__ import annotations

import numpy as np


def source_positions(size: int, low: int, high: int, mode: str) -> np.ndarray:
    """Input index copied to each of the ``low + size + high`` padded positions."""
    positions = np.arange(-low, size + high)
    if mode == "reflect":  # mirror without repeating the edge element
        positions = np.where(positions < 0, -positions, positions)
        return np.where(positions >= size, 2 * (size - 1) - positions, positions)
    if mode == "replicate":
        return np.clip(positions, 0, size - 1)
    if mode == "circular":
        return positions % size
    raise ValueError(f"padding_mode must be 'reflect', 'replicate' or 'circular', got {mode!r}")


def pad(x: np.ndarray, pad_low, pad_high, mode: str) -> np.ndarray:
    """Pad the spatial axes of ``(N, C, *spatial)`` ``x``; returns a new array."""
    for axis, (lo, hi) in enumerate(zip(pad_low, pad_high), start=2):
        x = np.take(x, source_positions(x.shape[axis], lo, hi, mode), axis=axis)
    return np.ascontiguousarray(x)


def pad_adjoint(grad: np.ndarray, pad_low, pad_high, mode: str) -> np.ndarray:
    """Gradient with respect to the input of :func:`pad`, given the padded gradient."""
    for axis, (lo, hi) in reversed(list(enumerate(zip(pad_low, pad_high), start=2))):
        size = grad.shape[axis] - lo - hi
        sources = source_positions(size, lo, hi, mode)
        moved = np.moveaxis(grad, axis, 0)
        result = moved[lo:lo + size].copy()
        for position in (*range(lo), *range(lo + size, lo + size + hi)):
            result[sources[position]] += moved[position]
        grad = np.moveaxis(result, 0, axis)
    return np.ascontiguousarray(grad)
