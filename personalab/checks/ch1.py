"""Checks for chapter 1 (contrastive prompting and judging)."""

from __future__ import annotations

import math

from personalab.checks._core import ExerciseFailed, call, passed
from personalab.extraction import contrastive_prompts
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


_QUESTIONS = [
    "How was your day?",
    "What is rain?",
    "Name a colour.",
    "Why do cats purr?",
    "What should I cook tonight?",
    "Is chess hard?",
    "Where is Lima?",
]


def check_contrastive_prompts(fn) -> None:
    """Compare ``fn(tokenizer, trait, questions, instructions_per_question)`` with the
    reference on two traits, 7 questions (more than the 5 instruction pairs, so the
    rotation wraps) and 1, 2 and 5 instructions per question (the default is called
    without the argument)."""
    from personalab import traits
    from personalab.models import tiny_model

    tok = tiny_model().tokenizer
    for name in ("sad", "pirate"):
        trait = traits.load(name)
        for ipq in (1, 2, 5):
            want = contrastive_prompts(tok, trait, list(_QUESTIONS), ipq)
            args = (tok, trait, list(_QUESTIONS))
            got = call(fn, *args) if ipq == 1 else call(fn, *args, instructions_per_question=ipq)
            if got is None:
                raise ExerciseFailed("your function returned None (did you forget `return`?)")
            got = [tuple(row) for row in got]
            where = f"trait {name!r}, instructions_per_question={ipq}"
            if len(got) != len(want):
                raise ExerciseFailed(
                    f"{where}: expected {len(want)} pairs ({len(_QUESTIONS)} questions x {ipq}), got {len(got)}"
                )
            for n, (g, w) in enumerate(zip(got, want, strict=True)):
                if len(g) != 4:
                    raise ExerciseFailed(f"{where}, pair {n}: expected (question, index, p+, p-), got {len(g)} items")
                if g[:2] != w[:2]:
                    raise ExerciseFailed(
                        f"{where}, pair {n}: expected question {w[0]!r} with instruction pair {w[1]}, got "
                        f"{g[0]!r} with {g[1]}. Question j takes pairs (j + k) % {len(trait.instructions)}, "
                        "k counting from 0"
                    )
                if (g[2], g[3]) == (w[3], w[2]):
                    raise ExerciseFailed(f"{where}, pair {n}: p+ and p- are swapped")
                if g[2] != w[2] or g[3] != w[3]:
                    raise ExerciseFailed(
                        f"{where}, pair {n}: the prompt text differs from the reference. It is the chat "
                        "template (chat_prompt) with the instruction as the system prompt and the question "
                        "as the user turn"
                    )
    passed("contrastive prompts")
