import os

import pytest
import torch

from personalab import activations, extraction, prompting
from personalab.judges import JudgeScore
from personalab.prompting import chat_prompt, generate
from personalab.traits import Trait
from tests.helpers import count_generate, toy_trait_dict


class ScriptedJudge:
    """Scores 'pos' prompts' answers high, others low (the answers are random on a tiny model)."""

    def __init__(self, pos=90, neg=10, coherence=80):
        self.values = (pos, neg, coherence)
        self.calls = 0

    def score(self, trait, questions, answers):
        self.calls += 1
        t = self.values[0] if self.calls % 2 == 1 else self.values[1]
        return [JudgeScore(t, self.values[2]) for _ in answers]


def _hook_activations(tiny, text):
    """Reference: all layer outputs via plain forward hooks (embedding + each block)."""
    hf = tiny._module
    outs = []
    hooks = [hf.model.embed_tokens.register_forward_hook(lambda m, i, o: outs.append(o.detach()))]
    for blk in hf.model.layers:
        hooks.append(
            blk.register_forward_hook(lambda m, i, o: outs.append((o[0] if isinstance(o, tuple) else o).detach()))
        )
    with torch.no_grad():
        hf(**tiny.tokenizer(text, return_tensors="pt"))
    for h in hooks:
        h.remove()
    return torch.stack([o[0] for o in outs])  # [L+1, seq, d]


def test_answer_activations_match_hooks(tiny):
    tok = tiny.tokenizer
    prompts = [chat_prompt(tok, "What is up?", "Be nice."), chat_prompt(tok, "Hi", None)]
    answers = ["Not much, thanks for asking!", "Hello"]
    acts = activations.answer_activations(tiny, prompts, answers, batch_size=2)
    for i, (p, a) in enumerate(zip(prompts, answers)):
        ref = _hook_activations(tiny, p + a)
        n_prompt = len(tok(p)["input_ids"])
        torch.testing.assert_close(acts["response"][i], ref[:, n_prompt:].mean(1), atol=2e-4, rtol=1e-3)
        torch.testing.assert_close(acts["prompt"][i], ref[:, :n_prompt].mean(1), atol=2e-4, rtol=1e-3)
        torch.testing.assert_close(acts["last_prompt"][i], ref[:, n_prompt - 1], atol=2e-4, rtol=1e-3)
    assert acts["response"].shape == (2, 5, 64)


def test_answer_activations_in_bf16_autocast_stay_close(tiny, monkeypatch):
    """Where the CPU has native bfloat16 the bulk activation pass runs in autocast: the values
    change (it really ran) but the response means and their difference stay close to float32."""
    from personalab import models

    tok = tiny.tokenizer
    prompts = [chat_prompt(tok, q, s) for q in ("What is up?", "Why is the sky blue?") for s in ("Be sad.", "Be glad.")]
    answers = ["Not much, sadly.", "It scatters light, I think.", "All is well!", "Rayleigh scattering, friend."]
    exact = activations.answer_activations(tiny, prompts, answers)
    monkeypatch.setenv("PERSONALAB_BF16_ACTIVATIONS", "1")
    monkeypatch.setattr(models, "cpu_has_bf16", lambda: True)
    fast = activations.answer_activations(tiny, prompts, answers)
    assert not torch.equal(exact["response"], fast["response"]), "bf16 autocast did not run"
    torch.testing.assert_close(fast["response"], exact["response"], atol=0.05, rtol=0.02)
    diff_exact = exact["response"][::2].mean(0) - exact["response"][1::2].mean(0)
    diff_fast = fast["response"][::2].mean(0) - fast["response"][1::2].mean(0)
    assert torch.nn.functional.cosine_similarity(diff_exact[1:], diff_fast[1:], dim=-1).min() > 0.99
    assert next(tiny._module.parameters()).dtype == torch.float32


