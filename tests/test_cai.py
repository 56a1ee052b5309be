import json

import pytest

from personalab import cai
from personalab.cai import Principle, critique_revise, load_constitution, revision_messages
from personalab.checks._core import ExerciseFailed
from personalab.checks.ch7 import check_revision_messages
from personalab.prompting import conversation_prompt


class EchoWriter:
    """Replies with a tag and the last request, and counts its calls (no model)."""

    def __init__(self):
        self.calls = []

    def reply(self, conversations, max_new_tokens):
        self.calls.append(conversations)
        return [f"R{len(self.calls)}:{c[-1]['content'][:12]}" for c in conversations]


def test_shipped_constitution_loads_and_is_listed():
    assert "gloom" in cai.list_constitutions()
    con = load_constitution("gloom")
    assert len(con.principles) >= 2 and con.few_shot
    assert con.principle("hope").critique.startswith("Identify")


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"name": "x", "principles": []}, "principles"),
        ({"name": "x", "principles": [{"name": "p", "critique": "c"}]}, "revision"),
        ({"name": "x", "principles": [{"name": "p", "critique": "c", "revision": "r", "oops": 1}]}, "oops"),
    ],
)
def test_bad_constitution_files_are_one_clear_error(tmp_path, bad, message):
    path = tmp_path / "mine.json"
    path.write_text(json.dumps(bad))
    with pytest.raises(ValueError, match=message):
        load_constitution(path)


def test_unknown_constitution_and_shot_with_unknown_principle(tmp_path):
    with pytest.raises(ValueError, match="gloom"):
        load_constitution("nope")
    path = tmp_path / "c.json"
    p = {"name": "p", "critique": "c", "revision": "r"}
    shot = {"question": "q", "answer": "a", "principle": "other", "critique": "c", "revision": "r"}
    path.write_text(json.dumps({"name": "x", "principles": [p], "few_shot": [shot]}))
    with pytest.raises(KeyError, match="other"):
        load_constitution(path)


def test_revision_conversation_with_and_without_critique():
    p = Principle(name="p", critique="Critique it.", revision="Rewrite it.")
    with_c = revision_messages("Q?", "A.", p, "C.")
    assert [m["role"] for m in with_c] == ["user", "assistant", "user", "assistant", "user"]
    assert [m["content"] for m in with_c] == ["Q?", "A.", "Critique it.", "C.", "Rewrite it."]
    without = revision_messages("Q?", "A.", p)
    assert [m["content"] for m in without] == ["Q?", "A.", "Rewrite it."]


def test_pipeline_rounds_principles_and_the_no_critique_ablation():
    con = load_constitution("gloom")
    qs, answers = ["q1?", "q2?", "q3?"], ["a1", "a2", ""]
    w = EchoWriter()
    out = critique_revise(w, qs, answers, con, rounds=2, seed=3)
    assert len(w.calls) == 4  # a critique call and a revision call per round, each one batch
    assert all(len(r.steps) == 2 for r in out)
    # round 2 critiques round 1's revision, after the few-shot turns
    shots = len(cai.few_shot_messages(con))
    assert w.calls[2][0][shots + 1]["content"] == out[0].steps[0].revision
    assert out[0].final == out[0].steps[1].revision and out[2].initial == ""
    w0 = EchoWriter()
    ablated = critique_revise(w0, qs, answers, con, rounds=2, seed=3, critique=False)
    assert len(w0.calls) == 2 and all(s.critique == "" for r in ablated for s in r.steps)
    assert [s.principle for r in ablated for s in r.steps] == [s.principle for r in out for s in r.steps]
    assert all(len(c) == len(cai.few_shot_messages(con, with_critique=False)) + 3 for c in w0.calls[0])
    ex = cai.to_examples(out)
    assert [e.answer for e in ex] == [r.final for r in out]
    assert [e.answer for e in cai.to_examples(out, "initial")] == answers
    with pytest.raises(ValueError, match="same|answers"):
        critique_revise(w, qs, answers[:2], con)
    with pytest.raises(TypeError):
        critique_revise(w, "q1?", answers, con)


