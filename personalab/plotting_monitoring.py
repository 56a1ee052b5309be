"""Figures for the monitoring chapter. Every function draws on ``ax`` (or a new one) and returns the figure."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import matplotlib.pyplot as plt
import torch

from personalab.plotting import _axes

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from personalab.monitoring import MonitorResult


def _fit_line(ax: Axes, x: Sequence[float], y: Sequence[float], **kw) -> None:
    """Least-squares line through the finite points of (x, y)."""
    pts = [(a, b) for a, b in zip(x, y, strict=True) if math.isfinite(a) and math.isfinite(b)]
    if len(pts) < 2:
        return
    xs = torch.tensor([p[0] for p in pts], dtype=torch.float64)
    ys = torch.tensor([p[1] for p in pts], dtype=torch.float64)
    if xs.std() == 0:
        return
    slope = ((xs - xs.mean()) * (ys - ys.mean())).sum() / ((xs - xs.mean()) ** 2).sum()
    grid = torch.linspace(xs.min().item(), xs.max().item(), 2, dtype=torch.float64)
    ax.plot(grid.numpy(), (ys.mean() + slope * (grid - xs.mean())).numpy(), **kw)


def plot_prediction(experiment: dict, ax: Axes | None = None) -> Figure:
    """Scatter of last-prompt projection vs judged trait score, coloured by graded-prompt level.

    Small dots are single answers, large outlined dots the per-prompt means with their
    95 % bootstrap intervals over the prompt's questions (vertical bars); the line is
    the least-squares fit through the single answers. ``experiment`` is the dict from
    ``personalab.monitoring.prediction_experiment``.
    """
    from personalab.stats import mean_ci

    fig, ax = _axes(ax, (5, 3.8))
    levels = experiment["levels"]
    n_levels = max(levels) + 1
    for lev, x in zip(sorted(set(levels)), experiment["prompt_projection"], strict=True):  # the means' order
        ys = [v for lv, v in zip(levels, experiment["scores"], strict=True) if lv == lev and math.isfinite(v)]
        if len(ys) >= 2 and math.isfinite(x):
            _, lo, hi = mean_ci(ys)
            ax.plot([x, x], [lo, hi], color="black", lw=1, alpha=0.6, zorder=2)
    cmap = plt.get_cmap("coolwarm", n_levels)
    sc = ax.scatter(
        experiment["projections"],
        experiment["scores"],
        c=levels,
        cmap=cmap,
        vmin=-0.5,
        vmax=n_levels - 0.5,
        s=14,
        alpha=0.7,
    )
    ax.scatter(
        experiment["prompt_projection"],
        experiment["prompt_score"],
        c=range(n_levels),
        cmap=cmap,
        vmin=-0.5,
        vmax=n_levels - 0.5,
        s=90,
        edgecolors="black",
        linewidths=1.2,
        zorder=3,
    )
    _fit_line(ax, experiment["projections"], experiment["scores"], color="black", lw=1, ls="--")
    fig.colorbar(sc, ax=ax, ticks=range(n_levels), label="graded prompt (0 = suppress, 7 = elicit)")
    ax.set_xlabel(f"projection of the last prompt token (layer {experiment['layer']})")
    ax.set_ylabel("judged trait score of the answer")
    ax.set_title(
        f"{experiment['trait']}: r per sample {experiment['r_per_sample']:.2f}, "
        f"per prompt {experiment['r_per_prompt']:.2f}",
        fontsize=10,
    )
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def plot_r_by_layer(sweep: dict, ax: Axes | None = None, *, mark: int | None = None) -> Figure:
    """Pearson r per layer (``r_by_layer``'s dict), per sample and per prompt; ``mark`` draws a layer line."""
    fig, ax = _axes(ax, (6, 3))
    ax.plot(sweep["layers"], sweep["r_per_sample"], marker=".", label="per sample")
    ax.plot(sweep["layers"], sweep["r_per_prompt"], marker=".", label="per prompt mean")
    if mark is not None:
        ax.axvline(mark, color="red", ls="--", lw=0.8, label=f"default layer {mark}")
    ax.axhline(0, color="gray", lw=0.6)
    ax.set_xlabel("layer (i = output of block i)")
    ax.set_ylabel("Pearson r")
    ax.set_ylim(-1.05, 1.05)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def plot_trace(
    result: MonitorResult,
    sample: int = 0,
    trait: int = 0,
    *,
    threshold: float | None = None,
    window: int = 4,
    ax: Axes | None = None,
    label: str | None = None,
    max_labels: int = 40,
) -> Figure:
    """Projection of every generated token (and its rolling mean) with the alert threshold.

    Call it again with the same ``ax`` to overlay another sample; alerts of this
    (sample, trait) are marked with a red cross.
    """
    fig, ax = _axes(ax, (9, 3))
    proj = result.projections[sample][:, trait].float()
    roll = torch.stack([proj[max(0, t - window + 1) : t + 1].mean() for t in range(len(proj))]) if len(proj) else proj
    name = label or f"sample {sample}"
    (line,) = ax.plot(proj.numpy(), marker=".", lw=0.8, alpha=0.5, label=f"{name}: per token")
    ax.plot(roll.numpy(), lw=2, color=line.get_color(), label=f"{name}: rolling mean ({window})")
    if threshold is not None and math.isfinite(threshold):
        if not any(lbl.get_label() == "threshold" for lbl in ax.lines):
            ax.axhline(threshold, color="red", ls="--", lw=1, label="threshold")
    tname = result.traits[trait]
    for ev in result.alerts:
        if ev.sample == sample and ev.trait == tname:
            ax.plot([ev.token], [ev.value], "x", color="red", ms=12, mew=2.5)
    tokens = result.tokens[sample]
    if len(tokens) <= max_labels:
        ax.set_xticks(
            range(len(tokens)), [t.replace("\n", "\\n").replace("$", "\\$") for t in tokens], rotation=90, fontsize=7
        )
    ax.set_xlabel("generated token")
    ax.set_ylabel(f"projection on '{tname}'")
    ax.legend(fontsize=7, loc="best")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def plot_cosine_heatmap(
    matrix: torch.Tensor, names: Sequence[str], ax: Axes | None = None, *, title: str | None = None
) -> Figure:
    """Annotated heatmap of a cosine-similarity matrix between trait vectors (-1 blue ... +1 red)."""
    n = len(names)
    fig, ax = _axes(ax, (1.0 * n + 1.5, 0.85 * n + 1))
    m = torch.as_tensor(matrix).float().cpu().numpy()
    im = ax.imshow(m, cmap="RdBu_r", vmin=-1, vmax=1)
    ax.set_xticks(range(n), list(names), rotation=45, ha="right")
    ax.set_yticks(range(n), list(names))
    for i in range(n):
        for j in range(n):
            ax.text(
                j,
                i,
                f"{m[i, j]:.2f}",
                ha="center",
                va="center",
                fontsize=8,
                color="white" if abs(m[i, j]) > 0.6 else "black",
            )
    fig.colorbar(im, ax=ax, label="cosine")
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig
