"""Checks for chapter 3 (steering)."""

from __future__ import annotations

import warnings

import torch

from personalab.checks._core import ExerciseFailed, call, passed


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
    from personalab.models import generation_precision
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
    vec = PersonaVector(
        raw / raw.norm(dim=-1, keepdim=True) * norm[:, None],
        dict(model_id=pl.models.model_id(model), n_layers=n_layers, d_model=d, trait="check", method="random"),
    )
    with steer(model, vec, layer, 1.0, coef_mode="raw"):
        want = generate_batch(model, [prompt], 6)
    plain = generate_batch(model, [prompt], 6)
    # the learner's generation runs under the same precision as generate_batch's
    # (models.generation_precision), so a correct solution gives the same tokens; nnsight's expected "never reached"
    # warning for open-ended step loops is silenced as it is in the library
    with generation_precision(model), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*was never reached.*")
        got = fn(model, prompt, layer, vec.at(layer).clone(), 6)
    if got is None:
        raise ExerciseFailed("your function returned None: return the new token ids")
    got = torch.as_tensor(got).reshape(1, -1)
    if got.shape[1] > want.shape[1]:  # the learner returned prompt + answer: keep the answer
        got = got[:, -want.shape[1] :]
    if torch.equal(got, plain) and not torch.equal(plain, want):
        raise ExerciseFailed(
            "your generation is identical to the unsteered one: is the edit inside "
            "`for step in tracer.iter[:]` and does it modify the block's output in place?"
        )
    if not torch.equal(got, want):
        raise ExerciseFailed(
            f"steered tokens differ from personalab.steer: got {got.tolist()}, expected "
            f"{want.tolist()}. Remember: layer i is the output of block i, i.e. "
            "model.model.layers[i - 1].output"
        )
    passed("steering intervention")


# -- Exercise 3.2: the coherence rule on a coefficient curve ------------------------------------


def _row(coef: float, trait: float, coherence: float, repetition: float) -> dict:
    return {"coef": coef, "trait": trait, "coherence": coherence, "repetition": repetition}


# one layer's curve each; rows deliberately out of order in the first
_CURVES = [
    [
        _row(0.4, 88, 30, 0.30),
        _row(0.0, 20, 90, 0.00),
        _row(0.2, 55, 70, 0.05),
        _row(0.1, 35, 85, 0.02),
        _row(0.3, 75, 50, 0.10),
    ],  # coherence exactly 50 and repetition exactly 0.1 still pass
    [_row(0.0, 30, 80, 0.0), _row(0.1, 45, 75, 0.0), _row(0.2, 60, 70, 0.15), _row(0.3, 90, 65, 0.05)],
    # 0.2 breaks the rule (repetition); 0.3 passes again but lies beyond the coherent range
    [_row(-0.2, 60, 90, 0.0), _row(0.0, 40, 85, 0.0), _row(0.1, 38, 60, 0.0), _row(0.2, 70, 45, 0.0)],
    # a negative coefficient is not part of the range (its trait is higher); 0.1 lowers the trait, so 0 stays best
]


def check_coherent_best(fn) -> None:
    """``fn(rows, min_coherence=50, max_repetition=0.1) -> (best_coef, gain)`` for one layer's
    coefficient curve: the coherent range runs from coefficient 0 up to (not past) the first
    coefficient whose answers break the rule (coherence >= min, repetition <= max);
    ``best_coef`` is its coefficient with the largest judged trait, ``gain`` that trait minus
    the trait at coefficient 0 (as ``steering.curve_summary``)."""
    from personalab.steering import curve_summary

    runs: list[tuple[list[dict], dict[str, float]]] = [(c, {}) for c in _CURVES] + [
        (_CURVES[0], {"min_coherence": 80, "max_repetition": 0.03})
    ]
    for rows, kw in runs:
        ref = curve_summary([dict(r) for r in rows], **kw)
        want = (ref["best_coef"], ref["gain"])
        got = call(fn, [dict(r) for r in rows], **kw)
        if got is None:
            raise ExerciseFailed("your function returned None (did you forget `return`?)")
        if not isinstance(got, (tuple, list)) or len(got) != 2:
            raise ExerciseFailed(f"return a pair (best_coef, gain), got {got!r}")
        if abs(float(got[0]) - want[0]) < 1e-9 and abs(float(got[1]) - want[1]) < 1e-6:
            continue
        shown = [
            (r["coef"], r["trait"], r["coherence"], r["repetition"]) for r in sorted(rows, key=lambda r: r["coef"])
        ]
        raise ExerciseFailed(
            f"for the curve (coef, trait, coherence, repetition) {shown}{' with ' + str(kw) if kw else ''}: "
            f"expected (best_coef, gain) = {want}, got {tuple(got)}. Sort by coefficient, skip negative ones, "
            "stop at the first coefficient that breaks the rule (thresholds included: >= and <=), and "
            "measure the gain from the coefficient-0 row."
        )
    passed("the coherence rule on a coefficient curve")
