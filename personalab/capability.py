"""A small capability check: does the model still know easy facts while being steered?

60 easy multiple-choice items written by us (``data/capability.jsonl``: geography,
everyday science, arithmetic, language, common sense, nature), in the spirit of the
paper's MMLU check. Each item is scored by log-probability: the model "answers" with
the choice whose tokens it finds most likely after ``Question: ...\\nAnswer:``. Runs
through nnsight, so active ``steer(...)`` blocks apply. Also: KL divergence of the
next-token distribution on neutral text, the other half of steering's price.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources

import torch

from personalab.models import model_id, scoring_precision, trace_kwargs
from personalab.profiling import staged
from personalab.prompting import active_interventions, apply_interventions
from personalab.validate import positive_int, same_length, text_list

NEUTRAL_TEXTS = (
    "The library opens at nine in the morning and closes at six in the evening.",
    "Water boils at one hundred degrees Celsius at sea level.",
    "To make a cup of tea, boil water, add a tea bag and wait a few minutes.",
    "The train to the city leaves every half hour from platform two.",
    "Most plants need sunlight, water and good soil to grow well.",
    "She wrote a short letter to her friend and posted it on Monday.",
)


@dataclass(frozen=True)
class Item:
    id: str
    question: str
    choices: list[str]
    answer: int
    topic: str


def load_items() -> list[Item]:
    """The 60 built-in capability items."""
    text = (resources.files("personalab") / "data" / "capability.jsonl").read_text(encoding="utf-8")
    return [Item(**json.loads(line)) for line in text.splitlines() if line.strip()]


def sequence_logits(model, texts: Sequence[str], keep_last: int | None = None) -> torch.Tensor:
    """Logits for a left-padded batch, in one nnsight trace with active interventions applied.

    ``keep_last=k`` asks the model for the logits of the last ``k`` positions only
    (transformers' ``logits_to_keep``): scoring short answers then skips most of the
    49k-wide unembedding, about a quarter of the compute.
    """
    hooks = active_interventions(model)
    kwargs = {"logits_to_keep": keep_last} if keep_last else {}
    with scoring_precision(model), model.trace(list(texts), **kwargs, **trace_kwargs(model)):
        if hooks:
            apply_interventions(model, hooks, step=0)
        logits = model.lm_head.output.save()
    return logits.detach().float()


def choice_logprobs(model, prompts: Sequence[str], choices: Sequence[Sequence[str]],
                    batch_size: int = 48) -> list[torch.Tensor]:
    """Total log-probability of each choice's tokens after its prompt.

    Every (prompt, choice) pair becomes one text; the texts are scored in left-padded
    batches of similar length (sorted, so little compute goes to padding). Returns one
    tensor of choice log-probs per prompt.
    """
    tok = model.tokenizer
    prompts = text_list(prompts, "prompts")
    if isinstance(choices, str) or not isinstance(choices, Sequence):
        raise TypeError(f"choices must be one list of strings per prompt, got {type(choices).__name__}")
    choices = [text_list(cs, f"choices[{i}]") for i, cs in enumerate(choices)]
    same_length(prompts, choices, "prompts", "lists of choices")
    batch_size = positive_int(batch_size, "batch_size")
    texts, spans = [], []
    for p, cs in zip(prompts, choices, strict=True):
        n_prompt = len(tok(p)["input_ids"])
        for c in cs:
            t = p + " " + c
            texts.append(t)
            spans.append((n_prompt, len(tok(t)["input_ids"])))
    order = sorted(range(len(texts)), key=lambda i: spans[i][1])
    scores: list[torch.Tensor] = [torch.tensor(0.0)] * len(texts)
    for s in range(0, len(order), batch_size):
        rows = order[s:s + batch_size]
        batch, batch_spans = [texts[i] for i in rows], [spans[i] for i in rows]
        keep = max(n - n_prompt for n_prompt, n in batch_spans) + 1  # left padding: the choices end every row
        logits = sequence_logits(model, batch, keep_last=keep)  # [b, keep, vocab]: positions seq-keep .. seq-1
        ids = tok(batch, return_tensors="pt", padding=True)["input_ids"][:, -keep:]
        logp = logits[:, :-1].gather(-1, ids[:, 1:, None])[..., 0] - torch.logsumexp(logits[:, :-1], -1)
        for i, (n_prompt, n) in enumerate(batch_spans):  # the choice's n - n_prompt tokens end the row
            scores[rows[i]] = logp[i, keep - 1 - (n - n_prompt):].sum()
    out, k = [], 0
    for cs in choices:
        out.append(torch.stack(scores[k:k + len(cs)]))
        k += len(cs)
    return out


_UNSTEERED: dict[tuple, float] = {}


@staged("capability")
def capability_score(model, items: Sequence[Item] | None = None) -> float:
    """Accuracy (0-1) on the capability items, scored by log-probability.

    The unsteered score of a model is computed once per process and remembered.
    """
    items = list(items) if items is not None else load_items()
    if not items:
        raise ValueError("capability_score() got no items: pass None for the 60 built-in ones")
    bad = next((it for it in items if not isinstance(it, Item)), None)
    if bad is not None:
        raise TypeError(f"capability_score() takes capability.Item objects, got {bad!r:.60} ({type(bad).__name__})")
    key = (id(model), model_id(model), repr(items))  # the items' content, not only their ids
    steered = bool(active_interventions(model))
    if not steered and key in _UNSTEERED:
        return _UNSTEERED[key]
    lps = choice_logprobs(model, [f"Question: {it.question}\nAnswer:" for it in items], [it.choices for it in items])
    acc = sum(int(lp.argmax().item() == it.answer) for lp, it in zip(lps, items, strict=True)) / len(items)
    if not steered:
        _UNSTEERED[key] = acc
    return acc


@staged("capability")
def neutral_kl(model, reference_logits: torch.Tensor | None = None) -> tuple[float, torch.Tensor]:
    """Mean KL(reference || current) of next-token distributions on neutral text.

    Call once outside any ``steer`` block to get the reference logits, then inside to
    measure how far steering moved the model: ``ref = neutral_kl(model)[1]``.
    """
    logits = sequence_logits(model, NEUTRAL_TEXTS)
    if reference_logits is None:
        return 0.0, logits
    if not isinstance(reference_logits, torch.Tensor) or reference_logits.shape != logits.shape:
        got = tuple(reference_logits.shape) if isinstance(reference_logits, torch.Tensor) else type(reference_logits).__name__
        raise ValueError(f"reference_logits must be the [batch, seq, vocab] = {tuple(logits.shape)} logits that "
                         f"neutral_kl(model)[1] returned on this model, got {got}")
    mask = model.tokenizer(list(NEUTRAL_TEXTS), return_tensors="pt", padding=True)["attention_mask"].bool()
    p = torch.log_softmax(reference_logits, -1)
    q = torch.log_softmax(logits, -1)
    kl = (p.exp() * (p - q)).sum(-1)  # [batch, seq]
    return kl[mask].mean().item(), logits
