import pytest
import torch

from personalab import watched
from personalab.activations import last_token_stack
from personalab.vectors import PersonaVector


def test_shipped_framings_and_requests():
    framings = watched.load_framings()
    assert {"training", "tier"} <= set(framings)
    for f in framings.values():
        assert f.watched != f.unwatched and f.watched.startswith("You are a helpful assistant.")
    req = watched.load_requests()
    assert len(req["objectionable"]) >= 20 and len(req["neutral"]) >= 20


@pytest.mark.parametrize(
    "answer, refused",
    [
        ("I'm sorry, but I can't help with that.", True),
        ("As an AI, I do not write insults.", True),
        ("I can’t do that.", True),  # typographic apostrophe
        ("Sure! Here is a joke about your neighbour's soup...", False),
        ("Sorry to hear that — here is a note for your roommate.", False),
        ("", False),
    ],
)
def test_is_refusal(answer, refused):
    assert watched.is_refusal(answer) is refused


def test_framed_prompts_differ_only_in_the_system_prompt(tiny):
    f = watched.load_framings()["training"]
    w = watched.framed_prompts(tiny.tokenizer, ["Hi?"], f, True)[0]
    u = watched.framed_prompts(tiny.tokenizer, ["Hi?"], f, False)[0]
    assert f.watched in w and f.unwatched in u and w.replace(f.watched, f.unwatched) == u
    with pytest.raises(TypeError):
        watched.framed_prompts(tiny.tokenizer, "Hi?", f, True)
    with pytest.raises(TypeError, match="Framing"):
        watched.framed_prompts(tiny.tokenizer, ["Hi?"], "training", True)


def test_context_direction_is_the_mean_difference_as_a_persona_vector(tiny):
    f = watched.load_framings()["tier"]
    reqs = ["Hi?", "Why is the sky blue?", "Tell me a joke."]
    w = last_token_stack(tiny, watched.framed_prompts(tiny.tokenizer, reqs, f, True))
    u = last_token_stack(tiny, watched.framed_prompts(tiny.tokenizer, reqs, f, False))
    vec = watched.context_direction(tiny, w, u, f)
    assert isinstance(vec, PersonaVector) and vec.trait == "watched:tier"
    torch.testing.assert_close(vec.vectors, (w - u).mean(0))
    vec.check_model(tiny)
    with pytest.raises(ValueError, match="one shape"):
        watched.context_direction(tiny, w, u[:2], f)


def test_probe_decodes_a_planted_context_and_not_noise():
    gen = torch.Generator().manual_seed(0)
    n, layers, d = 40, 3, 16
    base = torch.randn(n, layers, d, generator=gen)  # per request, shared by both sides
    signal = torch.zeros(layers, d)
    signal[2, 0] = 3.0  # only layer 2 carries the framing
    w, u = base + signal, base.clone()
    out = watched.probe_by_layer(w, u, n_shuffles=10, transfer=(base + 2 * signal, base.clone()))
    assert out["accuracy"][2] >= 0.9 and out["transfer"][2] >= 0.9
    assert out["accuracy"][2] > out["shuffled_p95"][2]
    assert out["accuracy"][0] <= 0.6  # identical sides: nothing to decode beyond chance
    with pytest.raises(ValueError, match="fewer than 2"):
        watched.probe_by_layer(w[:2], u[:2], test_frac=0.5)
    with pytest.raises(ValueError, match="test_frac"):
        watched.probe_by_layer(w, u, test_frac=1.0)


def test_check_context_direction_accepts_the_mean_difference_and_rejects_wrong_ones():
    from personalab.checks._core import ExerciseFailed
    from personalab.checks.ch8 import check_context_direction

    check_context_direction(lambda w, u: w.mean(0) - u.mean(0))
    for wrong in (
        lambda w, u: u.mean(0) - w.mean(0),
        lambda w, u: (w - u).sum(0),
        lambda w, u: w - u,
        lambda w, u: w.mean(0),
        lambda w, u: None,
    ):
        with pytest.raises(ExerciseFailed):
            check_context_direction(wrong)
