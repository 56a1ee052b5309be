"""Chapter 1-2 checks accept the reference solution and reject wrong answers."""

import math

import pytest

from personalab.checks import (
    ExerciseFailed,
    check_logprob_weighted_score,
    check_mean_over_response,
    check_persona_vector,
)
from personalab.judges import logprob_weighted_score


def test_judge_score_check():
    check_logprob_weighted_score(logprob_weighted_score)

    def unnormalised(top, min_mass=0.25):
        return sum(math.exp(v) * int(k) for k, v in top.items() if k.strip().isdigit() and int(k) <= 100)

    def no_none(top, min_mass=0.25):
        return logprob_weighted_score(top, min_mass=0.0)

    def ignores_min_mass(top, min_mass=0.25):  # passes when called with the default only
        return logprob_weighted_score(top)

    def hard_coded_threshold(top, min_mass=0.25):
        return logprob_weighted_score(top, min_mass=0.25 if min_mass < 0.5 else min_mass)

    for wrong in (unnormalised, no_none, ignores_min_mass, hard_coded_threshold):
        with pytest.raises(ExerciseFailed):
            check_logprob_weighted_score(wrong)


def test_response_mean_check():
    check_mean_over_response(lambda h, n_prompt, n_total: h[:, h.shape[1] - n_total + n_prompt:].mean(1))
    with pytest.raises(ExerciseFailed, match="LEFT-padded"):
        check_mean_over_response(lambda h, n_prompt, n_total: h[:, n_prompt:].mean(1))
    with pytest.raises(ExerciseFailed):
        check_mean_over_response(lambda h, n_prompt, n_total: None)


def test_persona_vector_check():
    check_persona_vector(lambda p, n: p.mean(0) - n.mean(0))
    with pytest.raises(ExerciseFailed):
        check_persona_vector(lambda p, n: (p - n.mean(0)).sum(0))
