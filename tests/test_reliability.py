"""Bad input ends in one clear error (what was wrong, what was expected), never a silently wrong result.

One test per case of the reliability issue that used to pass silently or fail unclearly.
"""

import math
import warnings

import numpy as np
import pytest
import torch

from personalab.activations import residual_stream
from personalab.judges import logprob_weighted_score
from personalab.prompting import ask, chat_prompt, generate
from personalab.steering import steer
from personalab.traits import Trait, TraitError
from personalab.vectors import PersonaVector
from tests.helpers import toy_trait_dict


def _vec(tiny, scale: float = 3.0) -> PersonaVector:
    torch.manual_seed(1)
    return PersonaVector(scale * torch.randn(5, 64), dict(model_id="tiny-llama-4x64-seed0", n_layers=4, d_model=64,
                                                          trait="toy", method="test", residual_norm=[2.0] * 5))


def test_names_with_dots_save_to_different_files(tiny, tmp_path):
    a, b = _vec(tiny, 1.0), _vec(tiny, 2.0)
    a.save(tmp_path / "sad_coef0.5")
    b.save(tmp_path / "sad_coef0.8")
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "sad_coef0.5.json", "sad_coef0.5.safetensors", "sad_coef0.8.json", "sad_coef0.8.safetensors"]
    assert torch.equal(PersonaVector.load(tmp_path / "sad_coef0.5").vectors, a.vectors)
    assert torch.equal(PersonaVector.load(tmp_path / "sad_coef0.8.safetensors").vectors, b.vectors)


def test_trait_names_are_safe_file_names():
    assert Trait.from_dict(toy_trait_dict(name="toy.v2")).name == "toy.v2"
    for bad in ("../../x", "a/b", ".hidden", "two..dots", ""):
        with pytest.raises(TraitError, match="name"):
            Trait.from_dict(toy_trait_dict(name=bad))


def test_exemplars_and_graded_prompts_must_be_text():
    with pytest.raises(TraitError, match="exemplars.pos.*non-empty strings"):
        Trait.from_dict(toy_trait_dict(exemplars={"pos": [1, 2], "neg": ["a b", "c d"]}))
    with pytest.raises(TraitError, match="graded_prompts.*non-empty strings"):
        Trait.from_dict(toy_trait_dict(graded_prompts=list(range(8))))


def test_a_bare_string_is_not_a_list_of_questions(tiny, tmp_cache):
    with pytest.raises(TypeError, match="one string 'Hi\\?'"):
        ask(tiny, "Hi?")
    with pytest.raises(TypeError, match=r"prompts\[1\] must be a string"):
        generate(tiny, ["fine", 3])


@pytest.mark.parametrize("batch_size", [0, -1])
def test_batch_size_must_be_positive(tiny, tmp_cache, batch_size):
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        generate(tiny, [chat_prompt(tiny.tokenizer, "Hi")], batch_size=batch_size)


def test_a_prompt_longer_than_the_context_is_refused(tiny, tmp_cache):
    long = chat_prompt(tiny.tokenizer, "word " * 600)  # the tiny model's context is 512 tokens
    with pytest.raises(ValueError, match="exceeds the model's context of 512 tokens"):
        generate(tiny, [long], max_new_tokens=4)


def test_layers_accept_numpy_and_torch_integers_but_not_bools(tiny):
    vec = _vec(tiny)
    assert torch.equal(vec.at(np.int64(2)), vec.at(2)) and torch.equal(vec.at(torch.tensor(3)), vec.at(3))
    with pytest.raises(TypeError, match="layer must be a whole number, got True"):
        vec.at(True)
    with pytest.raises(TypeError, match="whole number"):
        vec.at(2.0)
    with pytest.raises(IndexError, match="layer -1 is out of range"):
        residual_stream(tiny, ["Hi"], upto=-1)


def test_steering_takes_numpy_numbers_and_refuses_non_finite_vectors(tiny, tmp_cache):
    vec = _vec(tiny)
    prompts = [chat_prompt(tiny.tokenizer, "Hi")]
    with steer(tiny, vec, np.int64(2), np.float32(0.5)):
        np_answer = generate(tiny, prompts, max_new_tokens=3)
    with steer(tiny, vec, 2, 0.5):
        assert generate(tiny, prompts, max_new_tokens=3) == np_answer
    broken = PersonaVector(vec.vectors.clone(), {**vec.meta, "residual_norm": [float("nan")] * 5})
    with pytest.raises(ValueError, match="not finite"):
        steer(tiny, broken, 2, 0.5)
    with pytest.raises(ValueError, match="coef must be finite"):
        steer(tiny, vec, 2, float("inf"))


