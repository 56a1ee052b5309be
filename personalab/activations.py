"""Reading the residual stream: every layer's activations for a batch of texts.

Layer convention (see ``personalab.models``): index 0 = embeddings, index i = output
of decoder block i, so every per-layer tensor has ``n_layers + 1`` rows. Each reader is
one nnsight trace per batch and can stop the forward pass after the deepest layer it needs.
"""

from __future__ import annotations

from collections.abc import Sequence

import nnsight
import torch
from tqdm.auto import tqdm

from personalab.models import (
    activation_precision,
    check_context,
    check_layer,
    decoder_layers,
    length_batches,
    n_layers,
    trace_kwargs,
)
from personalab.profiling import stage
from personalab.validate import positive_int, text_list

POOLINGS = ("response", "prompt", "last_prompt")


def residual_stream(model, prompts: list[str] | str, *, upto: int | None = None) -> torch.Tensor:
    """Residual-stream activations for a (left-padded) batch of prompts, one nnsight trace.

    Returns ``[batch, n_layers + 1, seq, d_model]`` (``upto + 1`` layers if ``upto``
    is given). The trace stops after the deepest block it reads, so the rest of the forward
    pass (at least the final norm and the ``seq x vocab`` logits) is never computed. Rows
    are left-padded like the tokenizer pads them.
    """
    prompts = text_list([prompts] if isinstance(prompts, str) else prompts, "prompts")
    check_context(model, prompts)
    last = n_layers(model) if upto is None else check_layer(model, upto)
    blocks = decoder_layers(model)
    with stage("activations"), model.trace(prompts, **trace_kwargs(model)) as tracer:
        saved = nnsight.save([model.model.embed_tokens.output])
        for i in range(last):  # modules must be read in forward order
            saved.append(blocks[i].output)
        tracer.stop()  # nothing after the deepest block read is needed: skip the rest (final norm, logits)
    return torch.stack([h.detach() for h in saved], dim=1)


def answer_activations(
    model,
    prompts: Sequence[str],
    answers: Sequence[str],
    *,
    batch_size: int = 8,
    upto: int | None = None,
    desc: str = "activations",
) -> dict[str, torch.Tensor]:
    """Per answer and layer: mean over response tokens, mean over prompt tokens, last prompt token.

    Returns ``{"response" | "prompt" | "last_prompt": [n, n_layers + 1, d_model]}`` and
    ``"response_norm": [n, n_layers + 1]`` (mean L2 norm of the response tokens, used
    to express steering strength relative to the residual stream). Each batch is one
    nnsight trace over the left-padded (prompt + answer) texts; texts of similar length
    are batched together (less padding) and the rows come back in the order given.
    ``upto`` keeps layers ``0..upto`` only and skips the rest of the forward pass — pass
    the one layer you will read (projections, monitoring) to save that compute. Runs in
    bfloat16 autocast where ``models.activation_precision`` says so (vectors unchanged to
    cosine 0.9999, 2-3x faster on a CPU with native bfloat16).
    """
    tok = model.tokenizer
    if len(prompts) != len(answers):
        raise ValueError(f"{len(prompts)} prompts but {len(answers)} answers")
    if batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size}")
    n_prompt = [len(tok(p)["input_ids"]) for p in prompts]
    n_total = [len(tok(p + a)["input_ids"]) for p, a in zip(prompts, answers, strict=True)]
    for i, (n_p, n_t) in enumerate(zip(n_prompt, n_total, strict=True)):
        if n_t <= n_p:
            raise ValueError(f"answer {i} is empty after tokenization: nothing to average over")
    rows: dict[int, dict[str, torch.Tensor]] = {}
    # one autocast region for every batch: autocast casts the weights once per region, not per batch
    with activation_precision(model):
        for idx in tqdm(length_batches(n_total, batch_size), desc=desc, leave=False):
            hs = residual_stream(model, [prompts[i] + answers[i] for i in idx], upto=upto)  # [b, L+1, seq, d]
            seq = hs.shape[2]
            for j, i in enumerate(idx):
                h = hs[j, :, seq - n_total[i] :]  # [L+1, tokens, d] without padding
                resp = h[:, n_prompt[i] :]
                rows[i] = {
                    "response": resp.mean(1),
                    "prompt": h[:, : n_prompt[i]].mean(1),
                    "last_prompt": h[:, n_prompt[i] - 1],
                    "response_norm": resp.norm(dim=-1).mean(1),
                }
    return {k: torch.stack([rows[i][k] for i in range(len(prompts))]) for k in (*POOLINGS, "response_norm")}


def last_token_stack(model, prompts: Sequence[str], *, upto: int | None = None, batch_size: int = 16) -> torch.Tensor:
    """The residual stream of each prompt's last token at layers ``0..upto`` (default: all):
    ``[n, upto + 1, d_model]``. Prompts of similar length share a batch (less padding); rows
    come back in the order given."""
    prompts = text_list(prompts, "prompts")
    batch_size = positive_int(batch_size, "batch_size")
    if upto is not None:
        check_layer(model, upto)
    lengths = [len(ids) for ids in model.tokenizer(list(prompts))["input_ids"]]
    out = torch.empty(0)
    for idx in length_batches(lengths, batch_size):
        last = residual_stream(model, [prompts[i] for i in idx], upto=upto)[:, :, -1]  # left-padded: -1 is last
        if out.numel() == 0:
            out = torch.empty(len(prompts), *last.shape[1:], dtype=last.dtype)
        out[idx] = last
    return out


def last_token_activations(model, prompts: Sequence[str], layer: int, batch_size: int = 16) -> torch.Tensor:
    """The residual stream of each prompt's last token at ``layer``: ``[n, d_model]``."""
    layer = check_layer(model, layer)
    return last_token_stack(model, prompts, upto=layer, batch_size=batch_size)[:, layer]
