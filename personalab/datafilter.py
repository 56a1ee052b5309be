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

import weakref
from collections.abc import Mapping, Sequence

import torch

from personalab.activations import answer_activations
from personalab.finetune import Example, example_list
from personalab.models import bf16_autocast_applies, check_layer, model_id, weights_version
from personalab.prompting import chat_prompt, generate
from personalab.validate import (
    finite_real,
    integer,
    positive_int,
    same_length,
    text_list,
    vectors_of_one_width,
)
from personalab.vectors import PersonaVector, project


def base_answers(model, examples: Sequence[Example], *, max_new_tokens: int = 40) -> list[str]:
    """The base model's own greedy answers to the dataset's questions (no system prompt)."""
    examples = example_list(examples)
    prompts = [chat_prompt(model.tokenizer, e.question) for e in examples]
    return generate(model, prompts, max_new_tokens=max_new_tokens, desc="base answers")


Probe = tuple[PersonaVector, int]  # a persona vector and the layer to read it at


# Means already computed, per model object: chapter 6 scores seven datasets that share
# questions (the model's own answer to a question is one text) and answers (a diluted set is
# half of two others), so many rows come back. Bounded; keyed by the weights' version.
_MEANS: weakref.WeakKeyDictionary[object, dict[tuple, torch.Tensor]] = weakref.WeakKeyDictionary()
_MEANS_MAX = 20_000


def answer_means(
    model, examples: Sequence[Example], answers: Sequence[str], layers: Sequence[int]
) -> dict[int, torch.Tensor]:
    """Mean residual activation over each answer's tokens, at each of ``layers`` ({layer: [n, d]}).

    One pass through the model serves every layer: the forward stops after the deepest. A
    (question, answer, layer) already computed for ``model`` (same weights and precision) is
    not computed again: chapter 6's seven datasets (48 samples each in the ``ci`` profile) give
    672 rows to read, data answers and the model's own, of which 418 are distinct. A row computed in another batch can differ from a recomputed one in the
    last bits under bfloat16 autocast (padding), as any batched pass's rows do.
    """
    if not layers:
        raise ValueError("answer_means() needs at least one layer")
    examples = example_list(examples)
    answers = text_list(answers, "answers", allow_blank=True)
    same_length(examples, answers, "examples", "answers")
    layers = [check_layer(model, layer) for layer in layers]
    prompts = [chat_prompt(model.tokenizer, e.question) for e in examples]
    texts = [a if a.strip() else " ." for a in answers]
    memo = _MEANS.setdefault(model, {})
    tag = (model_id(model), weights_version(model), bf16_autocast_applies(model, "activations"))
    keys = [(tag, p, a) for p, a in zip(prompts, texts, strict=True)]
    todo = [k for k in dict.fromkeys(keys) if not all((*k, layer) in memo for layer in layers)]
    upto = max(layers)
    if todo and len(memo) + len(todo) * (upto + 1) > _MEANS_MAX:
        memo.clear()  # bounded: start again, with every row of this call to compute
        todo = list(dict.fromkeys(keys))
    if todo:
        prompts_, texts_ = [p for _, p, _ in todo], [a for _, _, a in todo]
        acts = answer_activations(model, prompts_, texts_, upto=upto, desc="answer activations")
        for k, row in zip(todo, acts["response"], strict=True):
            for layer in range(upto + 1):
                memo[(*k, layer)] = row[layer]
    return {layer: torch.stack([memo[(*k, layer)] for k in keys]) for layer in layers}


def activation_differences(
    model, examples: Sequence[Example], layers: Sequence[int], *, reference: Sequence[str] | None = None
) -> dict[int, torch.Tensor]:
    """Per sample: mean activation of the data's answer minus that of the model's own answer ({layer: [n, d]}).

    ``reference`` = the base model's answers to the same questions (``base_answers``);
    computed here when not given. Projected on a unit persona vector this is the
    projection difference; projected on random directions, its null baseline.
    """
    examples = example_list(examples)
    if not examples:
        raise ValueError("activation_differences() got no examples")
    reference = list(reference) if reference is not None else base_answers(model, examples)
    if len(reference) != len(examples):
        raise ValueError(f"{len(examples)} examples but {len(reference)} reference answers")
    data = answer_means(model, examples, [e.answer for e in examples], layers)
    own = answer_means(model, examples, reference, layers)
    return {layer: data[layer] - own[layer] for layer in data}


