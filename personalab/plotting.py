"""Figures used in the book. Every function draws on ``ax`` (or a new one) and returns the figure."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import matplotlib.pyplot as plt
import torch

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from personalab.lens import LogitLens


def _axes(ax: Axes | None, figsize: tuple[float, float]) -> tuple[Figure, Axes]:
    if ax is None:
        fig, ax = plt.subplots(figsize=figsize)
        return fig, ax
    return ax.get_figure(root=True), ax  # type: ignore[return-value]  # an Axes' root figure is a Figure


def interval_errorbars(
    ax: Axes, xs: Sequence[float], ys: Sequence[float], intervals: Sequence[tuple[float, float]], **kw
) -> None:
    """Draw each point's ``(low, high)`` interval as a vertical error bar on ``ax`` (a NaN end or
    an interval that does not reach the point draws no bar on that side)."""
    below = [max(0.0, y - lo) for y, (lo, _) in zip(ys, intervals, strict=True)]
    above = [max(0.0, hi - y) for y, (_, hi) in zip(ys, intervals, strict=True)]
    ax.errorbar(xs, ys, yerr=[below, above], fmt="none", elinewidth=0.8, capsize=2, **kw)


def _show(token: str) -> str:
    """A token as a short, printable label (newlines visible, no matplotlib mathtext)."""
    return token.replace("\n", "\\n").replace("$", "\\$")


def plot_residual_norms(
    norms: torch.Tensor, ax: Axes | None = None, *, label: str | None = None, log: bool = False
) -> Figure:
    """Line plot of a per-layer norm ``[n_layers + 1]`` (row 0 = embeddings).

    Call it again with the same ``ax`` and another ``label`` to overlay a second curve.
    """
    fig, ax = _axes(ax, (6, 3))
    values = torch.as_tensor(norms).detach().float().cpu()
    ax.plot(range(len(values)), values.numpy(), marker=".", label=label)
    ax.set_xlabel("layer (0 = embeddings, i = output of block i)")
    ax.set_ylabel("mean L2 norm of the residual")
    if log:
        ax.set_yscale("log")
    if label is not None:
        ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def plot_logit_lens(
    lens: LogitLens, ax: Axes | None = None, *, layers: Sequence[int] | None = None, annotate: bool = True
) -> Figure:
    """Heatmap of ``lens.probs`` (layers x positions), each cell labelled with that layer's top token.

    Colour: the probability a layer gives to the token the full model finally predicts at
    that position. ``layers`` picks which rows to show (default: all, embeddings at the bottom).
    """
    import seaborn as sns

    rows = list(range(lens.probs.shape[0])) if layers is None else list(layers)
    probs = lens.probs[rows].float().cpu().numpy()  # [len(rows), seq]
    seq = probs.shape[1]
    fig, ax = _axes(ax, (max(6.0, 0.9 * seq + 2), max(3.0, 0.28 * len(rows) + 1.5)))
    labels = [[_show(lens.top_tokens[r][t]) for t in range(seq)] for r in rows] if annotate else False
    sns.heatmap(
        probs,
        ax=ax,
        vmin=0,
        vmax=1,
        cmap="viridis",
        annot=labels,
        fmt="",
        annot_kws={"fontsize": 7},
        cbar_kws={"label": "P(final prediction)"},
    )
    ax.invert_yaxis()  # embeddings at the bottom, the last block at the top
    ax.set_yticks([i + 0.5 for i in range(len(rows))], [str(r) for r in rows], rotation=0, fontsize=7)
    ax.set_xticks(
        [t + 0.5 for t in range(seq)],
        [f"{_show(a)}\n→{_show(b)}" for a, b in zip(lens.input_tokens, lens.final_tokens, strict=True)],
        rotation=0,
        fontsize=8,
    )
    ax.set_xlabel("input token → the model's final prediction for the next token")
    ax.set_ylabel("layer")
    fig.tight_layout()
    return fig


def plot_means_with_ci(
    rows: dict[str, tuple[float, float, float]], ax: Axes | None = None, *, ylabel: str = "", title: str = ""
) -> Figure:
    """Bars of means with their 95 % intervals: ``rows`` maps a label to ``(mean, low, high)``."""
    fig, ax = _axes(ax, (1.2 + 1.1 * len(rows), 3.2))
    labels = list(rows)
    means = [rows[k][0] for k in labels]
    err = [[rows[k][0] - rows[k][1] for k in labels], [rows[k][2] - rows[k][0] for k in labels]]
    ax.bar(range(len(labels)), means, yerr=err, capsize=4, color="#7a9cc6")
    ax.set_xticks(range(len(labels)), labels, fontsize=8, rotation=15)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig
