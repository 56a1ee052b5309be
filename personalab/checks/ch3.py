"""Checks for chapter 3 (steering)."""

from __future__ import annotations

import warnings

import torch

from personalab.checks._core import ExerciseFailed, passed


def _lively_tiny_model():
    """A tiny random model whose blocks are far from identity, so *where* you steer matters.

    (With the default 0.02 init every block barely changes the residual stream, and
    adding a vector at block 2 or block 3 gives the same tokens.)
    """
    import personalab as pl

    model = pl.tiny_model(seed=1)
    with torch.no_grad():
        for name, p in model._module.model.layers.named_parameters():
            if "proj" in name:
                p.mul_(25.0)
    return model


def check_steering_intervention(fn, model=None) -> None:
    """``fn(model, prompt, layer, delta, max_new_tokens) -> new token ids [1, n]``.

    The learner adds ``delta`` to the output of block ``layer`` at every position and
    every generation step with nnsight; compared with ``personalab.steer`` on the same
    prompt (greedy).
    """
    import personalab as pl
    from personalab.activations import residual_stream
    from personalab.models import generation_bf16
    from personalab.prompting import chat_prompt, generate_batch
    from personalab.steering import steer
    from personalab.vectors import PersonaVector

    model = model or _lively_tiny_model()
    torch.manual_seed(0)
    n_layers, d = model.config.num_hidden_layers, model.config.hidden_size
    prompt = chat_prompt(model.tokenizer, "Tell me about the sea.")
    layer = max(1, n_layers // 2)
    norm = residual_stream(model, [prompt])[0, :, -1].norm(dim=-1)  # [L+1]: a push the model notices
    raw = torch.randn(n_layers + 1, d)
    vec = PersonaVector(raw / raw.norm(dim=-1, keepdim=True) * norm[:, None],
                        dict(model_id=pl.models.model_id(model), n_layers=n_layers, d_model=d, trait="check",
                             method="random"))
    with steer(model, vec, layer, 1.0, coef_mode="raw"):
        want = generate_batch(model, [prompt], 6)
    plain = generate_batch(model, [prompt], 6)
    # the learner's generation runs under the same precision as generate_batch's (bf16 autocast where
    # the CPU has it), so a correct solution gives the same tokens; nnsight's expected "never reached"
    # warning for open-ended step loops is silenced as it is in the library
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=generation_bf16(model)), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*was never reached.*")
        got = fn(model, prompt, layer, vec.at(layer).clone(), 6)
    if got is None:
        raise ExerciseFailed("your function returned None: return the new token ids")
    got = torch.as_tensor(got).reshape(1, -1)
    if got.shape[1] > want.shape[1]:  # the learner returned prompt + answer: keep the answer
        got = got[:, -want.shape[1]:]
    if torch.equal(got, plain) and not torch.equal(plain, want):
        raise ExerciseFailed("your generation is identical to the unsteered one: is the edit inside "
                             "`for step in tracer.iter[:]` and does it modify the block's output in place?")
    if not torch.equal(got, want):
        raise ExerciseFailed(f"steered tokens differ from personalab.steer: got {got.tolist()}, expected "
                             f"{want.tolist()}. Remember: layer i is the output of block i, i.e. "
                             "model.model.layers[i - 1].output")
    passed("steering intervention")
