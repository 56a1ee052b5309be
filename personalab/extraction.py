"""Turning contrastive answers into a persona vector: generate, judge, filter, average, subtract.

The activations come from ``personalab.activations`` (layer convention: index 0 =
embeddings, index i = output of decoder block i, ``n_layers + 1`` rows).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from personalab.activations import POOLINGS, answer_activations
from personalab.config import settings as run_settings
from personalab.judges import Judge, JudgeScore, SplitJudge, judge_key
from personalab.models import d_model, model_id, n_layers, precision_key
from personalab.options import Pooling, QuestionSplit
from personalab.prompting import chat_prompt, generate, generate_reading_response
from personalab.traits import Trait
from personalab.validate import integer, positive_int
from personalab.vectors import (
    MIN_HELDOUT_PAIRS,
    MIN_SPLIT_PAIRS,
    PersonaVector,
    choose_layer,
    heldout_separation,
    layer_diagnostics,
    stability_curve,
)

# -- contrastive answers ------------------------------------------------------------------


@dataclass
class ContrastiveSet:
    """Answers to the same questions under p+ and p-, with their judge scores.

    Row ``k`` of the pos and neg lists is one *pair*: the same question under
    instruction pair ``instruction[k]``, once eliciting and once suppressing the trait.
    ``reads_pos``/``reads_neg``, where the generation read them (``read_responses``), hold
    each answer's ``"response"`` and ``"response_norm"`` activations from that same pass.
    """

    trait: str
    questions: list[str]
    instruction: list[int]
    prompts_pos: list[str]
    prompts_neg: list[str]
    answers_pos: list[str]
    answers_neg: list[str]
    scores_pos: list[JudgeScore] = field(default_factory=list)
    scores_neg: list[JudgeScore] = field(default_factory=list)
    settings: dict = field(default_factory=dict)
    reads_pos: dict[str, torch.Tensor] | None = None
    reads_neg: dict[str, torch.Tensor] | None = None

    def __len__(self) -> int:
        return len(self.questions)

    def trait_scores(self, positive: bool) -> torch.Tensor:
        """Judged trait scores (NaN where the judge abstained)."""
        sc = self.scores_pos if positive else self.scores_neg
        return torch.tensor([float("nan") if s.trait is None else s.trait for s in sc])

    def extended(self, more: ContrastiveSet, settings: dict) -> ContrastiveSet:
        """This set's pairs followed by ``more``'s (same trait, both judged or both not),
        under ``settings``: what escalation uses to add pairs without re-asking these."""
        if more.trait != self.trait:
            raise ValueError(f"cannot join pairs of {self.trait!r} and {more.trait!r}")
        if bool(self.scores_pos) != bool(more.scores_pos):
            raise ValueError("join two judged sets or two unjudged ones")
        return ContrastiveSet(
            self.trait,
            self.questions + more.questions,
            self.instruction + more.instruction,
            self.prompts_pos + more.prompts_pos,
            self.prompts_neg + more.prompts_neg,
            self.answers_pos + more.answers_pos,
            self.answers_neg + more.answers_neg,
            self.scores_pos + more.scores_pos,
            self.scores_neg + more.scores_neg,
            settings=settings,
            reads_pos=_joined(self.reads_pos, more.reads_pos),
            reads_neg=_joined(self.reads_neg, more.reads_neg),
        )


def _joined(a: dict[str, torch.Tensor] | None, b: dict[str, torch.Tensor] | None) -> dict[str, torch.Tensor] | None:
    """Two sets' reads one after the other; None unless both have them."""
    return None if a is None or b is None else {k: torch.cat([a[k], b[k]]) for k in a}


