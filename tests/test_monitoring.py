"""Monitoring: the Monitor records the same pass that generates, alerts where it should,
refuses bad input; last-prompt projections match plain PyTorch hooks; ch4 checks work."""

import math

import pytest
import torch

import personalab as pl
from personalab import traits
from personalab.activations import last_token_activations
from personalab.checks._core import ExerciseFailed
from personalab.checks.ch4 import check_alert_rule, check_pearson, check_projection
from personalab.judges import JudgeScore
from personalab.models import model_id
from personalab.monitoring import (
    Monitor,
    first_alert,
    last_prompt_projection,
    prediction_experiment,
    prompt_projections,
    r_by_layer,
    response_threshold,
)
from personalab.prompting import chat_prompt
from personalab.stats import pearson_r
from personalab.vectors import PersonaVector, VectorMismatchError, project

QUESTIONS = ("Tell me about the sea.", "Why is the sky blue?", "Hi")


@pytest.fixture(scope="module")
def lively():
    """A tiny random model whose blocks matter, so greedy answers vary from token to token."""
    from personalab.checks.ch3 import _lively_tiny_model

    return _lively_tiny_model()


def _vec(model, seed=1, trait="toy", **meta):
    torch.manual_seed(seed)
    n, d = model.config.num_hidden_layers, model.config.hidden_size
    info = dict(model_id=model_id(model), n_layers=n, d_model=d, trait=trait, method="random")
    return PersonaVector(torch.randn(n + 1, d), {**info, **meta})


def _prompts(model):
    return [chat_prompt(model.tokenizer, q) for q in QUESTIONS]


def _module(model, layer):
    hf = model._module
    return hf.model.embed_tokens if layer == 0 else hf.model.layers[layer - 1]


def _hook_generate(model, prompts, layer, units, n):
    """Reference: HF generate with a plain forward hook recording the last position at every step."""
    hf, tok = model._module, model.tokenizer
    steps = []

    def hook(mod, inp, out):
        h = out[0] if isinstance(out, tuple) else out
        steps.append(h[:, -1].detach().float() @ units.T)  # [batch, n_traits]

    handle = _module(model, layer).register_forward_hook(hook)
    enc = tok(prompts, return_tensors="pt", padding=True)
    try:
        with torch.no_grad():
            ids = hf.generate(**enc, max_new_tokens=n, do_sample=False, pad_token_id=tok.pad_token_id)
    finally:
        handle.remove()
    return ids[:, enc["input_ids"].shape[1] :], torch.stack(steps, dim=1)  # [b, new], [b, steps, n_traits]


@pytest.mark.parametrize("layer", [0, 3])
def test_monitor_records_the_generation_pass(lively, layer):
    vecs = [_vec(lively, 1, "a"), _vec(lively, 2, "b")]
    result = Monitor(lively, vecs, layer).generate(_prompts(lively), max_new_tokens=6)
    units = torch.stack([v.unit(layer) for v in vecs])
    ids, steps = _hook_generate(lively, _prompts(lively), layer, units, 6)
    tok = lively.tokenizer
    assert result.answers == tok.batch_decode(ids, skip_special_tokens=True)
    assert result.traits == ["a", "b"]
    assert any(len(set(t)) > 1 for t in result.tokens), "the test model should write varied tokens"
    for i, proj in enumerate(result.projections):
        n = proj.shape[0]
        assert n >= 1 and proj.shape == (n, 2)
        assert result.tokens[i] == [tok.decode([t]) for t in ids[i, :n].tolist()]
        torch.testing.assert_close(proj, steps[i, :n], atol=1e-4, rtol=1e-4)