def test_answer_activations_order_and_upto(tiny):
    """Length-sorted batching returns rows in the order given; ``upto`` keeps layers 0..upto unchanged."""
    tok = tiny.tokenizer
    prompts = [chat_prompt(tok, q) for q in ("A much longer question about many things?", "Hi", "Why?")]
    answers = ["A long answer that goes on and on for a while.", "Yo", "Because."]
    one_by_one = activations.answer_activations(tiny, prompts, answers, batch_size=1)
    batched = activations.answer_activations(tiny, prompts, answers, batch_size=3)
    shallow = activations.answer_activations(tiny, prompts, answers, batch_size=2, upto=2)
    for key in ("response", "prompt", "last_prompt"):
        torch.testing.assert_close(batched[key], one_by_one[key], atol=2e-4, rtol=1e-3)
        assert shallow[key].shape == (3, 3, 64)
        torch.testing.assert_close(shallow[key], one_by_one[key][:, :3], atol=2e-4, rtol=1e-3)
    with pytest.raises(ValueError, match="batch_size"):
        activations.answer_activations(tiny, prompts, answers, batch_size=0)


def test_mean_difference_and_empty():
    pos, neg = torch.ones(3, 5, 8), torch.zeros(2, 5, 8)
    assert torch.equal(extraction.mean_difference(pos, neg), torch.ones(5, 8))
    with pytest.raises(ValueError, match="at least one"):
        extraction.mean_difference(pos[:0], neg)


def test_pipeline_end_to_end(tiny, tmp_cache):
    trait = Trait.from_dict(toy_trait_dict())
    vec = extraction.extract_persona_vector(tiny, trait, ScriptedJudge(), max_new_tokens=4, escalate_below=2)
    assert vec.vectors.shape == (5, 64) and torch.isfinite(vec.vectors).all()
    assert vec.meta["n_kept"] == 3 and vec.meta["n_layers"] == 4 and 1 <= vec.default_layer <= 4
    assert len(vec.meta["residual_norm"]) == 5
    assert vec.meta["heldout"] is None  # 3 kept pairs: too few to build on half and test on the other
    assert vec.meta["stability"] is None  # and too few (under 4) for a split-half curve
    assert "3 kept pairs of 3; held-out separation not measured (fewer than 8" in vec.provenance()
    # the kept pairs' differences travel with the vector (as saved: float16) and average to it
    assert vec.pair_differences.shape == (3, 5, 64)
    torch.testing.assert_close(
        vec.pair_differences.mean(0), vec.vectors, rtol=2e-3, atol=2e-3 * vec.vectors.abs().max()
    )


def test_too_few_pairs_for_a_heldout_check_escalate_to_all_instruction_pairs(tiny, tmp_cache):
    trait = Trait.from_dict(toy_trait_dict())  # 3 questions: 3 pairs survive, fewer than the 8 a held-out check needs
    vec = extraction.extract_persona_vector(tiny, trait, ScriptedJudge(), max_new_tokens=4)
    assert vec.meta["settings"]["instructions_per_question"] == 5 and vec.meta["n_kept"] == 15


def test_escalated_vector_records_its_heldout_separation(tiny, tmp_cache):
    trait = Trait.from_dict(toy_trait_dict())
    vec = extraction.extract_persona_vector(tiny, trait, FirstCallFailsJudge(), max_new_tokens=4)
    held = vec.meta["heldout"]  # 12 kept pairs (the first round's 3 fail): the held-out check runs
    assert held["layer"] == vec.default_layer and held["ci_low"] <= held["value"] <= held["ci_high"]
    assert 0 <= held["percentile"] <= 100
    assert list(vec.meta["stability"]) == [str(m) for m in range(1, 7)]  # 12 pairs: 1 .. 6 per half
    assert all(-1 <= c <= 1 for c in vec.meta["stability"].values())
    line = vec.provenance()
    assert line.startswith("toy: 12 kept pairs of 15; held-out d at layer")
    assert line.endswith("beats chance") == (held["ci_low"] > held["null_p95"])


def test_filter_that_drops_everything_explains(tiny, tmp_cache):
    trait = Trait.from_dict(toy_trait_dict())
    cset = extraction.generate_contrastive(tiny, trait, max_new_tokens=3)
    extraction.judge_contrastive(cset, trait, ScriptedJudge(pos=40))
    with pytest.raises(ValueError, match="only 0 of 3 pairs survive.*Lower pos_min"):
        extraction.filter_pairs(cset)
    assert extraction.filter_pairs(cset, pos_min=30) == [0, 1, 2]


class FirstCallFailsJudge(ScriptedJudge):
    """p+ answers score low on the first round (one pair per question), high afterwards."""

    def score(self, trait, questions, answers):
        if self.calls < 2:
            self.calls += 1
            return [JudgeScore(10, 80) for _ in answers]
        return super().score(trait, questions, answers)


