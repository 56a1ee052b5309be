"""Figures for chapters 5 and 6: loss curves, the fine-tuning shift, dataset ranking."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from personalab.plotting import _axes, interval_errorbars
from personalab.plotting_monitoring import _fit_line
from personalab.stats import pearson_r

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


def plot_losses(runs: dict[str, Sequence[float]], ax: Axes | None = None) -> Figure:
    """Training loss per step, one line per run (label -> losses)."""
    fig, ax = _axes(ax, (6, 3))
    for label, losses in runs.items():
        ax.plot(range(1, len(losses) + 1), list(losses), marker=".", label=label)
    ax.set_xlabel("training step")
    ax.set_ylabel("loss on answer tokens")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_shift(
    points: Sequence[dict],
    x: str,
    y: str = "d_trait",
    ax: Axes | None = None,
    *,
    label: str = "run",
    ci: str | None = None,
) -> Figure:
    """Scatter of one shift against another over fine-tuned models, with the fit and r.

    ``ci`` names the key that holds each point's ``(low, high)`` 95 % interval of ``y``
    (e.g. ``stats.mean_ci`` over questions), drawn as a vertical error bar: a shift
    measured on a handful of questions is shown with its uncertainty.
    """
    fig, ax = _axes(ax, (4.5, 3.5))
    xs, ys = [p[x] for p in points], [p[y] for p in points]
    if ci is not None:
        for p in points:
            low, high = p[ci]
            tol = 1e-9 * max(1.0, abs(p[y]))  # the same mean computed two ways differs in the last bits
            if not low - tol <= p[y] <= high + tol:
                raise ValueError(f"{p[label]!r}: interval [{low}, {high}] does not contain its {y} {p[y]}")
        interval_errorbars(ax, xs, ys, [p[ci] for p in points], ecolor="grey")
    ax.scatter(xs, ys, zorder=3)
    for p in points:
        ax.annotate(p[label], (p[x], p[y]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    _fit_line(ax, xs, ys)
    ax.axhline(0, color="grey", lw=0.5)
    ax.axvline(0, color="grey", lw=0.5)
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    ax.set_title(f"r = {pearson_r(xs, ys):.2f} over {len(xs)} points", fontsize=9)  # a point: a (model, vector) pair
    fig.tight_layout()
    return fig
