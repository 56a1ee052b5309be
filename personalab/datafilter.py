"""Flag training data before training: the projection difference (chapter 6).

For a dataset of (question, answer) pairs, the *projection difference* compares the
answers in the data with the answers the base model itself gives to the same
questions, along a persona vector:

    diff_i = proj(h(answer_i)) - proj(h(base_answer_i)),   proj = mean over answer tokens at one layer

A dataset whose answers sit further along the trait direction than the model's own
would pull the model that way when trained on; the dataset-level number is the mean
over samples, and the per-sample numbers rank which examples to drop.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from personalab.extraction import answer_activations
from personalab.finetune import Example
from personalab.models import check_layer
from personalab.monitoring import project
from personalab.prompting import chat_prompt, generate
from personalab.vectors import PersonaVector


def base_answers(model, examples: Sequence[Example], *, max_new_tokens: int = 40) -> list[str]:
    """The base model's own greedy answers to the dataset's questions (no system prompt)."""
    prompts = [chat_prompt(model.tokenizer, e.question) for e in examples]
    return generate(model, prompts, max_new_tokens=max_new_tokens, desc="base answers")


def answer_projections(model, examples: Sequence[Example], answers: Sequence[str], vector: PersonaVector,
                       layer: int) -> torch.Tensor:
    """Mean projection over each answer's tokens at ``layer`` on the unit vector ([n])."""
    vector.check_model(model)
    check_layer(model, layer)
    prompts = [chat_prompt(model.tokenizer, e.question) for e in examples]
    acts = answer_activations(model, prompts, [a if a.strip() else " ." for a in answers], desc="projections")
    return project(acts["response"][:, layer], vector.at(layer))


def projection_difference(model, examples: Sequence[Example], vector: PersonaVector, layer: int, *,
                          reference: Sequence[str] | None = None) -> torch.Tensor:
    """Per-sample projection difference ([n]); ``.mean()`` is the dataset-level number.

    ``reference`` = the base model's answers to the same questions (``base_answers``);
    computed here when not given.
    """
    if not examples:
        raise ValueError("projection_difference() got no examples")
    reference = list(reference) if reference is not None else base_answers(model, examples)
    if len(reference) != len(examples):
        raise ValueError(f"{len(examples)} examples but {len(reference)} reference answers")
    data = answer_projections(model, examples, [e.answer for e in examples], vector, layer)
    own = answer_projections(model, examples, reference, vector, layer)
    return data - own


def drop_top(examples: Sequence[Example], scores: Sequence[float], k: int) -> list[Example]:
    """The examples without the ``k`` highest-scoring ones (order kept)."""
    if not 0 <= k <= len(examples):
        raise ValueError(f"k must be between 0 and {len(examples)}, got {k}")
    if len(scores) != len(examples):
        raise ValueError(f"{len(examples)} examples but {len(scores)} scores")
    drop = set(sorted(range(len(examples)), key=lambda i: -float(scores[i]))[:k])
    return [e for i, e in enumerate(examples) if i not in drop]
