"""Looking inside the residual stream: its size per layer, and the logit lens.

Both functions follow personalab's layer convention (see ``personalab.models``):
row 0 is the embedding output, row ``i`` the output of decoder block ``i`` before
the final norm, so every per-layer result has ``n_layers + 1`` rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from personalab.activations import residual_stream
from personalab.validate import text


def residual_norms(model, prompt: str, *, skip_first: bool = False) -> torch.Tensor:
    """Mean L2 norm of the residual stream over the prompt's tokens, per layer.

    Returns ``[n_layers + 1]``. ``skip_first=True`` leaves out the first token, whose
    residual often grows far larger than the others' (an "attention sink") and would
    dominate the mean.
    """
    hidden = residual_stream(model, text(prompt, "prompt"))[0]  # [n_layers + 1, seq, d_model]
    if skip_first:
        if hidden.shape[1] < 2:
            raise ValueError("skip_first=True needs a prompt of at least two tokens")
        hidden = hidden[:, 1:]
    return hidden.norm(dim=-1).mean(dim=-1)


@dataclass
class LogitLens:
    """What each layer would predict if the model stopped there.

    ``probs[l, t]`` is the probability that layer ``l`` (read through the final norm and
    the unembedding) gives to ``final_tokens[t]``, the token the full model predicts
    after position ``t``. ``top_tokens[l][t]`` is layer ``l``'s own top-1 token there
    and ``top_probs[l, t]`` its probability.
    """

    probs: torch.Tensor  # [n_layers + 1, seq]
    top_probs: torch.Tensor  # [n_layers + 1, seq]
    top_tokens: list[list[str]]  # [n_layers + 1][seq]
    input_tokens: list[str]  # [seq]
    final_tokens: list[str]  # [seq]


def lens_logits(model, hidden: torch.Tensor) -> torch.Tensor:
    """Read residual-stream vectors ``[..., d_model]`` as next-token logits ``[..., vocab]``.

    Applies the model's final norm (``model.model.norm``) and unembedding
    (``model.lm_head``), exactly what the model does after its last block. Uses the local
    weights (``model._module``), so it needs a model loaded here, not ``remote=True``.
    """
    hf = model._module
    with torch.no_grad():
        return hf.lm_head(hf.model.norm(hidden.to(hf.lm_head.weight.dtype)))


def logit_lens(model, prompt: str) -> LogitLens:
    """The logit lens (nostalgebraist, 2020): decode every layer's residual at every position.

    Meant for one short prompt: it works on ``[seq, vocab]`` probabilities, one layer at a time.
    """
    tok = model.tokenizer
    hidden = residual_stream(model, text(prompt, "prompt"))[0]  # [n_layers + 1, seq, d_model]
    final = lens_logits(model, hidden[-1]).argmax(-1)  # [seq]: the model's own predictions
    probs, top_probs, top_ids = [], [], []
    for h in hidden:  # one layer at a time keeps memory at [seq, vocab]
        p = lens_logits(model, h).float().softmax(-1)  # [seq, vocab]
        probs.append(p.gather(-1, final[:, None])[:, 0])
        best = p.max(-1)
        top_probs.append(best.values)
        top_ids.append(best.indices)
    ids = tok(prompt, return_tensors="pt")["input_ids"][0]
    return LogitLens(
        probs=torch.stack(probs),
        top_probs=torch.stack(top_probs),
        top_tokens=[_token_strings(tok, row) for row in top_ids],
        input_tokens=_token_strings(tok, ids),
        final_tokens=_token_strings(tok, final),
    )


def _token_strings(tokenizer, ids: torch.Tensor) -> list[str]:
    """Each token id decoded on its own (readable: spaces, not the BPE 'Ġ' marker)."""
    return [tokenizer.decode([i]) for i in ids.tolist()]
