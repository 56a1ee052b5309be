"""The few statistics the book uses, written out so a reader can see what they compute."""

from __future__ import annotations

from collections.abc import Sequence

import torch


def _vec(x) -> torch.Tensor:
    return torch.as_tensor(x, dtype=torch.float64).flatten()


def pearson_r(x: Sequence[float] | torch.Tensor, y: Sequence[float] | torch.Tensor) -> float:
    """Pearson correlation of two equal-length sequences (NaN if either is constant)."""
    x, y = _vec(x), _vec(y)
    if x.shape != y.shape or x.numel() < 2:
        raise ValueError(f"need two sequences of equal length >= 2, got {tuple(x.shape)} and {tuple(y.shape)}")
    xc, yc = x - x.mean(), y - y.mean()
    denom = xc.norm() * yc.norm()
    return float("nan") if denom == 0 else float((xc @ yc) / denom)


def ranks(x: Sequence[float] | torch.Tensor) -> torch.Tensor:
    """Average ranks (ties share the mean rank), 1-based."""
    x = _vec(x)
    order = torch.argsort(x, stable=True)
    r = torch.empty_like(x)
    r[order] = torch.arange(1, len(x) + 1, dtype=torch.float64)
    for v in torch.unique(x):
        tie = x == v
        r[tie] = r[tie].mean()
    return r


def spearman(x: Sequence[float] | torch.Tensor, y: Sequence[float] | torch.Tensor) -> float:
    """Spearman rank correlation: Pearson r of the ranks."""
    return pearson_r(ranks(x), ranks(y))


def cohens_d(pos: Sequence[float] | torch.Tensor, neg: Sequence[float] | torch.Tensor) -> float:
    """(mean(pos) - mean(neg)) / pooled standard deviation; NaNs are dropped."""
    a, b = _vec(pos), _vec(neg)
    a, b = a[~a.isnan()], b[~b.isnan()]
    if len(a) < 2 or len(b) < 2:
        raise ValueError("cohens_d needs at least 2 values on each side")
    pooled = (((len(a) - 1) * a.var() + (len(b) - 1) * b.var()) / (len(a) + len(b) - 2)).sqrt()
    return float((a.mean() - b.mean()) / pooled) if pooled > 0 else float("nan")
