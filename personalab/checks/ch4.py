"""Checks for chapter 4 (monitoring): projection, Pearson r, and the alert rule."""

from __future__ import annotations

import torch

from personalab.checks._core import ExerciseFailed, assert_close, passed
from personalab.monitoring import first_alert
from personalab.stats import pearson_r
from personalab.vectors import project


def check_projection(fn) -> None:
    """``fn(acts [..., d], direction [d]) -> [...]``: scalar projection on the *unit* direction."""
    torch.manual_seed(0)
    direction = 3.0 * torch.randn(8)  # deliberately not unit length
    for shape in ((8,), (5, 8), (2, 3, 8)):
        acts = torch.randn(*shape) + 0.5
        got = fn(acts.clone(), direction.clone())
        want = project(acts, direction)
        if got is not None and torch.as_tensor(got).shape == want.shape:
            scaled = acts @ direction
            if torch.allclose(torch.as_tensor(got, dtype=torch.float32), scaled, atol=1e-4):
                raise ExerciseFailed(
                    "your projection scales with the length of the direction: divide the "
                    "direction by its norm first (a persona vector's length is not meaningful)"
                )
        assert_close(got, want, f"acts of shape {shape}")
    passed("projection on the unit direction")


def _pearson_hint(got: float, x: torch.Tensor, y: torch.Tensor) -> str:
    """Name the usual mistake behind a wrong correlation."""
    from personalab.stats import spearman

    if abs(got - float(torch.nn.functional.cosine_similarity(x, y, dim=0))) < 1e-4:
        return "center both sequences (subtract their means) before the dot product"
    if abs(got - spearman(x, y)) < 1e-4:
        return "Pearson uses the values themselves, not their ranks"
    if abs(got) > 1 + 1e-6:
        return "divide the covariance by the product of both standard deviations (computed the same way)"
    return "r = sum((x - mean x)(y - mean y)) / sqrt(sum((x - mean x)^2) * sum((y - mean y)^2))"


def check_pearson(fn) -> None:
    """``fn(x [n], y [n]) -> float``: Pearson correlation of two 1-D tensors."""
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(40, dtype=torch.float64, generator=gen) * 4 + 10  # far from zero mean on purpose
    noise = torch.randn(40, dtype=torch.float64, generator=gen)
    cases = {
        "correlated data": (x, 0.5 * x + noise + 3),
        "negatively correlated data": (x, -2 * x + 5 * noise),
        "a monotone but curved relation": (x, torch.exp(x / 3)),
    }
    for what, (a, b) in cases.items():
        got = fn(a.clone(), b.clone())
        if got is None:
            raise ExerciseFailed(f"{what}: your function returned None (did you forget `return`?)")
        got, want = float(got), pearson_r(a, b)
        if not abs(got - want) <= 1e-4:
            raise ExerciseFailed(f"{what}: expected r = {want:.4f}, got {got:.4f}. Hint: {_pearson_hint(got, a, b)}")
    passed("Pearson correlation")


# (projections, threshold, window, what the case tests, hint when it fails)
_ALERT_CASES = [
    (
        [0.0, 0.1, 0.2, 2.5, 0.1, 0.0, 2.0, 2.0, 2.0],
        1.0,
        3,
        "a single spike is averaged away",
        "compare the MEAN of the last `window` values (token t included) with the threshold, not one value",
    ),
    (
        [5.0, 0.0, 0.0, 0.0, 0.0],
        2.0,
        4,
        "a high first token (the window is not full yet)",
        "while the window is not full, average the tokens seen so far: projections[max(0, t - window + 1): t + 1]",
    ),
    (
        [0.0, 1.0, 1.0, 1.0, 1.0, 1.5, 1.5],
        1.0,
        2,
        "a rolling mean exactly at the threshold",
        "alert only when the mean is strictly greater than the threshold",
    ),
    (
        [0.0, 0.5, 0.2, 0.4],
        1.0,
        2,
        "no crossing at all",
        "return None (not -1, False or the length) when the rolling mean never exceeds the threshold",
    ),
    (
        [0.0, 2.0, 0.0, 2.0, 2.0],
        0.9,
        1,
        "window 1 (every token on its own)",
        "with window=1 the rolling mean is the token's own projection",
    ),
]


def check_alert_rule(fn) -> None:
    """``fn(projections: list[float], threshold, window) -> int | None``: the Monitor's alert rule.

    The first token index ``t`` where the mean of the last ``window`` projections (fewer
    at the start: ``projections[max(0, t - window + 1): t + 1]``) is strictly above
    ``threshold``; ``None`` when it never is.
    """
    for proj, thr, window, what, hint in _ALERT_CASES:
        want = first_alert(proj, thr, window)
        got = fn(list(proj), thr, window)
        if isinstance(got, bool) or got != want:
            raise ExerciseFailed(
                f"{what} (projections={proj}, threshold={thr}, window={window}): "
                f"expected {want}, got {got!r}. Hint: {hint}"
            )
    passed("rolling-mean alert rule")