def contrastive_prompts(
    tokenizer, trait: Trait, questions: list[str], instructions_per_question: int = 1, *, skip: int = 0
) -> list[tuple[str, int, str, str]]:
    """Every contrastive pair's ``(question, instruction index, p+ prompt, p- prompt)``, in order.

    Question ``j`` is asked under instruction pairs ``(j + k) % n`` for ``k`` in
    ``0 .. instructions_per_question - 1`` (``n`` = the trait's instruction pairs): with 1,
    each question gets one pair and the pairs rotate over the questions; with ``n``, every
    question gets every pair, as in the paper. Each prompt is the model's chat template
    with the instruction as the system prompt (``chat_prompt``), so p+ and p- differ only
    in that instruction. ``skip`` leaves out each question's first ``skip`` pairs (those a
    smaller setting has already asked).
    """
    n = len(trait.instructions)
    instructions_per_question = positive_int(instructions_per_question, "instructions_per_question")
    if instructions_per_question > n:
        raise ValueError(f"instructions_per_question must be 1..{n} (trait {trait.name!r} has {n} instruction pairs)")
    skip = integer(skip, "skip")
    if not 0 <= skip < instructions_per_question:
        raise ValueError(f"skip must be a whole number in 0..{instructions_per_question - 1}, got {skip!r}")
    pairs = []
    for j, q in enumerate(questions):
        for k in range(skip, instructions_per_question):
            i = (j + k) % n
            pairs.append(
                (
                    q,
                    i,
                    chat_prompt(tokenizer, q, trait.system_prompt(i, True)),
                    chat_prompt(tokenizer, q, trait.system_prompt(i, False)),
                )
            )
    return pairs


def generate_contrastive(
    model,
    trait: Trait,
    *,
    split: QuestionSplit = "extraction",
    instructions_per_question: int = 1,
    skip: int = 0,
    max_new_tokens: int = 48,
    temperature: float = 0.0,
    seed: int = 0,
    batch_size: int = 128,
) -> ContrastiveSet:
    """Answer each question under p+ and p- (step 1 of the method).

    With ``instructions_per_question=1`` question ``j`` uses instruction pair ``j % 5``
    (20 pairs for 20 questions: what fits a laptop); ``5`` uses every pair for every
    question, as the paper does (100 pairs). ``skip`` leaves out each question's first
    ``skip`` pairs (``contrastive_prompts``).
    """
    kw: dict[str, Any] = dict(max_new_tokens=max_new_tokens, temperature=temperature, seed=seed, batch_size=batch_size)
    return generate_contrastive_many(
        model, [trait], split=split, instructions_per_question=instructions_per_question, skip=skip, **kw
    )[0]


def generate_contrastive_many(
    model,
    traits: Sequence[Trait],
    *,
    split: QuestionSplit = "extraction",
    instructions_per_question: int = 1,
    skip: int = 0,
    max_new_tokens: int = 48,
    temperature: float = 0.0,
    seed: int = 0,
    batch_size: int = 128,
    read_responses: bool = False,
) -> list[ContrastiveSet]:
    """``generate_contrastive`` for several traits in one ``generate`` call, one set per trait.

    Why: ``generate`` sorts all prompts by length and fills batches of ``batch_size``, and a
    full batch runs more tokens per second than the 40-prompt batch one trait's 20 pairs
    make (``generate``'s docstring has the numbers). Each trait's prompts are the ones
    ``generate_contrastive`` builds; with one trait the call (and its cache entries) is
    exactly ``generate_contrastive``'s. ``read_responses=True`` also keeps each answer's
    activations, read while it was generated (``prompting.generate_reading_response``), in
    the sets' ``reads_pos``/``reads_neg``: extraction then needs no second pass.
    """
    traits = list(traits)
    if not traits or not all(isinstance(t, Trait) for t in traits):
        raise TypeError("traits must be a non-empty list of Trait objects (traits.load(name))")
    if len({t.name for t in traits}) != len(traits):
        raise ValueError(f"each trait may appear once, got {[t.name for t in traits]}")
    columns = []
    for trait in traits:
        if split not in trait.questions:
            raise ValueError(f"split must be one of {sorted(trait.questions)}, got {split!r}")
        questions = trait.questions[split]
        if not questions:
            raise ValueError(f"trait {trait.name!r} has no {split!r} questions")
        pairs = contrastive_prompts(model.tokenizer, trait, questions, instructions_per_question, skip=skip)
        columns.append([list(column) for column in zip(*pairs, strict=True)])
    prompts = [p for _, _, p_pos, p_neg in columns for p in p_pos + p_neg]
    kw: dict[str, Any] = dict(max_new_tokens=max_new_tokens, temperature=temperature, seed=seed, batch_size=batch_size)
    desc = f"{traits[0].name} p+/p-" if len(traits) == 1 else f"{len(traits)} traits p+/p-"
    reads: dict[str, torch.Tensor] | None = None
    if read_responses:
        answers, reads = generate_reading_response(model, prompts, desc=desc, **kw)  # one call: fuller batches
    else:
        answers = generate(model, prompts, desc=desc, **kw)
    settings = {"split": split, "instructions_per_question": instructions_per_question, "skip": skip, **kw}
    sets, start = [], 0
    for trait, (qs, idx, p_pos, p_neg) in zip(traits, columns, strict=True):
        n = len(p_pos)
        a_pos, a_neg = answers[start : start + n], answers[start + n : start + 2 * n]
        r_pos = None if reads is None else {k: v[start : start + n] for k, v in reads.items()}
        r_neg = None if reads is None else {k: v[start + n : start + 2 * n] for k, v in reads.items()}
        start += 2 * n
        sets.append(
            ContrastiveSet(
                trait.name,
                qs,
                idx,
                p_pos,
                p_neg,
                a_pos,
                a_neg,
                settings=dict(settings),
                reads_pos=r_pos,
                reads_neg=r_neg,
            )
        )
    return sets


