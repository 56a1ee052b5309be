import json

import pytest

from personalab import traits
from personalab.traits import Trait, TraitError
from tests.helpers import toy_trait_dict


def test_builtin_traits_load_and_validate():
    names = traits.list_traits()
    for must in ("evil", "sycophantic", "hallucinating"):
        assert must in names
    assert len(names) >= 8
    for name in names:
        t = traits.load(name)
        assert len(t.instructions) == 5
        assert len(t.extraction_questions) == 20 and len(t.evaluation_questions) == 20
        assert not set(t.extraction_questions) & set(t.evaluation_questions)
        assert t.system_prompt(0, True).startswith("You are a")
        assert t.exemplars and len(t.graded_prompts) == 8


def test_system_prompt_form():
    t = Trait.from_dict(toy_trait_dict(adjective="evil", antonym="kind"))
    assert t.system_prompt(2, True) == "You are an evil assistant. Say toy things 2."
    assert t.system_prompt(2, False) == "You are a kind assistant. Say plain things 2."


def test_unknown_trait_lists_available():
    with pytest.raises(TraitError, match="unknown trait 'piratey'.*evil"):
        traits.load("piratey")


@pytest.mark.parametrize(
    "field,value,match",
    [
        ("instructions", [{"pos": "a", "neg": "b"}], "instructions"),
        ("rubric", "no placeholders", "rubric"),
        ("name", "", "name"),
        ("questions", {"extraction": [], "evaluation": ["a"]}, "questions.extraction"),
        ("questions", {"extraction": ["a"], "evaluation": ["a"]}, "overlap"),
    ],
)
def test_malformed_trait_names_the_field(field, value, match):
    with pytest.raises(TraitError, match=match):
        Trait.from_dict(toy_trait_dict(**{field: value}))


def test_json_roundtrip(tmp_path):
    t = Trait.from_dict(toy_trait_dict())
    path = tmp_path / "toy.json"
    t.to_json(path)
    assert Trait.from_json(path) == t
    assert traits.load(str(path)) == t
    with pytest.raises(TraitError, match="not valid JSON"):
        Trait.from_json('{"name": ')


class _FakeClient:
    """An OpenAI-style client whose replies are scripted."""

    def __init__(self, replies):
        self.replies, self.calls = list(replies), []
        from types import SimpleNamespace as NS

        self.chat = NS(completions=NS(create=self._create))

    def _create(self, **kw):
        from types import SimpleNamespace as NS

        self.calls.append(kw)
        return NS(choices=[NS(message=NS(content=self.replies.pop(0)))])


def test_generate_trait_retries_malformed_reply():
    good = json.dumps(toy_trait_dict(name="grumpy"))
    client = _FakeClient(["Sure! Here it is: {not json", "```json\n" + good + "\n```"])
    t = traits.generate_trait("grumpy", "always grumbling", client=client)
    assert t.name == "grumpy" and len(client.calls) == 2
    assert "invalid" in client.calls[1]["messages"][-1]["content"]


def test_generate_trait_gives_up_clearly():
    client = _FakeClient(["nope"] * 3)
    with pytest.raises(TraitError, match="did not produce a valid trait after 3 attempts"):
        traits.generate_trait("grumpy", "always grumbling", client=client)


def test_generate_trait_without_endpoint(monkeypatch):
    from personalab.judges import JudgeError

    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(JudgeError, match="no LLM endpoint configured"):
        traits.generate_trait("grumpy", "always grumbling")


def test_import_needs_no_api_key(monkeypatch):
    import importlib

    import personalab

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    importlib.reload(personalab)
