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
    check_mean_over_response(lambda h, n_prompt, n_total: h[:, h.shape[1] - n_total + n_prompt :].mean(1))
    with pytest.raises(ExerciseFailed, match="LEFT-padded"):
        check_mean_over_response(lambda h, n_prompt, n_total: h[:, n_prompt:].mean(1))
    with pytest.raises(ExerciseFailed):
        check_mean_over_response(lambda h, n_prompt, n_total: None)


def test_persona_vector_check():
    check_persona_vector(lambda p, n: p.mean(0) - n.mean(0))
    with pytest.raises(ExerciseFailed):
        check_persona_vector(lambda p, n: (p - n.mean(0)).sum(0))
    with pytest.raises(ExerciseFailed):  # pair by pair: wrong when the counts differ
        check_persona_vector(lambda p, n: (p[: len(n)] - n[: len(p)]).mean(0))
    with pytest.raises(ExerciseFailed):  # averaged over layers instead of answers
        check_persona_vector(lambda p, n: p.mean(1) - n.mean(1))
    with pytest.raises(ExerciseFailed):
        check_persona_vector(lambda p, n: None)


def _keep_pairs(
    pt,
    nt,
    pc,
    nc,
    pos_min=50,
    neg_max=50,
    coherence_min=50,
    *,
    pos_ge=True,
    neg_lt=True,
    neg_coherence=True,
    none_passes=False,
    use_kwargs=True,
):
    """The pair filter, with switches that turn it into the plausible wrong answers."""
    if not use_kwargs:
        pos_min = neg_max = coherence_min = 50

    def ok(x, test):
        return none_passes if x is None else test(x)

    keep = []
    for k in range(len(pt)):
        pos_ok = ok(pt[k], (lambda v: v >= pos_min) if pos_ge else (lambda v: v > pos_min))
        neg_ok = ok(nt[k], (lambda v: v < neg_max) if neg_lt else (lambda v: v <= neg_max))
        coh_ok = ok(pc[k], lambda v: v >= coherence_min) and (
            not neg_coherence or ok(nc[k], lambda v: v >= coherence_min)
        )
        if pos_ok and neg_ok and coh_ok:
            keep.append(k)
    return keep


def test_pair_filter_check_rejects_threshold_none_and_argument_slips():
    from functools import partial

    from personalab.checks import check_pair_filter

    check_pair_filter(_keep_pairs)
    for wrong in (
        {"pos_ge": False},
        {"neg_lt": False},
        {"neg_coherence": False},
        {"none_passes": True},
        {"use_kwargs": False},
    ):
        with pytest.raises(ExerciseFailed):
            check_pair_filter(partial(_keep_pairs, **wrong))

    def crashes_on_none(pt, nt, pc, nc, pos_min=50, neg_max=50, coherence_min=50):
        return [
            k
            for k in range(len(pt))
            if pt[k] >= pos_min and nt[k] < neg_max and pc[k] >= coherence_min and nc[k] >= coherence_min
        ]

    with pytest.raises(ExerciseFailed, match="None"):
        check_pair_filter(crashes_on_none)


