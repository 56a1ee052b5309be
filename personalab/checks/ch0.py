"""Checks for chapter 0 (inside a chat model: nnsight basics and the logit lens).

Every check runs the learner's function on a tiny random model (``personalab.tiny_model``,
built in well under a second) and compares it with plain PyTorch: forward hooks on the
underlying Hugging Face model (``model._module``), so the reference does not depend on
nnsight at all.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from personalab.checks._core import ExerciseFailed, assert_close, passed
from personalab.models import tiny_model

_PROMPTS = ("The cat sat on the mat", "Persona vectors live in the residual stream.")
_TINY = None


def _tiny():
    """One tiny model shared by all ch0 checks (cheap to build, but no need to build it twice)."""
    global _TINY
    if _TINY is None:
        _TINY = tiny_model()
    return _TINY


def _block_output(out) -> torch.Tensor:
    """A decoder block's output tensor, whether the block returns a tensor or a tuple."""
    return out if torch.is_tensor(out) else out[0]


def hooked_block_output(model, prompt: str, k: int) -> torch.Tensor:
    """Reference: the output of ``model.model.layers[k]`` via a plain forward hook. ``[1, seq, d]``."""
    hf = model._module
    seen: list[torch.Tensor] = []
    handle = hf.model.layers[k].register_forward_hook(lambda m, i, o: seen.append(_block_output(o).detach()))
    try:
        with torch.no_grad():
            hf(**model.tokenizer(prompt, return_tensors="pt"))
    finally:
        handle.remove()
    return seen[0]


def hooked_logits_with_vector(model, prompt: str, k: int, vector: torch.Tensor) -> torch.Tensor:
    """Reference: last-position logits ``[vocab]`` with ``vector`` added to block k's output everywhere."""
    hf = model._module

    def add(module, inputs, out):
        if torch.is_tensor(out):
            return out + vector
        return (out[0] + vector, *out[1:])

    handle = hf.model.layers[k].register_forward_hook(add)
    try:
        with torch.no_grad():
            logits = hf(**model.tokenizer(prompt, return_tensors="pt")).logits
    finally:
        handle.remove()
    return logits[0, -1]


def _call(fn: Callable, *args):
    """Run the learner's function; turn the classic nnsight slip into a hint."""
    try:
        return fn(*args)
    except NameError as err:  # includes UnboundLocalError
        raise ExerciseFailed(
            f"your function raised {type(err).__name__}: {err}. Only values you "
            "`.save()` inside the `with model.trace(...)` block exist after it."
        ) from None


def _as_tensor(x, what: str) -> torch.Tensor:
    if x is None:
        raise ExerciseFailed(f"{what}: your function returned None (did you forget `return`?)")
    if not torch.is_tensor(x):
        raise ExerciseFailed(f"{what}: expected a torch.Tensor, got {type(x).__name__}")
    return x.detach()


def check_save_layer_output(fn: Callable) -> None:
    """``fn(model, prompt, k) -> Tensor [1, seq, d_model]``: the output of ``model.model.layers[k]``.

    Every block is tried, the last one included: there Hugging Face's ``hidden_states[k + 1]``
    has the final norm applied, so an answer read from ``output_hidden_states`` fails.
    """
    model = _tiny()
    n = len(model._module.model.layers)
    for prompt in _PROMPTS:
        for k in range(n):
            want = hooked_block_output(model, prompt, k)
            got = _as_tensor(_call(fn, model, prompt, k), f"block {k}")
            if got.dim() == 2:
                got = got[None]  # accept [seq, d] as well
            for other in (k - 1, k + 1):
                if (
                    0 <= other < n
                    and got.shape == want.shape
                    and torch.allclose(got, hooked_block_output(model, prompt, other), atol=1e-5)
                ):
                    raise ExerciseFailed(
                        f"for k={k} you returned the output of model.model.layers[{other}]: "
                        "an off-by-one. layers[k] is the (k+1)-th block, 0-based."
                    )
            if (
                k == n - 1
                and got.shape == want.shape
                and torch.allclose(got, model._module.model.norm(want), atol=1e-5)
            ):
                raise ExerciseFailed(
                    f"for the last block (k={k}) you returned its output after the final norm "
                    "(as hidden_states[-1] is): save model.model.layers[k].output itself."
                )
            assert_close(got, want, f"output of model.model.layers[{k}] for {prompt!r}", atol=1e-5)
    passed("save a block's output")


def check_add_vector(fn: Callable) -> None:
    """``fn(model, prompt, k, vector) -> Tensor [vocab]``: last-position logits after adding
    ``vector`` to the output of ``model.model.layers[k]`` at every position."""
    model = _tiny()
    d = int(model.config.hidden_size)
    gen = torch.Generator().manual_seed(0)
    for prompt in _PROMPTS:
        for k in (1, 3):
            vector = 3.0 * torch.randn(d, generator=gen)
            want = hooked_logits_with_vector(model, prompt, k, vector)
            got = _as_tensor(_call(fn, model, prompt, k, vector.clone()), f"logits (k={k})")
            if got.dim() == 3:
                got = got[0, -1]  # accept the full [1, seq, vocab] logits too
            clean = hooked_logits_with_vector(model, prompt, k, torch.zeros(d))
            if got.shape == clean.shape and torch.allclose(got, clean, atol=1e-5):
                raise ExerciseFailed(
                    "the logits are exactly the unedited model's: the vector was not added. "
                    "Edit the block's output in place inside the trace, e.g. "
                    "`model.model.layers[k].output[:] += vector`, then save the logits."
                )
            assert_close(
                got, want, f"last-position logits with the vector added after block {k} ({prompt!r})", atol=1e-4
            )
    passed("add a vector to the residual stream")


def _tiny_with_norm_gain():
    """A tiny model whose final norm has a non-trivial gain (a fresh one's is all ones, so
    a hand-written RMS normalisation that forgot the weight would pass on it)."""
    model = tiny_model()
    gen = torch.Generator().manual_seed(2)
    with torch.no_grad():
        norm = model._module.model.norm
        norm.weight.copy_(0.5 + 1.5 * torch.rand(norm.weight.shape, generator=gen))
    return model


def check_logit_lens(fn: Callable) -> None:
    """``fn(model, hidden [seq, d_model]) -> logits [seq, vocab]``: final norm, then unembedding."""
    model = _tiny_with_norm_gain()
    hf = model._module
    gen = torch.Generator().manual_seed(1)
    hidden = 5.0 * torch.randn(4, int(model.config.hidden_size), generator=gen)
    norm = hf.model.norm
    with torch.no_grad():
        want = hf.lm_head(norm(hidden))
        no_norm = hf.lm_head(hidden)
        no_gain = hf.lm_head(hidden * torch.rsqrt(hidden.pow(2).mean(-1, keepdim=True) + norm.variance_epsilon))
    got = _as_tensor(_call(fn, model, hidden.clone()), "logit lens")
    if got.shape == want.shape and torch.allclose(got, no_norm, atol=1e-4):
        raise ExerciseFailed(
            "you unembedded the residual without the final norm: apply model.model.norm "
            "first, as the model does after its last block."
        )
    if got.shape == want.shape and torch.allclose(got, no_gain, atol=1e-4):
        raise ExerciseFailed(
            "you normalised the residual but left out the norm's learned gain "
            "(model.model.norm.weight): call model.model.norm itself."
        )
    if got.shape == want.shape and torch.allclose(got, want.softmax(-1), atol=1e-6):
        raise ExerciseFailed("you returned probabilities; return the logits (no softmax).")
    assert_close(got, want, "logit-lens logits of random residual vectors", atol=1e-4)
    passed("logit lens")
