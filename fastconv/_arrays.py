"""Array-argument conversion and dtype rules shared by the public functions."""

from __future__ import annotations

import numpy as np

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def as_float_array(value, name: str) -> np.ndarray:
    """Convert an array-like as ``np.asarray`` does; only float32 and float64 are accepted.

    The caller's array is returned as it is (never copied, never written to).
    """
    try:
        array = np.asarray(value)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} could not be converted to an array: {exc}") from None
    if array.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be a float32 or float64 array, got dtype {array.dtype}")
    return array


def as_float_dtype(dtype, name: str = "dtype") -> np.dtype:
    try:
        dtype = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"{name} must be float32 or float64, got {dtype!r}") from None
    if dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be float32 or float64, got {dtype}")
    return dtype


def float_arrays(**named) -> tuple[np.ndarray | None, ...]:
    """Convert each named array-like (``None`` passes through) and require one dtype."""
    arrays = tuple(None if value is None else as_float_array(value, name)
                   for name, value in named.items())
    dtypes = {a.dtype for a in arrays if a is not None}
    if len(dtypes) > 1:
        given = {name: a.dtype for name, a in zip(named, arrays) if a is not None}
        listing = ", ".join(f"{name} is {dtype}" for name, dtype in given.items())
        raise TypeError(f"{', '.join(given)} must share one dtype, got {listing}")
    return arrays


def check_array(array: np.ndarray, name: str, shape: tuple[int, ...], dtype: np.dtype) -> None:
    """Require an exact shape and dtype, as a plan built for them does."""
    if array.dtype != dtype:
        raise TypeError(f"{name} must have dtype {dtype} for this plan, got {array.dtype}")
    if array.shape != shape:
        raise ValueError(f"{name} must have shape {shape} for this plan, got {array.shape}")
