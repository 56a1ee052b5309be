"""A prompt prefix that a batch's rows share is computed once (``prompting.shared_prefix_length``):
the split is chosen by its cost, and generating from it gives what generating every row in full
gives, with and without interventions (float32, a tiny model whose tokens vary)."""

import pytest
import torch

from personalab.checks.ch3 import _lively_tiny_model
from personalab.models import n_layers
from personalab.monitoring import Monitor
from personalab.prompting import LastTokenReader, chat_prompt, generate_batch, shared_prefix_length
from personalab.steering import RowSteering, cap, steer
from personalab.vectors import PersonaVector

QUESTIONS = ("How are you?", "What is the sea like today?", "Tell me a story.", "Why is the sky blue?")


def test_the_split_is_where_the_shared_tokens_end():
    head = list(range(1, 11))
    rows = [head + [100 + i, 200 + i, 300, 301, 302] for i in range(8)]
    assert shared_prefix_length(rows) == 10  # 10 + 8 x 5 prefill tokens against 8 x 15


def test_no_split_where_it_does_not_pay():
    assert shared_prefix_length([[i, 5, 6] for i in range(6)]) == 0  # no common first token
    assert shared_prefix_length([[1] + list(range(2, 21)), [1] + list(range(30, 49))]) == 0  # saves 1 of 40
    head = list(range(1, 11))
    rows = [head + [100 + i] for i in range(4)]
    assert shared_prefix_length(rows, row_keys=["a", "b", "c", "d"]) == 0  # every row steered its own way
    assert shared_prefix_length(rows, row_keys=["a", "a", "b", "b"]) == 10
    assert shared_prefix_length([]) == 0


def test_every_row_keeps_a_token_after_the_split():
    assert shared_prefix_length([[1, 2, 3, 4]] * 4) == 3


@pytest.fixture(scope="module")
def lively():
    return _lively_tiny_model()


def _vec(model, seed=1):
    torch.manual_seed(seed)
    n, d = n_layers(model), model.config.hidden_size
    meta = dict(model_id="tiny-llama-4x64-seed1", n_layers=n, d_model=d, trait="toy", method="test")
    return PersonaVector(3.0 * torch.randn(n + 1, d), {**meta, "residual_norm": [40.0] * (n + 1)})


def _both(model, monkeypatch, texts, make_extra=lambda: ()):
    """New token ids with the prefix computed once and with every row in full; how many prefixes."""
    calls = []
    from personalab import prompting

    real = prompting.prefix_cache

    def spy(m, prefixes, hooks):
        calls.append(prefixes.shape)
        return real(m, prefixes, hooks)

    monkeypatch.setattr(prompting, "prefix_cache", spy)
    monkeypatch.setenv("PERSONALAB_SHARED_PREFIX", "1")
    shared = generate_batch(model, texts, 6, extra=make_extra())
    monkeypatch.setenv("PERSONALAB_SHARED_PREFIX", "0")
    full = generate_batch(model, texts, 6, extra=make_extra())
    return shared, full, calls


def _texts(model, system=None):
    return [chat_prompt(model.tokenizer, q, system) for q in QUESTIONS]


def test_generation_from_a_shared_prefix_gives_the_same_tokens(lively, monkeypatch):
    shared, full, calls = _both(lively, monkeypatch, _texts(lively))
    assert calls and calls[0][0] == 1  # one system prompt: one prefix
    assert torch.equal(shared, full) and len({tuple(r.tolist()) for r in full}) > 1
    mixed = _texts(lively) + _texts(lively, "You are a pirate.")
    shared, full, calls = _both(lively, monkeypatch, mixed)
    assert calls[0][0] == 2 and torch.equal(shared, full)


@pytest.mark.parametrize("positions", ["all", "prompt", "response"])
def test_steering_from_a_shared_prefix_matches_steering_every_row(lively, monkeypatch, positions):
    vec = _vec(lively)
    with steer(lively, vec, 2, 0.5, positions=positions, coef_mode="raw"):
        shared, full, calls = _both(lively, monkeypatch, _texts(lively))
    unsteered = generate_batch(lively, _texts(lively), 6)
    assert calls and torch.equal(shared, full) and not torch.equal(full, unsteered)


