"""Bad input ends in one clear error (what was wrong, what was expected), never a silently wrong result.

One test per case of the reliability issue that used to pass silently or fail unclearly.
"""

import math
import warnings
from pathlib import Path

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
    return PersonaVector(
        scale * torch.randn(5, 64),
        dict(
            model_id="tiny-llama-4x64-seed0",
            n_layers=4,
            d_model=64,
            trait="toy",
            method="test",
            residual_norm=[2.0] * 5,
        ),
    )


def test_names_with_dots_save_to_different_files(tiny, tmp_path):
    a, b = _vec(tiny, 1.0), _vec(tiny, 2.0)
    a.save(tmp_path / "sad_coef0.5")
    b.save(tmp_path / "sad_coef0.8")
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "sad_coef0.5.json",
        "sad_coef0.5.safetensors",
        "sad_coef0.8.json",
        "sad_coef0.8.safetensors",
    ]
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
    with pytest.raises(ValueError, match=r"residual_norm'\]\[0\] must be finite, got nan"):
        PersonaVector(vec.vectors.clone(), {**vec.meta, "residual_norm": [float("nan")] * 5})
    with pytest.raises(ValueError, match="steering vector at layer 2 is not finite"):
        steer(tiny, vec, 2, 1e300, coef_mode="raw")  # finite coef, overflowing push
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

    for bad, match in (
        ({"steps": 0}, "LoraSettings.steps must be >= 1"),
        ({"batch_size": 0}, "LoraSettings.batch_size must be >= 1"),
        ({"lr": float("nan")}, "LoraSettings.lr must be finite"),
    ):
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
    trait_file.write_bytes('{"name": "é"}'.encode("latin-1"))
    with pytest.raises(TraitError, match="not UTF-8"):
        Trait.from_json(trait_file)


def test_the_unit_suite_runs_offline():
    """The autouse fixture in conftest refuses outside connections, so every other test proves offline use."""
    import socket

    with pytest.raises(RuntimeError, match="must work offline"):
        socket.create_connection(("203.0.113.1", 80), timeout=1)


def test_vector_metadata_must_agree_with_its_tensor(tiny, tmp_path):
    vec = _vec(tiny)
    for meta, err, match in (
        ({"residual_norm": [1.0] * 3}, ValueError, r"residual_norm'\] has 3 values, expected 5"),
        ({"residual_norm": [1.0, 1.0, -1.0, 1.0, 1.0]}, ValueError, "cannot be negative"),
        ({"residual_norm": "abc"}, TypeError, "must be a list of 5 numbers"),
        ({"n_layers": 7}, ValueError, r"meta\['n_layers'\] is 7 but the tensor's shape \(5, 64\) says 4"),
        ({"default_layer": 9}, IndexError, "layer 9 is out of range"),
    ):
        with pytest.raises(err, match=match):
            PersonaVector(vec.vectors.clone(), {**vec.meta, **meta})
    with pytest.raises(TypeError, match="must be a torch.Tensor"):
        PersonaVector(np.zeros((5, 64)), vec.meta)
    with pytest.raises(TypeError, match="coef must be a real number, got True"):
        vec.shift(2, True)
    with pytest.raises(ValueError, match="coef must be finite"):
        vec.shift(2, float("nan"), "raw")
    stem = vec.save(tmp_path / "v")
    meta_file = tmp_path / "v.json"
    meta_file.write_text(meta_file.read_text().replace('"n_layers": 4', '"n_layers": "4"'))
    with pytest.raises(TypeError, match="metadata n_layers must be a whole number"):
        PersonaVector.load(stem)


