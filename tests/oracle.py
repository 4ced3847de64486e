"""PyTorch as the oracle, and tolerances derived from rounding-error bounds.

A float sum of n products computed in any order carries an error of at most
``n * u * sum(|products|)`` (Higham's gamma_n, u = eps / 2). Both fastconv and the
oracle carry such an error, so they may differ by ``n * eps * sum(|products|)``. The
sums of absolute products are the same computation run on absolute values, so every
comparison below takes its bound elementwise from that "magnitude" computation.
"""

from __future__ import annotations

import numpy as np
import torch

torch.set_num_threads(2)

#: (dtype, reference name) -> (largest relative deviation, where), for the summary.
DEVIATIONS: dict[tuple[str, str], tuple[float, str]] = {}

TORCH_CONV = {1: torch.nn.Conv1d, 2: torch.nn.Conv2d, 3: torch.nn.Conv3d}
TORCH_CONV_TRANSPOSE = {1: torch.nn.functional.conv_transpose1d,
                        2: torch.nn.functional.conv_transpose2d,
                        3: torch.nn.functional.conv_transpose3d}


def random(rng, shape, dtype=np.float64):
    return rng.standard_normal(shape).astype(dtype)


def assert_close(actual, expected, magnitude, terms, *, label, reference="torch"):
    """Assert ``|actual - expected| <= terms * eps * magnitude`` elementwise.

    ``terms`` is the reduction length of each output element; NaNs must match.
    """
    actual = np.asarray(actual)
    assert actual.shape == expected.shape, f"{label}: shape {actual.shape} != {expected.shape}"
    assert actual.dtype == expected.dtype, f"{label}: dtype {actual.dtype} != {expected.dtype}"
    finfo = np.finfo(actual.dtype)
    bound = max(terms, 1) * finfo.eps * np.abs(magnitude) + finfo.tiny
    same_nan = np.isnan(actual) == np.isnan(expected)
    assert same_nan.all(), f"{label}: NaN positions differ"
    with np.errstate(invalid="ignore"):
        error = np.where(np.isnan(expected) | (actual == expected), 0.0, np.abs(actual - expected))
    excess = error > bound
    assert not excess.any(), (
        f"{label}: {excess.sum()} of {excess.size} elements exceed the bound; worst error "
        f"{error.max():.3e}, bound there {bound.flat[np.argmax(error - bound)]:.3e}"
    )
    finite = np.isfinite(expected)
    if finite.any() and error.size:
        scale = np.abs(expected[finite]).max()
        deviation = float(error[finite].max() / scale) if scale else 0.0
        key = (str(actual.dtype), reference)
        if deviation >= DEVIATIONS.get(key, (-1.0, ""))[0]:
            DEVIATIONS[key] = (deviation, label)


def assert_nonfinite_like(actual, expected, tolerance):
    """Assert NaN and inf at the same places in both (some of each), and the finite
    elements equal within ``tolerance``, relative and absolute."""
    np.testing.assert_array_equal(np.isnan(actual), np.isnan(expected))
    np.testing.assert_array_equal(np.isinf(actual), np.isinf(expected))
    assert np.isnan(actual).any() and np.isinf(actual).any()
    finite = np.isfinite(expected)
    np.testing.assert_allclose(actual[finite], expected[finite], rtol=tolerance,
                               atol=tolerance)


def torch_conv_passes(x, w, b, dy, *, stride=1, padding=0, dilation=1, groups=1,
                      padding_mode="zeros"):
    """Output and the gradients (x, weight, bias) from ``torch.nn.ConvNd`` and autograd."""
    rank = w.ndim - 2
    module = TORCH_CONV[rank](
        x.shape[1], w.shape[0], w.shape[2:], stride=stride, padding=padding, dilation=dilation,
        groups=groups, bias=b is not None, padding_mode=padding_mode,
        dtype=torch.from_numpy(w).dtype,
    )
    with torch.no_grad():
        module.weight.copy_(torch.from_numpy(w))
        if b is not None:
            module.bias.copy_(torch.from_numpy(b))
    xt = torch.tensor(x, requires_grad=True)
    y = module(xt)
    y.backward(torch.from_numpy(np.ascontiguousarray(dy)))
    db = module.bias.grad.numpy() if b is not None else None
    return y.detach().numpy(), xt.grad.numpy(), module.weight.grad.numpy(), db


def torch_conv_transpose_passes(x, w, b, dy, **params):
    """Output and the gradients (x, weight) of ``torch.nn.functional.conv_transposeNd``."""
    xt = torch.tensor(x, requires_grad=True)
    wt = torch.tensor(w, requires_grad=True)
    bt = None if b is None else torch.tensor(b)
    y = TORCH_CONV_TRANSPOSE[w.ndim - 2](xt, wt, bt, **params)
    y.backward(torch.from_numpy(np.ascontiguousarray(dy)))
    return y.detach().numpy(), xt.grad.numpy(), wt.grad.numpy()
