"""The few statistics the book uses, written out so a reader can see what they compute."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence

import torch

from personalab.validate import positive_int, random_seed


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


def leave_one_out(stat, x: Sequence[float], y: Sequence[float]) -> list[float]:
    """``stat(x, y)`` recomputed without each point in turn (entry ``i``: point ``i`` left out).

    Does one point carry a correlation? The largest drop from ``stat(x, y)`` names it.
    """
    x, y = list(x), list(y)
    if len(x) != len(y) or len(x) < 3:
        raise ValueError(f"leave_one_out needs two sequences of equal length >= 3, got {len(x)} and {len(y)}")
    return [stat(x[:i] + x[i + 1 :], y[:i] + y[i + 1 :]) for i in range(len(x))]


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


# -- uncertainty and null baselines ---------------------------------------------------------


def bootstrap_ci(
    stat: Callable[[list[int]], float], n_units: int, *, n_boot: int = 1000, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``stat`` over ``n_units`` resampled with replacement.

    ``stat(indices)`` recomputes the statistic on the units at ``indices`` (a question
    drawn twice counts twice). Resampling *units* (questions), not single answers, keeps
    the answers to one question together, as they are not independent. Resamples where
    the statistic is undefined (NaN) are dropped; when that is half of them or more, the
    interval is NaN: the survivors are the resamples closest to the original sample, and
    an interval from them alone would be falsely narrow.
    """
    if n_units < 2:
        raise ValueError(f"bootstrap_ci needs at least 2 units to resample, got {n_units}")
    if not 0 < level < 1:
        raise ValueError(f"level must be between 0 and 1, got {level}")
    n_boot = positive_int(n_boot, "n_boot")
    gen = torch.Generator().manual_seed(random_seed(seed))
    draws = torch.randint(0, n_units, (n_boot, n_units), generator=gen).tolist()
    values = torch.tensor([stat(d) for d in draws], dtype=torch.float64)
    values = values[~values.isnan()]
    if values.numel() * 2 <= n_boot:
        return float("nan"), float("nan")
    lo, hi = torch.quantile(values, torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=torch.float64)).tolist()
    return lo, hi


def grouped_bootstrap_ci(
    stat: Callable[[list[int]], float], groups: Sequence[Hashable], *, n_boot: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """``bootstrap_ci`` that resamples *groups* of rows (e.g. questions), not single rows.

    ``groups[i]`` names row ``i``'s group; every draw picks groups with replacement and
    ``stat(rows)`` gets the row indices of the drawn groups (a group drawn twice counts
    twice). Answers to one question are not independent, so they are drawn together.
    """
    members: dict[Hashable, list[int]] = {}
    for i, g in enumerate(groups):
        members.setdefault(g, []).append(i)
    blocks = list(members.values())
    return bootstrap_ci(lambda draw: stat([i for b in draw for i in blocks[b]]), len(blocks), n_boot=n_boot, seed=seed)


def null_summary(value: float, null: Sequence[float] | torch.Tensor, ci: tuple[float, float] | None = None) -> dict:
    """Where ``value`` falls among ``null`` values (e.g. random directions of the same norm).

    Returns ``{value, ci_low, ci_high, null_p95, percentile}``: ``percentile`` is the share
    (0-100) of null values strictly below ``value``; the effect beats the null at the 5 %
    level when ``value`` (better: ``ci_low``) is above ``null_p95``.
    """
    x = _vec(null)
    x = x[~x.isnan()]
    if x.numel() == 0:
        raise ValueError("null_summary needs at least one finite null value")
    lo, hi = ci if ci is not None else (float("nan"), float("nan"))
    return {
        "value": float(value),
        "ci_low": lo,
        "ci_high": hi,
        "null_p95": float(torch.quantile(x, 0.95)),
        "percentile": float((x < value).double().mean() * 100),
    }


def shuffled_summary(value: float, null: Sequence[float] | torch.Tensor | None) -> dict[str, float]:
    """Where ``value`` falls among a second, label-shuffled null: ``{shuffled_p95,
    shuffled_percentile}`` as ``null_summary`` computes them, NaN when there is no such null
    (``null`` None or empty), so every control reports the same two keys beside its random one."""
    if null is None or len(null) == 0:
        return {"shuffled_p95": float("nan"), "shuffled_percentile": float("nan")}
    out = null_summary(value, null)
    return {"shuffled_p95": out["null_p95"], "shuffled_percentile": out["percentile"]}


def mean_ci(values: Sequence[float] | torch.Tensor, *, n_boot: int = 1000, seed: int = 0) -> tuple[float, float, float]:
    """The mean of ``values`` (one per question) with its 95 % bootstrap interval: ``(mean, low, high)``.

    Give per-question *differences* for a paired comparison (revised minus initial
    answer to the same question): resampling the differences keeps each pair together.
    """
    x = _vec(values)
    if x.isnan().any():
        raise ValueError("mean_ci() got NaN values: drop or fix them first")
    lo, hi = bootstrap_ci(lambda idx: float(x[idx].mean()), x.numel(), n_boot=n_boot, seed=seed)
    return float(x.mean()), lo, hi


def paired_d_summary(
    pos: Sequence[float] | torch.Tensor,
    neg: Sequence[float] | torch.Tensor,
    *,
    n_boot: int = 1000,
    n_null: int = 1000,
    seed: int = 0,
) -> dict[str, float]:
    """Cohen's d of paired scores (``pos[i]`` and ``neg[i]`` answer the same question) with its
    bootstrap interval and a sign-flip null: ``null_summary``'s keys plus ``n`` (complete pairs).

    The interval resamples pairs (questions); the null swaps the two sides of each pair with
    probability 1/2, which is what d looks like when the system prompt does not matter (the
    two answers to a question are then exchangeable). Pairs with a NaN on either side are
    left out of both. Why: a d from 20 questions is a point estimate, and with 20 pairs even
    a prompt that changes nothing gives |d| of a few tenths.
    """
    a, b = _vec(pos), _vec(neg)
    if a.shape != b.shape:
        raise ValueError(f"pos and neg must be paired (equal length), got {a.numel()} and {b.numel()}")
    keep = ~(a.isnan() | b.isnan())
    a, b = a[keep], b[keep]
    n = int(a.numel())
    if n < 2:
        raise ValueError(f"paired_d_summary needs at least 2 complete pairs, got {n}")
    value = cohens_d(a, b)
    ci = bootstrap_ci(lambda idx: _d_or_nan(a[idx], b[idx]), n, n_boot=n_boot, seed=seed)
    gen = torch.Generator().manual_seed(random_seed(seed) + 1)
    flips = torch.rand((positive_int(n_null, "n_null"), n), generator=gen) < 0.5
    null = [_d_or_nan(torch.where(f, b, a), torch.where(f, a, b)) for f in flips]
    return {**null_summary(value, null, ci), "n": n}


def _d_or_nan(a: torch.Tensor, b: torch.Tensor) -> float:
    """``cohens_d``, NaN where it is undefined (a resample with no spread)."""
    try:
        return cohens_d(a, b)
    except ValueError:
        return float("nan")