def test_seeds_must_be_whole_non_negative_numbers(tiny, tmp_cache):
    from personalab.stats import bootstrap_ci
    from personalab.vectors import random_directions_like

    prompts = [chat_prompt(tiny.tokenizer, "Hi")]
    with pytest.raises(TypeError, match="seed must be a whole number, got 1.5"):
        generate(tiny, prompts, temperature=1.0, seed=1.5, max_new_tokens=2)
    with pytest.raises(ValueError, match="seed must be >= 0, got -1"):
        generate(tiny, prompts, temperature=1.0, seed=-1, max_new_tokens=2)
    with pytest.raises(TypeError, match="seed must be a whole number, got 'a'"):
        random_directions_like(_vec(tiny), 1, seed="a")
    with pytest.raises(ValueError, match="seed must be >= 0"):
        bootstrap_ci(lambda d: 1.0, 4, seed=-3)
    assert generate(tiny, prompts, temperature=1.0, seed=np.int64(3), max_new_tokens=2, cache=False) == generate(
        tiny, prompts, temperature=1.0, seed=3, max_new_tokens=2, cache=False
    )


def test_every_text_input_refuses_a_bare_string(tiny):
    from personalab.activations import last_token_activations
    from personalab.capability import choice_logprobs
    from personalab.judges import answer_logprob
    from personalab.lens import logit_lens, residual_norms
    from personalab.monitoring import Monitor, prompt_projections

    vec = _vec(tiny)
    one_string = "must be a list of strings, got one string 'Hello'"
    for call in (
        lambda: last_token_activations(tiny, "Hello", 2),
        lambda: answer_logprob(tiny, "Hello", "Yo"),
        lambda: choice_logprobs(tiny, "Hello", [["a"]]),
        lambda: prompt_projections(tiny, "Hello", vec, [2]),
        lambda: Monitor(tiny, vec, 2).generate("Hello", max_new_tokens=2),
    ):
        with pytest.raises(TypeError, match=one_string):
            call()
    with pytest.raises(TypeError, match=r"prompts\[0\] must be a string, got 3"):
        residual_stream(tiny, [3])
    with pytest.raises(TypeError, match=r"prompt must be a string, got \['Hi'\]"):
        residual_norms(tiny, ["Hi"])
    with pytest.raises(ValueError, match="prompt is empty"):
        logit_lens(tiny, "")
    with pytest.raises(TypeError, match="question must be a string, got 5"):
        chat_prompt(tiny.tokenizer, 5)
    with pytest.raises(TypeError, match="system must be a string or None, got 5"):
        ask(tiny, ["Hi"], system=5)


def test_paired_lists_must_pair_up_before_any_work(tiny):
    from personalab.capability import choice_logprobs
    from personalab.judges import answer_logprob

    with pytest.raises(ValueError, match="1 questions but 2 answers: they must pair up"):
        answer_logprob(tiny, ["Hi"], ["Yo", "Hey"])
    with pytest.raises(ValueError, match="2 prompts but 1 lists of choices"):
        choice_logprobs(tiny, ["a", "b"], [["x"]])
    assert answer_logprob(tiny, ["Hi"], [""]) == [float("-inf")]  # an empty answer is allowed and scores -inf


def test_counts_and_sizes_must_be_positive_whole_numbers(tiny):
    import personalab as pl
    from personalab.activations import last_token_stack
    from personalab.judges import answer_logprob, repetition_rate
    from personalab.monitoring import first_alert
    from personalab.stats import bootstrap_ci
    from personalab.vectors import decode_direction, random_directions_like, split_half_cosine

    pos, neg = torch.randn(8, 5, 4), torch.randn(8, 5, 4)
    for call, err, match in (
        (lambda: last_token_stack(tiny, ["Hi"], batch_size=-1), ValueError, "batch_size must be >= 1, got -1"),
        (lambda: answer_logprob(tiny, ["Hi"], ["Yo"], batch_size=0), ValueError, "batch_size must be >= 1"),
        (lambda: bootstrap_ci(lambda d: 1.0, 4, n_boot=0), ValueError, "n_boot must be >= 1"),
        (lambda: first_alert([1.0, 2.0], 1.0, window=0), ValueError, "window must be >= 1"),
        (lambda: split_half_cosine(pos, neg, 2, n_splits=0), ValueError, "n_splits must be >= 1"),
        (lambda: split_half_cosine(pos, neg, -1), IndexError, "layer -1 is out of range"),
        (lambda: decode_direction(tiny, _vec(tiny).at(2), k=0), ValueError, "k must be >= 1"),
        (lambda: decode_direction(tiny, torch.randn(10)), ValueError, r"direction must be one vector \[d_model=64\]"),
        (lambda: repetition_rate("a b c", n=0), ValueError, "n must be >= 1"),
        (lambda: random_directions_like(_vec(tiny), 2.5), TypeError, "n must be a whole number, got 2.5"),
        (lambda: pl.tiny_model(n_layers=0), ValueError, "n_layers must be >= 1"),
        (lambda: pl.tiny_model(d_model=63), ValueError, "d_model must be a multiple of 4"),
        (lambda: pl.set_threads("a"), TypeError, "thread count must be a whole number"),
    ):
        with pytest.raises(err, match=match):
            call()
    assert len(decode_direction(tiny, _vec(tiny).at(2), k=10**6)["promotes"]) == len(tiny.tokenizer)


