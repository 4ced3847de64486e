"""The example framework in examples/minifw: every layer's gradients against central
differences in float64, the optimisers against torch's, and a short training run."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
sys.path.insert(0, str(EXAMPLES))

import digits  # noqa: E402
import minifw as fw  # noqa: E402
import train_digits  # noqa: E402


def _numerical_gradient(loss, array, step=1e-6):
    """Central differences of the scalar ``loss()`` in every element of ``array``."""
    gradient = np.zeros_like(array)
    for index in np.ndindex(array.shape):
        saved = array[index]
        array[index] = saved + step
        above = loss()
        array[index] = saved - step
        below = loss()
        array[index] = saved
        gradient[index] = (above - below) / (2 * step)
    return gradient


LAYERS = {
    "conv2d": (lambda rng: fw.Conv2d(3, 4, 3, padding=1, stride=2, rng=rng, dtype=np.float64),
               (2, 3, 6, 5)),
    "linear": (lambda rng: fw.Linear(5, 3, rng=rng, dtype=np.float64), (4, 5)),
    "relu": (lambda rng: fw.ReLU(), (3, 7)),
    "max_pool2d": (lambda rng: fw.MaxPool2d(2), (2, 3, 6, 6)),
    "flatten": (lambda rng: fw.Flatten(), (2, 3, 2, 2)),
}


@pytest.mark.parametrize("name", list(LAYERS))
def test_layer_gradients_match_central_differences(name):
    build, shape = LAYERS[name]
    rng = np.random.default_rng(0)
    layer = build(rng)
    x = fw.Tensor(rng.standard_normal(shape), requires_grad=True)
    probe = rng.standard_normal(layer(x).shape)  # loss = sum(layer(x) * probe)

    def loss():
        return float((layer(x).data * probe).sum())

    layer(x).backward(probe)
    for tensor in (x, *layer.parameters()):
        expected = _numerical_gradient(loss, tensor.data)
        np.testing.assert_allclose(tensor.grad, expected, rtol=1e-6, atol=1e-8, err_msg=name)


def test_cross_entropy_gradient_and_value_match_torch():
    rng = np.random.default_rng(0)
    logits = fw.Tensor(rng.standard_normal((5, 10)), requires_grad=True)
    labels = rng.integers(0, 10, 5)
    loss = fw.cross_entropy(logits, labels)
    loss.backward()
    reference = torch.tensor(logits.data, requires_grad=True)
    expected = torch.nn.functional.cross_entropy(reference, torch.from_numpy(labels))
    expected.backward()
    np.testing.assert_allclose(loss.data, expected.item(), rtol=1e-12)
    np.testing.assert_allclose(logits.grad, reference.grad.numpy(), rtol=1e-10, atol=1e-14)


def test_gradients_accumulate_where_a_tensor_is_used_twice():
    x = fw.Tensor(np.array([[1.0, -2.0]]), requires_grad=True)
    w = fw.Tensor(np.eye(2), requires_grad=True)
    b = fw.Tensor(np.zeros(2))
    hidden = fw.linear(x, w, b)
    fw.linear(hidden, w, b).backward(np.ones((1, 2)))
    # d/dx sum(x W^T W^T) = 1 W W, d/dW: two paths
    np.testing.assert_allclose(x.grad, [[1.0, 1.0]])
    np.testing.assert_allclose(w.grad, [[2.0, -4.0], [2.0, -4.0]])


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_optimisers_take_torch_steps(optimizer):
    rng = np.random.default_rng(0)
    start = rng.standard_normal((3, 4))
    ours = fw.Tensor(start.copy(), requires_grad=True)
    theirs = torch.tensor(start.copy(), requires_grad=True)
    if optimizer == "sgd":
        mine, reference = fw.SGD([ours], lr=0.1, momentum=0.9), torch.optim.SGD(
            [theirs], lr=0.1, momentum=0.9)
    else:
        mine, reference = fw.Adam([ours], lr=0.01), torch.optim.Adam([theirs], lr=0.01)
    target = rng.standard_normal((3, 4))
    for _ in range(5):
        mine.zero_grad()
        ours.grad = 2 * (ours.data - target)
        mine.step()
        reference.zero_grad()
        ((theirs - torch.from_numpy(target)) ** 2).sum().backward()
        reference.step()
    np.testing.assert_allclose(ours.data, theirs.detach().numpy(), rtol=1e-12, atol=1e-14)


def test_initialisation_has_torchs_bounds():
    rng = np.random.default_rng(0)
    conv = fw.Conv2d(8, 16, 3, rng=rng)
    bound = 1 / np.sqrt(8 * 3 * 3)
    for parameter in conv.parameters():
        assert np.abs(parameter.data).max() <= bound
        assert np.abs(parameter.data).max() > 0.9 * bound  # uniform, not concentrated
    assert conv.weight.data.dtype == np.float32


def test_only_the_gradients_asked_for_are_computed():
    rng = np.random.default_rng(0)
    conv = fw.Conv2d(1, 2, 3, rng=rng, dtype=np.float64)
    images = fw.Tensor(rng.standard_normal((2, 1, 5, 5)))  # no requires_grad
    conv(images).backward(np.ones((2, 2, 3, 3)))
    assert images.grad is None
    assert conv.weight.grad is not None


def test_a_short_training_run_lowers_the_loss():
    x_train, _, y_train, _ = digits.load(seed=0)
    rng = np.random.default_rng(0)
    model = train_digits.lenet(rng)
    optimizer = fw.Adam(model.parameters(), lr=2e-3)
    images, labels = x_train[:256], y_train[:256]

    def loss():
        return fw.cross_entropy(model(fw.Tensor(images)), labels)

    before = float(loss().data)
    for _ in range(80):  # ten passes over the subset
        batch = rng.choice(len(images), 32, replace=False)
        step_loss = fw.cross_entropy(model(fw.Tensor(images[batch])), labels[batch])
        optimizer.zero_grad()
        step_loss.backward()
        optimizer.step()
    after = float(loss().data)
    assert after < 0.5 * before, (before, after)
