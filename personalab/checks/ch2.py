"""Checks for chapter 2 (activation extraction)."""

from __future__ import annotations

import torch

from personalab.checks._core import ExerciseFailed, assert_close, call, passed
from personalab.extraction import mean_difference


def _reference_response_mean(hidden: torch.Tensor, n_prompt: int, n_total: int) -> torch.Tensor:
    seq = hidden.shape[1]
    return hidden[:, seq - n_total + n_prompt :].mean(1)


def check_mean_over_response(fn) -> None:
    """``fn(hidden [layers, seq, d], n_prompt, n_total) -> [layers, d]`` on left-padded rows."""
    torch.manual_seed(0)
    for seq, n_prompt, n_total in ((12, 5, 12), (15, 4, 9), (7, 6, 7)):
        hidden = torch.randn(3, seq, 8)
        want = _reference_response_mean(hidden, n_prompt, n_total)
        got = fn(hidden.clone(), n_prompt, n_total)
        try:
            assert_close(got, want, f"seq={seq}, n_prompt={n_prompt}, n_total={n_total}")
        except ExerciseFailed as err:
            raise ExerciseFailed(
                f"{err}. Remember the row is LEFT-padded: the text occupies the last "
                "n_total positions, and the response the last n_total - n_prompt of them."
            ) from None
    passed("mean over response tokens")


def check_persona_vector(fn) -> None:
    """``fn(pos [n, layers, d], neg [m, layers, d]) -> [layers, d]`` = mean(pos) - mean(neg)."""
    torch.manual_seed(1)
    pos, neg = torch.randn(5, 4, 8) + 1, torch.randn(3, 4, 8)
    got = call(fn, pos.clone(), neg.clone())
    assert_close(got, mean_difference(pos, neg), "persona vector (different numbers of pos and neg answers)")
    passed("persona vector = mean(h+) - mean(h-)")


# -- Exercise 2.1: the paper's pair filter ----------------------------------------------------


def _reference_keep(pos_trait, neg_trait, pos_coh, neg_coh, **thresholds) -> list[int]:
    """The library's ``filter_pairs`` on a ContrastiveSet built from the four score lists."""
    from personalab.extraction import ContrastiveSet, filter_pairs
    from personalab.judges import JudgeScore

    n = len(pos_trait)
    cset = ContrastiveSet(
        "check",
        ["q"] * n,
        [0] * n,
        ["p+"] * n,
        ["p-"] * n,
        ["a"] * n,
        ["b"] * n,
        [JudgeScore(t, c) for t, c in zip(pos_trait, pos_coh, strict=True)],
        [JudgeScore(t, c) for t, c in zip(neg_trait, neg_coh, strict=True)],
    )
    try:
        return filter_pairs(cset, **thresholds)
    except ValueError:  # no pair survives: the library raises, the exercise returns []
        return []


# each case: p+ trait, p- trait, p+ coherence, p- coherence (None = the judge abstained)
_PAIR_CASES: list[tuple[list, list, list, list]] = [
    ([80, 50, 49.9, 90, 70, 95], [10, 20, 10, 50, 49.9, 5], [90, 60, 80, 70, 50, 88], [85, 70, 90, 60, 50, 40]),
    ([None, 75, 60, 100], [5, None, 30, 0], [90, 80, None, 70], [80, 90, 60, None]),
]


def check_pair_filter(fn) -> None:
    """``fn(pos_trait, neg_trait, pos_coherence, neg_coherence, pos_min=50, neg_max=50, coherence_min=50)``
    -> indices of the pairs to keep (p+ trait >= pos_min, p- trait < neg_max, both coherence
    >= coherence_min; a missing score never passes)."""
    runs: list[tuple[tuple[list, list, list, list], dict[str, float]]] = [(case, {}) for case in _PAIR_CASES] + [
        (_PAIR_CASES[0], {"pos_min": 70, "neg_max": 15, "coherence_min": 80})
    ]
    for (pt, nt, pc, nc), kw in runs:
        want = _reference_keep(pt, nt, pc, nc, **kw)
        try:
            got = fn(list(pt), list(nt), list(pc), list(nc), **kw)
        except TypeError as err:
            raise ExerciseFailed(
                f"your function failed with TypeError ({err}): a score can be None when "
                "the judge abstained, and such a pair is never kept"
            ) from None
        if got is None:
            raise ExerciseFailed("your function returned None (did you forget `return`?)")
        got = [int(i) for i in got]
        if got != want:
            hint = (
                "a score exactly at the threshold: p+ needs trait >= pos_min, p- needs trait < neg_max, "
                "and both answers coherence >= coherence_min"
            )
            if kw:
                hint = f"called with {kw}: use the thresholds passed in, not 50"
            raise ExerciseFailed(
                f"for p+ trait {pt}, p- trait {nt}, p+ coherence {pc}, p- coherence {nc}"
                f"{' and ' + str(kw) if kw else ''}: expected indices {want}, got {got}. "
                f"Check {hint}."
            )
    passed("the paper's pair filter")


# -- Exercise 2.4: choosing the layer -----------------------------------------------------------


def check_choose_layer(fn) -> None:
    """``fn(separation [L+1], lo_frac=0.3, hi_frac=0.6) -> layer``: the best-separating layer
    within ``[round(lo_frac * L), round(hi_frac * L)]`` (both ends included, L = number of
    blocks, never layer 0), NaN separations ignored."""
    from personalab.vectors import choose_layer

    gen = torch.Generator().manual_seed(4)
    cases: list[tuple[torch.Tensor, dict[str, float]]] = []
    sep = torch.rand(31, generator=gen)
    sep[30], sep[2] = 5.0, 4.0  # the global maxima lie outside the middle band
    cases.append((sep, {}))
    sep = torch.rand(31, generator=gen)
    sep[18] = 3.0  # hi end of the band (round(0.6 * 30) = 18) is included
    cases.append((sep, {}))
    sep = torch.rand(31, generator=gen)
    sep[12], sep[13] = float("nan"), 2.0  # a NaN would win torch.argmax
    cases.append((sep, {}))
    sep = torch.rand(13, generator=gen)
    sep[9] = 2.0
    cases.append((sep, {"lo_frac": 0.5, "hi_frac": 0.8}))
    for sep, kw in cases:
        want = choose_layer({"separation": sep.clone()}, **kw)
        got = call(fn, sep.clone(), **kw)
        if got is None:
            raise ExerciseFailed("your function returned None (did you forget `return`?)")
        got = int(got)
        if got == want:
            continue
        n = sep.shape[0] - 1
        lo, hi = max(1, round(kw.get("lo_frac", 0.3) * n)), max(1, round(kw.get("hi_frac", 0.6) * n))
        if got == want - lo:
            hint = "you returned the position inside the band; add the band's first layer"
        elif torch.isnan(sep[got]) if 0 <= got <= n else False:
            hint = "you picked a NaN separation: torch.argmax treats NaN as the largest value (use nan_to_num)"
        elif not lo <= got <= hi:
            hint = f"layer {got} is outside the band {lo}..{hi} (both ends included)"
        else:
            hint = "another layer in the band separates better"
        raise ExerciseFailed(
            f"for {n} blocks{' and ' + str(kw) if kw else ''}: expected layer {want}, got {got}: {hint}"
        )
    passed("choosing the layer")