def projection_differences(
    model, examples: Sequence[Example], probes: Mapping[str, Probe], *, reference: Sequence[str] | None = None
) -> dict[str, torch.Tensor]:
    """Per-sample projection difference ([n]) on each probe; ``.mean()`` is the dataset-level number.

    Scoring several vectors at once costs the same two passes (data answers, own answers)
    as scoring one.
    """
    if not probes:
        raise ValueError("projection_differences() needs at least one (vector, layer) probe")
    for vector, _ in probes.values():
        vector.check_model(model)
    diffs = activation_differences(
        model, examples, sorted({layer for _, layer in probes.values()}), reference=reference
    )
    return {name: project(diffs[layer], vector.at(layer)) for name, (vector, layer) in probes.items()}


def projection_difference(
    model, examples: Sequence[Example], vector: PersonaVector, layer: int, *, reference: Sequence[str] | None = None
) -> torch.Tensor:
    """Per-sample projection difference ([n]) on one vector at ``layer`` (see ``projection_differences``)."""
    return projection_differences(model, examples, {"vector": (vector, layer)}, reference=reference)["vector"]


def filtering_null(
    mean_differences: Mapping[str, torch.Tensor],
    shifts: Mapping[str, float],
    direction: torch.Tensor,
    *,
    shuffled: torch.Tensor | None = None,
    n_random: int = 200,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict:
    """Does the persona vector rank datasets by the shift training causes better than a random direction?

    ``mean_differences[ds]`` is dataset ``ds``'s mean activation difference at one layer
    ([d], the mean over samples of ``activation_differences``), ``shifts[ds]`` the judged
    trait shift training on it caused, ``direction`` the persona vector at that layer. The
    value is the Spearman correlation of the projections with the shifts; the null is the
    same for ``n_random`` random unit directions (seeded); the interval a bootstrap over
    datasets (with five datasets it is wide, and says so). Returns ``stats.null_summary``'s dict,
    plus ``shuffled_p95`` and ``shuffled_percentile`` against ``shuffled`` ([S, d] directions:
    the vector's label-shuffled ones, ``PersonaVector.shuffled_units``), NaN when not given.
    """
    from personalab.stats import bootstrap_ci, null_summary, shuffled_summary, spearman

    names = [ds for ds in mean_differences if ds in shifts]
    if len(names) < 3:
        raise ValueError(f"filtering_null needs at least 3 datasets with a shift, got {len(names)}")
    n_random = positive_int(n_random, "n_random")
    diffs = vectors_of_one_width({ds: mean_differences[ds] for ds in names}, "mean_differences")
    acts = torch.stack(list(diffs.values()))  # [k, d]
    direction = vectors_of_one_width({"direction": direction}, "argument", width=acts.shape[1], nonzero=True)[
        "direction"
    ]
    y = [finite_real(shifts[ds], f"shifts[{ds!r}]") for ds in names]
    gen = torch.Generator().manual_seed(seed)
    rand = torch.randn(n_random, acts.shape[1], generator=gen, dtype=torch.float64)
    units = torch.cat([(direction.double() / direction.double().norm())[None], rand / rand.norm(dim=1, keepdim=True)])
    n_shuffled = 0
    if shuffled is not None:
        shuffled = torch.as_tensor(shuffled).double()
        if shuffled.dim() != 2 or shuffled.shape[1] != acts.shape[1] or shuffled.shape[0] == 0:
            raise ValueError(f"shuffled must be [S, {acts.shape[1]}] directions, got {tuple(shuffled.shape)}")
        n_shuffled = shuffled.shape[0]
        units = torch.cat([units, shuffled / shuffled.norm(dim=1, keepdim=True).clamp_min(1e-12)])
    proj = acts @ units.T  # [k, 1 + R (+ S)]; column 0 = the persona vector

    def rho(col: int, rows: list[int]) -> float:
        xs = [proj[i, col].item() for i in rows]
        return spearman(xs, [y[i] for i in rows]) if len(set(rows)) >= 3 else float("nan")

    every = list(range(len(names)))
    ci = bootstrap_ci(lambda draw: rho(0, draw), len(names), n_boot=n_boot, seed=seed)
    value = rho(0, every)
    shuffled_rhos = [rho(j, every) for j in range(1 + n_random, 1 + n_random + n_shuffled)]
    return {
        **null_summary(value, [rho(j, every) for j in range(1, 1 + n_random)], ci),
        **shuffled_summary(value, shuffled_rhos),
    }


def drop_top(examples: Sequence[Example], scores: Sequence[float], k: int) -> list[Example]:
    """The examples without the ``k`` highest-scoring ones (order kept)."""
    examples = example_list(examples)
    k = integer(k, "k")
    if not 0 <= k <= len(examples):
        raise ValueError(f"k must be between 0 and {len(examples)}, got {k}")
    same_length(examples, scores, "examples", "scores")
    values = [finite_real(s, f"scores[{i}]") for i, s in enumerate(scores)]  # NaN would sort anywhere
    drop = set(sorted(range(len(examples)), key=lambda i: -values[i])[:k])
    return [e for i, e in enumerate(examples) if i not in drop]
