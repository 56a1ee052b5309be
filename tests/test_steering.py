import math

import pytest
import torch

import personalab as pl
from personalab.models import check_layer, generation_precision
from personalab.prompting import chat_prompt, generate
from personalab.steering import steer
from personalab.vectors import PersonaVector, VectorMismatchError
from tests.helpers import count_generate


def _vec(tiny, scale=3.0):
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


def _hook_generate(tiny, prompts, layer, delta, positions, n=5):
    """Reference steering with a plain forward hook on block ``layer`` during HF generate."""
    hf, tok = tiny._module, tiny.tokenizer
    state = {"step": 0}

    def hook(mod, inp, out):
        h = out.clone()
        if positions == "all" or (positions == "prompt" and state["step"] == 0):
            h += delta
        elif positions == "response":
            if state["step"] == 0:
                h[:, -1] += delta
            else:
                h += delta
        state["step"] += 1
        return h

    handle = hf.model.layers[layer - 1].register_forward_hook(hook)
    enc = tok(prompts, return_tensors="pt", padding=True)
    with torch.no_grad():
        ids = hf.generate(**enc, max_new_tokens=n, do_sample=False, pad_token_id=tok.pad_token_id)
    handle.remove()
    return tok.batch_decode(ids[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)


@pytest.mark.parametrize("positions", ["all", "prompt", "response"])
def test_steering_matches_forward_hook(tiny, tmp_cache, positions):
    vec = _vec(tiny)
    prompts = [chat_prompt(tiny.tokenizer, q) for q in ("Hello there?", "Why?")]
    with steer(tiny, vec, 2, 1.5, positions=positions, coef_mode="raw"):
        got = generate(tiny, prompts, max_new_tokens=5)
    want = _hook_generate(tiny, prompts, 2, 1.5 * vec.at(2), positions)
    assert got == want
    plain = generate(tiny, prompts, max_new_tokens=5)
    assert plain == _hook_generate(tiny, prompts, 2, torch.zeros(64), "all")


def test_bf16_generation_steers_like_a_hook_under_autocast_and_caches_apart(tiny, tmp_cache, monkeypatch):
    """With bfloat16 generation on, steered answers equal a plain hook's under the same autocast,
    and they are cached apart from float32 answers."""
    vec = _vec(tiny)
    prompts = [chat_prompt(tiny.tokenizer, q) for q in ("Hello there?", "Why?")]
    generate(tiny, prompts, max_new_tokens=5)  # float32 entry
    monkeypatch.setenv("PERSONALAB_BF16_GENERATION", "1")
    monkeypatch.setattr("personalab.models.cpu_has_bf16", lambda: True)
    with steer(tiny, vec, 2, 1.5, coef_mode="raw"):
        got = generate(tiny, prompts, max_new_tokens=5)
    with generation_precision(tiny):  # the precision generate runs in, for the plain hooks too
        want = _hook_generate(tiny, prompts, 2, 1.5 * vec.at(2), "all")
    assert got == want
    generate(tiny, prompts, max_new_tokens=5)
    assert len(list((tmp_cache / "generations").glob("*.json"))) == 3


def test_norm_mode_scales_unit_vector(tiny):
    vec = _vec(tiny)
    s = steer(tiny, vec, [1, 3], -0.5)
    torch.testing.assert_close(s.delta(3), -0.5 * 2.0 * vec.unit(3))
    assert s.layers == (1, 3)


def test_bad_inputs(tiny):
    vec = _vec(tiny)
    with pytest.raises(IndexError, match="layers run 1-4"):
        steer(tiny, vec, 7, 1.0)
    with pytest.raises(ValueError, match="positions must be one of"):
        steer(tiny, vec, 2, 1.0, positions="responses")
    with pytest.raises(ValueError, match="coef must be finite"):
        steer(tiny, vec, 2, math.nan)
    other = PersonaVector(
        torch.randn(31, 576),
        dict(model_id="SmolLM2-135M-Instruct", n_layers=30, d_model=576, trait="toy", method="test"),
    )
    with pytest.raises(VectorMismatchError):
        steer(tiny, other, 2, 1.0)
    assert check_layer(tiny, 2) == 2
    assert pl.tiny_model is not None


class _CountingJudge:
    """Scores by answer length and counts how many answers it was asked to judge."""

    def __init__(self):
        self.calls = self.n_answers = 0

    def score(self, trait, questions, answers):
        from personalab.judges import JudgeScore

        self.calls += 1
        self.n_answers += len(answers)
        return [JudgeScore(float(len(a) % 100), 80.0) for a in answers]


def test_sweep_grid_measures_unsteered_once(tiny, tmp_cache):
    from personalab import traits
    from personalab.steering import sweep

    judge = _CountingJudge()
    rows = sweep(
        tiny,
        traits.load("sad"),
        _vec(tiny),
        judge,
        layers=[1, 3],
        coefs=[0, 0.5],
        questions=["Hi?", "How are you?"],
        max_new_tokens=4,
        progress=False,
    )
    assert [(r["layer"], r["coef"]) for r in rows] == [(1, 0), (1, 0.5), (3, 0), (3, 0.5)]
    assert judge.calls == 1  # every point judged in one call; coef 0 answered once, shared by both layers
    assert judge.n_answers == 6  # 3 distinct points x 2 questions
    assert rows[0]["answers"] == rows[2]["answers"] and rows[0]["trait"] == rows[2]["trait"]
    assert all(len(r["answers"]) == 2 and 0 <= r["repetition"] <= 1 for r in rows)
    # intervals over the questions: the bootstrap of the two per-question scores brackets their mean
    from personalab.stats import mean_ci

    for r in rows:
        per_q = [float(len(a) % 100) for a in r["answers"]]
        assert tuple(r["trait_ci"]) == mean_ci(per_q)[1:] and r["trait_ci"][0] <= r["trait"] <= r["trait_ci"][1]
        assert tuple(r["coherence_ci"]) == (80.0, 80.0)


def test_coef_curves_draw_error_bars_where_rows_have_intervals():
    import matplotlib

    matplotlib.use("Agg")
    from personalab.plotting_steering import plot_coef_curves

    rows = [
        {"coef": c, "trait": t, "trait_ci": (t - 5, t + 5), "coherence": 90.0, "repetition": 0.0, "capability": None}
        for c, t in ((0, 20.0), (0.1, 40.0))
    ]
    fig = plot_coef_curves({"sad": rows, "old": [{k: v for k, v in r.items() if k != "trait_ci"} for r in rows]})
    trait_ax = fig.axes[0]
    assert len(trait_ax.collections) == 1  # one set of error bars: the rows with intervals
    assert len(fig.axes[1].collections) == 0 and len(trait_ax.lines) >= 2


def test_sweep_points_equal_one_steer_block_each(tiny, tmp_cache):
    """The batched sweep (RowSteering) gives each point the answers ``steer`` gives it."""
    from personalab import traits
    from personalab.prompting import ask
    from personalab.steering import sweep

    vec, qs = _vec(tiny), ["Hi?", "How are you?"]
    rows = sweep(
        tiny,
        traits.load("sad"),
        vec,
        _CountingJudge(),
        layers=[1, 3],
        coefs=[0, 2.0, -1.0],
        questions=qs,
        max_new_tokens=5,
        coef_mode="raw",
        progress=False,
    )
    for r in rows:
        if r["coef"] == 0:
            want = ask(tiny, qs, max_new_tokens=5, cache=False)
        else:
            with steer(tiny, vec, r["layer"], r["coef"], coef_mode="raw"):
                want = ask(tiny, qs, max_new_tokens=5, cache=False)
        assert r["answers"] == want, (r["layer"], r["coef"])
    assert len({tuple(r["answers"]) for r in rows}) > 2  # the steering really changed answers


def test_steered_answers_many_is_one_generation_equal_to_steered_answers(tiny, tmp_cache, monkeypatch):
    """Named steerings side by side: one generate call, each name's answers the ones
    ``steered_answers`` gives it alone (None: unsteered); a bad spec is refused."""
    from personalab import prompting
    from personalab.steering import steered_answers, steered_answers_many

    vec, qs = _vec(tiny), ["Hi?", "How are you?"]
    specs = {"plain": None, "L1 +2": (vec, 1, 2.0), "L3 -1": (vec, 3, -1.0)}
    calls = count_generate(monkeypatch, prompting)
    got = steered_answers_many(tiny, specs, qs, max_new_tokens=5, coef_mode="raw")
    assert len(calls) == 1 and list(got) == list(specs)
    for name, spec in specs.items():
        want = (
            steered_answers(tiny, vec, qs, 1, 0, max_new_tokens=5)
            if spec is None
            else steered_answers(tiny, spec[0], qs, spec[1], spec[2], max_new_tokens=5, coef_mode="raw")
        )
        assert got[name] == want, name
    assert len({tuple(a) for a in got.values()}) == 3  # the steerings really differ
    with pytest.raises(TypeError, match="non-empty dict"):
        steered_answers_many(tiny, {}, qs)


def test_sweep_many_is_one_generation_giving_each_trait_its_own_sweep(tiny, tmp_cache, monkeypatch):
    """Two traits' sweeps share one generate call; each trait's rows are the ones its own
    ``sweep`` gives (same answers, judged with its own trait)."""
    from personalab import prompting, traits
    from personalab.steering import SweepJob, choose_steering_layers, sweep, sweep_many

    sad, pirate = traits.load("sad"), traits.load("pirate")
    vec, other = _vec(tiny), _vec(tiny, scale=2.0)
    vec.meta["default_layer"] = other.meta["default_layer"] = 1
    jobs = [SweepJob(sad, vec, [1, 3], ["Hi?", "How are you?"]), SweepJob(pirate, other, [2], ["Why?"])]
    calls = count_generate(monkeypatch, prompting)
    kw = dict(coefs=[0, 0.5], max_new_tokens=4, progress=False)
    judge = _CountingJudge()
    both = sweep_many(tiny, jobs, judge, **kw)
    assert [len(c) for c in calls] == [2 * 3 + 1 * 2] and judge.calls == 2  # one generation; each trait judged once
    for job, rows in zip(jobs, both, strict=True):
        alone = sweep(tiny, job.trait, job.vector, _CountingJudge(), layers=job.layers, questions=job.questions, **kw)
        assert [(r["layer"], r["coef"]) for r in rows] == [(r["layer"], r["coef"]) for r in alone]
        assert [r["answers"] for r in rows] == [r["answers"] for r in alone]
    picks = choose_steering_layers(tiny, jobs, judge, coef=0.5, max_new_tokens=4, progress=False)
    assert [p["layer"] in job.layers or not p["from_scan"] for p, job in zip(picks, jobs)] == [True, True]
    # a job's own system prompt wins over sweep_many's; a job without one takes sweep_many's
    own = [SweepJob(sad, vec, [1], ["Hi?"], system="You are sad."), SweepJob(pirate, other, [2], ["Why?"])]
    n_calls = len(calls)
    mixed = sweep_many(tiny, own, judge, system="You are a pirate.", **kw)
    prompts = calls[n_calls]  # one generation: 2 points x 1 question per job
    assert [("You are sad." in p, "You are a pirate." in p) for p in prompts] == [(True, False)] * 2 + [
        (False, True)
    ] * 2
    for job, rows, system in zip(own, mixed, ["You are sad.", "You are a pirate."], strict=True):
        alone = sweep(
            tiny, job.trait, job.vector, judge, layers=job.layers, questions=job.questions, system=system, **kw
        )
        assert [r["answers"] for r in rows] == [r["answers"] for r in alone]
    with pytest.raises(TypeError, match="SweepJob"):
        sweep_many(tiny, [(sad, vec, [1], None)], judge, coefs=[0.5])


def test_row_steering_matches_forward_hook_per_row(tiny, tmp_cache):
    """Row i of one batch gets its own shift at its own layer, as a per-row forward hook does."""
    from personalab.steering import RowSteering

    vec = _vec(tiny)
    hf, tok = tiny._module, tiny.tokenizer
    prompts = [chat_prompt(tok, q) for q in ("Hello there?", "Why?", "Tell me a story.")]
    specs = [(2, 1.5), None, (3, -2.0)]  # (layer, coef) per row
    # generate() sorts prompts by length; the reference hooks the same batch in the same order
    order = sorted(range(3), key=lambda i: len(tok(prompts[i])["input_ids"]))
    handles = []
    for layer in (2, 3):
        rows = torch.stack(
            [specs[i][1] * vec.at(layer) if specs[i] and specs[i][0] == layer else torch.zeros(64) for i in order]
        )  # [3, d]
        handles.append(
            hf.model.layers[layer - 1].register_forward_hook(lambda mod, inp, out, rows=rows: out + rows[:, None, :])
        )
    enc = tok([prompts[i] for i in order], return_tensors="pt", padding=True)
    with torch.no_grad():
        ids = hf.generate(**enc, max_new_tokens=5, do_sample=False, pad_token_id=tok.pad_token_id)
    for h in handles:
        h.remove()
    want = dict(zip(order, tok.batch_decode(ids[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)))
    got = generate(
        tiny,
        prompts,
        max_new_tokens=5,
        cache=False,
        interventions=[RowSteering(tiny, [sp and (vec, *sp) for sp in specs], coef_mode="raw")],
    )
    assert got == [want[i] for i in range(3)]


def _row(coef, trait, coherence=80.0, repetition=0.0):
    return {
        "layer": 2,
        "coef": coef,
        "trait": trait,
        "coherence": coherence,
        "repetition": repetition,
        "capability": 0.8 - coef,
    }


def test_curve_summary_stops_at_first_incoherent_point():
    from personalab.steering import best_setting, curve_summary

    rows = [_row(0, 10), _row(0.1, 20), _row(0.2, 35), _row(0.3, 90, repetition=0.5), _row(0.4, 95, coherence=30)]
    s = curve_summary(rows)
    assert s["coherent_coefs"] == [0, 0.1, 0.2] and s["monotonic"] and s["best_coef"] == 0.2
    assert s["gain"] == pytest.approx(25) and s["capability_cost"] == pytest.approx(0.2)
    assert best_setting(rows)["coef"] == 0.2
    dip = curve_summary([_row(0, 10), _row(0.1, 40), _row(0.2, 30)])
    assert not dip["monotonic"] and dip["gain"] == pytest.approx(30)


def test_choose_steering_layer_picks_the_most_trait_among_coherent_layers(tiny, tmp_cache, monkeypatch):
    from personalab import steering

    fake = {1: (70.0, 80.0, 0.0), 2: (90.0, 30.0, 0.0), 3: (60.0, 80.0, 0.0)}  # layer 2 is incoherent

    def fake_sweep_many(model, jobs, judge, *, coefs, **kw):
        assert list(coefs) == [0.25]
        return [
            [
                {"layer": L, "coef": 0.25, "trait": fake[L][0], "coherence": fake[L][1], "repetition": fake[L][2]}
                for L in job.layers
            ]
            for job in jobs
        ]

    monkeypatch.setattr(steering, "sweep_many", fake_sweep_many)
    vec = _vec(tiny)
    vec.meta["default_layer"] = 3
    pick = steering.choose_steering_layer(tiny, None, vec, None, layers=[1, 2, 3], coef=0.25)
    assert pick["layer"] == 1 and pick["from_scan"] and len(pick["rows"]) == 3
    pick = steering.choose_steering_layer(tiny, None, vec, None, layers=[2], coef=0.25)
    assert pick["layer"] == vec.default_layer == 3 and not pick["from_scan"]  # none coherent: chapter 2's layer


def test_choose_steering_coefs_picks_among_new_and_answered_points(tiny, tmp_cache, monkeypatch):
    """The most trait among coherent points: the new coefficients and the rows already answered at
    the job's layer (rows at other layers do not count); the fallback when none is coherent."""
    from personalab import steering
    from personalab.steering import SweepJob

    fake = {0.05: (40.0, 80.0), 0.1: (90.0, 20.0)}  # 0.1 is incoherent

    def fake_sweep_many(model, jobs, judge, *, coefs, **kw):
        return [
            [
                {"layer": list(j.layers)[0], "coef": c, "trait": fake[c][0], "coherence": fake[c][1], "repetition": 0.0}
                for c in coefs
            ]
            for j in jobs
        ]

    monkeypatch.setattr(steering, "sweep_many", fake_sweep_many)
    vec = _vec(tiny)
    scan = [
        {"layer": 2, "coef": 0.3, "trait": 60.0, "coherence": 70.0, "repetition": 0.0},
        {"layer": 3, "coef": 0.3, "trait": 99.0, "coherence": 90.0, "repetition": 0.0},  # another layer
    ]
    jobs = [SweepJob(None, vec, [2]), SweepJob(None, vec, [3])]
    picks = steering.choose_steering_coefs(tiny, jobs, None, coefs=[0.05, 0.1], fallback=0.3, answered=[scan, []])
    assert [p["coef"] for p in picks] == [0.3, 0.05] and all(p["from_scan"] for p in picks)
    assert [r["coef"] for r in picks[0]["rows"]] == [0.05, 0.1, 0.3]
    none = steering.choose_steering_coefs(tiny, jobs[:1], None, coefs=[0.1], fallback=0.2)
    assert none[0]["coef"] == 0.2 and not none[0]["from_scan"]
    with pytest.raises(ValueError, match="one layer per job"):
        steering.choose_steering_coefs(tiny, [SweepJob(None, vec, [1, 2])], None, coefs=[0.1], fallback=0.3)
    with pytest.raises(ValueError, match="one list of rows per job"):
        steering.choose_steering_coefs(tiny, jobs, None, coefs=[0.1], fallback=0.3, answered=[scan])


def test_generate_keeps_prompt_order_and_rebuilds_bad_cache_entries(tiny, tmp_cache):
    """Prompts are batched by length, answers come back in the caller's order; a cache entry of
    the wrong shape is regenerated, not returned."""
    prompts = [chat_prompt(tiny.tokenizer, q) for q in ("A much longer question about the sea?", "Hi?", "Why?")]
    first = generate(tiny, prompts, max_new_tokens=4, batch_size=2)
    assert generate(tiny, prompts[::-1], max_new_tokens=4, batch_size=2)[::-1] == first
    for entry in (tmp_cache / "generations").glob("*.json"):
        entry.write_text('{"not": "a list"}')
    assert generate(tiny, prompts, max_new_tokens=4, batch_size=2) == first


def test_steering_nulls_share_one_generation_and_match_one_trait_at_a_time(tiny, tmp_cache, monkeypatch):
    """Two traits' controls: one generate call for every condition still unanswered (here the
    second trait brings its unsteered and steered answers), each result the one-trait result."""
    from personalab import prompting, traits
    from personalab.steering import NullJob, steering_null, steering_nulls

    vec, other = _vec(tiny), _vec(tiny, scale=2.0)
    qs = ["Hi?", "How are you?"]
    jobs = [
        NullJob(traits.load("sad"), vec, 2, 1.0, qs),
        NullJob(traits.load("pirate"), other, 1, 0.5, ["Why?", "Who?"], unsteered=["a", "b"], steered=["bb", "c"]),
    ]
    calls = count_generate(monkeypatch, prompting)
    kw = dict(n_random=2, max_new_tokens=4, n_boot=50)
    both = steering_nulls(tiny, jobs, _CountingJudge(), **kw)
    assert [len(c) for c in calls] == [2 * (2 + 2) + 2 * 2]  # sad: 4 conditions x 2 questions; pirate: 2 randoms
    for job, res in zip(jobs, both, strict=True):
        alone = steering_null(
            tiny,
            job.trait,
            job.vector,
            _CountingJudge(),
            layer=job.layer,
            coef=job.coef,
            questions=job.questions,
            unsteered=job.unsteered,
            steered=job.steered,
            **kw,
        )
        assert [r["answers"] for r in res["rows"]] == [r["answers"] for r in alone["rows"]]
        assert res["gain"] == pytest.approx(alone["gain"], nan_ok=True)  # no pairs stored: NaN shuffled keys
        assert (res["layer"], res["coef"]) == (job.layer, job.coef)
    assert both[1]["rows"][1]["answers"] == ["bb", "c"]
    with pytest.raises(TypeError, match="NullJob"):
        steering_nulls(tiny, [], _CountingJudge())


def test_steering_null_compares_with_random_directions_of_the_same_norm(tiny, tmp_cache):
    from personalab import traits
    from personalab.steering import steering_null
    from personalab.vectors import random_directions_like

    vec = _vec(tiny)
    rand = random_directions_like(vec, 3, seed=0)
    torch.testing.assert_close(rand[0].vectors.norm(dim=-1), vec.vectors.norm(dim=-1))
    assert rand[0].meta["residual_norm"] == vec.meta["residual_norm"] and rand[0].trait == "random-0"
    out = steering_null(
        tiny,
        traits.load("sad"),
        vec,
        _CountingJudge(),
        layer=2,
        coef=1.0,
        questions=["Hi?", "How are you?", "Why?"],
        n_random=3,
        max_new_tokens=4,
        n_boot=50,
    )
    rows = {r["condition"]: r for r in out["rows"]}
    assert list(rows) == ["unsteered", "persona vector", "random 0", "random 1", "random 2"]
    g = out["gain"]
    assert g["value"] == pytest.approx(rows["persona vector"]["trait"] - rows["unsteered"]["trait"])
    assert g["ci_low"] <= g["value"] <= g["ci_high"] and 0 <= g["percentile"] <= 100
    with steer(tiny, vec, 2, 1.0):  # the persona vector's rows equal a plain steer block
        want = generate(
            tiny,
            [chat_prompt(tiny.tokenizer, q) for q in ["Hi?", "How are you?", "Why?"]],
            max_new_tokens=4,
            cache=False,
        )
    assert sum(len(a) % 100 for a in want) / 3 == pytest.approx(rows["persona vector"]["trait"])
    again = steering_null(
        tiny,
        traits.load("sad"),
        vec,
        _CountingJudge(),
        layer=2,
        coef=1.0,
        questions=["Hi?", "How are you?", "Why?"],
        n_random=3,
        max_new_tokens=4,
        n_boot=50,
        unsteered=rows["unsteered"]["answers"],
        steered=["x", "yy", "zzz"],
    )
    assert again["rows"][1]["answers"] == ["x", "yy", "zzz"] and again["rows"][2:] == out["rows"][2:]
    assert again["gain"]["value"] == pytest.approx(2 - rows["unsteered"]["trait"])
    with pytest.raises(ValueError, match="2 persona vector answers for 3 questions"):
        steering_null(
            tiny,
            traits.load("sad"),
            vec,
            _CountingJudge(),
            layer=2,
            coef=1.0,
            questions=["Hi?", "How are you?", "Why?"],
            n_random=3,
            steered=["a", "b"],
        )


def test_steering_null_adds_label_shuffled_vectors_when_the_vector_has_pairs(tiny, tmp_cache):
    """A vector with stored pair differences also gets n_shuffled label-shuffled vectors of its
    norm (PersonaVector.shuffled_like): their rows equal a plain steer block, and their gains
    give the shuffled_* keys; a vector without pairs gets none (NaN keys)."""
    from personalab import traits
    from personalab.steering import steering_null

    plain = _vec(tiny)
    diffs = plain.vectors + torch.randn(6, 5, 64, generator=torch.Generator().manual_seed(2))
    vec = PersonaVector(diffs.mean(0), plain.meta, diffs)
    qs = ["Hi?", "How are you?", "Why?"]
    kw = dict(layer=2, coef=1.0, questions=qs, n_random=2, max_new_tokens=4, n_boot=50)
    out = steering_null(tiny, traits.load("sad"), vec, _CountingJudge(), n_shuffled=2, **kw)
    rows = {r["condition"]: r for r in out["rows"]}
    assert list(rows) == ["unsteered", "persona vector", "random 0", "random 1", "label-shuffled 0", "label-shuffled 1"]
    with steer(tiny, vec.shuffled_like(2)[1], 2, 1.0):
        want = generate(tiny, [chat_prompt(tiny.tokenizer, q) for q in qs], max_new_tokens=4, cache=False)
    assert rows["label-shuffled 1"]["answers"] == want
    g, base = out["gain"], rows["unsteered"]["trait"]
    shuffled_gains = torch.tensor([rows[f"label-shuffled {k}"]["trait"] - base for k in range(2)])
    assert g["shuffled_p95"] == pytest.approx(float(torch.quantile(shuffled_gains.double(), 0.95)))
    assert g["null_p95"] == pytest.approx(
        float(torch.quantile(torch.tensor([rows[f"random {k}"]["trait"] - base for k in range(2)]).double(), 0.95))
    )
    no_pairs = steering_null(tiny, traits.load("sad"), plain, _CountingJudge(), **kw)
    assert [r["condition"] for r in no_pairs["rows"]][-1] == "random 1"
    assert math.isnan(no_pairs["gain"]["shuffled_p95"]) and math.isnan(no_pairs["gain"]["shuffled_percentile"])
    none = steering_null(tiny, traits.load("sad"), vec, _CountingJudge(), n_shuffled=0, **kw)
    assert len(none["rows"]) == 4 and math.isnan(none["gain"]["shuffled_p95"])
    with pytest.raises(ValueError, match="n_shuffled must be >= 0"):
        steering_null(tiny, traits.load("sad"), vec, _CountingJudge(), n_shuffled=-1, **kw)


def test_random_directions_like_rejects_zero(tiny):
    from personalab.vectors import random_directions_like

    with pytest.raises(ValueError, match="n must be >= 1"):
        random_directions_like(_vec(tiny), 0)


def test_intervention_registry_holds_models_weakly(tiny):
    """Steering state is keyed on the model object, weakly: a freed model leaves no entry behind."""
    import gc

    from personalab.prompting import _ACTIVE, active_interventions

    other = pl.tiny_model()  # a second model object of the same shape
    with steer(other, _vec(other), layers=1, coef=1.0):
        assert len(active_interventions(other)) == 1
        assert active_interventions(tiny) == []  # another model is not steered
    assert active_interventions(other) == []
    n_before = len(_ACTIVE)
    del other
    gc.collect()
    assert len(_ACTIVE) == n_before - 1


# -- steering only when needed: capping and conditional steering -------------------------------


def _hf_ids(tiny, prompts, hooks, n=6):
    """Greedy new token ids from plain HF generate with forward hooks ``{layer: fn(out) -> out}``
    on the blocks (layer i = output of block i), the reference the nnsight interventions must match."""
    hf, tok = tiny._module, tiny.tokenizer
    handles = [
        hf.model.layers[layer - 1].register_forward_hook(lambda mod, inp, out, fn=fn: fn(out))
        for layer, fn in sorted(hooks.items())
    ]
    enc = tok(prompts, return_tensors="pt", padding=True)
    try:
        with torch.no_grad():
            ids = hf.generate(**enc, max_new_tokens=n, do_sample=False, pad_token_id=tok.pad_token_id)
    finally:
        for h in handles:
            h.remove()
    return ids[:, enc["input_ids"].shape[1] :]


def _prompts(tiny):
    return [chat_prompt(tiny.tokenizer, q) for q in ("Hello there?", "Why?", "Tell me a story.")]


def _small_push_vec(tiny):
    """``_vec`` with a residual norm near the tiny model's own (~0.2), so norm-mode pushes are moderate."""
    vec = _vec(tiny)
    return PersonaVector(vec.vectors, {**vec.meta, "residual_norm": [0.2] * 5})


def _cap_hook(unit, max_projection, seen):
    def fn(out):
        proj = (out.float() * unit).sum(-1)  # [batch, pos]
        seen.append(proj)
        return out - (torch.relu(proj - max_projection)[..., None] * unit).to(out.dtype)

    return fn


@pytest.mark.filterwarnings("ignore:every answer in this batch")
@pytest.mark.parametrize("max_projection", [-0.02, -0.3])
def test_capping_matches_forward_hook(tiny, tmp_cache, max_projection):
    """``cap`` clamps the projection on the unit vector at every position and step, exactly as a
    plain forward hook computing h - relu(h·u - max) u does: same token ids, same answers."""
    from personalab.monitoring import Monitor
    from personalab.prompting import generate_batch
    from personalab.steering import cap

    vec, prompts = _vec(tiny), _prompts(tiny)
    seen: list[torch.Tensor] = []
    want = _hf_ids(tiny, prompts, {2: _cap_hook(vec.unit(2), max_projection, seen)})
    assert (seen[0] > max_projection).any()  # the prompt pass had positions above the cap: the clamp is exercised
    with cap(tiny, vec, 2, max_projection) as c:
        assert c.layers == (2,)
        assert torch.equal(generate_batch(tiny, prompts, 6), want)
        assert generate(tiny, prompts, max_new_tokens=6) == tiny.tokenizer.batch_decode(want, skip_special_tokens=True)
        after = Monitor(tiny, vec, 2).generate(prompts, max_new_tokens=6).projections  # read after the cap
    before = torch.stack([p[:, -1] for p in seen], dim=1)  # [batch, steps], the hook's uncapped projections
    for i, p in enumerate(after):
        torch.testing.assert_close(p[:, 0], before[i, : len(p)].clamp(max=max_projection), atol=1e-5, rtol=0)
    if max_projection == -0.3:  # a cap below every ordinary position changes what the model says
        assert not torch.equal(want, _hf_ids(tiny, prompts, {}))


def test_capping_with_a_huge_cap_changes_nothing(tiny, tmp_cache):
    from personalab.prompting import generate_batch
    from personalab.steering import cap

    vec, prompts = _vec(tiny), _prompts(tiny)
    plain = generate_batch(tiny, prompts, 6)
    for max_projection in (1e6, 1e30):
        with cap(tiny, vec, 3, max_projection):
            assert torch.equal(generate_batch(tiny, prompts, 6), plain)
    assert torch.equal(plain, _hf_ids(tiny, prompts, {}))


@pytest.mark.filterwarnings("ignore:every answer in this batch")
def test_typical_max_projection_caps_above_the_models_own_answers(tiny, tmp_cache):
    """The 100th percentile of the projections over prompt and answer positions is a cap the
    model's own greedy answers never cross; lower percentiles give lower caps."""
    from personalab.steering import cap, typical_max_projection

    def generate_ids(model, questions):
        from personalab.prompting import generate_batch

        return generate_batch(model, [chat_prompt(model.tokenizer, q) for q in questions], 5)

    vec, qs = _vec(tiny), ["Hello there?", "Why?"]
    caps = [typical_max_projection(tiny, vec, 2, qs, percentile=p, max_new_tokens=5) for p in (0, 50, 99, 100)]
    assert caps == sorted(caps) and caps[0] < caps[-1]
    plain = generate_ids(tiny, qs)
    with cap(tiny, vec, 2, caps[-1] + 1e-4):  # above every position of the model's own answers
        assert torch.equal(generate_ids(tiny, qs), plain)
    with cap(tiny, vec, 2, caps[0] - 0.3):  # below all of them: every position is pulled back
        assert not torch.equal(generate_ids(tiny, qs), plain)
    with pytest.raises(ValueError, match="percentile must be between 0 and 100"):
        typical_max_projection(tiny, vec, 2, qs, percentile=101)
    with pytest.raises(TypeError, match="questions must be a list of strings"):
        typical_max_projection(tiny, vec, 2, "Why?")


def _when_hooks(delta, gate, threshold, layer, condition_layer, masks, projections=None):
    """Reference conditional steering: the mask is read at ``condition_layer`` before the push
    (each step's mask and projections are appended to ``masks`` and ``projections``)."""
    projections = [] if projections is None else projections
    state: dict[str, torch.Tensor] = {}

    def read(out):
        proj = (out.float() * gate).sum(-1)  # [batch, pos]
        state["mask"] = proj > threshold
        masks.append(state["mask"].clone())
        projections.append(proj)
        return out

    def push(out):
        if condition_layer == layer:
            read(out)
        return torch.where(state["mask"][..., None], out + delta.to(out.dtype), out)

    return {layer: push} if condition_layer == layer else {condition_layer: read, layer: push}


@pytest.mark.filterwarnings("ignore:every answer in this batch")
@pytest.mark.parametrize(
    ("threshold", "condition_layer", "other_condition"),
    [(-0.02, None, False), (0.0, 1, True)],
)
def test_conditional_steering_matches_forward_hook(tiny, tmp_cache, threshold, condition_layer, other_condition):
    """``steer_when`` adds steer's push only at the positions whose projection on the condition
    vector (at the condition layer, before the push) exceeds the threshold, per position and
    per step, as a plain pair of forward hooks does."""
    from personalab.monitoring import Monitor
    from personalab.prompting import generate_batch
    from personalab.steering import steer_when

    vec, prompts = _small_push_vec(tiny), _prompts(tiny)
    condition = -vec if other_condition else None
    gate_vec = condition if condition is not None else vec
    c_layer = 2 if condition_layer is None else condition_layer
    masks: list[torch.Tensor] = []
    projections: list[torch.Tensor] = []
    hooks = _when_hooks(vec.shift(2, 1.0), gate_vec.unit(c_layer), threshold, 2, c_layer, masks, projections)
    want = _hf_ids(tiny, prompts, hooks)
    assert 0 < masks[0].sum() < masks[0].numel()  # the prompt pass is steered at some positions only
    with steer_when(tiny, vec, 2, 1.0, threshold=threshold, condition=condition, condition_layer=condition_layer) as s:
        assert s.layers == tuple(sorted({c_layer, 2}))
        assert torch.equal(generate_batch(tiny, prompts, 6), want)
        assert generate(tiny, prompts, max_new_tokens=6) == tiny.tokenizer.batch_decode(want, skip_special_tokens=True)
        after = Monitor(tiny, vec, 2).generate(prompts, max_new_tokens=6).projections  # read after the push
    if condition_layer is None:  # the monitor sees each step's last position moved by the push where gated
        push = float(vec.shift(2, 1.0) @ vec.unit(2))
        before = torch.stack([p[:, -1] for p in projections], dim=1)
        gated = torch.stack([m[:, -1] for m in masks], dim=1)
        assert gated.any()
        for i, p in enumerate(after):
            n = len(p)
            torch.testing.assert_close(p[:, 0], before[i, :n] + push * gated[i, :n], atol=1e-5, rtol=0)
    if not other_condition:  # gating gives answers neither the plain nor the always-steered model gives
        with steer(tiny, vec, 2, 1.0):
            always = generate_batch(tiny, prompts, 6)
        assert not torch.equal(want, always) and not torch.equal(want, generate_batch(tiny, prompts, 6))


@pytest.mark.parametrize("coef_mode", ["norm", "raw"])
def test_conditional_steering_at_infinite_thresholds_is_no_steering_or_steer(tiny, tmp_cache, coef_mode):
    from personalab.prompting import generate_batch
    from personalab.steering import steer_when

    vec, prompts = _small_push_vec(tiny), _prompts(tiny)
    coef = 1.0 if coef_mode == "norm" else 0.05
    plain = generate_batch(tiny, prompts, 6)
    with steer(tiny, vec, 2, coef, coef_mode=coef_mode):
        steered = generate_batch(tiny, prompts, 6)
    assert not torch.equal(plain, steered)
    with steer_when(tiny, vec, 2, coef, threshold=math.inf, coef_mode=coef_mode):
        assert torch.equal(generate_batch(tiny, prompts, 6), plain)
    with steer_when(tiny, vec, 2, coef, threshold=-math.inf, coef_mode=coef_mode):
        assert torch.equal(generate_batch(tiny, prompts, 6), steered)
    with steer_when(tiny, vec, 2, coef, threshold=-math.inf, condition=-vec, condition_layer=0, coef_mode=coef_mode):
        assert torch.equal(generate_batch(tiny, prompts, 6), steered)


def test_bf16_generation_caps_and_gates_like_hooks_under_autocast(tiny, tmp_cache, monkeypatch):
    from personalab.prompting import generate_batch
    from personalab.steering import cap, steer_when

    vec, prompts = _small_push_vec(tiny), _prompts(tiny)
    monkeypatch.setenv("PERSONALAB_BF16_GENERATION", "1")
    monkeypatch.setattr("personalab.models.cpu_has_bf16", lambda: True)
    with cap(tiny, vec, 2, -0.3):
        got_cap = generate_batch(tiny, prompts, 6)
    with steer_when(tiny, vec, 2, 1.0, threshold=-0.02, condition_layer=1):
        got_when = generate_batch(tiny, prompts, 6)
    masks: list[torch.Tensor] = []
    with generation_precision(tiny):  # the precision generate runs in, for the plain hooks too
        want_cap = _hf_ids(tiny, prompts, {2: _cap_hook(vec.unit(2), -0.3, [])})
        want_when = _hf_ids(tiny, prompts, _when_hooks(vec.shift(2, 1.0), vec.unit(1), -0.02, 2, 1, masks))
    assert torch.equal(got_cap, want_cap) and torch.equal(got_when, want_when)


@pytest.mark.filterwarnings("ignore:every answer in this batch")
def test_capping_and_conditional_steering_cache_keys_hold_every_setting(tiny, tmp_cache):
    """Every setting is in the cache key, so ``generate``'s disk cache never serves one setting's
    answers for another's; the same setting is served from the cache."""
    from personalab.prompting import active_interventions
    from personalab.steering import cap, steer_when

    vec = _small_push_vec(tiny)
    caps = [cap(tiny, vec, 2, -0.02), cap(tiny, vec, 3, -0.02), cap(tiny, vec, 2, -0.3), cap(tiny, -vec, 2, -0.02)]
    whens = [
        steer_when(tiny, vec, 2, 1.0, threshold=0.0),
        steer_when(tiny, vec, 3, 1.0, threshold=0.0),
        steer_when(tiny, vec, 2, 0.5, threshold=0.0),
        steer_when(tiny, vec, 2, 1.0, threshold=0.1),
        steer_when(tiny, vec, 2, 1.0, threshold=0.0, condition=-vec),
        steer_when(tiny, vec, 2, 1.0, threshold=0.0, condition_layer=1),
        steer_when(tiny, vec, 2, 20.0, threshold=0.0, coef_mode="raw"),
        steer_when(tiny, vec, 2, 1.0, threshold=math.inf),
    ]
    keys = [str(h.cache_key()) for h in (*caps, *whens, steer(tiny, vec, 2, 1.0))]
    assert len(set(keys)) == len(keys)
    assert str(cap(tiny, vec, 2, -0.02).cache_key()) == keys[0]
    prompts = _prompts(tiny)[:2]
    with caps[2]:
        first = generate(tiny, prompts, max_new_tokens=4)
    with whens[0]:
        generate(tiny, prompts, max_new_tokens=4)
    assert len(list((tmp_cache / "generations").glob("*.json"))) == 2
    with cap(tiny, vec, 2, -0.3):
        assert generate(tiny, prompts, max_new_tokens=4) == first
    assert len(list((tmp_cache / "generations").glob("*.json"))) == 2
    assert active_interventions(tiny) == []  # every with block took itself off


def test_capping_and_conditional_steering_refuse_bad_inputs(tiny):
    from personalab.steering import cap, steer_when

    vec = _vec(tiny)
    zero = PersonaVector(torch.zeros(5, 64), dict(vec.meta))
    other = PersonaVector(
        torch.randn(31, 576),
        dict(model_id="SmolLM2-135M-Instruct", n_layers=30, d_model=576, trait="toy", method="test"),
    )
    with pytest.raises(IndexError, match="layers run 1-4"):
        cap(tiny, vec, 0, 1.0)
    with pytest.raises(IndexError, match="layers run 1-4"):
        cap(tiny, vec, 5, 1.0)
    with pytest.raises(TypeError, match="layer must be a whole number"):
        cap(tiny, vec, 2.5, 1.0)
    for bad in (math.nan, math.inf, -math.inf):
        with pytest.raises(ValueError, match="max_projection must be finite"):
            cap(tiny, vec, 2, bad)
    with pytest.raises(TypeError, match="max_projection must be a real number"):
        cap(tiny, vec, 2, True)
    with pytest.raises(VectorMismatchError):
        cap(tiny, other, 2, 1.0)
    with pytest.raises(ValueError, match="all zeros at layer 2: it has no direction"):
        cap(tiny, zero, 2, 1.0)
    with pytest.raises(IndexError, match="layers run 1-4"):
        steer_when(tiny, vec, 0, 1.0, threshold=0.0)
    with pytest.raises(ValueError, match="condition_layer 3 comes after layer 2"):
        steer_when(tiny, vec, 2, 1.0, threshold=0.0, condition_layer=3)
    with pytest.raises(IndexError, match="layers run 0-4"):
        steer_when(tiny, vec, 2, 1.0, threshold=0.0, condition_layer=-1)
    with pytest.raises(ValueError, match="threshold is NaN"):
        steer_when(tiny, vec, 2, 1.0, threshold=math.nan)
    with pytest.raises(ValueError, match="coef must be finite"):
        steer_when(tiny, vec, 2, math.inf, threshold=0.0)
    with pytest.raises(ValueError, match="coef_mode must be one of"):
        steer_when(tiny, vec, 2, 1.0, threshold=0.0, coef_mode="unit")
    with pytest.raises(TypeError, match="condition vector must be a PersonaVector"):
        steer_when(tiny, vec, 2, 1.0, threshold=0.0, condition=vec.unit(2))
    with pytest.raises(VectorMismatchError):
        steer_when(tiny, vec, 2, 1.0, threshold=0.0, condition=other)
    with pytest.raises(ValueError, match="condition vector is all zeros"):
        steer_when(tiny, vec, 2, 1.0, threshold=0.0, condition=zero)
    with pytest.raises(ValueError, match="too large"):
        steer_when(tiny, vec, 2, 1e30, threshold=0.0)
    # numbers of any numeric type are taken, as everywhere in personalab
    assert cap(tiny, vec, torch.tensor(2), torch.tensor(0.5)).cache_key() == cap(tiny, vec, 2, 0.5).cache_key()
    when = steer_when(tiny, vec, torch.tensor(3), 1, threshold=torch.tensor(0.25), condition_layer=torch.tensor(1))
    assert (when.layers, when.threshold, when.coef) == ((1, 3), 0.25, 1.0)
    assert pl.cap is cap and pl.steer_when is steer_when
