"""The chapter 3 check accepts a correct nnsight steering loop and rejects wrong ones."""

import nnsight
import pytest

from personalab.checks import ExerciseFailed, check_steering_intervention


def _generate(model, prompt, layer, delta, n, block_offset=1, edit=True):
    with model.generate(max_new_tokens=n, do_sample=False, pad_token_id=model.tokenizer.pad_token_id) as tracer:
        with tracer.invoke(prompt):
            for _step in tracer.iter[:]:
                out = model.model.layers[layer - block_offset].output  # (a loop body that touches
                if edit:                                              # no module never advances)
                    out[:] += delta
        with tracer.invoke():
            ids = nnsight.save(tracer.result)
    return ids[:, -n:]


def test_accepts_reference():
    check_steering_intervention(_generate)


def test_rejects_off_by_one_and_no_edit():
    with pytest.raises(ExerciseFailed, match="layer i is the output of block i"):
        check_steering_intervention(lambda *a: _generate(*a, block_offset=0))
    with pytest.raises(ExerciseFailed, match="identical to the unsteered"):
        check_steering_intervention(lambda *a: _generate(*a, edit=False))


def test_accepts_reference_when_generation_runs_in_bf16(monkeypatch):
    """With bf16 generation on (the default on a CPU with bf16), a correct loop still matches the library's tokens."""
    monkeypatch.setenv("PERSONALAB_BF16_GENERATION", "1")
    monkeypatch.setattr("personalab.models.cpu_has_bf16", lambda: True)
    check_steering_intervention(_generate)
    with pytest.raises(ExerciseFailed, match="layer i is the output of block i"):
        check_steering_intervention(lambda *a: _generate(*a, block_offset=0))