def judge_contrastive(
    cset: ContrastiveSet,
    trait: Trait,
    judge: Judge,
    *,
    coherence: bool = True,
    coherence_for: tuple[float, float] | None = None,
) -> ContrastiveSet:
    """Fill in the judge scores of both sides (step 2 of the method).

    ``coherence=False`` skips the coherence half where the judge allows it (the
    ``EmbeddingJudge`` then only embeds, which is much cheaper than scoring fluency).
    ``coherence_for=(pos_min, neg_max)`` scores coherence only for the pairs whose trait
    scores pass those thresholds (p+ >= pos_min, p- < neg_max) and leaves it None for the
    rest, which the pair filter drops whatever their coherence: with the ``EmbeddingJudge``
    a trait score is a sentence embedding, a coherence score a forward pass of the model.
    A judge without separate ``trait_scores`` and ``coherence_scores`` scores every answer.
    """
    if not isinstance(judge, SplitJudge) or (coherence and coherence_for is None):
        cset.scores_pos, cset.scores_neg = (
            judge.score(trait, cset.questions, a) for a in (cset.answers_pos, cset.answers_neg)
        )
        return cset
    t_pos, t_neg = judge.trait_scores(trait, cset.answers_pos), judge.trait_scores(trait, cset.answers_neg)
    c_pos: list[float | None] = [None] * len(cset)
    c_neg: list[float | None] = [None] * len(cset)
    if coherence and coherence_for is not None:
        pos_min, neg_max = coherence_for
        rows = [k for k in range(len(cset)) if _passes(t_pos[k], t_neg[k], pos_min, neg_max)]
        qs = [cset.questions[k] for k in rows]
        both = judge.coherence_scores(
            qs + qs, [cset.answers_pos[k] for k in rows] + [cset.answers_neg[k] for k in rows]
        )
        for k, cp, cn in zip(rows, both[: len(rows)], both[len(rows) :], strict=True):
            c_pos[k], c_neg[k] = cp, cn
    cset.scores_pos = [JudgeScore(t, c) for t, c in zip(t_pos, c_pos, strict=True)]
    cset.scores_neg = [JudgeScore(t, c) for t, c in zip(t_neg, c_neg, strict=True)]
    return cset


def _passes(pos: float | None, neg: float | None, pos_min: float, neg_max: float) -> bool:
    """The trait half of the pair filter: p+ shows the trait, p- does not (None never passes)."""
    return pos is not None and neg is not None and pos >= pos_min and neg < neg_max


def filter_pairs(
    cset: ContrastiveSet, *, pos_min: float = 50, neg_max: float = 50, coherence_min: float = 50, min_pairs: int = 1
) -> list[int]:
    """Indices of pairs that really differ: pos trait >= pos_min, neg < neg_max, both coherent.

    Raises a ValueError that says what to change when no pair survives, so a persona
    vector is never averaged over an empty set.
    """
    if not cset.scores_pos or not cset.scores_neg:
        raise ValueError("judge the answers first (judge_contrastive) before filtering")

    def coherent(x: float | None) -> bool:
        return x is not None and x >= coherence_min

    keep = [
        k
        for k, (sp, sn) in enumerate(zip(cset.scores_pos, cset.scores_neg, strict=True))
        if _passes(sp.trait, sn.trait, pos_min, neg_max) and coherent(sp.coherence) and coherent(sn.coherence)
    ]
    if len(keep) < min_pairs:
        pos = cset.trait_scores(True)
        raise ValueError(
            f"only {len(keep)} of {len(cset)} pairs survive the filter (pos trait >= {pos_min}, neg < {neg_max}, "
            f"coherence >= {coherence_min}; at least {min_pairs} needed); median p+ trait score was {pos.nanmedian().item():.0f}. "
            "Lower pos_min/coherence_min, use more questions or instructions_per_question=5, "
            "or pick a trait this model expresses (see chapter 1's effect-size table)."
        )
    return keep


