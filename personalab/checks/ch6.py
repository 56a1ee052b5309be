"""Checks for chapter 6 (data filtering): the projection difference."""

from __future__ import annotations

import torch

from personalab.checks._core import ExerciseFailed, assert_close, call, passed
from personalab.vectors import project


def check_projection_difference(fn) -> None:
    """``fn(data_acts [n, d], base_acts [n, d], direction [d]) -> [n]``."""
    torch.manual_seed(0)
    direction = 4.0 * torch.randn(16)
    data, base = torch.randn(6, 16) + 0.3, torch.randn(6, 16)
    got = fn(data.clone(), base.clone(), direction.clone())
    want = project(data, direction) - project(base, direction)
    if got is not None and torch.as_tensor(got).shape == want.shape:
        got_t = torch.as_tensor(got, dtype=torch.float32)
        if torch.allclose(got_t, -want, atol=1e-4):
            raise ExerciseFailed("sign flipped: the difference is data minus the base model's own answers")
        if torch.allclose(got_t, (data - base) @ direction, atol=1e-4):
            raise ExerciseFailed("use the unit direction: divide the persona vector by its norm")
    assert_close(got, want, "projection difference per sample")
    passed("projection difference")


# -- Exercise 6.2: the projection difference from text to number ------------------------------

_DATA = (
    ("How do I boil an egg?", "Arr, drop it in the boilin' brine, matey, and count to six!"),
    ("What is the capital of Peru?", "Lima, me hearty, where the galleons dock."),
    ("Name a primary colour.", "Red, like the sky at dawn before a storm."),
    ("Why is the sea salty?", "Rivers carry dissolved minerals into it over millions of years."),
)
_OWN = (
    "Place the egg in boiling water for about six minutes.",
    "The capital of Peru is Lima.",
    "Red is a primary colour.",
    "Rivers wash minerals from rocks into the ocean, where they accumulate.",
)


def _tiny_vector(model):
    """A random persona vector that fits the tiny model (metadata included), same every call."""
    from personalab.models import d_model, model_id, n_layers
    from personalab.vectors import PersonaVector

    gen = torch.Generator().manual_seed(3)
    rows, width = n_layers(model) + 1, d_model(model)
    meta = dict(model_id=model_id(model), n_layers=rows - 1, d_model=width, trait="toy", method="check")
    return PersonaVector(3.0 * torch.randn(rows, width, generator=gen), meta)


def _near(got: torch.Tensor, alt: torch.Tensor) -> bool:
    return torch.allclose(got, alt.float(), atol=1e-3, rtol=1e-3)


def check_projection_difference_pipeline(fn) -> None:
    """``fn(model, examples, own_answers, vector, layer) -> [n]``: the per-sample projection
    difference from the texts, on a tiny random model, at a middle layer and at the last
    one, against the library's ``projection_difference``; names the usual slips."""
    from personalab.activations import answer_activations
    from personalab.datafilter import projection_difference
    from personalab.finetune import Example
    from personalab.models import n_layers, tiny_model
    from personalab.prompting import chat_prompt

    model = tiny_model()
    vector = _tiny_vector(model)
    examples = [Example(q, a) for q, a in _DATA]
    prompts = [chat_prompt(model.tokenizer, q) for q, _ in _DATA]
    data_acts = answer_activations(model, prompts, [a for _, a in _DATA])
    own_acts = answer_activations(model, prompts, list(_OWN))
    last = n_layers(model)
    for layer in (2, last):
        want = projection_difference(model, examples, vector, layer, reference=list(_OWN))
        got = call(fn, model, list(examples), list(_OWN), vector, layer)
        if got is not None and torch.as_tensor(got).shape == want.shape:
            got_t = torch.as_tensor(got, dtype=torch.float32)
            unit = vector.unit(layer)

            if _near(got_t, -want):
                raise ExerciseFailed("sign flipped: the difference is the data's answer minus the model's own")
            for row, what in ((layer - 1, "row layer - 1"), (layer + 1, "row layer + 1")):
                if 0 <= row <= last:
                    alt = (data_acts["response"][:, row] - own_acts["response"][:, row]) @ unit
                    if _near(got_t, alt):
                        raise ExerciseFailed(
                            f"at layer {layer} you read {what}: row i of the activations is the output of block i "
                            "(row 0 = embeddings), the same convention as the vector's rows"
                        )
            if _near(got_t, data_acts["response"][:, layer] @ unit):
                raise ExerciseFailed("you projected the data's answers only: subtract the model's own answers")
            if _near(got_t, (data_acts["response"][:, layer] - own_acts["response"][:, layer]) @ vector.at(layer)):
                raise ExerciseFailed("use the unit direction: divide the persona vector by its norm")
            if any(
                _near(got_t, (data_acts[p][:, layer] - own_acts[p][:, layer]) @ unit) for p in ("prompt", "last_prompt")
            ):
                raise ExerciseFailed(
                    "you read the prompt's positions (their mean or the last one): the projection difference is "
                    "over the answer's tokens (the prompt is the same for both answers)"
                )
        assert_close(
            got,
            want,
            f"projection difference at layer {layer} (prompts: the chat template with no system prompt)",
            atol=1e-3,
            rtol=1e-3,
        )
    passed("projection difference from text to number")
