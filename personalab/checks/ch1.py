"""Checks for chapter 1 (contrastive prompting and judging)."""

from __future__ import annotations

import math

from personalab.checks._core import ExerciseFailed, passed
from personalab.judges import logprob_weighted_score

_CASES = [
    {"80": math.log(0.5), "90": math.log(0.3), " the": math.log(0.2)},
    {" 7": math.log(0.6), "100": math.log(0.2), "101": math.log(0.1)},
    {"Yes": math.log(0.8), "50": math.log(0.1)},  # too little mass on numbers -> None
    {"0": math.log(0.9), "5": math.log(0.05)},
]


_MIN_MASSES = (0.25, 0.05, 0.6, 0.85)  # the default, and others that flip some cases to None


def check_logprob_weighted_score(fn) -> None:
    """Compare ``fn(top_logprobs, min_mass)`` with the reference on fixed cases, at the
    default ``min_mass`` and at others (a function that ignores its argument fails)."""
    for case, min_mass in ((c, m) for m in _MIN_MASSES for c in _CASES):
        want = logprob_weighted_score(case, min_mass=min_mass)
        got = fn(dict(case)) if min_mass == 0.25 else fn(dict(case), min_mass=min_mass)
        if want is None:
            if got is not None:
                raise ExerciseFailed(
                    f"for {case} the numbers carry < {min_mass} probability (min_mass={min_mass}): "
                    f"expected None, got {got}"
                )
            continue
        if got is None or not math.isclose(got, want, rel_tol=1e-6):
            raise ExerciseFailed(
                f"for top_logprobs={ {k: round(math.exp(v), 2) for k, v in case.items()} } "
                f"(as probabilities) and min_mass={min_mass}, expected {want:.3f}, got {got}. Did you "
                "normalise by the mass on numbers, skip tokens above 100 and use min_mass?"
            )
    passed("logprob-weighted judge score")