def test_extraction_escalates_to_all_instruction_pairs(tiny, tmp_cache):
    trait = Trait.from_dict(toy_trait_dict())
    judge = FirstCallFailsJudge()
    vec = extraction.extract_persona_vector(tiny, trait, judge, max_new_tokens=4)
    assert vec.meta["settings"]["instructions_per_question"] == 5 and vec.meta["n_pairs"] == 15
    with pytest.raises(ValueError, match="pairs survive"):  # an explicit setting is never escalated
        extraction.extract_persona_vector(
            tiny, trait, FirstCallFailsJudge(), max_new_tokens=3, instructions_per_question=1
        )


def _replace_generation(monkeypatch, fn) -> None:
    """``fn`` in place of ``generate`` for extraction, whether it generates plainly or reading
    the answers' activations (``prompting.generate_reading_response`` calls ``prompting.generate``)."""
    monkeypatch.setattr(extraction, "generate", fn)
    monkeypatch.setattr(prompting, "generate", fn)


def test_escalation_keeps_the_pairs_already_asked(tiny, tmp_cache, monkeypatch):
    """The 100-pair setting adds each question's other four instruction pairs to the judged
    first round instead of asking everything again: 3 + 12 pairs, 30 prompts generated in all."""
    trait = Trait.from_dict(toy_trait_dict())
    asked = []
    real = extraction.generate

    def counting(model, prompts, **kw):
        asked.extend(prompts)
        return real(model, prompts, **kw)

    _replace_generation(monkeypatch, counting)
    first = extraction.generate_contrastive(tiny, trait, max_new_tokens=4)
    asked.clear()
    vec = extraction.extract_persona_vector(tiny, trait, FirstCallFailsJudge(), max_new_tokens=4)
    assert vec.meta["n_pairs"] == 15 and vec.meta["settings"]["instructions_per_question"] == 5
    assert vec.meta["settings"]["skip"] == 0  # the joined set holds every pair of each question
    assert len(asked) == 2 * 3 + 2 * 12 and len(set(asked)) == 30  # no prompt asked twice
    assert not set(first.prompts_pos) & set(asked[3:])  # the first round's 3 pairs are the cached ones
    later = extraction.contrastive_prompts(tiny.tokenizer, trait, trait.questions["extraction"], 5, skip=1)
    assert [p[1] for p in later] == [1, 2, 3, 4, 2, 3, 4, 0, 3, 4, 0, 1]
    with pytest.raises(ValueError, match="skip must be"):
        extraction.contrastive_prompts(tiny.tokenizer, trait, ["q?"], 2, skip=2)
    with pytest.raises(TypeError, match="skip must be a whole number"):
        extraction.contrastive_prompts(tiny.tokenizer, trait, ["q?"], 2, skip=True)


def test_joining_contrastive_sets_refuses_mismatches(tiny, tmp_cache):
    trait = Trait.from_dict(toy_trait_dict())
    judged = extraction.judge_contrastive(
        extraction.generate_contrastive(tiny, trait, max_new_tokens=3), trait, ScriptedJudge()
    )
    unjudged = extraction.generate_contrastive(tiny, trait, max_new_tokens=3)
    with pytest.raises(ValueError, match="two judged sets or two unjudged"):
        judged.extended(unjudged, settings={})
    other = Trait.from_dict({**toy_trait_dict(), "name": "other"})
    with pytest.raises(ValueError, match="cannot join pairs of 'toy' and 'other'"):
        judged.extended(extraction.generate_contrastive(tiny, other, max_new_tokens=3), settings={})
    both = unjudged.extended(unjudged, settings={"x": 1})
    assert len(both) == 2 * len(unjudged) and both.settings == {"x": 1}


class SplitJudge:
    """A judge with separate trait and coherence scorers, counting the coherence calls."""

    def __init__(self, trait_scores):
        self.scores, self.coherence_asked = list(trait_scores), []

    def trait_scores(self, trait, answers):
        return [self.scores.pop(0) for _ in answers]

    def coherence_scores(self, questions, answers):
        self.coherence_asked.extend(answers)
        return [70.0] * len(answers)

    def score(self, trait, questions, answers):
        raise AssertionError("judge_contrastive should use the split scorers")


