"""Checks for chapter 5 (preventative fine-tuning): the training-time steering hook."""

from __future__ import annotations

from typing import Any

import torch

from personalab.checks._core import ExerciseFailed, assert_close, call, passed


def _tiny_and_vector():
    from personalab.models import tiny_model
    from personalab.vectors import PersonaVector

    model = tiny_model()
    torch.manual_seed(3)
    vec = PersonaVector(
        torch.randn(5, 64),
        dict(
            model_id="tiny-llama-4x64-seed0",
            n_layers=4,
            d_model=64,
            trait="toy",
            method="check",
            residual_norm=[2.0] * 5,
        ),
    )
    return model, vec


def _block_output(hf, layer: int, hook=None) -> torch.Tensor:
    """Output of block ``layer`` (after ``hook``, if any) on a fixed prompt."""
    seen: dict[str, Any] = {}
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
        raise ExerciseFailed(
            "the block's output did not change: return the modified output from the hook "
            "(a forward hook that returns None leaves the output as it was)"
        )
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
        raise ExerciseFailed(
            f"your hook failed on a block that returns a tuple (hidden, extras): {type(err).__name__}: {err}"
        ) from None
    if not isinstance(out, tuple):
        raise ExerciseFailed(
            f"on a block that returns a tuple your hook returned {type(out).__name__}: "
            "return a tuple of the same form, (shifted hidden, *output[1:])"
        )
    if len(out) != 2 or out[1] is not extra:
        raise ExerciseFailed("on a block that returns a tuple, keep the elements after the hidden states as they were")
    assert_close(out[0], hidden + shift, "hidden states of a tuple-returning block with your hook")


# -- Exercise 5.2: the preventative training loop -------------------------------------------------


def _loop_setup(seed: int = 0):
    """A fresh trainable copy of the tiny model, two batches, an SGD optimiser and a steering."""
    import copy

    from personalab.finetune import Example, TrainingSteering, encode

    model, vec = _tiny_and_vector()
    net = copy.deepcopy(model._module).train()
    examples = [Example(f"Question {i}?", f"A short answer, number {i}.") for i in range(4)]
    enc = encode(model.tokenizer, examples, max_len=64)
    batches = [{k: v[i : i + 2] for k, v in enc.items()} for i in (0, 2)]
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    return net, batches, opt, TrainingSteering(vec, 2, 4.0)


def check_training_loop(fn) -> None:
    """``fn(net, batches, optimizer, steering) -> losses``: the steering hook on for the whole
    loop, one optimiser step per batch on ``finetune.answer_loss``, the hook removed afterwards
    (also when a step fails); compared with ``finetune.training_loop`` on the tiny model."""
    from personalab.finetune import training_loop

    ref_net, batches, ref_opt, steering = _loop_setup()
    want = training_loop(ref_net, batches, ref_opt, steering)
    plain_net, _, plain_opt, _ = _loop_setup()
    unsteered = training_loop(plain_net, batches, plain_opt, None)
    net, batches, opt, steering = _loop_setup()
    block = net.model.layers[steering.layer - 1]
    got = call(fn, net, batches, opt, steering)
    if got is None:
        raise ExerciseFailed("return the list of losses, one per batch")
    got = [float(x) for x in got]
    if block._forward_hooks:
        raise ExerciseFailed(
            "the steering hook is still on the block after training: remove it (handle.remove()) "
            "in a `finally:` so the trained model runs without it"
        )
    if len(got) != len(want):
        raise ExerciseFailed(f"expected one loss per batch ({len(want)}), got {len(got)}")
    if abs(got[0] - unsteered[0]) < 1e-6 and abs(want[0] - unsteered[0]) > 1e-4:
        raise ExerciseFailed(
            "your first loss is the unsteered one: install the steering hook "
            "(steering.install(net)) before the first forward pass"
        )
    if abs(got[0] - want[0]) > 1e-4:
        raise ExerciseFailed(
            f"first loss {got[0]:.5f}, expected {want[0]:.5f}: compute "
            "finetune.answer_loss(net, batch) with the hook installed"
        )
    if abs(got[1] - want[1]) > 1e-4:
        raise ExerciseFailed(
            f"second loss {got[1]:.5f}, expected {want[1]:.5f}: after loss.backward() call "
            "optimizer.step() once per batch, so the second batch sees the updated model"
        )
    for (name, p), q in zip(net.named_parameters(), ref_net.parameters(), strict=True):
        if not torch.allclose(p, q, atol=1e-5):
            raise ExerciseFailed(
                f"after training, parameter {name} differs from the reference: one "
                "optimizer.step() per batch after loss.backward(), then optimizer.zero_grad() "
                "(gradients left from the previous batch add up)"
            )
    _check_hook_removed_on_error(fn)
    passed("the preventative training loop")


def _check_hook_removed_on_error(fn) -> None:
    """A failing batch must not leave the hook installed."""
    net, batches, opt, steering = _loop_setup()
    block = net.model.layers[steering.layer - 1]
    broken = [batches[0], {"input_ids": batches[0]["input_ids"]}]  # no attention mask, no labels: fails
    try:
        fn(net, broken, opt, steering)
    except Exception:  # noqa: BLE001, S110 - the failure itself is expected
        pass
    if block._forward_hooks:
        raise ExerciseFailed(
            "when a training step raises, the hook stays on the block: wrap the loop in "
            "try/finally and remove the hook in the finally block"
        )