def test_choose_layer_check_rejects_band_nan_and_offset_slips():
    import torch

    from personalab.checks import check_choose_layer
    from personalab.vectors import choose_layer

    def reference(sep, lo_frac=0.3, hi_frac=0.6):
        return choose_layer({"separation": sep}, lo_frac, hi_frac)

    def band(sep, lo_frac, hi_frac):
        n = sep.shape[0] - 1
        return max(1, round(lo_frac * n)), max(1, round(hi_frac * n))

    def whole_range(sep, lo_frac=0.3, hi_frac=0.6):
        return int(torch.argmax(sep.nan_to_num(-1.0)))

    def index_in_band(sep, lo_frac=0.3, hi_frac=0.6):
        lo, hi = band(sep, lo_frac, hi_frac)
        return int(torch.argmax(sep[lo : hi + 1].nan_to_num(-1.0)))

    def hi_excluded(sep, lo_frac=0.3, hi_frac=0.6):
        lo, hi = band(sep, lo_frac, hi_frac)
        return lo + int(torch.argmax(sep[lo:hi].nan_to_num(-1.0)))

    def nan_wins(sep, lo_frac=0.3, hi_frac=0.6):
        lo, hi = band(sep, lo_frac, hi_frac)
        return lo + int(torch.argmax(sep[lo : hi + 1]))

    def default_band(sep, lo_frac=0.3, hi_frac=0.6):
        return reference(sep)

    check_choose_layer(reference)
    for wrong in (whole_range, index_in_band, hi_excluded, nan_wins, default_band):
        with pytest.raises(ExerciseFailed):
            check_choose_layer(wrong)
    with pytest.raises(ExerciseFailed, match="position inside the band"):
        check_choose_layer(index_in_band)
    with pytest.raises(ExerciseFailed, match="NaN"):
        check_choose_layer(nan_wins)


def test_contrastive_prompts_check():
    from personalab.checks import check_contrastive_prompts
    from personalab.extraction import contrastive_prompts
    from personalab.prompting import chat_prompt

    check_contrastive_prompts(contrastive_prompts)

    def one_instruction(tok, trait, questions, instructions_per_question=1):  # always pair 0
        return [
            (
                q,
                0,
                chat_prompt(tok, q, trait.system_prompt(0, True)),
                chat_prompt(tok, q, trait.system_prompt(0, False)),
            )
            for q in questions
            for _ in range(instructions_per_question)
        ]

    def swapped(tok, trait, questions, instructions_per_question=1):
        return [(q, i, n, p) for q, i, p, n in contrastive_prompts(tok, trait, questions, instructions_per_question)]

    def ignores_argument(tok, trait, questions, instructions_per_question=1):
        return contrastive_prompts(tok, trait, questions, 1)

    def off_by_one(tok, trait, questions, instructions_per_question=1):
        n = len(trait.instructions)
        return [
            (
                q,
                (j + k + 1) % n,
                chat_prompt(tok, q, trait.system_prompt((j + k + 1) % n, True)),
                chat_prompt(tok, q, trait.system_prompt((j + k + 1) % n, False)),
            )
            for j, q in enumerate(questions)
            for k in range(instructions_per_question)
        ]

    def no_system_prompt(tok, trait, questions, instructions_per_question=1):  # instruction pasted into the question
        return [
            (
                q,
                i,
                chat_prompt(tok, trait.system_prompt(i, True) + " " + q),
                chat_prompt(tok, trait.system_prompt(i, False) + " " + q),
            )
            for q, i, _, _ in contrastive_prompts(tok, trait, questions, instructions_per_question)
        ]

    def no_wrap(tok, trait, questions, instructions_per_question=1):  # index runs past the 5 pairs
        return [
            (q, j + k, p, n)
            for (j, q), k, (_, _, p, n) in zip(
                ((j, q) for j, q in enumerate(questions) for _ in range(instructions_per_question)),
                (k for _ in questions for k in range(instructions_per_question)),
                contrastive_prompts(tok, trait, questions, instructions_per_question),
                strict=True,
            )
        ]

    for wrong in (one_instruction, swapped, ignores_argument, off_by_one, no_system_prompt, no_wrap):
        with pytest.raises(ExerciseFailed):
            check_contrastive_prompts(wrong)


def test_contrastive_prompts_rejects_bad_count():
    from personalab import traits
    from personalab.extraction import contrastive_prompts
    from personalab.models import tiny_model

    tok, sad = tiny_model().tokenizer, traits.load("sad")
    with pytest.raises(ValueError, match="1..5"):
        contrastive_prompts(tok, sad, ["q?"], 6)
    with pytest.raises(TypeError):
        contrastive_prompts(tok, sad, ["q?"], 1.5)
