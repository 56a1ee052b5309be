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

from collections.abc import Mapping, Sequence

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


Probe = tuple[PersonaVector, int]  # a persona vector and the layer to read it at


def answer_projections(model, examples: Sequence[Example], answers: Sequence[str],
                       probes: Mapping[str, Probe]) -> dict[str, torch.Tensor]:
    """Mean projection over each answer's tokens on each probe's unit vector ({name: [n]}).

    One pass through the model serves every probe: the forward stops after the deepest
    layer asked for.
    """
    if not probes:
        raise ValueError("answer_projections() needs at least one (vector, layer) probe")
    for vector, layer in probes.values():
        vector.check_model(model)
        check_layer(model, layer)
    prompts = [chat_prompt(model.tokenizer, e.question) for e in examples]
    acts = answer_activations(model, prompts, [a if a.strip() else " ." for a in answers],
                              upto=max(layer for _, layer in probes.values()), desc="projections")
    return {name: project(acts["response"][:, layer], vector.at(layer)) for name, (vector, layer) in probes.items()}


def projection_differences(model, examples: Sequence[Example], probes: Mapping[str, Probe], *,
                           reference: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
    """Per-sample projection difference ([n]) on each probe; ``.mean()`` is the dataset-level number.

    ``reference`` = the base model's answers to the same questions (``base_answers``);
    computed here when not given. Scoring several vectors at once costs the same two
    passes (data answers, own answers) as scoring one.
    """
    if not examples:
        raise ValueError("projection_difference() got no examples")
    reference = list(reference) if reference is not None else base_answers(model, examples)
    if len(reference) != len(examples):
        raise ValueError(f"{len(examples)} examples but {len(reference)} reference answers")
    data = answer_projections(model, examples, [e.answer for e in examples], probes)
    own = answer_projections(model, examples, reference, probes)
    return {name: data[name] - own[name] for name in probes}


def projection_difference(model, examples: Sequence[Example], vector: PersonaVector, layer: int, *,
                          reference: Sequence[str] | None = None) -> torch.Tensor:
    """Per-sample projection difference ([n]) on one vector at ``layer`` (see ``projection_differences``)."""
    return projection_differences(model, examples, {"vector": (vector, layer)}, reference=reference)["vector"]


def drop_top(examples: Sequence[Example], scores: Sequence[float], k: int) -> list[Example]:
    """The examples without the ``k`` highest-scoring ones (order kept)."""
    if not 0 <= k <= len(examples):
        raise ValueError(f"k must be between 0 and {len(examples)}, got {k}")
    if len(scores) != len(examples):
        raise ValueError(f"{len(examples)} examples but {len(scores)} scores")
    drop = set(sorted(range(len(examples)), key=lambda i: -float(scores[i]))[:k])
    return [e for i, e in enumerate(examples) if i not in drop]
