"""The Tensor and the differentiable operations, each a forward computation and a
closure for its backward pass."""

from __future__ import annotations

import numpy as np

import fastconv


class Tensor:
    """An array, and how to send a gradient back to the tensors it was computed from.

    Parameters
    ----------
    data : array_like
    requires_grad : bool
        Whether :meth:`backward` should leave a gradient in :attr:`grad`.
    """

    def __init__(self, data, requires_grad=False, *, parents=(), backward=None):
        self.data = np.asarray(data)
        self.grad = None
        self.requires_grad = requires_grad or any(p.requires_grad for p in parents)
        self._parents = parents
        # backward(grad, needs) -> one gradient per parent, None where needs says so
        self._backward = backward

    @property
    def shape(self):
        return self.data.shape

    def __repr__(self):
        return f"Tensor(shape={self.shape}, requires_grad={self.requires_grad})"

    def backward(self, grad=None):
        """Accumulate d(self)/d(leaf) into the ``grad`` of every tensor that requires it."""
        order, seen = [], set()

        def visit(node):
            if id(node) not in seen and node.requires_grad:
                seen.add(id(node))
                for parent in node._parents:
                    visit(parent)
                order.append(node)

        visit(self)
        gradients = {id(self): np.ones_like(self.data) if grad is None else grad}
        for node in reversed(order):
            g = gradients.pop(id(node))
            if node._backward is None:  # a leaf: keep its gradient
                node.grad = g if node.grad is None else node.grad + g
                continue
            needs = [p.requires_grad for p in node._parents]
            for parent, pg in zip(node._parents, node._backward(g, needs)):
                if pg is not None:
                    key = id(parent)
                    gradients[key] = pg if key not in gradients else gradients[key] + pg


def conv2d(x: Tensor, weight: Tensor, bias: Tensor, plan: fastconv.ConvPlan) -> Tensor:
    """A 2-d convolution through a plan built for these shapes."""

    def backward(g, needs):
        return (plan.backward_input(g, weight.data) if needs[0] else None,
                plan.backward_weight(g, x.data) if needs[1] else None,
                plan.backward_bias(g) if needs[2] else None)

    return Tensor(plan.forward(x.data, weight.data, bias.data), parents=(x, weight, bias),
                  backward=backward)


def max_pool2d(x: Tensor, kernel_size, stride=None) -> Tensor:
    y, indices = fastconv.max_pool2d(x.data, kernel_size, stride, return_indices=True)
    return Tensor(y, parents=(x,), backward=lambda g, needs: (
        fastconv.max_pool2d_backward(g, indices, x.shape),))


def relu(x: Tensor) -> Tensor:
    positive = x.data > 0
    return Tensor(np.where(positive, x.data, 0), parents=(x,),
                  backward=lambda g, needs: (g * positive,))


def flatten(x: Tensor) -> Tensor:
    return Tensor(x.data.reshape(x.shape[0], -1), parents=(x,),
                  backward=lambda g, needs: (g.reshape(x.shape),))


def linear(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """``x @ weight.T + bias``, with ``weight`` ``(out_features, in_features)``."""

    def backward(g, needs):
        return (g @ weight.data if needs[0] else None,
                g.T @ x.data if needs[1] else None,
                g.sum(axis=0) if needs[2] else None)

    return Tensor(x.data @ weight.data.T + bias.data, parents=(x, weight, bias),
                  backward=backward)


def cross_entropy(logits: Tensor, labels: np.ndarray) -> Tensor:
    """Mean softmax cross-entropy of ``logits`` ``(N, classes)`` against integer labels."""
    shifted = logits.data - logits.data.max(axis=1, keepdims=True)
    log_probabilities = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    rows = np.arange(len(labels))
    loss = -log_probabilities[rows, labels].mean()

    def backward(g, needs):
        d = np.exp(log_probabilities)
        d[rows, labels] -= 1
        return (d * (g / len(labels)),)

    return Tensor(loss, parents=(logits,), backward=backward)