def test_alert_fires_at_planted_threshold(lively):
    vec, window = _vec(lively), 3
    prompts = _prompts(lively)[:1]
    proj = Monitor(lively, vec, 2).generate(prompts, max_new_tokens=8).projections[0][:, 0]
    roll = torch.stack([proj[max(0, t - window + 1) : t + 1].mean() for t in range(len(proj))])
    top = sorted(set(roll.tolist()))
    assert len(top) >= 2
    threshold = (top[-1] + top[-2]) / 2  # only the highest rolling mean exceeds it
    seen = []
    result = Monitor(lively, vec, 2, threshold, window=window, on_alert=seen.append).generate(prompts, max_new_tokens=8)
    want = int(roll.argmax())
    assert [(e.sample, e.trait, e.token) for e in result.alerts] == [(0, "toy", want)]
    assert seen == result.alerts
    assert result.alerts[0].value == pytest.approx(top[-1], abs=1e-5)
    assert first_alert(proj.tolist(), threshold, window) == want
    quiet = Monitor(lively, vec, 2, top[-1] + 1.0, window=window).generate(prompts, max_new_tokens=8)
    assert quiet.alerts == []


@pytest.mark.parametrize("threshold", [math.nan, -math.inf])
def test_monitor_rejects_bad_threshold(tiny, threshold):
    with pytest.raises(ValueError, match="threshold"):
        Monitor(tiny, _vec(tiny), 2, threshold)


def test_monitor_rejects_mixed_models_empty_prompts_and_bad_layer(tiny):
    other = _vec(tiny, 2, "other", model_id="some-other-model")
    with pytest.raises(VectorMismatchError, match="different models"):
        Monitor(tiny, [_vec(tiny), other], 2)
    with pytest.raises(VectorMismatchError):
        Monitor(tiny, _vec(pl.tiny_model(n_layers=2)), 1)
    with pytest.raises(ValueError, match="prompts is empty"):
        Monitor(tiny, _vec(tiny), 2).generate([])
    with pytest.raises(IndexError, match="out of range"):
        Monitor(tiny, _vec(tiny), 5)
    with pytest.raises(ValueError, match="at least one"):
        Monitor(tiny, [], 2)
    with pytest.raises(IndexError, match="out of range"):
        last_prompt_projection(tiny, _prompts(tiny), _vec(tiny), -1)


