"""Checks for chapter 2 (activation extraction)."""

from __future__ import annotations

import torch

from personalab.checks._core import ExerciseFailed, assert_close, passed
from personalab.extraction import mean_difference


def _reference_response_mean(hidden: torch.Tensor, n_prompt: int, n_total: int) -> torch.Tensor:
    seq = hidden.shape[1]
    return hidden[:, seq - n_total + n_prompt:].mean(1)


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
            raise ExerciseFailed(f"{err}. Remember the row is LEFT-padded: the text occupies the last "
                                 "n_total positions, and the response the last n_total - n_prompt of them.") from None
    passed("mean over response tokens")


def check_persona_vector(fn) -> None:
    """``fn(pos [n, layers, d], neg [m, layers, d]) -> [layers, d]`` = mean(pos) - mean(neg)."""
    torch.manual_seed(1)
    pos, neg = torch.randn(5, 4, 8) + 1, torch.randn(3, 4, 8)
    got = fn(pos.clone(), neg.clone())
    assert_close(got, mean_difference(pos, neg), "persona vector (different numbers of pos and neg answers)")
    passed("persona vector = mean(h+) - mean(h-)")