def test_coherence_only_for_pairs_whose_trait_scores_pass(tiny, tmp_cache):
    trait = Trait.from_dict(toy_trait_dict())
    cset = extraction.generate_contrastive(tiny, trait, max_new_tokens=3)
    judge = SplitJudge([80, 20, 90, 10, 60, 70])  # p+ 80, 20, 90; p- 10, 60, 70: only pair 0 passes
    extraction.judge_contrastive(cset, trait, judge, coherence_for=(50, 50))
    assert judge.coherence_asked == [cset.answers_pos[0], cset.answers_neg[0]]
    assert [s.coherence for s in cset.scores_pos] == [70.0, None, None]
    assert [s.trait for s in cset.scores_neg] == [10, 60, 70]
    assert extraction.filter_pairs(cset) == [0]
    full = SplitJudge([80, 20, 90, 10, 60, 70])
    extraction.judge_contrastive(cset, trait, full, coherence=False)
    assert full.coherence_asked == [] and all(s.coherence is None for s in cset.scores_pos)


def test_empty_question_list(tiny):
    d = toy_trait_dict()
    trait = Trait.from_dict(d)
    trait.questions["extraction"] = []
    with pytest.raises(ValueError, match="no 'extraction' questions"):
        extraction.generate_contrastive(tiny, trait)


def test_generation_cache_and_seeds(tiny, tmp_cache):
    tok = tiny.tokenizer
    prompts = [chat_prompt(tok, q) for q in ("a?", "b?", "c?")]
    first = generate(tiny, prompts, max_new_tokens=4, batch_size=2)
    assert len(list((tmp_cache / "generations").glob("*.json"))) == 2
    assert generate(tiny, prompts, max_new_tokens=4, batch_size=2) == first
    assert generate(tiny, prompts, max_new_tokens=4, batch_size=2, cache=False) == first
    s1 = generate(tiny, prompts, max_new_tokens=6, temperature=1.0, seed=3, cache=False)
    s2 = generate(tiny, prompts, max_new_tokens=6, temperature=1.0, seed=3, cache=False)
    assert s1 == s2
    with pytest.raises(ValueError, match="prompts is empty"):
        generate(tiny, [])


def test_persona_vector_cache_is_keyed_by_the_pipeline_version(tiny, tmp_cache, monkeypatch):
    """A vector cached by an older pipeline (whose meta may lack newer fields, e.g. the
    stability curve) is never returned: bumping EXTRACTION_VERSION extracts it again."""
    trait = Trait.from_dict(toy_trait_dict())
    judge = ScriptedJudge()
    first = extraction.persona_vector(tiny, trait, judge, max_new_tokens=4, escalate_below=2)
    calls = judge.calls
    again = extraction.persona_vector(tiny, trait, judge, max_new_tokens=4, escalate_below=2)
    assert judge.calls == calls and torch.equal(again.vectors, first.vectors)  # served from the cache
    monkeypatch.setattr(extraction, "EXTRACTION_VERSION", extraction.EXTRACTION_VERSION + 1)
    extraction.persona_vector(tiny, trait, judge, max_new_tokens=4, escalate_below=2)
    assert judge.calls > calls  # judged (so extracted) again


def _two_traits():
    """The toy trait and one with its own questions (so a mix-up of the two traits' answers shows)."""
    toy = Trait.from_dict(toy_trait_dict())
    questions = {
        "extraction": ["Name a colour.", "Count to three, please.", "What do cows eat?"],
        "evaluation": ["Is it raining?", "Who wrote Hamlet?"],
    }
    other = Trait.from_dict({**toy_trait_dict(), "name": "other", "questions": questions})
    return toy, other