def test_steering_that_empties_every_answer_warns(tiny, tmp_cache, monkeypatch):
    import personalab.prompting as prompting

    pad = tiny.tokenizer.pad_token_id
    monkeypatch.setattr(prompting, "generate_batch", lambda model, texts, n, *a, **k: torch.full((len(texts), n), pad))
    with steer(tiny, _vec(tiny), 2, 50.0), pytest.warns(UserWarning, match="every answer in this batch of 1 is empty"):
        generate(tiny, [chat_prompt(tiny.tokenizer, "Hi")], max_new_tokens=3, cache=False)
    with warnings.catch_warnings():  # no steering active: an empty answer is the model's own business
        warnings.simplefilter("error")
        generate(tiny, [chat_prompt(tiny.tokenizer, "Hi")], max_new_tokens=3, cache=False)


def test_a_non_finite_logprob_is_an_abstention_not_nan():
    assert logprob_weighted_score({"50": math.nan}) is None
    assert logprob_weighted_score({"50": math.nan, "60": 0.0}) == pytest.approx(60.0)
    assert logprob_weighted_score({"70": -math.inf, "80": 0.0}) == pytest.approx(80.0)


def test_the_embedding_judge_keys_its_classifier_by_exemplars():
    from personalab.judges import EmbeddingJudge

    judge = EmbeddingJudge()
    toys = Trait.from_dict(toy_trait_dict())
    flipped = Trait.from_dict(toy_trait_dict(exemplars={"pos": toys.exemplars["neg"], "neg": toys.exemplars["pos"]}))
    answer = ["I love toy blocks and dolls, toys toys!"]
    assert judge.trait_scores(toys, answer)[0] > 50 > judge.trait_scores(flipped, answer)[0]


def test_a_truncated_cached_adapter_is_trained_again(tiny, tmp_cache):
    from personalab.finetune import Example, LoraSettings, finetune

    examples = [Example(f"What is {i} plus one?", f"It is {i + 1}.") for i in range(8)]
    fast = LoraSettings(steps=2, batch_size=4, max_len=64, rank=4, alpha=8, threads=1)
    first = finetune(tiny, examples, fast, progress=False)
    weights = first.path / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])  # truncated, completion marker still there
    with pytest.warns(UserWarning, match="unreadable .* training it again"):
        again = finetune(tiny, examples, fast, progress=False)
    assert not again.from_cache and again.losses == first.losses
    assert finetune(tiny, examples, fast, progress=False).from_cache


def test_training_settings_and_empty_inputs_fail_clearly(tiny, tmp_path):
    from personalab.capability import capability_score
    from personalab.finetune import DatasetError, LoraSettings, heldout_loss, load_dataset

    for bad, match in (({"steps": 0}, "LoraSettings.steps must be >= 1"),
                       ({"batch_size": 0}, "LoraSettings.batch_size must be >= 1"),
                       ({"lr": float("nan")}, "LoraSettings.lr must be finite")):
        with pytest.raises(ValueError, match=match):
            LoraSettings(**bad)
    with pytest.raises(ValueError, match="heldout_loss.* got no examples"):
        heldout_loss(tiny, [])
    with pytest.raises(ValueError, match="capability_score.* got no items"):
        capability_score(tiny, [])
    latin = tmp_path / "data.jsonl"
    latin.write_bytes('{"question": "Où?", "answer": "Là."}\n'.encode("latin-1"))
    with pytest.raises(DatasetError, match="not UTF-8"):
        load_dataset(latin)
    trait_file = tmp_path / "t.json"
    trait_file.write_bytes("{\"name\": \"é\"}".encode("latin-1"))
    with pytest.raises(TraitError, match="not UTF-8"):
        Trait.from_json(trait_file)


def test_the_unit_suite_runs_offline():
    """The autouse fixture in conftest refuses outside connections, so every other test proves offline use."""
    import socket

    with pytest.raises(RuntimeError, match="must work offline"):
        socket.create_connection(("203.0.113.1", 80), timeout=1)