def test_nan_thresholds_are_refused(tiny):
    from personalab.judges import logprob_weighted_score
    from personalab.monitoring import first_alert

    with pytest.raises(ValueError, match="threshold is NaN"):
        first_alert([1.0, 2.0], float("nan"))
    assert first_alert([1.0, 2.0], math.inf) is None  # an infinite threshold is a valid "never"
    with pytest.raises(ValueError, match="min_mass must be finite"):
        logprob_weighted_score({"50": 0.0}, min_mass=float("nan"))
    assert logprob_weighted_score({"50": np.float32(0.0)}) == pytest.approx(50.0)  # numpy log-probs count


def test_reading_activations_refuses_a_prompt_beyond_the_context(tiny):
    with pytest.raises(ValueError, match=r"has \d+ tokens, which exceeds the model's context of 512"):
        residual_stream(tiny, ["word " * 600])


def _tiny_hf(tok):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=64,
    )
    return LlamaForCausalLM(cfg).eval()


def test_a_truncated_cached_model_is_rebuilt(tiny, tmp_path, monkeypatch):
    import personalab.models as models

    builds = []
    monkeypatch.setattr(
        models, "_build_from_gguf", lambda: builds.append(1) or (_tiny_hf(tiny.tokenizer), tiny.tokenizer)
    )
    cached = tmp_path / "models" / models.DEFAULT_MODEL
    models._load_or_build_cache(cached, None)
    weights = cached / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])  # truncated; the completion marker is still there
    with pytest.warns(UserWarning, match=f"the cached model in {cached} is unreadable .*rebuilding it"):
        models._load_or_build_cache(cached, None)
    assert len(builds) == 2
    hf, _ = models._load_or_build_cache(cached, None)  # a good load from the rebuilt cache
    assert len(builds) == 2 and hf.config.name_or_path == models.DEFAULT_MODEL


def test_a_sigkill_during_the_first_cache_write_is_cleaned_up(tiny, tmp_path, monkeypatch):
    import subprocess
    import sys

    import personalab.models as models

    cached = tmp_path / "models" / models.DEFAULT_MODEL
    child = f"""
import os, signal, sys
sys.path.insert(0, {str(Path(__file__).parents[1])!r})
from pathlib import Path
from transformers import LlamaConfig, LlamaForCausalLM
import personalab.models as models
cfg = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                  num_attention_heads=2, num_key_value_heads=1)
class Killer:  # the model's weights are written, then the process dies before the tokenizer
    def save_pretrained(self, path):
        os.kill(os.getpid(), signal.SIGKILL)
models._atomic_save(LlamaForCausalLM(cfg), Killer(), Path({str(cached)!r}))
"""
    run = subprocess.run([sys.executable, "-c", child], capture_output=True, timeout=120)
    assert run.returncode == -9, run.stderr.decode()[-500:]
    leftovers = list(cached.parent.glob(".tmp-*"))
    assert leftovers and not cached.exists() and any((d / "model.safetensors").exists() for d in leftovers)
    monkeypatch.setattr(models, "_build_from_gguf", lambda: (_tiny_hf(tiny.tokenizer), tiny.tokenizer))
    models._load_or_build_cache(cached, None)
    assert not list(cached.parent.glob(".tmp-*")) and (cached / models._CACHE_MARKER).is_file()
    monkeypatch.setattr(models, "_build_from_gguf", lambda: pytest.fail("a complete cache must not be rebuilt"))
    hf, tok = models._load_or_build_cache(cached, None)
    assert hf.config.num_hidden_layers == 1 and len(tok) == len(tiny.tokenizer)


