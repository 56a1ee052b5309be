"""Checks for chapter 5 (preventative fine-tuning): the training-time steering hook."""

from __future__ import annotations

import torch

from personalab.checks._core import ExerciseFailed, assert_close, passed


def _tiny_and_vector():
    from personalab.models import tiny_model
    from personalab.vectors import PersonaVector

    model = tiny_model()
    torch.manual_seed(3)
    vec = PersonaVector(torch.randn(5, 64), dict(model_id="tiny-llama-4x64-seed0", n_layers=4, d_model=64,
                                                 trait="toy", method="check", residual_norm=[2.0] * 5))
    return model, vec


def _block_output(hf, layer: int, hook=None) -> torch.Tensor:
    """Output of block ``layer`` (after ``hook``, if any) on a fixed prompt."""
    seen = {}
    handles = []
    if hook is not None:
        handles.append(hf.model.layers[layer - 1].register_forward_hook(hook))
    handles.append(hf.model.layers[layer - 1].register_forward_hook(lambda m, i, o: seen.update(h=o)))
    try:
        ids = torch.tensor([[1, 2, 3, 4, 5, 6]])
        hf(input_ids=ids)
    finally:
        for h in handles:
            h.remove()
    out = seen["h"]
    return out[0] if isinstance(out, tuple) else out


def check_training_hook(make_hook) -> None:
    """``make_hook(shift [d]) -> hook(module, inputs, output)`` adding ``shift`` to the block's output."""
    from personalab.finetune import TrainingSteering

    model, vec = _tiny_and_vector()
    hf, layer, coef = model._module, 2, 0.75
    ref = TrainingSteering(vec, layer, coef)
    shift = coef * vec.residual_norm(layer) * vec.unit(layer)
    plain = _block_output(hf, layer)
    handle = ref.install(hf)
    try:
        want = _block_output(hf, layer)
    finally:
        handle.remove()
    hook = make_hook(shift.clone())
    if hook is None or not callable(hook):
        raise ExerciseFailed("make_hook must return a function hook(module, inputs, output)")
    got = _block_output(hf, layer, hook)
    if torch.allclose(got, plain, atol=1e-6):
        raise ExerciseFailed("the block's output did not change: return the modified output from the hook "
                             "(a forward hook that returns None leaves the output as it was)")
    if torch.allclose(got, plain - shift, atol=1e-4):
        raise ExerciseFailed("you subtracted the shift: preventative steering *adds* the trait direction")
    assert_close(got, want, "block output with your hook")
    _check_tuple_output(hook, plain, shift)
    passed("training-time steering hook")


def _check_tuple_output(hook, hidden: torch.Tensor, shift: torch.Tensor) -> None:
    """Blocks of many models (and older transformers) return ``(hidden, extras...)``: the
    hook must shift the hidden states and hand the extras back untouched, in a tuple."""
    extra = torch.arange(3.0)
    try:
        out = hook(None, (hidden,), (hidden.clone(), extra))
    except Exception as err:  # noqa: BLE001 - any failure here is the learner's to see
        raise ExerciseFailed(f"your hook failed on a block that returns a tuple (hidden, extras): "
                             f"{type(err).__name__}: {err}") from None
    if not isinstance(out, tuple):
        raise ExerciseFailed(f"on a block that returns a tuple your hook returned {type(out).__name__}: "
                             "return a tuple of the same form, (shifted hidden, *output[1:])")
    if len(out) != 2 or out[1] is not extra:
        raise ExerciseFailed("on a block that returns a tuple, keep the elements after the hidden states as they were")
    assert_close(out[0], hidden + shift, "hidden states of a tuple-returning block with your hook")
