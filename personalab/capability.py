"""A small capability check: does the model still know easy facts while being steered?

60 easy multiple-choice items written by us (``data/capability.jsonl``: geography,
everyday science, arithmetic, language, common sense, nature), in the spirit of the
paper's MMLU check. Each item is scored by log-probability: the model "answers" with
the choice whose tokens it finds most likely after ``Question: ...\\nAnswer:``. Runs
through nnsight, so active ``steer(...)`` blocks apply. Also: KL divergence of the
next-token distribution on neutral text, the other half of steering's price.
"""

from __future__ import annotations

import hashlib
import json
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources

import torch

from personalab.models import (
    decoder_layers,
    length_batches,
    model_id,
    scoring_precision,
    trace_kwargs,
    weights_version,
)
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


@dataclass(frozen=True)
class _Pack:
    """One prompt and all its choices in one row: the shared prefix once, then each choice's
    own tokens, which see the prefix and themselves but not the other choices."""

    ids: list[int]
    positions: list[int]  # position ids: every choice continues from the end of the prefix
    blocks: list[tuple[int, int]]  # (start, end) of each choice's own tokens in ``ids``
    targets: list[list[tuple[int, int]]]  # per choice: (row index predicting the token, token id)


def _pack(tok, prompt: str, choices: Sequence[str]) -> _Pack:
    """Tokenise ``prompt + " " + choice`` for every choice and fold them into one row.

    The scored tokens are those after the prompt's own tokens, as if each text were run
    alone; tokens the texts share at the start (the prompt, as a rule) are run once.
    """
    n_prompt = len(tok(prompt)["input_ids"])
    fulls = [tok(prompt + " " + c)["input_ids"] for c in choices]
    shared = 0
    while all(len(f) > shared + 1 and f[shared] == fulls[0][shared] for f in fulls) and shared < n_prompt:
        shared += 1
    ids, positions, blocks, targets = list(fulls[0][:shared]), list(range(shared)), [], []
    for full in fulls:
        start = len(ids)
        ids += full[shared:]
        positions += range(shared, len(full))
        blocks.append((start, len(ids)))
        # full[j - 1] predicts full[j]; it sits at j in the shared prefix, else in this choice's block
        targets.append(
            [(j - 1 if j - 1 < shared else start + j - 1 - shared, full[j]) for j in range(max(n_prompt, 1), len(full))]
        )
    return _Pack(ids, positions, blocks, targets)