def test_activations_and_seeded_generation_are_bit_identical(tiny, tmp_cache):
    from personalab.activations import answer_activations

    prompts = [chat_prompt(tiny.tokenizer, q) for q in ("Hi", "How are you today?")]
    assert torch.equal(residual_stream(tiny, prompts), residual_stream(tiny, prompts))
    a, b = (answer_activations(tiny, prompts, [" fine", " well, thanks"]) for _ in range(2))
    assert all(torch.equal(a[k], b[k]) for k in a)
    s1, s2 = (generate(tiny, prompts, max_new_tokens=5, temperature=1.0, seed=7, cache=False) for _ in range(2))
    assert s1 == s2


def test_a_steering_push_too_large_for_float32_is_refused(tiny, tmp_cache):
    from personalab.steering import RowSteering, sweep

    vec = _vec(tiny)
    for make in (lambda: steer(tiny, vec, 2, 1e30), lambda: RowSteering(tiny, [(vec, 2, 1e30)])):
        with pytest.raises(ValueError, match="steering push at layer 2 is too large .*lower coef"):
            make()
    trait = Trait.from_dict(toy_trait_dict())
    with pytest.raises(TypeError, match="one string 'Hi\\?'"):
        sweep(tiny, trait, vec, None, layers=[2], coefs=[0.5], questions="Hi?")
    with pytest.raises(ValueError, match="coef must be finite"):
        sweep(tiny, trait, vec, None, layers=[2], coefs=[0.5, float("nan")])
    with pytest.raises(TypeError, match="layer must be a whole number, got True"):
        sweep(tiny, trait, vec, None, layers=[True], coefs=[0.5])


def test_trait_names_and_splits_are_checked_where_they_enter(tiny):
    from personalab import traits
    from personalab.extraction import generate_contrastive

    with pytest.raises(TraitError, match="trait field 'name': the trait name '../../x' is not a safe name"):
        Trait.from_dict(toy_trait_dict(name="../../x"))
    with pytest.raises(TypeError, match="trait must be a name or a path"):
        traits.load(3)
    with pytest.raises(ValueError, match=r"split must be one of \['evaluation', 'extraction'\], got 'eval'"):
        generate_contrastive(tiny, Trait.from_dict(toy_trait_dict()), split="eval")


def test_a_cached_vector_with_broken_metadata_is_extracted_again(tiny, tmp_cache, monkeypatch):
    import personalab.extraction as extraction

    trait = Trait.from_dict(toy_trait_dict())
    made = []
    monkeypatch.setattr(extraction, "extract_persona_vector", lambda *a, **k: made.append(1) or _vec(tiny))
    extraction.persona_vector(tiny, trait, judge=object())
    assert extraction.persona_vector(tiny, trait, judge=object()) is not None and len(made) == 1  # from the cache
    (meta_file,) = (tmp_cache / "vectors").glob("*.json")
    meta_file.write_text(meta_file.read_text().replace('"n_layers": 4', '"n_layers": "4"'))
    extraction.persona_vector(tiny, trait, judge=object())
    assert len(made) == 2


