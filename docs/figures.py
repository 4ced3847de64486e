"""Draw the figures of the "How it works" page with matplotlib.

Run by conf.py at every build (``python docs/figures.py OUT`` runs it alone). Every
number drawn is computed here, by fastconv where it is a convolution.
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

import fastconv

# The worked example of the page.
X = np.arange(1.0, 10.0).reshape(3, 3)
F = np.array([[1.0, 2.0], [3.0, 4.0]])
G = np.array([[1.0, -1.0], [2.0, 0.5]])  # dL/dO

BLUE, ORANGE, GREEN, GREY = "#4C72B0", "#DD8452", "#55A868", "#8C8C8C"


def _grid(ax, values, origin, title, highlight=(), color=BLUE, fmt="{:g}"):
    """Draw ``values`` as a grid of cells with its lower-left corner at ``origin``;
    cells in ``highlight`` are filled."""
    rows, cols = values.shape
    x0, y0 = origin
    for i in range(rows):
        for j in range(cols):
            filled = (i, j) in highlight
            ax.add_patch(plt.Rectangle((x0 + j, y0 + rows - 1 - i), 1, 1,
                                       facecolor=color if filled else "white",
                                       alpha=0.35 if filled else 1, edgecolor="black"))
            ax.text(x0 + j + 0.5, y0 + rows - 0.5 - i, fmt.format(values[i, j]),
                    ha="center", va="center", fontsize=11)
    ax.text(x0 + cols / 2, y0 + rows + 0.35, title, ha="center", va="bottom", fontsize=12)


def _canvas(width, height):
    fig, ax = plt.subplots(figsize=(width * 0.55, height * 0.55))
    ax.set_xlim(0, width)
    ax.set_ylim(0, height)
    ax.set_aspect("equal")
    ax.axis("off")
    return fig, ax


def chain_rule(path: Path) -> None:
    """f = (x + y) z: forward values above each wire, gradients below."""
    x, y, z = -2.0, 5.0, -4.0
    q = x + y
    f = q * z
    df_dq, df_dz = z, q
    df_dx = df_dy = df_dq
    fig, ax = plt.subplots(figsize=(7.5, 3.2))
    ax.axis("off")
    ax.set_xlim(0, 10)
    ax.set_ylim(0, 5)
    nodes = {"x": (0.8, 4.4), "y": (0.8, 2.2), "z": (0.8, 0.5), "+": (4.2, 3.3),
             "*": (7.0, 2.0), "f": (9.3, 2.0)}
    for name, (cx, cy) in nodes.items():
        op = name in "+*"
        ax.add_patch(plt.Circle((cx, cy), 0.42, facecolor="#EAEAF2" if op else "white",
                                edgecolor="black"))
        ax.text(cx, cy, name, ha="center", va="center", fontsize=14)
    wires = [("x", "+", x, df_dx), ("y", "+", y, df_dy), ("+", "*", q, df_dq),
             ("z", "*", z, df_dz), ("*", "f", f, 1.0)]
    for start, end, value, gradient in wires:
        (x0, y0), (x1, y1) = nodes[start], nodes[end]
        ax.annotate("", xy=(x1 - 0.45, y1), xytext=(x0 + 0.45, y0),
                    arrowprops=dict(arrowstyle="->", color="black"))
        mx, my = x0 + 0.4 * (x1 - x0), y0 + 0.4 * (y1 - y0)  # labels nearer the source
        ax.text(mx, my + 0.22, f"{value:g}", color=GREEN, ha="center", fontsize=12)
        ax.text(mx, my - 0.45, f"{gradient:g}", color="#C44E52", ha="center", fontsize=12)
    ax.text(5, 4.8, "forward values (green) and df/d(wire) (red); q = x + y",
            ha="center", fontsize=11)
    fig.savefig(path, bbox_inches="tight", dpi=110)
    plt.close(fig)


def forward_window(path: Path) -> None:
    """O = X * F: the window of O11 on X, and the output."""
    output = fastconv.conv2d(X[None, None], F[None, None])[0, 0]
    fig, ax = _canvas(13, 4.6)
    _grid(ax, X, (0.5, 0.5), "X", highlight={(0, 0), (0, 1), (1, 0), (1, 1)})
    ax.text(4.25, 2, "⋆", fontsize=22, ha="center", va="center")
    _grid(ax, F, (5, 1), "F", highlight=set(np.ndindex(2, 2)), color=ORANGE)
    ax.text(7.75, 2, "=", fontsize=20, ha="center", va="center")
    _grid(ax, output, (9, 1), "O", highlight={(0, 0)}, color=GREEN)
    fig.savefig(path, bbox_inches="tight", dpi=110)
    plt.close(fig)


def full_convolution(path: Path) -> None:
    """dL/dX = the full convolution of the rotated F with dL/dO: G padded by one, the
    rotated filter sliding over it."""
    padded = np.pad(G, 1)
    rotated = np.rot90(F, 2)
    dx = fastconv.conv_backward_input(G[None, None], F[None, None], (1, 1, 3, 3))[0, 0]
    fig, ax = _canvas(15, 5.6)
    _grid(ax, padded, (0.5, 0.5), "dL/dO, padded by 1",
          highlight={(1, 1), (1, 2), (2, 1), (2, 2)}, color=BLUE)
    ax.text(5.25, 2.5, "⋆", fontsize=22, ha="center", va="center")
    _grid(ax, rotated, (6, 1.5), "F rotated 180°", highlight=set(np.ndindex(2, 2)),
          color=ORANGE)
    ax.text(8.75, 2.5, "=", fontsize=20, ha="center", va="center")
    _grid(ax, dx, (10, 1), "dL/dX", fmt="{:g}")
    fig.savefig(path, bbox_inches="tight", dpi=110)
    plt.close(fig)


def im2col_gemm(path: Path) -> None:
    """The forward pass as a GEMM: the filter as a row, im2col's columns, the output."""
    cols = fastconv.im2col(X[None, None], 2)[0]
    output = F.reshape(1, -1) @ cols
    fig, ax = _canvas(15, 5.6)
    _grid(ax, F.reshape(1, -1), (0.5, 2), "W: F as a row", highlight={(0, i) for i in range(4)},
          color=ORANGE)
    ax.text(5.0, 2.5, "·", fontsize=24, ha="center", va="center")
    _grid(ax, cols, (5.7, 0.5), "im2col(X): one column per window",
          highlight={(i, 0) for i in range(4)})
    ax.text(10.3, 2.5, "=", fontsize=20, ha="center", va="center")
    _grid(ax, output, (10.8, 2), "O, flattened", highlight={(0, 0)}, color=GREEN)
    fig.savefig(path, bbox_inches="tight", dpi=110)
    plt.close(fig)


FIGURES = {"chain_rule.png": chain_rule, "forward_window.png": forward_window,
           "full_convolution.png": full_convolution, "im2col_gemm.png": im2col_gemm}


def draw_all(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for name, draw in FIGURES.items():
        draw(out / name)


if __name__ == "__main__":
    draw_all(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "_generated")