def _packed_batch(packs: Sequence[_Pack], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded ids, position ids and a 4-D additive attention mask for ``packs``."""
    width = max(len(p.ids) for p in packs)
    ids = torch.full((len(packs), width), pad_id, dtype=torch.long)
    positions = torch.zeros((len(packs), width), dtype=torch.long)
    allowed = torch.eye(width, dtype=torch.bool).repeat(len(packs), 1, 1)  # padding sees itself (no NaN rows)
    for b, p in enumerate(packs):
        n, shared = len(p.ids), p.blocks[0][0]
        ids[b, :n], positions[b, :n] = torch.tensor(p.ids), torch.tensor(p.positions)
        allowed[b, :shared, :shared] = torch.ones(shared, shared, dtype=torch.bool).tril()
        for start, end in p.blocks:
            allowed[b, start:end, :shared] = True
            allowed[b, start:end, start:end] = torch.ones(end - start, end - start, dtype=torch.bool).tril()
    mask = torch.zeros(allowed.shape, dtype=torch.float32).masked_fill_(~allowed, torch.finfo(torch.float32).min)
    return {"input_ids": ids, "attention_mask": mask[:, None], "position_ids": positions}


def choice_logprobs(
    model, prompts: Sequence[str], choices: Sequence[Sequence[str]], batch_size: int = 16
) -> list[torch.Tensor]:
    """Total log-probability of each choice's tokens after its prompt.

    Each prompt and its choices share one row: the prompt runs once and every choice
    attends to it and to itself only (a 4-D attention mask, position ids that restart
    after the prompt), so a four-choice item costs its prompt once instead of four times,
    with the same log-probabilities as four separate texts. Rows of similar length are
    batched. Returns one tensor of choice log-probs per prompt.
    """
    tok = model.tokenizer
    prompts = text_list(prompts, "prompts")
    if isinstance(choices, str) or not isinstance(choices, Sequence):
        raise TypeError(f"choices must be one list of strings per prompt, got {type(choices).__name__}")
    choices = [text_list(cs, f"choices[{i}]") for i, cs in enumerate(choices)]
    same_length(prompts, choices, "prompts", "lists of choices")
    batch_size = positive_int(batch_size, "batch_size")
    packs = [_pack(tok, p, cs) for p, cs in zip(prompts, choices, strict=True)]
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else 0
    out: list[torch.Tensor] = [torch.empty(0)] * len(packs)
    # one autocast region for every batch: autocast casts the weights once per region, not per batch
    with scoring_precision(model):
        for rows in length_batches([len(p.ids) for p in packs], batch_size):
            batch = [packs[i] for i in rows]
            keep = sorted({q for p in batch for tgt in p.targets for q, _ in tgt})  # rows whose logits are needed
            inputs = _packed_batch(batch, pad_id)
            logits = _scoring_logits(
                model, inputs, torch.tensor(keep), _lower_blocks(model, inputs)
            )  # [b, keep, vocab]
            logp = torch.log_softmax(logits, -1)
            at = {q: k for k, q in enumerate(keep)}
            for b, (i, p) in enumerate(zip(rows, batch, strict=True)):
                out[i] = torch.stack([sum((logp[b, at[q], t] for q, t in tgt), torch.tensor(0.0)) for tgt in p.targets])
    return out


def _scoring_logits(
    model, inputs: dict[str, torch.Tensor], keep: torch.Tensor, lower: tuple[int, torch.Tensor] | None = None
) -> torch.Tensor:
    """Logits at the sequence positions ``keep`` for prepared inputs, active interventions applied
    (in the caller's ``scoring_precision`` region).

    ``lower = (layer, h)``: ``h`` is block ``layer``'s unsteered output for these very inputs
    (``_lower_blocks``); blocks 1..``layer`` are skipped (nnsight's ``skip``) and ``h`` stands in
    for their output, so only the blocks above it run.
    """
    hooks = active_interventions(model)
    blocks = decoder_layers(model)
    with model.trace(inputs, logits_to_keep=keep, **trace_kwargs(model)):
        if lower is not None:
            layer, h = lower
            for i in range(layer):  # a skipped block's output only feeds the next, skipped, block
                blocks[i].skip(h.clone() if i == layer - 1 else h)  # a clone: interventions edit it in place
        if hooks:
            apply_interventions(model, hooks, step=0)
        logits = model.lm_head.output.save()
    return logits.detach().float()


# per model object (weakly held): (inputs, layer) -> that block's unsteered output on those inputs
_LOWER: weakref.WeakKeyDictionary[object, dict[tuple, torch.Tensor]] = weakref.WeakKeyDictionary()
_LOWER_MAX = 64  # entries per model: the built-in items are 4 batches, so 16 layers' worth


def _digest(t: torch.Tensor) -> tuple:
    """A key for a tensor's exact content."""
    return t.dtype, tuple(t.shape), hashlib.sha256(t.contiguous().numpy().tobytes()).hexdigest()


def _lower_blocks(model, inputs: dict[str, torch.Tensor]) -> tuple[int, torch.Tensor] | None:
    """``(layer, h)`` for ``_scoring_logits``: the output of block ``layer``, the lowest layer any
    active intervention touches, computed without interventions once per model, inputs and layer.

    An intervention acts at its layers only, so every block up to and including the lowest
    one computes the same output steered or not; a sweep that scores the same items at many
    coefficients of one layer runs those blocks once. None (run every block) when nothing is
    active, when an intervention touches the embeddings, or on a remote model.
    """
    hooks = active_interventions(model)
    layer = min((lay for h in hooks for lay in h.layers), default=0)
    if layer < 1 or trace_kwargs(model):
        return None
    key = (
        model_id(model),
        weights_version(model),
        layer,
        torch.is_autocast_enabled("cpu"),
        *(_digest(t) for t in inputs.values()),
    )
    memo = _LOWER.setdefault(model, {})
    if key not in memo:
        while len(memo) >= _LOWER_MAX:  # a bounded memo: the oldest entry goes first
            memo.pop(next(iter(memo)))
        with model.trace(inputs, **trace_kwargs(model)) as tracer:
            h = decoder_layers(model)[layer - 1].output.save()
            tracer.stop()  # the blocks above are the steered pass's work
        memo[key] = h.detach()
    return layer, memo[key]


# per model object (weakly held), then per item set: the unsteered score, computed once
_UNSTEERED: weakref.WeakKeyDictionary[object, dict[tuple, float]] = weakref.WeakKeyDictionary()


@staged("capability")
def capability_score(model, items: Sequence[Item] | None = None) -> float:
    """Accuracy (0-1) on the capability items, scored by log-probability.

    The unsteered score of a model is computed once per process and remembered (anew after
    its weights are changed in place: ``models.weights_version``).
    """
    items = list(items) if items is not None else load_items()
    if not items:
        raise ValueError("capability_score() got no items: pass None for the 60 built-in ones")
    bad = next((it for it in items if not isinstance(it, Item)), None)
    if bad is not None:
        raise TypeError(f"capability_score() takes capability.Item objects, got {bad!r:.60} ({type(bad).__name__})")
    key = (model_id(model), weights_version(model), repr(items))  # the items' content, not only their ids
    memo = _UNSTEERED.setdefault(model, {})
    steered = bool(active_interventions(model))
    if not steered and key in memo:
        return memo[key]
    lps = choice_logprobs(model, [f"Question: {it.question}\nAnswer:" for it in items], [it.choices for it in items])
    acc = sum(int(lp.argmax().item() == it.answer) for lp, it in zip(lps, items, strict=True)) / len(items)
    if not steered:
        memo[key] = acc
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
        got = (
            tuple(reference_logits.shape)
            if isinstance(reference_logits, torch.Tensor)
            else type(reference_logits).__name__
        )
        raise ValueError(
            f"reference_logits must be the [batch, seq, vocab] = {tuple(logits.shape)} logits that "
            f"neutral_kl(model)[1] returned on this model, got {got}"
        )
    mask = model.tokenizer(list(NEUTRAL_TEXTS), return_tensors="pt", padding=True)["attention_mask"].bool()
    p = torch.log_softmax(reference_logits, -1)
    q = torch.log_softmax(logits, -1)
    kl = (p.exp() * (p - q)).sum(-1)  # [batch, seq]
    return kl[mask].mean().item(), logits