@pytest.mark.parametrize("layer", [1, 4])
def test_last_prompt_projection_matches_hook(lively, layer):
    vec, prompts, tok = _vec(lively), _prompts(lively), lively.tokenizer
    seen = {}
    handle = _module(lively, layer).register_forward_hook(
        lambda mod, inp, out: seen.setdefault("h", (out[0] if isinstance(out, tuple) else out).detach())
    )
    try:
        with torch.no_grad():
            lively._module(**tok(prompts, return_tensors="pt", padding=True))
    finally:
        handle.remove()
    want = seen["h"][:, -1].float() @ vec.unit(layer)
    torch.testing.assert_close(
        last_prompt_projection(lively, prompts, vec, layer, batch_size=2), want, atol=1e-4, rtol=1e-4
    )
    many = prompt_projections(lively, prompts, vec, [layer, 2])
    torch.testing.assert_close(many[:, 0], want, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(many[:, 1], last_prompt_projection(lively, prompts, vec, 2), atol=1e-4, rtol=1e-4)


class _LengthJudge:
    """A stand-in judge: the trait score is the answer's length in characters."""

    def score(self, trait, questions, answers):
        return [JudgeScore(float(len(a)), 50.0) for a in answers]


class _TraitOnlyJudge(_LengthJudge):
    """A judge with a trait-only path: the experiment must use it (coherence is not needed)."""

    def score(self, trait, questions, answers):
        raise AssertionError("score() should not be called when trait_scores() exists")

    def trait_scores(self, trait, answers):
        return [1.0] * len(answers)


def test_prediction_experiment_on_tiny(lively, tmp_cache):
    vec = _vec(lively, trait="pirate")
    exp = prediction_experiment(lively, "pirate", vec, _LengthJudge(), 2, n_questions=2, max_new_tokens=3)
    assert exp["n"] == 16 and exp["levels"] == [lev for lev in range(8) for _ in range(2)]
    assert exp["prompts"][0] == chat_prompt(
        lively.tokenizer, exp["questions"][0], traits.load("pirate").graded_prompts[0]
    )
    torch.testing.assert_close(
        torch.tensor(exp["projections"]), last_prompt_projection(lively, exp["prompts"], vec, 2), atol=1e-4, rtol=1e-4
    )
    assert exp["scores"] == [float(len(a)) for a in exp["answers"]]
    assert len(exp["prompt_projection"]) == len(exp["prompt_score"]) == 8
    assert exp["prompt_projection"][3] == pytest.approx(sum(exp["projections"][6:8]) / 2)
    if not math.isnan(exp["r_per_sample"]):
        assert exp["r_per_sample"] == pytest.approx(pearson_r(exp["projections"], exp["scores"]))
    sweep = r_by_layer(lively, exp, vec, [1, 2])
    assert sweep["layers"] == [1, 2] and len(sweep["r_per_prompt"]) == 2
    assert sweep["r_per_sample"][1] == pytest.approx(exp["r_per_sample"], nan_ok=True, abs=1e-5)
    # the stored last-token activations are what a fresh pass gives, and sweeps on them match a recomputation
    # (to float32 rounding at this model's scale, |h| up to ~300: the generation computes the prompts'
    # shared system prefix once, in a batch of another shape)
    assert exp["last_token"].shape == (16, 5, 64)
    torch.testing.assert_close(
        exp["last_token"][:, 3], last_token_activations(lively, exp["prompts"], 3), atol=2e-3, rtol=1e-4
    )
    recomputed = r_by_layer(lively, {k: v for k, v in exp.items() if k != "last_token"}, vec, [1, 2])
    assert recomputed["r_per_prompt"] == pytest.approx(sweep["r_per_prompt"], nan_ok=True, abs=1e-5)
    assert math.isfinite(response_threshold(lively, exp, vec, 2))
    fast = prediction_experiment(lively, "pirate", vec, _TraitOnlyJudge(), 2, n_questions=2, max_new_tokens=3)
    assert fast["scores"] == [1.0] * 16 and all(math.isnan(c) for c in fast["coherence"])
    with pytest.raises(ValueError, match="vector is for"):
        prediction_experiment(lively, "sad", vec, _LengthJudge(), 2)
    with pytest.raises(ValueError, match="n_questions"):
        prediction_experiment(lively, "pirate", vec, _LengthJudge(), 2, n_questions=0)


def test_html_and_plots(lively):
    import matplotlib

    matplotlib.use("Agg")
    from personalab.plotting_monitoring import plot_cosine_heatmap, plot_trace

    result = Monitor(lively, [_vec(lively, 1, "a"), _vec(lively, 2, "b")], 2).generate(
        _prompts(lively)[:1], max_new_tokens=4
    )
    assert "<span" in result._repr_html_() and "<span" in result.html(0, 1)
    assert plot_trace(result, 0, 1, threshold=0.0) is not None
    assert plot_cosine_heatmap(torch.eye(2), ["a", "b"]) is not None
    from personalab.plotting_monitoring import plot_prediction

    exp = {
        "levels": [0, 0, 1, 1],
        "scores": [10.0, 30.0, 60.0, 80.0],
        "projections": [0.0, 1.0, 2.0, 3.0],
        "prompt_projection": [0.5, 2.5],
        "prompt_score": [20.0, 70.0],
        "layer": 2,
        "trait": "toy",
        "r_per_sample": 0.9,
        "r_per_prompt": 1.0,
    }
    ax = plot_prediction(exp).axes[0]
    bars = [ln for ln in ax.lines if len(ln.get_xdata()) == 2 and ln.get_xdata()[0] == ln.get_xdata()[1]]
    assert len(bars) == 2 and all(b.get_ydata()[0] <= m <= b.get_ydata()[1] for b, m in zip(bars, (20.0, 70.0)))


# --- the chapter 4 exercise checks -----------------------------------------------------------


def test_projection_check():
    check_projection(project)
    check_projection(lambda acts, d: acts @ (d / d.norm()))
    with pytest.raises(ExerciseFailed, match="divide the direction by its norm"):
        check_projection(lambda acts, d: acts @ d)
    with pytest.raises(ExerciseFailed):
        check_projection(lambda acts, d: (acts @ (d / d.norm())).sum())
    with pytest.raises(ExerciseFailed, match="None"):
        check_projection(lambda acts, d: None)
    with pytest.raises(ExerciseFailed):  # normalises the activations instead of the direction
        check_projection(lambda acts, d: (acts / acts.norm(dim=-1, keepdim=True)) @ d)


def test_pearson_check():
    check_pearson(pearson_r)

    def cosine(x, y):
        return float(x @ y / (x.norm() * y.norm()))

    def covariance(x, y):
        return float(((x - x.mean()) * (y - y.mean())).mean())

    from personalab.stats import spearman

    for wrong, hint in ((cosine, "center"), (spearman, "ranks"), (covariance, None)):
        with pytest.raises(ExerciseFailed, match=hint):
            check_pearson(wrong)


def test_alert_rule_check():
    check_alert_rule(first_alert)

    def single_value(proj, thr, window):
        return next((t for t, v in enumerate(proj) if v > thr), None)

    def full_windows_only(proj, thr, window):
        return next((t for t in range(window - 1, len(proj)) if sum(proj[t - window + 1 : t + 1]) / window > thr), None)

    def at_or_above(proj, thr, window):
        return next(
            (
                t
                for t in range(len(proj))
                if sum(proj[max(0, t - window + 1) : t + 1]) / len(proj[max(0, t - window + 1) : t + 1]) >= thr
            ),
            None,
        )

    def minus_one(proj, thr, window):
        t = first_alert(proj, thr, window)
        return -1 if t is None else t

    for wrong, hint in (
        (single_value, "MEAN"),
        (full_windows_only, "not full"),
        (at_or_above, "strictly"),
        (minus_one, "return None"),
    ):
        with pytest.raises(ExerciseFailed, match=hint):
            check_alert_rule(wrong)


def test_monitoring_null_ranks_the_vector_among_random_directions(lively, tmp_cache):
    """A planted direction that drives the scores beats random directions; its own r is reproduced."""
    from personalab.monitoring import monitoring_null

    vec = _vec(lively, trait="pirate")
    qs = [f"Question number {i}?" for i in range(6)]
    prompts = [chat_prompt(lively.tokenizer, q, f"System prompt level {lev}.") for lev in range(8) for q in qs]
    levels = [lev for lev in range(8) for _ in qs]
    acts = last_token_activations(lively, prompts, 2)
    scores = (acts @ vec.unit(2)).tolist()  # the judge "sees" exactly the vector's projection
    exp = {"prompts": prompts, "levels": levels, "questions": [q for _ in range(8) for q in qs], "scores": scores}
    out = monitoring_null(lively, exp, vec, 2, n_random=50, n_boot=100)
    assert out["per_sample"]["value"] == pytest.approx(1.0, abs=1e-5)
    assert out["per_sample"]["percentile"] == 100.0 and out["per_sample"]["null_p95"] < 1.0
    assert out["per_sample"]["ci_low"] <= 1.0 + 1e-9 and set(out) == {"per_sample", "per_prompt"}
    assert math.isnan(out["per_sample"]["shuffled_p95"])  # no pair differences behind this vector: no shuffled null
    # with pair differences: the label-shuffled vectors are read too, and a planted vector beats them
    gen = torch.Generator().manual_seed(3)
    diffs = (
        vec.vectors[None]
        + 0.5 * vec.vectors.norm(dim=-1, keepdim=True) * torch.randn(9, *vec.vectors.shape, generator=gen) / 8
    )
    withd = PersonaVector(diffs.mean(0), vec.meta, diffs)
    scores = (acts @ withd.unit(2)).tolist()
    out = monitoring_null(lively, {**exp, "scores": scores}, withd, 2, n_random=50, n_boot=100)
    s = out["per_sample"]
    assert s["value"] == pytest.approx(1.0, abs=1e-5) and 0 <= s["shuffled_p95"] < 1.0
    assert s["shuffled_percentile"] == 100.0


def test_choose_monitoring_layer_uses_extraction_questions_only(lively, tmp_cache):
    from personalab.monitoring import choose_monitoring_layer

    vec = _vec(lively, trait="pirate")
    pick = choose_monitoring_layer(
        lively, "pirate", vec, _LengthJudge(), layers=[1, 2, 3], n_questions=2, max_new_tokens=3
    )
    pirate = traits.load("pirate")
    assert pick["experiment"]["split"] == "extraction"
    assert set(pick["experiment"]["questions"]) == set(pirate.extraction_questions[:2])
    assert not set(pick["experiment"]["questions"]) & set(pirate.evaluation_questions)
    j = pick["sweep"]["layers"].index(pick["layer"])
    assert pick["sweep"]["r_per_sample"][j] == max(r for r in pick["sweep"]["r_per_sample"] if math.isfinite(r))
    with pytest.raises(ValueError, match="split must be"):
        prediction_experiment(lively, "pirate", vec, _LengthJudge(), 2, split="test")


class _ConstantJudge:
    def trait_scores(self, trait, answers):
        return [50.0] * len(answers)


def test_choose_monitoring_layer_says_when_scores_do_not_vary(lively, tmp_cache):
    from personalab.monitoring import choose_monitoring_layer

    with pytest.raises(ValueError, match="the judged scores do not vary"):
        choose_monitoring_layer(
            lively,
            "pirate",
            _vec(lively, trait="pirate"),
            _ConstantJudge(),
            layers=[1, 2],
            n_questions=2,
            max_new_tokens=3,
        )


def test_rolling_alerts_is_first_alert_per_column():
    from personalab.monitoring import rolling_alerts

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(20, 30, generator=gen)
    thr = torch.linspace(-1, 1.5, 30)
    for window in (1, 3, 4):
        want = [first_alert(x[:, j], float(thr[j]), window) is not None for j in range(30)]
        assert rolling_alerts(x, thr, window) == want
    assert rolling_alerts(torch.zeros(0, 2), [0.0, 0.0]) == [False, False]
    with pytest.raises(ValueError, match="thresholds"):
        rolling_alerts(x, [0.0], 4)


def _graded_experiment(model, qs):
    prompts = [chat_prompt(model.tokenizer, q, f"System prompt level {lev}.") for lev in range(8) for q in qs]
    answers = pl.generate(model, prompts, max_new_tokens=4, progress=False)
    return {"prompts": prompts, "answers": answers, "levels": [lev for lev in range(8) for _ in qs]}


def test_alert_null_matches_the_monitor_and_ranks_among_random_directions(lively, tmp_cache):
    """The vector's alerts are the Monitor's at response_threshold, accuracy is scored per
    prompt, and the null is each random direction run as its own Monitor at its own threshold."""
    from personalab.monitoring import alert_null
    from personalab.stats import null_summary
    from personalab.vectors import random_directions_like

    qs = [f"Question number {i}?" for i in range(3)]
    exp = _graded_experiment(lively, qs)
    prompts = [chat_prompt(lively.tokenizer, q, f"System prompt level {lev}.") for lev in (0, 7) for q in qs]
    eliciting = [False] * 3 + [True] * 3
    vec = _vec(lively, trait="pirate")
    out = alert_null(lively, vec, 2, exp, prompts, eliciting, groups=qs + qs, n_random=20, n_boot=50, max_new_tokens=4)
    thr = response_threshold(lively, exp, vec, 2)
    assert out["threshold"] == pytest.approx(thr, rel=1e-5, abs=1e-5) and out["n"] == 6
    fired = []
    Monitor(lively, vec, 2, thr, on_alert=fired.append).generate(prompts, max_new_tokens=4)
    assert out["alerts"] == [i in {ev.sample for ev in fired} for i in range(6)]
    assert out["value"] == sum(a == e for a, e in zip(out["alerts"], eliciting)) / 6
    assert 0 <= out["ci_low"] <= out["value"] <= out["ci_high"] <= 1 and 0 <= out["percentile"] <= 100
    null = []
    for rand in random_directions_like(vec, 20, seed=0):
        fired = []
        Monitor(lively, rand, 2, response_threshold(lively, exp, rand, 2), on_alert=fired.append).generate(
            prompts, max_new_tokens=4
        )
        null.append(sum((i in {ev.sample for ev in fired}) == e for i, e in enumerate(eliciting)) / 6)
    want = null_summary(out["value"], null)
    assert out["null_p95"] == pytest.approx(want["null_p95"]) and out["percentile"] == want["percentile"]
    with pytest.raises(ValueError, match="both eliciting and suppressing"):
        alert_null(lively, vec, 2, exp, prompts, [True] * 6, n_random=2)
    with pytest.raises(ValueError, match="one flag per prompt"):
        alert_null(lively, vec, 2, exp, prompts, eliciting[:5], n_random=2)