def test_generate_contrastive_many_is_one_call_with_each_traits_prompts(tiny, tmp_cache, monkeypatch):
    """Several traits share one ``generate`` call; each set holds exactly the pairs
    ``generate_contrastive`` builds for its trait, and one trait is that very call."""
    toy, other = _two_traits()
    calls = count_generate(monkeypatch, extraction, prompting)
    sets = extraction.generate_contrastive_many(tiny, [toy, other], max_new_tokens=3)
    assert len(calls) == 1 and len(calls[0]) == 2 * 2 * 3
    alone = [extraction.generate_contrastive(tiny, t, max_new_tokens=3) for t in (toy, other)]
    assert [len(c) for c in calls] == [12, 6, 6]
    for s, a in zip(sets, alone, strict=True):
        assert (s.trait, s.questions, s.instruction) == (a.trait, a.questions, a.instruction)
        assert (s.prompts_pos, s.prompts_neg, s.settings) == (a.prompts_pos, a.prompts_neg, a.settings)
        assert (s.answers_pos, s.answers_neg) == (a.answers_pos, a.answers_neg)  # each answer back with its pair
    assert calls[0] == alone[0].prompts_pos + alone[0].prompts_neg + alone[1].prompts_pos + alone[1].prompts_neg
    with pytest.raises(ValueError, match="each trait may appear once"):
        extraction.generate_contrastive_many(tiny, [toy, toy], max_new_tokens=3)
    with pytest.raises(TypeError, match="Trait objects"):
        extraction.generate_contrastive_many(tiny, ["toy"], max_new_tokens=3)


def test_extract_persona_vectors_escalates_every_short_trait_in_one_call(tiny, tmp_cache, monkeypatch):
    """Two traits: one generate call for both first rounds, one for both escalations; each
    vector is what the one-trait method gives (the first trait's first round fails the
    filter, so it keeps 12 of 15 pairs; the second keeps all 15)."""
    toy, other = _two_traits()
    calls = count_generate(monkeypatch, extraction, prompting)
    vecs = extraction.extract_persona_vectors(tiny, [toy, other], FirstCallFailsJudge(), max_new_tokens=4)
    assert [len(c) for c in calls] == [2 * 2 * 3, 2 * 2 * 12]
    assert [vecs[n].meta["n_kept"] for n in ("toy", "other")] == [12, 15]
    assert all(v.meta["settings"]["instructions_per_question"] == 5 for v in vecs.values())
    alone = extraction.extract_persona_vector(tiny, toy, FirstCallFailsJudge(), max_new_tokens=4)
    assert alone.meta["n_kept"] == 12 and alone.meta["n_pairs"] == vecs["toy"].meta["n_pairs"] == 15


def test_extract_persona_vectors_returns_the_error_of_a_trait_with_no_pairs(tiny, tmp_cache):
    """A trait whose answers never pass maps to the ValueError one-trait extraction raises;
    with an explicit setting there is no escalation, as for one trait."""
    toy, other = _two_traits()
    kw = dict(max_new_tokens=3, instructions_per_question=1)
    out = extraction.extract_persona_vectors(tiny, [toy, other], ScriptedJudge(pos=10), **kw)
    assert set(out) == {"toy", "other"}
    assert all(isinstance(e, ValueError) and "pairs survive" in str(e) for e in out.values())
    listed = extraction.persona_vectors(tiny, [toy, other], ScriptedJudge(pos=10), on_error="return", **kw)
    assert all(isinstance(e, ValueError) for e in listed.values())
    with pytest.raises(ValueError, match="trait 'toy': only 0 of 3 pairs survive"):
        extraction.persona_vectors(tiny, [toy, other], ScriptedJudge(pos=10), **kw)
    with pytest.raises(ValueError, match="on_error must be"):
        extraction.persona_vectors(tiny, [toy], ScriptedJudge(), on_error="ignore")


def test_persona_vectors_caches_where_persona_vector_looks(tiny, tmp_cache, monkeypatch):
    toy, other = _two_traits()
    judge = ScriptedJudge()
    vecs = extraction.persona_vectors(tiny, [toy, other], judge, max_new_tokens=4, escalate_below=2)
    assert all(v.meta["n_kept"] == 3 for v in vecs.values())

    def no_generation(*args, **kwargs):
        raise AssertionError("a cached vector was generated again")

    _replace_generation(monkeypatch, no_generation)
    again = extraction.persona_vector(tiny, other, judge, max_new_tokens=4, escalate_below=2)
    torch.testing.assert_close(again.vectors, vecs["other"].vectors)
    both = extraction.persona_vectors(tiny, [other, toy], judge, max_new_tokens=4, escalate_below=2)
    assert list(both) == ["other", "toy"]
    with pytest.raises(ValueError, match="each trait may appear once"):
        extraction.persona_vectors(tiny, [toy, toy], judge, max_new_tokens=4)
    with pytest.raises(TypeError, match="use persona_vector"):
        extraction.persona_vectors(tiny, "toy", judge)


