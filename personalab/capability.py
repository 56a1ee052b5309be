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

from personalab.models import trace_kwargs
from personalab.prompting import active_interventions, apply_interventions

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


def sequence_logits(model, texts: Sequence[str]) -> torch.Tensor:
    """Logits for a left-padded batch, in one nnsight trace with active interventions applied."""
    hooks = active_interventions(model)
    with model.trace(list(texts), **trace_kwargs(model)):
        if hooks:
            apply_interventions(model, hooks, step=0)
        logits = model.lm_head.output.save()
    return logits.detach().float()


def choice_logprobs(model, prompts: Sequence[str], choices: Sequence[Sequence[str]],
                    batch_size: int = 48) -> list[torch.Tensor]:
    """Total log-probability of each choice's tokens after its prompt.

    Every (prompt, choice) pair becomes one text; the texts are scored in left-padded
    batches. Returns one tensor of choice log-probs per prompt.
    """
    tok = model.tokenizer
    texts, spans = [], []
    for p, cs in zip(prompts, choices, strict=True):
        n_prompt = len(tok(p)["input_ids"])
        for c in cs:
            t = p + " " + c
            texts.append(t)
            spans.append((n_prompt, len(tok(t)["input_ids"])))
    scores = []
    for s in range(0, len(texts), batch_size):
        batch = texts[s:s + batch_size]
        logits = sequence_logits(model, batch)
        ids = tok(batch, return_tensors="pt", padding=True)["input_ids"]
        seq = ids.shape[1]
        logp = logits.gather(-1, ids[:, 1:, None])[..., 0] - torch.logsumexp(logits[:, :-1], -1)  # [b, seq-1]
        for i, (n_prompt, n) in enumerate(spans[s:s + batch_size]):
            scores.append(logp[i, seq - n + n_prompt - 1:].sum())
    out, k = [], 0
    for cs in choices:
        out.append(torch.stack(scores[k:k + len(cs)]))
        k += len(cs)
    return out


_UNSTEERED: dict[tuple, float] = {}


def capability_score(model, items: Sequence[Item] | None = None) -> float:
    """Accuracy (0-1) on the capability items, scored by log-probability.

    The unsteered score of a model is computed once per process and remembered.
    """
    items = list(items) if items is not None else load_items()
    key = (id(model), tuple(it.id for it in items))
    steered = bool(active_interventions(model))
    if not steered and key in _UNSTEERED:
        return _UNSTEERED[key]
    lps = choice_logprobs(model, [f"Question: {it.question}\nAnswer:" for it in items], [it.choices for it in items])
    acc = sum(int(lp.argmax().item() == it.answer) for lp, it in zip(lps, items, strict=True)) / len(items)
    if not steered:
        _UNSTEERED[key] = acc
    return acc


def neutral_kl(model, reference_logits: torch.Tensor | None = None) -> tuple[float, torch.Tensor]:
    """Mean KL(reference || current) of next-token distributions on neutral text.

    Call once outside any ``steer`` block to get the reference logits, then inside to
    measure how far steering moved the model: ``ref = neutral_kl(model)[1]``.
    """
    logits = sequence_logits(model, NEUTRAL_TEXTS)
    if reference_logits is None:
        return 0.0, logits
    mask = model.tokenizer(list(NEUTRAL_TEXTS), return_tensors="pt", padding=True)["attention_mask"].bool()
    p = torch.log_softmax(reference_logits, -1)
    q = torch.log_softmax(logits, -1)
    kl = (p.exp() * (p - q)).sum(-1)  # [batch, seq]
    return kl[mask].mean().item(), logits