def test_capping_and_per_row_steering_from_a_shared_prefix(lively, monkeypatch):
    vec = _vec(lively)
    texts = _texts(lively) * 2
    with cap(lively, vec, 2, 0.0):
        shared, full, calls = _both(lively, monkeypatch, texts)
    assert calls and torch.equal(shared, full)
    specs = [None] * 4 + [(vec, 2, 0.5)] * 4  # two groups: unsteered and steered rows never share a prefix
    rows = RowSteering(lively, specs, coef_mode="raw")
    shared, full, calls = _both(lively, monkeypatch, texts, lambda: [rows])
    assert calls[0][0] == 2 and torch.equal(shared, full) and not torch.equal(full[:4], full[4:])


def test_readers_of_the_last_prompt_token_see_the_same_values(lively, monkeypatch):
    texts = _texts(lively)
    outs = [torch.zeros(len(texts), n_layers(lively) + 1, lively.config.hidden_size) for _ in range(2)]
    readers = iter([LastTokenReader(n_layers(lively), out) for out in outs])
    shared, full, calls = _both(lively, monkeypatch, texts, lambda: [next(readers)])
    assert calls and torch.equal(shared, full)
    scale = outs[1].abs().amax()
    torch.testing.assert_close(outs[0], outs[1], atol=1e-5 * float(scale), rtol=0)  # float32 rounding
    results = []
    for flag in ("1", "0"):
        monkeypatch.setenv("PERSONALAB_SHARED_PREFIX", flag)
        results.append(Monitor(lively, _vec(lively), 2).generate(texts, max_new_tokens=5))
    assert results[0].answers == results[1].answers
    for a, b in zip(results[0].projections, results[1].projections, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5 * float(b.abs().amax()), rtol=0)


def test_answer_logprob_from_a_shared_question_matches_each_text_alone(lively, monkeypatch):
    from personalab import judges

    questions = ["Why is the sky blue?"] * 3 + ["What do cats eat?"] * 3
    answers = ["Because of the air.", "Light scatters.", "It is not.", "Fish.", "Mice and birds.", "Cat food!"]
    splits = []
    real = judges.split_rows
    monkeypatch.setattr(judges, "split_rows", lambda *a, **kw: splits.append(a[1]) or real(*a, **kw))
    monkeypatch.setenv("PERSONALAB_SHARED_PREFIX", "1")
    got = judges.answer_logprob(lively, questions, answers)
    assert splits and splits[0] > 3  # the batch ran each question's tokens once
    tok, hf = lively.tokenizer, lively._module
    for q, a, lp in zip(questions, answers, got, strict=True):
        prompt = f"Question: {q}\nAnswer: "
        ids = tok(prompt + a, return_tensors="pt")["input_ids"]
        n = ids.shape[1] - len(tok(prompt)["input_ids"])
        with torch.no_grad():
            logp = torch.log_softmax(hf(ids).logits[0, :-1].float(), -1)
        want = logp[torch.arange(ids.shape[1] - 1), ids[0, 1:]][-n:].mean().item()
        assert lp == pytest.approx(want, rel=1e-4, abs=1e-4)


def test_row_keys_and_split_points_are_checked():
    from personalab.prompting import split_rows

    rows = [[1, 2, 3, 4], [1, 2, 3, 5]]
    with pytest.raises(ValueError, match="one key per row: 1 keys for 2 rows"):
        shared_prefix_length(rows, row_keys=["a"])
    with pytest.raises(ValueError, match="one key per row: 3 keys for 2 rows"):
        split_rows(rows, 2, 0, row_keys=["a", "b", "c"])
    for k in (0, 4):  # nothing shared, or no token left after the split
        with pytest.raises(ValueError, match="at least one token after the split"):
            split_rows(rows, k, 0)


def test_the_setting_turns_prefix_sharing_off_in_one_place(monkeypatch):
    head = list(range(1, 11))
    rows = [head + [100 + i, 200 + i] for i in range(8)]
    monkeypatch.setenv("PERSONALAB_SHARED_PREFIX", "0")
    assert shared_prefix_length(rows) == 0  # so neither generate nor the judge splits a batch
    monkeypatch.setenv("PERSONALAB_SHARED_PREFIX", "1")
    assert shared_prefix_length(rows) == 10