HOLDER = """
import sys, time
from personalab._io import cache_lock
with cache_lock(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(2)
"""


def test_persona_vectors_leaves_an_entry_another_process_holds_for_last(tiny, tmp_cache, monkeypatch):
    """Side by side with a process building one of the vectors, the others are built first
    (without waiting), then the held one is waited for."""
    import subprocess
    import sys
    import time

    toy, other = _two_traits()
    judge = ScriptedJudge()
    kw = dict(max_new_tokens=4, escalate_below=2)
    held = extraction._vector_path(tiny, toy, judge, kw)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(held)], stdout=subprocess.PIPE, text=True, env={**os.environ}
    )
    assert holder.stdout.readline().strip() == "locked"
    locked_at = time.perf_counter()  # the holder lets go 2 s after saying "locked"
    order = []
    real = extraction.extract_persona_vectors

    def recording(model, traits, judge, **kwargs):
        order.append(([t.name for t in traits], time.perf_counter() - locked_at))
        return real(model, traits, judge, **kwargs)

    monkeypatch.setattr(extraction, "extract_persona_vectors", recording)
    vecs = extraction.persona_vectors(tiny, [toy, other], judge, **kw)
    holder.wait(timeout=30)
    assert [names for names, _ in order] == [["other"], ["toy"]]
    assert order[0][1] < 1.5 < order[1][1]  # other at once, while toy was held; toy once it was let go
    assert set(vecs) == {"toy", "other"} and held.with_name(held.name + ".json").is_file()


class AlternatingJudge:
    """Trait 90 for every p+ answer and 10 for every p- one, by call order (p+ is judged first)."""

    def __init__(self):
        self.calls = 0

    def score(self, trait, questions, answers):
        self.calls += 1
        return [JudgeScore(90.0 if self.calls % 2 else 10.0 + i, 80.0) for i in range(len(answers))]


def test_trait_effect_sizes_share_one_generation(tiny, tmp_cache, monkeypatch):
    """Cohen's d of p+ vs p- per trait, both traits' evaluation pairs answered in one call."""
    toy, other = _two_traits()
    calls = count_generate(monkeypatch, extraction, prompting)
    out = extraction.trait_effect_sizes(tiny, iter([toy, other]), AlternatingJudge(), max_new_tokens=3)
    assert [len(c) for c in calls] == [2 * 2 * 2]  # 2 evaluation questions per trait, p+ and p-
    for name in ("toy", "other"):
        r = out[name]
        assert r["n"] == 2 and r["mean_pos"] == 90 and r["mean_neg"] == 10.5 and r["d"] > 10
        assert r["summary"]["value"] == r["d"] and r["summary"]["n"] == 2  # with its interval and null
        assert r["cset"].settings["split"] == "evaluation"
    one = extraction.trait_effect_size(tiny, toy, AlternatingJudge(), max_new_tokens=3)
    assert one["d"] == out["toy"]["d"] and calls[-1] == calls[0][:4]  # alone: toy's own prompts