def test_monitoring_and_summaries_take_numpy_numbers_and_refuse_what_they_cannot_use(tiny):
    from personalab.capability import capability_score
    from personalab.monitoring import Monitor, first_alert
    from personalab.steering import curve_summary, steered_answers

    vec = _vec(tiny)
    assert Monitor(tiny, vec, np.int64(2), np.float32(1.5)).threshold == 1.5
    with pytest.raises(TypeError, match="window must be a whole number, got 2.5"):
        Monitor(tiny, vec, 2, window=2.5)
    with pytest.raises(ValueError, match=r"one sequence of numbers .* got shape \(2, 2\)"):
        first_alert([[1.0, 2.0], [3.0, 4.0]], 1.5)
    with pytest.raises(IndexError, match="layer 99 is out of range"):
        steered_answers(tiny, vec, ["Hi"], 99, 0)  # coefficient 0 used to skip the layer check
    with pytest.raises(ValueError, match="needs a row at coef=0"):
        curve_summary([{"coef": 0.5, "trait": 1.0, "coherence": 90.0, "repetition": 0.0}])
    with pytest.raises(TypeError, match="takes capability.Item objects, got 'x'"):
        capability_score(tiny, ["x"])


def test_load_model_checks_its_arguments_before_looking_anywhere():
    import personalab as pl

    with pytest.raises(TypeError, match="name must be a model name, Hugging Face id or folder, got 3"):
        pl.load_model(3)
    with pytest.raises(TypeError, match="dtype must be a torch.dtype such as torch.bfloat16"):
        pl.load_model("some/model", dtype="bf16")


def test_judges_and_generation_say_which_object_they_needed(tiny):
    from personalab.judges import EmbeddingJudge

    with pytest.raises(TypeError, match="trait must be a Trait, got 'sad'.*traits.load"):
        EmbeddingJudge().trait_scores("sad", ["a"])
    with pytest.raises(TypeError, match="top_logprobs must be a dict"):
        logprob_weighted_score([("50", 0.0)])
    with pytest.raises(TypeError, match="interventions must have on_layer"):
        generate(tiny, ["Hi"], max_new_tokens=2, cache=False, interventions=[3])


def test_neutral_kl_names_the_reference_it_needs(tiny):
    from personalab.capability import neutral_kl

    with pytest.raises(ValueError, match=r"reference_logits must be the \[batch, seq, vocab\].*got \(3,\)"):
        neutral_kl(tiny, torch.zeros(3))


# -- fine-tuning, data filtering and results: the edges audited last ---------------------------


def test_training_steering_and_fine_tuning_inputs_fail_clearly(tiny, tmp_cache):
    from personalab.finetune import (
        Example,
        LoraSettings,
        TrainingSteering,
        finetune,
        heldout_loss,
        load_dataset,
        profile_settings,
    )

    vec = _vec(tiny)
    with pytest.raises(IndexError, match="layer 99 is out of range"):
        TrainingSteering(vec, 99, 0.5)
    with pytest.raises(TypeError, match="layer must be a whole number"):
        TrainingSteering(vec, "2", 0.5)
    with pytest.raises(TypeError, match="coef must be a real number"):
        TrainingSteering(vec, 2, "x")
    assert TrainingSteering(vec, np.int64(2), np.float32(0.5)).layer == 2
    one_step = LoraSettings(steps=1, batch_size=1)
    with pytest.raises(TypeError, match="got str"):
        finetune(tiny, "abc", one_step)
    with pytest.raises(TypeError, match=r"Example\(question, answer\)"):
        finetune(tiny, [("q", "a")], one_step)
    with pytest.raises(TypeError, match="list of finetune.Example"):
        heldout_loss(tiny, "abc")
    with pytest.raises(TypeError, match="dataset name or a path"):
        load_dataset(3)
    with pytest.raises(ValueError, match="unknown profile 'fast'"):
        profile_settings("fast")
    assert isinstance(profile_settings("ci")["settings"], LoraSettings)
    assert Example("q", "a").split == "train"


