"""The chapter 3 check accepts a correct nnsight steering loop and rejects wrong ones."""

import nnsight
import pytest

from personalab.checks import ExerciseFailed, check_steering_intervention


def _generate(model, prompt, layer, delta, n, block_offset=1, edit=True):
    with model.generate(max_new_tokens=n, do_sample=False, pad_token_id=model.tokenizer.pad_token_id) as tracer:
        with tracer.invoke(prompt):
            for _step in tracer.iter[:]:
                out = model.model.layers[layer - block_offset].output  # (a loop body that touches
                if edit:  # no module never advances)
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


def _best(
    rows,
    min_coherence=50,
    max_repetition=0.1,
    *,
    stop=True,
    strict=False,
    skip_negative=True,
    use_repetition=True,
    gain_from_zero=True,
    use_kwargs=True,
    sort=True,
):
    """The coherence rule on a curve, with switches that turn it into plausible wrong answers."""
    if not use_kwargs:
        min_coherence, max_repetition = 50, 0.1
    rows = sorted(rows, key=lambda r: r["coef"]) if sort else list(rows)

    def coherent(r):
        coh = r["coherence"] > min_coherence if strict else r["coherence"] >= min_coherence
        rep = (r["repetition"] < max_repetition if strict else r["repetition"] <= max_repetition) or not use_repetition
        return coh and rep

    kept = []
    for r in rows:
        if skip_negative and r["coef"] < 0:
            continue
        if not coherent(r):
            if stop:
                break
            continue
        kept.append(r)
    best = max(kept, key=lambda r: r["trait"])
    base = next(r for r in rows if r["coef"] == 0) if gain_from_zero else rows[0]
    return best["coef"], best["trait"] - base["trait"]


def test_coherent_best_check_rejects_each_slip_of_the_rule():
    from functools import partial

    from personalab.checks import check_coherent_best

    check_coherent_best(_best)
    for wrong in (
        {"stop": False},
        {"strict": True},
        {"skip_negative": False},
        {"use_repetition": False},
        {"gain_from_zero": False},
        {"use_kwargs": False},
        {"sort": False},
    ):
        with pytest.raises(ExerciseFailed):
            check_coherent_best(partial(_best, **wrong))
    with pytest.raises(ExerciseFailed, match="pair"):
        check_coherent_best(lambda rows, **kw: _best(rows, **kw)[0])