# -- from answers to a vector ---------------------------------------------------------------

EXTRACTION_VERSION = 11  # bump when the pipeline or the saved meta changes, so cached vectors are rebuilt
# (7: meta["stability"], the split-half curve; 8: the kept pairs' differences, for label-shuffled nulls;
# 10: the held-out check splits by prompt, so a sampled round's answers stay with their prompt's;
# 11: the split-half stability curve does too, the grouped held-out nulls draw their swaps in drawn order,
# and response activations are read while the answers are generated)
# Escalate to all instruction pairs below this many kept pairs: a held-out check needs
# MIN_HELDOUT_PAIRS distinct pairs in a bootstrap draw, and a draw of n pairs holds about
# 0.63 n distinct ones, so with fewer than twice that most draws cannot be scored and the
# interval cannot be estimated.
ESCALATE_BELOW = 2 * MIN_HELDOUT_PAIRS
# Kept pairs this project asks for behind every vector (the bar, not the paper's). Below it
# after the 100 greedy pairs, the paper's remedy is sampled answers (temperature 1) to the same
# prompts: each sampled round asks all 100 pairs again. Measured by hand on this model (README,
# "bfloat16"), one round kept 7-10 more pairs per trait in about 45 s of generation per trait at
# one thread, so the `full` profile (the published book) runs up to three rounds and the `ci`
# profile none (its chapters must stay within minutes).
MIN_KEPT = 30
SAMPLED_ROUNDS = {"full": 3, "ci": 0}


def sampled_rounds_default() -> int:
    """Sampled rounds a vector under ``MIN_KEPT`` pairs gets in this run's profile (``PERSONALAB_PROFILE``)."""
    return SAMPLED_ROUNDS[run_settings().profile]


