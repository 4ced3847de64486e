"""What the two digits-training scripts share: the data, the options, and the loop that
times epochs, draws the progress bar and reports.

The data are scikit-learn's bundled 8x8 digits (1797 images, no download), scaled to
[0, 1] as float32 and split 80/20, stratified, with a fixed seed.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from tqdm import tqdm

#: The network both scripts build: two 3x3 convolutions (padding 1) with ReLU and 2x2
#: max pooling, then a hidden fully connected layer.
CHANNELS = (16, 32)
HIDDEN = 64
CLASSES = 10
FLAT = CHANNELS[1] * 2 * 2  # 8x8 pooled twice


def load(seed: int):
    """``x_train, x_test, y_train, y_test``; images ``(N, 1, 8, 8)``."""
    images, labels = load_digits(return_X_y=True)
    images = (images / 16.0).astype(np.float32).reshape(-1, 1, 8, 8)
    return train_test_split(images, labels, test_size=0.2, stratify=labels, random_state=seed)


def options(description: str, argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-3, help="Adam's learning rate")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def run(step, predict, data, args, rng, backend: str) -> float:
    """Train with ``step(images, labels) -> loss`` over shuffled minibatches, print the
    report, and return the test accuracy. ``predict(images)`` returns class scores."""

    def accuracy(images, labels) -> float:
        scores = np.concatenate([predict(images[i:i + 256]) for i in range(0, len(images), 256)])
        return float((scores.argmax(axis=1) == labels).mean())

    start = time.perf_counter()
    x_train, x_test, y_train, y_test = data
    epoch_seconds = []
    for epoch in range(1, args.epochs + 1):
        epoch_start = time.perf_counter()
        order = rng.permutation(len(x_train))
        losses = []
        # tqdm draws on terminals only (disable=None)
        with tqdm(range(0, len(order), args.batch_size), desc=f"epoch {epoch}/{args.epochs}",
                  unit="batch", leave=False, disable=None) as bar:
            for first in bar:
                batch = order[first:first + args.batch_size]
                losses.append(step(x_train[batch], y_train[batch]))
                bar.set_postfix(loss=f"{np.mean(losses[-10:]):.3f}")
        epoch_seconds.append(time.perf_counter() - epoch_start)
        tqdm.write(f"epoch {epoch:2d}  loss {np.mean(losses):.4f}  {epoch_seconds[-1]:.2f} s")
    test_accuracy = accuracy(x_test, y_test)
    print(f"train accuracy: {accuracy(x_train, y_train):.4f}")
    print(f"seconds per epoch (median; {backend}): {np.median(epoch_seconds):.3f}")
    print(f"first epoch: {epoch_seconds[0]:.2f} s; wall time: {time.perf_counter() - start:.1f} s")
    print(f"test accuracy: {test_accuracy:.4f}")
    return test_accuracy
