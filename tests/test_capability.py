"""The capability check scores choices by log-probability, exactly as a plain forward would."""

import math

import torch

from personalab import capability
from personalab.capability import Item, capability_score, choice_logprobs, load_items
from personalab.steering import steer
from personalab.vectors import PersonaVector


def _reference_logprob(tiny, prompt: str, choice: str) -> float:
    """Sum of log p(choice token | prefix) from an unpadded plain forward."""
    tok, hf = tiny.tokenizer, tiny._module
    n_prompt = len(tok(prompt)["input_ids"])
    ids = tok(prompt + " " + choice, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        logp = torch.log_softmax(hf(ids).logits[0].float(), -1)
    return sum(logp[j - 1, ids[0, j]].item() for j in range(n_prompt, ids.shape[1]))


def test_choice_logprobs_match_plain_forward(tiny):
    """Packed rows (prompt once, choices masked from each other) score as separate texts would."""
    prompts = [
        "Question: What is the capital of France?\nAnswer:",
        "Question: 2 + 2 =\nAnswer:",
        "Question: Hi?\nAnswer: ",
        "Count: 1 2",
        "Answer:",
    ]
    choices = [
        ["Paris", "the city of London", "Berlin"],
        ["4", "five hundred and six"],
        ["yes", "no way"],
        ["3", "34", "3 4 5"],
        ["x"],
    ]
    got = choice_logprobs(tiny, prompts, choices, batch_size=3)  # batches mix prompts and lengths
    for p, cs, lp in zip(prompts, choices, got, strict=True):
        want = torch.tensor([_reference_logprob(tiny, p, c) for c in cs])
        assert torch.allclose(lp, want, atol=1e-3), (lp, want)


def test_capability_score_is_accuracy_and_moves_under_steering(tiny):
    items = load_items()[:12]
    assert len(load_items()) >= 50 and all(0 <= it.answer < len(it.choices) for it in load_items())
    plain = capability_score(tiny, items)
    assert 0 <= plain <= 1 and plain * len(items) == round(plain * len(items))
    always_first = [Item(it.id, it.question, [it.choices[0]], 0, it.topic) for it in items]
    assert capability_score(tiny, always_first) == 1.0
    vec = PersonaVector(
        50 * torch.randn(5, 64),
        dict(
            model_id="tiny-llama-4x64-seed0",
            n_layers=4,
            d_model=64,
            trait="toy",
            method="test",
            residual_norm=[2.0] * 5,
        ),
    )
    before = choice_logprobs(tiny, ["Question: Hi?\nAnswer:"], [["yes", "no"]])[0]
    with steer(tiny, vec, 2, 5.0):
        during = choice_logprobs(tiny, ["Question: Hi?\nAnswer:"], [["yes", "no"]])[0]
    assert not torch.allclose(before, during)


def test_bf16_scoring_stays_close_to_float32(tiny, monkeypatch):
    """Where the CPU has native bfloat16, scoring passes use it; log-probs stay within 1 %."""
    from personalab import models
    from personalab.judges import answer_logprob

    prompts = ["Question: What is the capital of France?\nAnswer:", "Question: 2 + 2 =\nAnswer:"]
    choices = [["Paris", "the city of London", "Berlin"], ["4", "five hundred and six"]]
    exact = choice_logprobs(tiny, prompts, choices)
    exact_lp = answer_logprob(tiny, ["Why?", "Who?"], ["Because it rains.", "Nobody at all."])
    monkeypatch.setenv("PERSONALAB_BF16_SCORING", "1")
    monkeypatch.setattr(models, "cpu_has_bf16", lambda: True)  # autocast also runs where the CPU emulates bf16
    fast = choice_logprobs(tiny, prompts, choices)
    fast_lp = answer_logprob(tiny, ["Why?", "Who?"], ["Because it rains.", "Nobody at all."])
    for a, b in zip(exact, fast, strict=True):
        assert not torch.equal(a, b), "bf16 scoring did not run"
        torch.testing.assert_close(b, a, rtol=0.01, atol=0.05)
    assert all(abs(x - y) < 0.05 for x, y in zip(exact_lp, fast_lp, strict=True))
    assert next(tiny._module.parameters()).dtype == torch.float32  # the model itself is untouched


def test_answer_logprob_of_a_batch_of_empty_answers(tiny):
    """A batch where every answer is empty scores -inf each (it used to crash on a zero-width slice)."""
    from personalab.judges import answer_logprob

    assert answer_logprob(tiny, ["Why?", "Who?"], ["", ""]) == [float("-inf"), float("-inf")]
    mixed = answer_logprob(tiny, ["Why?", "Who?"], ["", "Nobody."])
    assert mixed[0] == float("-inf") and math.isfinite(mixed[1])


def _toy_vector() -> PersonaVector:
    meta = dict(model_id="tiny-llama-4x64-seed0", n_layers=4, d_model=64, trait="toy", method="test")
    return PersonaVector(
        50 * torch.randn(5, 64, generator=torch.Generator().manual_seed(3)), {**meta, "residual_norm": [2.0] * 5}
    )


def test_steered_scoring_matches_a_forward_hook_and_runs_the_lower_blocks_once(tiny):
    """Under steer(), the blocks below the steered layer run once per (inputs, layer) and are then
    skipped: the log-probs equal a plain forward with a PyTorch hook adding the same push."""
    prompts, choices = ["Question: Hi?\nAnswer:", "Question: 2 + 2 =\nAnswer:"], [["yes", "no way"], ["4", "five"]]
    vec, blocks = _toy_vector(), tiny._module.model.layers
    first_mlp = []  # block 1's MLP runs only when block 1 really runs (not when nnsight skips it)
    counter = blocks[0].mlp.register_forward_hook(lambda *_: first_mlp.append(1))
    try:
        for layer in (1, 2, 4):
            for coef in (1.0, -2.0):
                delta = vec.shift(layer, coef, "norm")
                hook = blocks[layer - 1].register_forward_hook(lambda mod, inp, out, d=delta: out + d)
                try:
                    want = [
                        torch.tensor([_reference_logprob(tiny, p, c) for c in cs]) for p, cs in zip(prompts, choices)
                    ]
                finally:
                    hook.remove()
                before = len(first_mlp)
                with steer(tiny, vec, layer, coef):
                    got = choice_logprobs(tiny, prompts, choices)
                for g, w in zip(got, want, strict=True):
                    torch.testing.assert_close(g, w, atol=1e-3, rtol=0)
                # one unsteered pass up to the layer the first time, none after; the steered pass skips it
                assert len(first_mlp) - before == (1 if coef == 1.0 else 0), (layer, coef)
    finally:
        counter.remove()


def test_remembered_scores_are_recomputed_after_the_weights_change_in_place(tiny):
    """The unsteered score, the lower blocks under steering and the judge's fluency are
    remembered per model object; editing a weight in place (as load_state_dict or merging an
    adapter does) makes each of them computed again, not read from the old weights."""
    from personalab.judges import EmbeddingJudge
    from personalab.models import weights_version

    items, vec, judge = load_items()[:8], _toy_vector(), EmbeddingJudge(tiny)
    fluency_before = judge.answer_logprobs(["Why?"], ["Because it rains."])
    plain_before = choice_logprobs(tiny, ["Question: Hi?\nAnswer:"], [["yes", "no"]])[0]
    capability_score(tiny, items)
    with steer(tiny, vec, 2, 1.0):
        steered_before = choice_logprobs(tiny, ["Question: Hi?\nAnswer:"], [["yes", "no"]])[0]
    weight = tiny._module.model.layers[0].mlp.down_proj.weight
    version, saved = weights_version(tiny), weight.detach().clone()
    try:
        with torch.no_grad():
            weight.mul_(3.0)
        assert weights_version(tiny) > version
        with steer(tiny, vec, 2, 1.0):
            steered_after = choice_logprobs(tiny, ["Question: Hi?\nAnswer:"], [["yes", "no"]])[0]
        assert not torch.allclose(steered_before, steered_after)  # block 1's new weights were run, not remembered
        calls = []
        real = capability.choice_logprobs
        capability.choice_logprobs = lambda *a, **k: calls.append(1) or real(*a, **k)
        try:
            capability_score(tiny, items)
        finally:
            capability.choice_logprobs = real
        assert calls == [1]  # the unsteered score was computed again
        assert not torch.allclose(plain_before, choice_logprobs(tiny, ["Question: Hi?\nAnswer:"], [["yes", "no"]])[0])
        assert judge.answer_logprobs(["Why?"], ["Because it rains."]) != fluency_before  # scored anew
    finally:
        with torch.no_grad():
            weight.copy_(saved)