def test_null_baselines_refuse_vectors_of_other_widths_zero_directions_and_nan():
    from personalab.datafilter import filtering_null
    from personalab.finetune import shift_null

    gen = torch.Generator().manual_seed(0)
    deltas = [torch.randn(64, generator=gen) for _ in range(4)]
    ok = shift_null(deltas, [1, 2, 3, 4], ["a"] * 4, {"a": torch.randn(64, generator=gen)}, n_random=20, n_boot=20)
    assert -1 <= ok["value"] <= 1 and math.isfinite(ok["null_p95"])
    with pytest.raises(ValueError, match=r"deltas\[3\] has 32 entries, expected 64"):
        shift_null(deltas[:3] + [torch.randn(32)], [1, 2, 3, 4], ["a"] * 4, {"a": torch.randn(64)})
    with pytest.raises(ValueError, match="has 32 entries, expected 64"):
        shift_null(deltas, [1, 2, 3, 4], ["a"] * 4, {"a": torch.randn(32)})
    with pytest.raises(ValueError, match="all zeros"):
        shift_null(deltas, [1, 2, 3, 4], ["a"] * 4, {"a": torch.zeros(64)})
    with pytest.raises(ValueError, match="n_random must be >= 1"):
        shift_null(deltas, [1, 2, 3, 4], ["a"] * 4, {"a": torch.randn(64)}, n_random=0)
    with pytest.raises(ValueError, match="must be finite"):
        shift_null(deltas, [1, math.nan, 3, 4], ["a"] * 4, {"a": torch.randn(64)})
    means = {ds: torch.randn(64, generator=gen) for ds in "abc"}
    with pytest.raises(ValueError, match="has 32 entries, expected 64"):
        filtering_null(means, {"a": 1, "b": 2, "c": 3}, torch.randn(32))
    with pytest.raises(ValueError, match="all zeros"):  # it used to return a Spearman of 1.0
        filtering_null(means, {"a": 1, "b": 2, "c": 3}, torch.zeros(64))
    with pytest.raises(ValueError, match=r"shifts\['b'\] must be finite"):
        filtering_null(means, {"a": 1, "b": math.nan, "c": 3}, torch.randn(64))


def test_data_filtering_inputs_fail_clearly(tiny, tmp_cache):
    from personalab.datafilter import activation_differences, answer_means, drop_top, projection_difference
    from personalab.finetune import Example

    ex = [Example("Hi?", "Hello there."), Example("Why?", "Because.")]
    with pytest.raises(ValueError, match="scores\\[0\\] must be finite"):  # NaN used to sort anywhere
        drop_top(ex, [math.nan, 2.0], 1)
    with pytest.raises(TypeError, match="k must be a whole number"):
        drop_top(ex, [1.0, 2.0], 1.5)
    assert drop_top(ex, torch.tensor([1.0, 2.0]), np.int64(1)) == ex[:1]
    with pytest.raises(TypeError, match="got one string"):  # used to read 'ab' as two answers
        answer_means(tiny, ex, "ab", [2])
    with pytest.raises(ValueError, match="2 examples but 1 answers"):
        answer_means(tiny, ex, ["a"], [2])
    with pytest.raises(ValueError, match="activation_differences\\(\\) got no examples"):
        activation_differences(tiny, [], [2])
    with pytest.raises(TypeError, match="list of finetune.Example"):
        projection_difference(tiny, "ab", _vec(tiny), 2, reference=["a", "b"])


def test_results_keys_sources_and_values_are_checked(tmp_path, monkeypatch):
    import json

    from personalab.results import nest, record

    monkeypatch.setenv("PERSONALAB_RESULTS", str(tmp_path))
    record("a.tensor", torch.tensor([1.0, 2.5]), source="probe")
    record("a.numpy", np.float64(0.123456), source="probe")
    assert json.loads((tmp_path / "probe.json").read_text()) == {"a.tensor": [1.0, 2.5], "a.numpy": 0.1235}
    for bad_key in ("", "a..b", ".a"):
        with pytest.raises(ValueError, match="dotted name"):
            record(bad_key, 1, source="probe")
    with pytest.raises(ValueError, match="not a safe name"):  # used to write outside the results folder
        record("x.v", 1, source="../../x")
    with pytest.raises(TypeError, match="got object"):
        record("x.w", object(), source="probe")
    with pytest.raises(ValueError, match="already holds a value"):
        nest({"a": 1, "a.b": 2})
    assert nest({"a.b": 1, "a.c": 2}) == {"a": {"b": 1, "c": 2}}
