"""Plots for the steering chapter: sweep heatmaps and coefficient curves."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from personalab.plotting import interval_errorbars


def plot_sweep_heatmaps(rows: list[dict], title: str = ""):
    """Trait, coherence and repetition over a layer x coefficient grid (rows from ``steering.sweep``)."""
    layers = sorted({r["layer"] for r in rows})
    coefs = sorted({r["coef"] for r in rows})
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.2))
    for ax, key, cmap, vmax in zip(
        axes, ("trait", "coherence", "repetition"), ("Reds", "Greens", "Purples"), (100, 100, None), strict=True
    ):
        grid = np.full((len(layers), len(coefs)), np.nan)
        for r in rows:
            grid[layers.index(r["layer"]), coefs.index(r["coef"])] = r[key]
        im = ax.imshow(grid, cmap=cmap, vmin=0, vmax=vmax, aspect="auto")
        ax.set_xticks(range(len(coefs)), [f"{c:g}" for c in coefs])
        ax.set_yticks(range(len(layers)), layers)
        ax.set_xlabel("coef (× residual norm)")
        ax.set_ylabel("layer")
        ax.set_title(key)
        for i in range(len(layers)):
            for j in range(len(coefs)):
                ax.text(
                    j,
                    i,
                    f"{grid[i, j]:.2g}" if key == "repetition" else f"{grid[i, j]:.0f}",
                    ha="center",
                    va="center",
                    fontsize=7,
                )
        fig.colorbar(im, ax=ax)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_coef_curves(curves: dict[str, list[dict]], keys=("trait", "coherence", "repetition", "capability")):
    """One panel per metric, one line per trait, against the steering coefficient.

    Where the rows carry an interval for a metric (``<key>_ci``, as ``sweep`` gives for
    trait and coherence: 95 % bootstrap over the questions), it is drawn as error bars.
    """
    fig, axes = plt.subplots(1, len(keys), figsize=(3.4 * len(keys), 3))
    for ax, key in zip(axes, keys, strict=True):
        for name, rows in curves.items():
            pts = [r for r in rows if r.get(key) is not None]
            xs, ys = [r["coef"] for r in pts], [r[key] for r in pts]
            (line,) = ax.plot(xs, ys, marker="o", label=name)
            cis = [ci for r in pts if (ci := r.get(f"{key}_ci")) is not None]
            if pts and len(cis) == len(pts):
                interval_errorbars(ax, xs, ys, cis, ecolor=line.get_color(), alpha=0.7)
        ax.set_xlabel("coef (× residual norm)")
        ax.set_title(key)
        if key in ("trait", "coherence"):
            ax.axhline(50, c="gray", lw=0.6, ls="--")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    return fig
