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


def choice_logprobs(model, prompt: str, choices: Sequence[str]) -> torch.Tensor:
    """Total log-probability of each choice's tokens after ``prompt`` ([n_choices])."""
    tok = model.tokenizer
    texts = [prompt + " " + c for c in choices]
    logp = torch.log_softmax(sequence_logits(model, texts), -1)
    enc = tok(texts, return_tensors="pt", padding=True)
    n_prompt = len(tok(prompt)["input_ids"])
    seq = enc["input_ids"].shape[1]
    out = []
    for i, text in enumerate(texts):
        n = len(tok(text)["input_ids"])
        ids = enc["input_ids"][i, seq - n + n_prompt:]
        lp = logp[i, seq - n + n_prompt - 1: seq - 1].gather(-1, ids[:, None])[:, 0]
        out.append(lp.sum())
    return torch.stack(out)


def capability_score(model, items: Sequence[Item] | None = None) -> float:
    """Accuracy (0-1) on the capability items, scored by log-probability."""
    items = list(items) if items is not None else load_items()
    correct = 0
    for it in items:
        lp = choice_logprobs(model, f"Question: {it.question}\nAnswer:", it.choices)
        correct += int(lp.argmax().item() == it.answer)
    return correct / len(items)


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
