"""Optimisers with torch's update rules."""

from __future__ import annotations

import numpy as np


class Optimizer:
    def __init__(self, parameters):
        self.parameters = list(parameters)

    def zero_grad(self):
        for p in self.parameters:
            p.grad = None


class SGD(Optimizer):
    """Stochastic gradient descent with momentum, as ``torch.optim.SGD``: the buffer
    starts as the first gradient, then ``buf = momentum * buf + grad``."""

    def __init__(self, parameters, lr, momentum=0.0):
        super().__init__(parameters)
        self.lr, self.momentum = lr, momentum
        self._buffers = [None] * len(self.parameters)

    def step(self):
        for i, p in enumerate(self.parameters):
            if p.grad is None:
                continue
            step = p.grad
            if self.momentum:
                buffer = self._buffers[i]
                step = self._buffers[i] = step.copy() if buffer is None else (
                    self.momentum * buffer + step)
            p.data -= self.lr * step


class Adam(Optimizer):
    """Adam with bias correction, as ``torch.optim.Adam``."""

    def __init__(self, parameters, lr=1e-3, betas=(0.9, 0.999), eps=1e-8):
        super().__init__(parameters)
        self.lr, self.betas, self.eps = lr, betas, eps
        self._m = [np.zeros_like(p.data) for p in self.parameters]
        self._v = [np.zeros_like(p.data) for p in self.parameters]
        self._t = 0

    def step(self):
        self._t += 1
        beta1, beta2 = self.betas
        for p, m, v in zip(self.parameters, self._m, self._v):
            if p.grad is None:
                continue
            m *= beta1
            m += (1 - beta1) * p.grad
            v *= beta2
            v += (1 - beta2) * p.grad**2
            m_hat = m / (1 - beta1**self._t)
            v_hat = v / (1 - beta2**self._t)
            p.data -= self.lr * m_hat / (np.sqrt(v_hat) + self.eps)
