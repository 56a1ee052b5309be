import pytest

from personalab.checks._core import ExerciseFailed
from personalab.checks.ch5 import check_training_hook
from personalab.checks.ch6 import check_projection_difference


def _hook_maker(sign=1.0, returns=True):
    def make_hook(shift):
        def hook(module, inputs, output):
            h = output[0] if isinstance(output, tuple) else output
            h = h + sign * shift
            if not returns:
                return None
            return (h, *output[1:]) if isinstance(output, tuple) else h

        return hook

    return make_hook


def test_training_hook_check_accepts_reference_and_rejects_mistakes():
    check_training_hook(_hook_maker())
    with pytest.raises(ExerciseFailed, match="subtracted"):
        check_training_hook(_hook_maker(sign=-1.0))
    with pytest.raises(ExerciseFailed, match="did not change"):
        check_training_hook(_hook_maker(returns=False))
    with pytest.raises(ExerciseFailed):
        check_training_hook(_hook_maker(sign=2.0))

    def tensor_only(shift):  # right on blocks that return a tensor, wrong on (hidden, extras)
        return lambda module, inputs, output: output + shift

    def drops_extras(shift):
        def hook(module, inputs, output):
            h = output[0] if isinstance(output, tuple) else output
            return (h + shift,) if isinstance(output, tuple) else h + shift

        return hook

    with pytest.raises(ExerciseFailed, match="tuple"):
        check_training_hook(tensor_only)
    with pytest.raises(ExerciseFailed, match="keep the elements"):
        check_training_hook(drops_extras)


def test_projection_difference_check():
    def ref(data, base, direction):
        u = direction / direction.norm()
        return data @ u - base @ u

    check_projection_difference(ref)
    with pytest.raises(ExerciseFailed, match="sign flipped"):
        check_projection_difference(lambda d, b, v: -ref(d, b, v))
    with pytest.raises(ExerciseFailed, match="unit direction"):
        check_projection_difference(lambda d, b, v: (d - b) @ v)
    with pytest.raises(ExerciseFailed):  # one number for the whole dataset instead of one per sample
        check_projection_difference(lambda d, b, v: ref(d, b, v).mean())
    with pytest.raises(ExerciseFailed):
        check_projection_difference(lambda d, b, v: None)


def _loop(net, batches, optimizer, steering, *, install=True, remove=True, use_finally=True, zero_grad=True, step=True):
    """The training loop, with switches that turn it into plausible wrong answers."""
    from personalab.finetune import answer_loss

    handle = steering.install(net) if install else None
    losses = []

    def body():
        for batch in batches:
            loss = answer_loss(net, batch)
            loss.backward()
            if step:
                optimizer.step()
            if zero_grad:
                optimizer.zero_grad()
            losses.append(loss.item())

    if use_finally:
        try:
            body()
        finally:
            if handle is not None and remove:
                handle.remove()
    else:
        body()
        if handle is not None and remove:
            handle.remove()
    return losses


def test_training_loop_check_rejects_hook_and_optimiser_slips():
    from functools import partial

    from personalab.checks.ch5 import check_training_loop

    check_training_loop(_loop)
    expected = {
        "install": "unsteered",
        "remove": "still on the block",
        "use_finally": "raises",
        "zero_grad": "zero_grad",
        "step": "optimizer",
    }
    for switch, message in expected.items():
        with pytest.raises(ExerciseFailed, match=message):
            check_training_loop(partial(_loop, **{switch: False}))


def _pipeline(model, examples, own, vector, layer, *, row=None, pooling="response", system=None, sign=1.0, unit=True):
    from personalab.activations import answer_activations
    from personalab.prompting import chat_prompt

    prompts = [chat_prompt(model.tokenizer, e.question, system) for e in examples]
    data = answer_activations(model, prompts, [e.answer for e in examples])[pooling]
    base = answer_activations(model, prompts, own)[pooling]
    r = layer if row is None else row
    direction = vector.at(layer) / vector.at(layer).norm() if unit else vector.at(layer)
    return sign * (data[:, r] - base[:, r]) @ direction


def test_projection_difference_pipeline_check_rejects_the_usual_slips():
    from personalab.checks.ch6 import check_projection_difference_pipeline
    from personalab.datafilter import projection_difference

    check_projection_difference_pipeline(
        lambda m, ex, own, v, layer: projection_difference(m, ex, v, layer, reference=own)
    )
    check_projection_difference_pipeline(_pipeline)
    wrong = {
        "sign flipped": lambda *a: _pipeline(*a, sign=-1.0),
        "row layer - 1": lambda m, ex, own, v, layer: _pipeline(m, ex, own, v, layer, row=layer - 1),
        "unit direction": lambda *a: _pipeline(*a, unit=False),
        "prompt's positions": lambda *a: _pipeline(*a, pooling="last_prompt"),
        "mean or the last": lambda *a: _pipeline(*a, pooling="prompt"),
        "no system prompt": lambda *a: _pipeline(*a, system="You are a pirate."),
        "None": lambda *a: None,
        "shape": lambda *a: _pipeline(*a).mean(),
    }
    for match, fn in wrong.items():
        with pytest.raises(ExerciseFailed, match=match):
            check_projection_difference_pipeline(fn)

    def data_only(model, examples, own, vector, layer):
        from personalab.activations import answer_activations
        from personalab.prompting import chat_prompt

        prompts = [chat_prompt(model.tokenizer, e.question) for e in examples]
        acts = answer_activations(model, prompts, [e.answer for e in examples])["response"][:, layer]
        return acts @ (vector.at(layer) / vector.at(layer).norm())

    with pytest.raises(ExerciseFailed, match="subtract the model's own"):
        check_projection_difference_pipeline(data_only)
