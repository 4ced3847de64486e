"""Train a LeNet-style CNN on scikit-learn's bundled digits with minifw, whose
convolutions and pooling are fastconv's.

    python examples/train_digits.py

The split and the initialisation are fixed by ``--seed``; the last line printed is
the test accuracy. ``train_digits_torch.py`` trains the same network the same way in
PyTorch, to compare seconds per epoch.
"""

from __future__ import annotations

import digits
import numpy as np
from minifw import (
    Adam,
    Conv2d,
    Flatten,
    Linear,
    MaxPool2d,
    ReLU,
    Sequential,
    Tensor,
    cross_entropy,
)

import fastconv


def lenet(rng) -> Sequential:
    c1, c2 = digits.CHANNELS
    return Sequential(
        Conv2d(1, c1, 3, padding=1, rng=rng), ReLU(), MaxPool2d(2),
        Conv2d(c1, c2, 3, padding=1, rng=rng), ReLU(), MaxPool2d(2),
        Flatten(), Linear(digits.FLAT, digits.HIDDEN, rng=rng), ReLU(),
        Linear(digits.HIDDEN, digits.CLASSES, rng=rng),
    )


def main(argv=None) -> float:
    args = digits.options(__doc__.split("\n\n")[0], argv)
    rng = np.random.default_rng(args.seed)
    model = lenet(rng)
    optimizer = Adam(model.parameters(), lr=args.lr)

    def step(images, labels) -> float:
        loss = cross_entropy(model(Tensor(images)), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return float(loss.data)

    backend = f"minifw on fastconv {fastconv.__version__}, {fastconv.get_num_threads()} threads"
    return digits.run(step, lambda images: model(Tensor(images)).data, digits.load(args.seed),
                      args, rng, backend)


if __name__ == "__main__":
    main()