def mean_difference(pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    """The persona vector: mean(h+) - mean(h-) over answers, per layer. [n, L+1, d] -> [L+1, d]."""
    if pos.shape[0] == 0 or neg.shape[0] == 0:
        raise ValueError("mean_difference needs at least one positive and one negative activation")
    return pos.mean(0) - neg.mean(0)


def extract_persona_vector(
    model,
    trait: Trait,
    judge: Judge,
    *,
    cset: ContrastiveSet | None = None,
    pos_min: float = 50,
    neg_max: float = 50,
    coherence_min: float = 50,
    min_pairs: int = 2,
    escalate_below: int = ESCALATE_BELOW,
    min_kept: int = MIN_KEPT,
    sampled_rounds: int | None = None,
    pooling: Pooling = "response",
    **gen_kwargs,
) -> PersonaVector:
    """The whole method for one trait: generate, judge, filter, average, subtract.

    Pass ``cset`` to reuse answers already generated (and judged) in a notebook.
    ``min_pairs`` (default 2) refuses a vector averaged over a single pair.

    Escalation: by default each question is asked under one instruction pair (20 pairs,
    what fits a laptop). When fewer than ``escalate_below`` of those survive the filter
    (default ``ESCALATE_BELOW``, enough for a held-out check with an interval) and neither ``cset`` nor
    ``instructions_per_question`` was given, every question is also asked under its other
    four pairs (the paper's 100-pair setting: the 20 pairs already judged are kept and 80
    are added) and filtered again; the vector's ``settings`` record which one was used.
    Still under ``min_kept`` pairs (default ``MIN_KEPT``), all 100 pairs are asked again with
    sampled answers (temperature 1, seed = the round), up to ``sampled_rounds`` times
    (default: ``sampled_rounds_default()``, 3 in the ``full`` profile, 0 in ``ci``) or until
    the bar is reached; ``settings["sampled_rounds"]`` records how many were run (absent:
    none). A caller who sets ``temperature`` or ``seed`` (or ``instructions_per_question``)
    chose the sampling, and no rounds are added. Answers judged here get a coherence score only where their trait scores pass the
    filter (``judge_contrastive(coherence_for=...)``). The vector's ``heldout`` metadata is
    its held-out separation against label-shuffled vectors, or None when still too few
    pairs survive; its ``stability`` metadata is the split-half cosine at the default layer
    for every number of pairs per half (``vectors.stability_curve``).
    """
    thresholds = _thresholds(pos_min, neg_max, coherence_min, min_pairs, pooling)
    if cset is None:
        result = extract_persona_vectors(
            model,
            [trait],
            judge,
            **thresholds,
            escalate_below=escalate_below,
            min_kept=min_kept,
            sampled_rounds=sampled_rounds,
            pooling=pooling,
            **gen_kwargs,
        )[trait.name]
        if isinstance(result, ValueError):
            raise result
        return result
    if not cset.scores_pos:
        judge_contrastive(cset, trait, judge, coherence_for=(pos_min, neg_max))
    keep = filter_pairs(cset, **thresholds)
    return _vector_from_pairs(model, trait, cset, keep, pooling, thresholds)


def extract_persona_vectors(
    model,
    traits: Sequence[Trait],
    judge: Judge,
    *,
    pos_min: float = 50,
    neg_max: float = 50,
    coherence_min: float = 50,
    min_pairs: int = 2,
    escalate_below: int = ESCALATE_BELOW,
    min_kept: int = MIN_KEPT,
    sampled_rounds: int | None = None,
    pooling: Pooling = "response",
    **gen_kwargs,
) -> dict[str, PersonaVector | ValueError]:
    """``extract_persona_vector`` for several traits, their generations batched together.

    The same method and the same escalation, trait by trait; only the generation is
    shared: every trait's 20 pairs go to one ``generate`` call, then the other instruction
    pairs of every trait that needs escalating to a second one, then each sampled round's
    pairs of every trait still under ``min_kept`` to one call per round
    (``generate_contrastive_many``), so the batches are full. A trait whose pairs do not
    survive the filter maps to the ValueError that ``extract_persona_vector`` would raise
    for it (it says what to change), so one such trait does not cost the others' work.
    """
    thresholds = _thresholds(pos_min, neg_max, coherence_min, min_pairs, pooling)
    rounds = _sampled_rounds(sampled_rounds)  # checked before any generation
    min_kept = integer(min_kept, "min_kept")
    if min_kept < 0:
        raise ValueError(f"min_kept must be >= 0 (0: no sampled rounds are needed), got {min_kept}")
    traits = list(traits)
    gen_kwargs["read_responses"] = pooling == "response"  # the answers' activations from the generating pass
    csets = dict(zip([t.name for t in traits], generate_contrastive_many(model, traits, **gen_kwargs), strict=True))
    may_escalate = "instructions_per_question" not in gen_kwargs
    kept: dict[str, list[int] | ValueError] = {}
    for trait in traits:
        judge_contrastive(csets[trait.name], trait, judge, coherence_for=(pos_min, neg_max))
        kept[trait.name] = _try_filter(csets[trait.name], thresholds)
    ask = functools.partial(_ask_more, model, judge=judge, csets=csets, kept=kept, thresholds=thresholds)
    if may_escalate:  # the other instruction pairs of each question (the paper's 100-pair setting)
        short = [t for t in traits if _n_kept(kept[t.name]) < escalate_below]
        ask(short, settings=lambda n: {"instructions_per_question": n}, skip=1, **gen_kwargs)
    if may_escalate and "temperature" not in gen_kwargs and "seed" not in gen_kwargs:
        for r in range(1, rounds + 1):  # all of them again, sampled, while a trait is under min_kept
            short = [t for t in traits if _n_kept(kept[t.name]) < min_kept]
            ask(short, settings=lambda n: {"sampled_rounds": r}, temperature=1.0, seed=1000 * r, **gen_kwargs)  # noqa: B023 (runs now)
    out: dict[str, PersonaVector | ValueError] = {}
    for trait in traits:
        keep = kept[trait.name]
        out[trait.name] = (
            keep
            if isinstance(keep, ValueError)
            else _vector_from_pairs(model, trait, csets[trait.name], keep, pooling, thresholds)
        )
    return out


def _sampled_rounds(value: int | None) -> int:
    """``sampled_rounds`` checked (a whole number >= 0), or this profile's default for None."""
    rounds = sampled_rounds_default() if value is None else integer(value, "sampled_rounds")
    if rounds < 0:
        raise ValueError(f"sampled_rounds must be >= 0, got {rounds}")
    return rounds


def _ask_more(
    model,
    traits: list[Trait],
    *,
    judge: Judge,
    csets: dict[str, ContrastiveSet],
    kept: dict[str, list[int] | ValueError],
    thresholds: dict[str, Any],
    settings: Callable[[int], dict],
    **gen_kwargs,
) -> None:
    """More pairs for ``traits``: every question under all ``n`` of a trait's instruction pairs
    (``generate_contrastive_many(instructions_per_question=n, **gen_kwargs)``, one call for the
    traits with the same ``n``), judged, added to the trait's pairs in ``csets`` with
    ``settings(n)`` merged into its settings, and filtered again into ``kept``, in place.
    Escalation (``skip=1``) and the sampled rounds (``temperature=1``) both go through here."""
    coherence_for = (thresholds["pos_min"], thresholds["neg_max"])
    for n in sorted({len(t.instructions) for t in traits}):  # traits with the same number of pairs share a call
        group = [t for t in traits if len(t.instructions) == n]
        more_sets = generate_contrastive_many(model, group, instructions_per_question=n, **gen_kwargs)
        for trait, more in zip(group, more_sets, strict=True):
            judge_contrastive(more, trait, judge, coherence_for=coherence_for)
            cset = csets[trait.name]
            csets[trait.name] = cset.extended(more, settings=cset.settings | settings(n))
            kept[trait.name] = _try_filter(csets[trait.name], thresholds)


def _thresholds(pos_min: float, neg_max: float, coherence_min: float, min_pairs: int, pooling: str) -> dict[str, Any]:
    """The pair filter's settings, after checking ``pooling``."""
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
    return dict(pos_min=pos_min, neg_max=neg_max, coherence_min=coherence_min, min_pairs=min_pairs)


def _try_filter(cset: ContrastiveSet, thresholds: dict[str, Any]) -> list[int] | ValueError:
    """``filter_pairs``, with its ValueError (too few pairs survive) returned instead of raised."""
    try:
        return filter_pairs(cset, **thresholds)
    except ValueError as err:
        return err


def _n_kept(keep: list[int] | ValueError) -> int:
    return 0 if isinstance(keep, ValueError) else len(keep)


def _vector_from_pairs(
    model, trait: Trait, cset: ContrastiveSet, keep: list[int], pooling: str, thresholds: dict[str, Any]
) -> PersonaVector:
    """Steps 3-4 for the kept pairs: their answers' activations, the mean difference, and the
    vector's metadata (layer diagnostics, held-out check, stability curve)."""
    pick = lambda xs: [xs[k] for k in keep]  # noqa: E731
    groups = pick(_prompt_groups(cset))
    if pooling == "response" and cset.reads_pos is not None and cset.reads_neg is not None:
        acts_pos, acts_neg = ({k: v[keep] for k, v in r.items()} for r in (cset.reads_pos, cset.reads_neg))
        if not all(bool(torch.isfinite(a["response"]).all()) for a in (acts_pos, acts_neg)):
            raise ValueError(f"{trait.name}: a kept answer has no tokens to average over")
    else:
        acts_pos = answer_activations(model, pick(cset.prompts_pos), pick(cset.answers_pos), desc=f"{trait.name} h+")
        acts_neg = answer_activations(model, pick(cset.prompts_neg), pick(cset.answers_neg), desc=f"{trait.name} h-")
    vec = mean_difference(acts_pos[pooling], acts_neg[pooling])
    norms = torch.cat([acts_pos["response_norm"], acts_neg["response_norm"]]).mean(0)
    diag = layer_diagnostics(acts_pos[pooling], acts_neg[pooling])
    layer = choose_layer(diag)
    diffs = (acts_pos[pooling] - acts_neg[pooling]).half().float()  # as saved (float16): the same nulls after a reload
    return PersonaVector(
        vectors=vec,
        meta=dict(
            model_id=model_id(model),
            n_layers=n_layers(model),
            d_model=d_model(model),
            trait=trait.name,
            method=f"mean_diff/{pooling}",
            n_pairs=len(cset),
            n_kept=len(keep),
            thresholds={k: thresholds[k] for k in ("pos_min", "neg_max", "coherence_min")},
            settings=cset.settings,
            residual_norm=[round(x, 4) for x in norms.tolist()],
            separation=[round(x, 4) for x in diag["separation"].tolist()],
            default_layer=layer,
            heldout=_heldout_check(acts_pos[pooling], acts_neg[pooling], layer, groups),
            stability=_stability(acts_pos[pooling], acts_neg[pooling], layer, groups),
        ),
        pair_differences=diffs,
    )


def _stability(pos: torch.Tensor, neg: torch.Tensor, layer: int, groups: list) -> dict[str, float] | None:
    """The split-half stability curve at ``layer`` by prompt (``groups``: a sampled round's answers
    stay in their prompt's half; keys count prompts per half), rounded for the metadata; None
    under ``MIN_SPLIT_PAIRS`` kept pairs or prompts."""
    if pos.shape[0] < MIN_SPLIT_PAIRS or len(set(groups)) < MIN_SPLIT_PAIRS:
        return None
    return {m: round(c, 4) for m, c in stability_curve(pos, neg, layer, groups=groups).items()}


def _prompt_groups(cset: ContrastiveSet) -> list[tuple[str, int]]:
    """Each pair's prompt, as (question, instruction pair): the pairs of a sampled round share it
    with the greedy pair asked before them."""
    return list(zip(cset.questions, cset.instruction, strict=True))


def _heldout_check(pos: torch.Tensor, neg: torch.Tensor, layer: int, groups: list | None = None) -> dict | None:
    """The vector's held-out separation at ``layer`` against label-shuffled vectors
    (``heldout_separation``, answers to one prompt kept on one side of each split: ``groups``),
    rounded for the metadata; None with too few kept pairs."""
    if pos.shape[0] < MIN_HELDOUT_PAIRS:
        return None
    sep = heldout_separation(pos, neg, layer, groups=groups)
    out = {
        "layer": layer,
        **{k: round(float(sep[k]), 4) for k in ("value", "ci_low", "ci_high", "null_p95", "percentile")},
    }
    if "n_groups" in sep:  # some prompts answered more than once (sampled rounds)
        out["n_prompts"] = sep["n_groups"]
    return out


def trait_effect_size(model, trait: Trait, judge: Judge, *, split: QuestionSplit = "evaluation", **gen_kwargs) -> dict:
    """Does the model follow the trait's system prompts? Cohen's d of judged p+ vs p- answers.

    Returns ``{"d", "mean_pos", "mean_neg", "n", "cset", "summary"}``, ``summary`` being d
    with its interval over questions and a sign-flip null (``stats.paired_d_summary``);
    ``trait_effect_sizes`` measures several traits with one generation."""
    return trait_effect_sizes(model, [trait], judge, split=split, **gen_kwargs)[trait.name]


def trait_effect_sizes(
    model, traits: Sequence[Trait], judge: Judge, *, split: QuestionSplit = "evaluation", **gen_kwargs
) -> dict[str, dict]:
    """``trait_effect_size`` for each trait, every trait's pairs answered in one generation
    (``generate_contrastive_many``: fuller batches)."""
    from personalab.stats import cohens_d, paired_d_summary

    traits, out = list(traits), {}
    for trait, cset in zip(traits, generate_contrastive_many(model, traits, split=split, **gen_kwargs), strict=True):
        judge_contrastive(cset, trait, judge, coherence=False)
        pos, neg = cset.trait_scores(True), cset.trait_scores(False)
        out[trait.name] = {
            "d": cohens_d(pos, neg),
            "mean_pos": pos.nanmean().item(),
            "mean_neg": neg.nanmean().item(),
            "n": len(cset),
            "cset": cset,
            "summary": paired_d_summary(pos, neg),
        }
    return out


def persona_vector(
    model, trait: Trait | str, judge: Judge | None = None, *, cache: bool = True, **kwargs
) -> PersonaVector:
    """``extract_persona_vector`` with an on-disk cache: what later chapters call.

    The vector is stored under ``$PERSONALAB_CACHE/vectors/`` keyed by (model, trait,
    settings); a cached file is loaded and checked against the model.
    """
    from personalab._io import cache_lock

    trait, judge = _trait_and_judge(model, trait, judge)
    if not cache:
        return extract_persona_vector(model, trait, judge, **kwargs)
    path = _vector_path(model, trait, judge, kwargs)
    with cache_lock(path):  # a chapter running beside this one may be extracting the same vector
        vec = _load_cached(model, path)
        if vec is None:
            vec = extract_persona_vector(model, trait, judge, **kwargs)
            vec.save(path)
    return vec


def persona_vectors(
    model,
    traits: Sequence[Trait | str],
    judge: Judge | None = None,
    *,
    cache: bool = True,
    on_error: Literal["raise", "return"] = "raise",
    **kwargs,
) -> dict[str, PersonaVector | ValueError]:
    """``persona_vector`` for several traits, the ones not yet cached extracted together.

    The uncached traits go through ``extract_persona_vectors`` (one shared generation, so
    fuller batches); each vector is cached exactly where ``persona_vector`` caches it. When
    a trait's pairs do not survive the filter, ``on_error="raise"`` (the default) raises its
    ValueError (naming the trait) once every other vector is built and cached;
    ``"return"`` maps that trait to the error instead, for a table of every trait.
    Side by side with another process (two chapters executed at once), the entries that
    process is building are left to it: they are waited for, and read back, after the rest
    are built, so neither process blocks the other's whole batch.
    """
    from contextlib import ExitStack

    from personalab._io import try_cache_lock

    if isinstance(traits, str | Trait):
        raise TypeError("traits must be a list of trait names or Trait objects; for one trait use persona_vector")
    if on_error not in ("raise", "return"):
        raise ValueError(f"on_error must be 'raise' or 'return', got {on_error!r}")
    traits = list(traits)
    if not traits:
        raise ValueError("traits is empty: name at least one trait (traits.list_traits() has them all)")
    first, judge = _trait_and_judge(model, traits[0], judge)  # one judge for every trait
    loaded = [first] + [_trait_and_judge(model, t, judge)[0] for t in traits[1:]]
    if len({t.name for t in loaded}) != len(loaded):
        raise ValueError(f"each trait may appear once, got {[t.name for t in loaded]}")
    if not cache:
        return _errors(extract_persona_vectors(model, loaded, judge, **kwargs), on_error)
    out: dict[str, PersonaVector | ValueError] = {}
    later: list[Trait] = []
    with ExitStack() as held:
        todo: dict[str, tuple[Trait, Any]] = {}
        for trait in loaded:
            path = _vector_path(model, trait, judge, kwargs)
            if not held.enter_context(try_cache_lock(path)):
                later.append(trait)  # another process is building it
            elif (vec := _load_cached(model, path)) is not None:
                out[trait.name] = vec
            else:
                todo[trait.name] = (trait, path)
        if todo:
            built = extract_persona_vectors(model, [t for t, _ in todo.values()], judge, **kwargs)
            for name, result in built.items():
                if isinstance(result, PersonaVector):
                    result.save(todo[name][1])
                out[name] = result
    for trait in later:
        try:
            out[trait.name] = persona_vector(model, trait, judge, **kwargs)
        except ValueError as err:
            out[trait.name] = err
    return _errors({t.name: out[t.name] for t in loaded}, on_error)


def _errors(results: dict[str, PersonaVector | ValueError], on_error: str) -> dict[str, PersonaVector | ValueError]:
    """``results`` as they are (``on_error="return"``), or the first trait's error raised."""
    for name, result in results.items():
        if on_error == "raise" and isinstance(result, ValueError):
            raise ValueError(f"trait {name!r}: {result}") from result
    return results


def _trait_and_judge(model, trait: Trait | str, judge: Judge | None) -> tuple[Trait, Judge]:
    """The trait loaded by name if needed, and the judge (the ``EmbeddingJudge`` by default)."""
    from personalab import traits as traits_mod

    trait = traits_mod.load(trait) if isinstance(trait, str) else trait
    if judge is None:
        from personalab.judges import EmbeddingJudge

        judge = EmbeddingJudge(model)
    return trait, judge


def _vector_path(model, trait: Trait, judge: Judge, kwargs: dict[str, Any]):
    """Where ``persona_vector`` caches this vector: keyed by the pipeline's version, the model,
    the trait, the settings, the judge and the precision."""
    from personalab._io import stable_hash
    from personalab.models import writable_cache_root

    key = stable_hash(
        [
            EXTRACTION_VERSION,
            model_id(model),
            trait.to_json(),
            sorted((k, v) for k, v in kwargs.items() if k not in ("sampled_rounds", "min_kept")),
            # settings whose defaults depend on the profile (or may change), resolved: a default and the
            # same value given explicitly are one entry
            ["sampled", _sampled_rounds(kwargs.get("sampled_rounds")), kwargs.get("min_kept", MIN_KEPT)],
            judge_key(judge),
            precision_key(model),
        ]
    )
    return writable_cache_root() / "vectors" / f"{trait.name}-{key}"


def _load_cached(model, path) -> PersonaVector | None:
    """The cached vector at ``path``, or None when there is none or it is corrupt (extract again)."""
    if not path.with_name(path.name + ".json").is_file():
        return None
    try:
        return PersonaVector.load(path, model=model)
    except (ValueError, TypeError, IndexError):
        return None
