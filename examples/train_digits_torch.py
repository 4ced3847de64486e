"""Train the network of ``train_digits.py`` in PyTorch: same data, split, shuffling,
batch size, optimiser and epochs, and torch's default initialisation (the one minifw
copies).

    python examples/train_digits_torch.py
"""

from __future__ import annotations

import digits
import numpy as np
import torch
from torch import nn


def lenet() -> nn.Sequential:
    c1, c2 = digits.CHANNELS
    return nn.Sequential(
        nn.Conv2d(1, c1, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(c1, c2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(digits.FLAT, digits.HIDDEN), nn.ReLU(),
        nn.Linear(digits.HIDDEN, digits.CLASSES),
    )


def main(argv=None) -> float:
    args = digits.options(__doc__.split("\n\n")[0], argv)
    torch.manual_seed(args.seed)
    model = lenet()
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    loss_function = nn.CrossEntropyLoss()

    def step(images, labels) -> float:
        loss = loss_function(model(torch.from_numpy(images)), torch.from_numpy(labels))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return loss.item()

    def predict(images) -> np.ndarray:
        with torch.no_grad():
            return model(torch.from_numpy(images)).numpy()

    backend = f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    return digits.run(step, predict, digits.load(args.seed), args,
                      np.random.default_rng(args.seed), backend)


if __name__ == "__main__":
    main()