def test_sampled_rounds_add_pairs_until_the_bar(tiny, tmp_cache, monkeypatch):
    """Under ``min_kept`` pairs after the 100-pair setting, every pair is asked again at
    temperature 1, a round at a time, until the bar is reached or the rounds run out."""
    trait = Trait.from_dict(toy_trait_dict())  # 3 questions x 5 instruction pairs: 15 pairs per round
    temps = []
    real = extraction.generate

    def spy(model, prompts, **kw):
        temps.append((kw.get("temperature"), kw.get("seed")))
        return real(model, prompts, **kw)

    _replace_generation(monkeypatch, spy)
    vec = extraction.extract_persona_vector(
        tiny, trait, ScriptedJudge(), max_new_tokens=4, min_kept=20, sampled_rounds=3
    )
    assert vec.meta["n_kept"] == 30 and vec.meta["settings"]["sampled_rounds"] == 1  # 15 greedy + 15 sampled: enough
    assert temps == [(0.0, 0), (0.0, 0), (1.0, 1000)]
    vec = extraction.extract_persona_vector(
        tiny, trait, ScriptedJudge(), max_new_tokens=4, min_kept=100, sampled_rounds=2
    )
    assert vec.meta["n_pairs"] == 45 and vec.meta["settings"]["sampled_rounds"] == 2  # the rounds ran out first
    assert vec.provenance().startswith("toy: 45 kept pairs of 45 (2 sampled rounds); held-out d")
    assert vec.meta["heldout"]["n_prompts"] == 15  # the held-out split keeps a prompt's 3 answers together
    assert list(vec.meta["stability"]) == [str(m) for m in range(1, 8)]  # and the split-half curve: 15 prompts
    assert temps[-2:] == [(1.0, 1000), (1.0, 2000)]
    temps.clear()
    vec = extraction.extract_persona_vector(tiny, trait, ScriptedJudge(), max_new_tokens=4, min_kept=100)
    assert "sampled_rounds" not in vec.meta["settings"] and vec.meta["n_pairs"] == 15  # the ci profile: none
    temps.clear()
    with pytest.raises(ValueError, match="sampled_rounds must be >= 0"):
        extraction.extract_persona_vector(tiny, trait, ScriptedJudge(), max_new_tokens=4, sampled_rounds=-1)
    assert temps == []  # refused before any generation
    with pytest.raises(ValueError, match="min_kept must be >= 0"):
        extraction.extract_persona_vector(tiny, trait, ScriptedJudge(), max_new_tokens=4, min_kept=-1)
    assert temps == []
    explicit = extraction.extract_persona_vector(
        tiny, trait, ScriptedJudge(), max_new_tokens=4, temperature=0.7, sampled_rounds=3, min_kept=100
    )
    assert "sampled_rounds" not in explicit.meta["settings"]  # the caller chose the sampling: no rounds added


def test_the_profile_sets_the_sampled_rounds_and_the_cache_entry(tiny, tmp_cache, monkeypatch):
    trait = Trait.from_dict(toy_trait_dict())
    judge = ScriptedJudge()
    monkeypatch.setenv("PERSONALAB_PROFILE", "full")
    assert extraction.sampled_rounds_default() == 3
    full = extraction._vector_path(tiny, trait, judge, {})
    monkeypatch.setenv("PERSONALAB_PROFILE", "ci")
    assert extraction.sampled_rounds_default() == 0
    assert extraction._vector_path(tiny, trait, judge, {}) != full  # a ci vector is never read as a full one
    assert extraction._vector_path(tiny, trait, judge, {"sampled_rounds": 3}) == full
    ci = extraction._vector_path(tiny, trait, judge, {})
    assert extraction._vector_path(tiny, trait, judge, {"sampled_rounds": None}) == ci  # None: the profile's default


def test_extraction_reads_the_answers_activations_from_the_generating_pass(tiny, tmp_cache, monkeypatch):
    """Response pooling needs no second pass over prompt + answer: the vector is the mean
    difference of the kept pairs' activations read while their answers were generated
    (``generate_reading_response``, proved against forward hooks in test_nnsight_idioms);
    other poolings still run the pass."""
    trait = Trait.from_dict(toy_trait_dict())
    passes = []
    real = extraction.answer_activations
    monkeypatch.setattr(extraction, "answer_activations", lambda *a, **k: passes.append(a[1]) or real(*a, **k))
    vec = extraction.extract_persona_vector(tiny, trait, ScriptedJudge(), max_new_tokens=4, escalate_below=2)
    assert passes == [] and vec.meta["n_kept"] == 3
    cset = extraction.generate_contrastive(tiny, trait, max_new_tokens=4)
    answers, reads = prompting.generate_reading_response(
        tiny, cset.prompts_pos + cset.prompts_neg, max_new_tokens=4, desc="toy p+/p-"
    )
    assert answers == cset.answers_pos + cset.answers_neg  # the plain generation's answers
    torch.testing.assert_close(vec.vectors, reads["response"][:3].mean(0) - reads["response"][3:].mean(0))
    norms = torch.cat([reads["response_norm"][:3], reads["response_norm"][3:]]).mean(0)
    assert vec.meta["residual_norm"] == [round(x, 4) for x in norms.tolist()]
    extraction.extract_persona_vector(
        tiny, trait, ScriptedJudge(), max_new_tokens=4, escalate_below=2, pooling="prompt"
    )
    assert len(passes) == 2  # h+ and h-