def test_shares_of_copied_revisions_and_echoed_critiques():
    con = load_constitution("gloom")
    shot = con.few_shot[0]
    r1 = cai.Revised("q", "same start here, then more", [cai.Step("hope", shot.critique, "same start here, then more")])
    r2 = cai.Revised("q", "gloom", [cai.Step("hope", "my own critique", "sunny")])
    assert cai.copied_share([r1, r2]) == 0.5
    assert cai.echoed_share([r1, r2], con) == 0.5


def test_model_writer_on_the_tiny_model(tiny, tmp_cache):
    con = load_constitution("gloom")
    out = critique_revise(cai.ModelWriter(tiny), ["Hello?", "Why?"], ["Hi.", "Because."], con, max_new_tokens=3)
    assert all(isinstance(s.critique, str) and isinstance(s.revision, str) for r in out for s in r.steps)


def test_endpoint_writer_uses_the_chat_client():
    class Client:
        def __init__(self):
            self.seen = []
            self.chat = self
            self.completions = self

        def create(self, **kw):
            self.seen.append(kw)
            msg = type("M", (), {"content": " fine "})
            return type("R", (), {"choices": [type("C", (), {"message": msg})]})

    client = Client()
    w = cai.EndpointWriter("some-model", client=client)
    assert w.reply([[{"role": "user", "content": "hi"}]], 5) == ["fine"]
    assert client.seen[0]["model"] == "some-model" and client.seen[0]["max_tokens"] == 5


def test_conversation_prompt_checks_its_input(tiny):
    tok = tiny.tokenizer
    text = conversation_prompt(
        tok,
        [
            {"role": "user", "content": "Q?"},
            {"role": "assistant", "content": ""},
            {"role": "user", "content": "Again?"},
        ],
    )
    assert "Again?" in text
    with pytest.raises(ValueError, match="last message"):
        conversation_prompt(tok, [{"role": "user", "content": "Q?"}, {"role": "assistant", "content": "A"}])
    with pytest.raises(ValueError, match="role"):
        conversation_prompt(tok, [{"role": "robot", "content": "Q?"}])
    with pytest.raises(TypeError):
        conversation_prompt(tok, "Q?")


def test_check_accepts_the_reference_and_rejects_wrong_conversations():
    check_revision_messages(revision_messages)

    def keeps_request(q, a, p, critique=None):
        turns = [
            {"role": "user", "content": q},
            {"role": "assistant", "content": a},
            {"role": "user", "content": p.critique},
        ]
        if critique is not None:
            turns.append({"role": "assistant", "content": critique})
        return turns + [{"role": "user", "content": p.revision}]

    def drops_critique(q, a, p, critique=None):
        return revision_messages(q, a, p, None)

    def wrong_request(q, a, p, critique=None):
        return revision_messages(q, a, p, critique)[:-1] + [{"role": "user", "content": p.critique}]

    for wrong in (keeps_request, drops_critique, wrong_request, lambda *a, **k: None):
        with pytest.raises(ExerciseFailed):
            check_revision_messages(wrong)


def test_difference_null_separates_a_planted_direction_from_random_ones():
    import torch

    from personalab.vectors import difference_null

    gen = torch.Generator().manual_seed(0)
    direction = torch.randn(64, generator=gen)
    diffs = torch.randn(30, 64, generator=gen) + 2.0 * direction / direction.norm()  # shifted along the direction
    out = difference_null(diffs, direction)
    assert out["mean"] > 1.0 and out["percentile"] == 100.0 and out["ci_low"] > out["null_p95"]
    flipped = difference_null(-diffs, direction)
    assert flipped["mean"] < -1.0 and flipped["value"] == pytest.approx(out["value"])
    other = difference_null(diffs, torch.randn(64, generator=gen))  # an unrelated direction: no better than random
    assert other["percentile"] < 95.0
    with pytest.raises(ValueError, match="n >= 2"):
        difference_null(diffs[:1], direction)
    with pytest.raises(ValueError, match="zeros"):
        difference_null(diffs, torch.zeros(64))


def test_mean_ci_brackets_the_mean_and_refuses_nan():
    from personalab.stats import mean_ci

    m, lo, hi = mean_ci([1.0, 2.0, 3.0, 4.0, 10.0])
    assert lo <= m <= hi and m == 4.0
    with pytest.raises(ValueError, match="NaN"):
        mean_ci([1.0, float("nan")])
