import copy
import math

import pytest
import torch

from personalab.datafilter import drop_top, projection_difference, projection_differences
from personalab.finetune import (
    CheckpointError,
    DatasetError,
    Example,
    LoraSettings,
    TrainingSteering,
    answer_loss,
    dilute,
    encode,
    finetune,
    heldout_loss,
    list_datasets,
    load_checkpoint,
    load_dataset,
    training_loop,
)
from personalab.models import model_id
from personalab.prompting import chat_prompt, generate_batch
from personalab.steering import steer
from personalab.vectors import PersonaVector, VectorMismatchError

EXAMPLES = [Example(f"What is {i} plus one?", f"It is {i + 1}. Easy!") for i in range(8)]
FAST = LoraSettings(steps=4, batch_size=4, lr=5e-3, max_len=64, rank=4, alpha=8, threads=1)


def _vec(scale=3.0, seed=1):
    torch.manual_seed(seed)
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


def _write(tmp_path, text):
    path = tmp_path / "data.jsonl"
    path.write_text(text)
    return path


def test_builtin_datasets_have_cards_and_splits():
    names = list_datasets()
    assert {"pirate_speak", "sad_mood", "control", "wrong_arithmetic", "dismissive"} <= set(names)
    for name in names:
        train, held = load_dataset(name, "train"), load_dataset(name, "heldout")
        assert 100 <= len(train) + len(held) <= 300 and len(held) == 40
        assert not {e.question for e in train} & {e.question for e in held}


def test_dilute_keeps_the_share_and_spreads_it_over_every_prefix():
    laden, filler = load_dataset("pirate_speak", "train"), load_dataset("control", "train")
    half = dilute(laden, filler, 0.5)
    assert len(half) == len(laden) and half == dilute(laden, filler, 0.5)  # seeded
    assert sum(e in set(laden) for e in half) == round(0.5 * len(laden))
    assert set(half) - set(laden) == set(filler[: len(laden) - round(0.5 * len(laden))])
    # shuffled: the first 48 (what chapter 6 scores) are not all from one side
    assert 12 <= sum(e in set(laden) for e in half[:48]) <= 36
    assert sorted(map(id, dilute(laden, filler, 1.0))) == sorted(map(id, laden))
    with pytest.raises(ValueError, match=r"share must be in \(0, 1\]"):
        dilute(laden, filler, 0.0)
    with pytest.raises(DatasetError, match="needs 3 filler examples, got 2"):
        dilute(laden[:4], filler[:2], 0.25)
    with pytest.raises(DatasetError, match="no trait-laden examples"):
        dilute([], filler, 0.5)


def test_dataset_errors_name_the_line(tmp_path):
    with pytest.raises(DatasetError, match="line 2: not valid JSON"):
        load_dataset(_write(tmp_path, '{"question": "a", "answer": "b"}\n{"question": \n'))
    with pytest.raises(DatasetError, match="line 1: field 'answer'"):
        load_dataset(_write(tmp_path, '{"question": "a"}\n'))
    with pytest.raises(DatasetError, match="holds no examples"):
        load_dataset(_write(tmp_path, "\n\n"))
    with pytest.raises(DatasetError, match="built-in ones: .*control"):
        load_dataset("no_such_dataset")


def test_encode_masks_the_prompt(tiny):
    batch = encode(tiny.tokenizer, EXAMPLES[:2], max_len=64)
    prompt_len = len(
        tiny.tokenizer(chat_prompt(tiny.tokenizer, EXAMPLES[0].question), add_special_tokens=False)["input_ids"]
    )
    assert (batch["labels"][0, :prompt_len] == -100).all()
    assert (batch["labels"][0, prompt_len:][batch["attention_mask"][0, prompt_len:] == 1] >= 0).all()
    with pytest.raises(DatasetError, match="no answer tokens left after truncation"):
        encode(tiny.tokenizer, EXAMPLES[:1], max_len=prompt_len)


def test_finetune_lowers_loss_keeps_base_and_caches(tiny, tmp_cache):
    before = {k: v.clone() for k, v in tiny._module.state_dict().items()}
    settings = LoraSettings(steps=12, batch_size=8, lr=2e-2, max_len=64, rank=4, alpha=8, threads=1)
    ft = finetune(tiny, EXAMPLES, settings, progress=False)
    assert len(ft.losses) == 12 and ft.losses[-1] < ft.losses[0]
    assert heldout_loss(ft.model, EXAMPLES) < heldout_loss(tiny, EXAMPLES)
    assert all(torch.equal(v, tiny._module.state_dict()[k]) for k, v in before.items())  # base untouched
    assert model_id(ft.model) != model_id(tiny)
    _vec().check_model(ft.model)  # base-model vectors apply to the fine-tuned copy
    again = finetune(tiny, EXAMPLES, settings, progress=False)
    assert again.from_cache and again.losses == ft.losses
    x = tiny.tokenizer(["Hello there"], return_tensors="pt")
    assert torch.allclose(again.model._module(**x).logits, ft.model._module(**x).logits, atol=1e-5)


def test_trimmed_padding_keeps_the_loss(tiny):
    """Training cuts each batch to its longest row: right padding carries no loss, so the loss is unchanged."""
    batch = encode(tiny.tokenizer, EXAMPLES[:3], max_len=64)
    width = int(batch["attention_mask"].sum(1).max())
    padded = {
        k: torch.cat([v, torch.zeros(v.shape[0], 7, dtype=v.dtype) - 100 * (k == "labels")], 1)
        for k, v in batch.items()
    }
    trimmed = {k: v[:, :width] for k, v in padded.items()}
    with torch.no_grad():
        torch.testing.assert_close(answer_loss(tiny._module, trimmed), answer_loss(tiny._module, padded))


def test_answer_loss_matches_the_loss_over_every_position(tiny):
    """Keeping only the logits from the earliest answer token on gives the loss of the full projection."""
    examples = [Example("Hi?", "Yes."), Example("What is the longest question in this whole batch?", "No, it is not.")]
    batch = encode(tiny.tokenizer, examples, max_len=64)
    with torch.no_grad():
        logits = tiny._module(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        full = torch.nn.functional.cross_entropy(
            logits[:, :-1].reshape(-1, logits.shape[-1]), batch["labels"][:, 1:].reshape(-1), ignore_index=-100
        )
        torch.testing.assert_close(answer_loss(tiny._module, batch), full)
        no_answer = {**batch, "labels": torch.full_like(batch["labels"], -100)}
        assert math.isnan(answer_loss(tiny._module, no_answer).item())  # nothing to score, as before


def test_heldout_loss_does_not_depend_on_the_batching(tiny, monkeypatch):
    """Length-sorted, trimmed batches weight every answer token once, whatever the batch size."""
    monkeypatch.setenv("PERSONALAB_BF16_SCORING", "0")  # exact float32, so the two must agree closely
    examples = [Example(f"Question number {i}{'?' * i}", "Answer " * (1 + i % 3)) for i in range(7)]
    one = heldout_loss(tiny, examples, batch_size=1)
    assert heldout_loss(tiny, examples, batch_size=3) == pytest.approx(one, rel=1e-5)
    assert heldout_loss(tiny, examples, batch_size=16) == pytest.approx(one, rel=1e-5)


def test_bf16_training_is_close_and_keyed_apart(tiny, tmp_cache, monkeypatch):
    """bfloat16 autocast training starts from the same loss (to bf16 precision) and caches apart from float32."""
    fp32 = finetune(tiny, EXAMPLES, FAST, progress=False)
    monkeypatch.setenv("PERSONALAB_BF16_TRAINING", "1")
    monkeypatch.setattr("personalab.models.cpu_has_bf16", lambda: True)
    bf16 = finetune(tiny, EXAMPLES, FAST, progress=False)
    assert bf16.path != fp32.path and not bf16.from_cache
    assert all(math.isfinite(x) for x in bf16.losses)
    assert abs(bf16.losses[0] - fp32.losses[0]) < 0.05 * fp32.losses[0]


def test_training_runs_eager_attention_and_gives_back_a_model_like_the_base(tiny, tmp_cache, monkeypatch):
    """LoRA steps run eager attention (its CPU backward is faster than flash attention's) with the
    same loss and gradients as sdpa; the fine-tuned model generates with sdpa again."""
    assert tiny._module.config._attn_implementation == "sdpa"
    seen = []

    def spy(net, *args, **kwargs):
        seen.append(net.base_model.model.config._attn_implementation)
        return training_loop(net, *args, **kwargs)

    monkeypatch.setattr("personalab.finetune.training_loop", spy)
    ft = finetune(tiny, EXAMPLES, FAST, progress=False)
    assert seen == ["eager"] and ft.model._module.config._attn_implementation == "sdpa"
    # like the base, so autocast keeps its bfloat16 weight copies across generation steps
    assert all(p.requires_grad for p in ft.model._module.parameters())
    assert all(p.requires_grad for p in load_checkpoint(tiny, ft.path).model._module.parameters())
    batch = encode(tiny.tokenizer, EXAMPLES[:4], max_len=64)
    grads = {}
    for impl in ("sdpa", "eager"):
        net = copy.deepcopy(tiny._module)
        net.set_attn_implementation(impl)
        loss = answer_loss(net, batch)
        loss.backward()
        grads[impl] = (loss.detach(), net.model.layers[0].self_attn.q_proj.weight.grad)
    torch.testing.assert_close(grads["eager"], grads["sdpa"], rtol=1e-4, atol=1e-5)


def test_incomplete_checkpoint_is_refused(tiny, tmp_cache):
    ft = finetune(tiny, EXAMPLES, FAST, progress=False)
    (ft.path / "COMPLETE").unlink()
    with pytest.raises(CheckpointError, match="incomplete .*COMPLETE"):
        load_checkpoint(tiny, ft.path)
    again = finetune(tiny, EXAMPLES, FAST, progress=False)  # an incomplete folder is retrained
    assert not again.from_cache and (again.path / "COMPLETE").exists()


def test_training_steering_add_matches_library_steer(tiny):
    """The training hook adds exactly what ``steer(..., positions="all")`` adds while generating."""
    vec, layer, coef = _vec(), 2, 0.5
    texts = [chat_prompt(tiny.tokenizer, "Tell me about cats.")]
    with steer(tiny, vec, layer, coef, positions="all"):
        want = generate_batch(tiny, texts, 6)
    plain = generate_batch(tiny, texts, 6)
    handle = TrainingSteering(vec, layer, coef).install(tiny._module)
    try:
        x = tiny.tokenizer(texts, return_tensors="pt")
        out = tiny._module.generate(**x, max_new_tokens=6, do_sample=False, pad_token_id=tiny.tokenizer.pad_token_id)
    finally:
        handle.remove()
    got = out[:, x["input_ids"].shape[1] :]
    assert torch.equal(got, want) and not torch.equal(want, plain)


def test_training_steering_ablate_removes_the_direction(tiny):
    vec, layer = _vec(), 2
    seen = {}
    handle = TrainingSteering(vec, layer, mode="ablate").install(tiny._module)
    probe = tiny._module.model.layers[layer - 1].register_forward_hook(lambda m, i, o: seen.update(h=o))
    try:
        tiny._module(**tiny.tokenizer(["The cat sat"], return_tensors="pt"))
    finally:
        probe.remove()
        handle.remove()
    h = seen["h"][0] if isinstance(seen["h"], tuple) else seen["h"]
    assert (h @ vec.unit(layer)).abs().max() < 1e-4


def test_preventative_bad_inputs(tiny, tmp_cache):
    other = PersonaVector(
        torch.randn(31, 576),
        dict(
            model_id="SmolLM2-135M-Instruct",
            n_layers=30,
            d_model=576,
            trait="x",
            method="test",
            residual_norm=[1.0] * 31,
        ),
    )
    with pytest.raises(VectorMismatchError):
        finetune(tiny, EXAMPLES, FAST, steering=TrainingSteering(other, 2, 0.5), progress=False)
    with pytest.raises(IndexError, match="out of range"):
        finetune(tiny, EXAMPLES, FAST, steering=TrainingSteering(_vec(), 9, 0.5), progress=False)
    with pytest.raises(ValueError, match="mode"):
        TrainingSteering(_vec(), 2, 0.5, mode="subtract")
    with pytest.raises(DatasetError, match="no training examples"):
        finetune(tiny, [Example("q", "a", "heldout")], FAST, progress=False)


def test_projection_difference_and_filter(tiny, tmp_cache):
    vec = _vec()
    same = projection_difference(tiny, EXAMPLES[:3], vec, 2, reference=[e.answer for e in EXAMPLES[:3]])
    assert torch.allclose(same, torch.zeros(3), atol=1e-5)
    diff = projection_difference(tiny, EXAMPLES[:3], vec, 2, reference=["No.", "Maybe later.", "Why?"])
    assert diff.shape == (3,) and diff.abs().sum() > 0
    kept = drop_top(EXAMPLES[:3], diff.tolist(), 1)
    assert len(kept) == 2 and EXAMPLES[int(diff.argmax())] not in kept
    with pytest.raises(ValueError, match="k must be"):
        drop_top(EXAMPLES[:3], diff.tolist(), 5)
    with pytest.raises(ValueError, match="reference answers"):
        projection_difference(tiny, EXAMPLES[:3], vec, 2, reference=["x"])


def test_projection_differences_match_one_at_a_time(tiny, tmp_cache):
    """Several probes from one pass equal each probe scored alone (the pass stops at the deepest layer)."""
    vec, other = _vec(), _vec(seed=1)
    reference = ["No.", "Maybe later.", "Why?"]
    both = projection_differences(tiny, EXAMPLES[:3], {"a": (vec, 2), "b": (other, 3)}, reference=reference)
    torch.testing.assert_close(
        both["a"], projection_difference(tiny, EXAMPLES[:3], vec, 2, reference=reference), atol=1e-5, rtol=1e-4
    )
    torch.testing.assert_close(
        both["b"], projection_difference(tiny, EXAMPLES[:3], other, 3, reference=reference), atol=1e-5, rtol=1e-4
    )
    with pytest.raises(ValueError, match="probe"):
        projection_differences(tiny, EXAMPLES[:3], {}, reference=reference)


class _ConstJudge:
    def score(self, trait, questions, answers):
        from personalab.judges import JudgeScore

        return [JudgeScore(50.0, 80.0) for _ in answers]


def test_measure_is_cached_and_steering_aware(tiny, tmp_cache, monkeypatch):
    from personalab import finetune as ft_mod
    from personalab.traits import Trait
    from tests.helpers import toy_trait_dict

    trait, vec = Trait.from_dict(toy_trait_dict()), _vec()
    first = ft_mod.measure(tiny, trait, vec, _ConstJudge(), 2, max_new_tokens=4, capability=False)
    assert first["trait"] == 50.0 and len(first["answers"]) == 2
    # the last prompt token read inside prompt + answer is the prompt's own last token; projections are of the means
    from personalab.monitoring import last_prompt_projection
    from personalab.prompting import chat_prompt as _cp
    from personalab.vectors import project

    prompts = [_cp(tiny.tokenizer, q) for q in trait.evaluation_questions]
    assert first["projection_prompt"] == pytest.approx(
        last_prompt_projection(tiny, prompts, vec, 2).mean().item(), abs=1e-4
    )
    assert first["projection_response"] == pytest.approx(
        project(torch.tensor(first["mean_activation_response"]), vec.at(2)).item(), abs=1e-4
    )
    monkeypatch.setattr(ft_mod, "_measure", lambda *a, **k: pytest.fail("should have come from the cache"))
    again = ft_mod.measure(tiny, trait, vec, _ConstJudge(), 2, max_new_tokens=4, capability=False)
    assert again["answers"] == first["answers"]
    with pytest.raises(pytest.fail.Exception), steer(tiny, vec, 2, 0.5):  # steering is part of the key
        ft_mod.measure(tiny, trait, vec, _ConstJudge(), 2, max_new_tokens=4, capability=False)


def test_filtering_null_ranks_a_planted_direction_above_random_ones():
    from personalab.datafilter import filtering_null

    gen = torch.Generator().manual_seed(0)
    direction = torch.randn(64, generator=gen)
    shifts = {f"ds{i}": 3.0 * i for i in range(6)}
    means = {ds: torch.randn(64, generator=gen) + shift * direction / direction.norm() for ds, shift in shifts.items()}
    out = filtering_null(means, shifts, direction, n_random=200, n_boot=100)
    assert out["value"] == pytest.approx(1.0) and out["percentile"] > 90
    assert out["ci_low"] <= out["value"] + 1e-9
    assert math.isnan(out["shuffled_p95"]) and math.isnan(out["shuffled_percentile"])  # none given
    # shuffled directions are a second null: the direction itself among them ties it; random ones do not reach it
    shuffled = torch.stack([direction, -direction, *torch.randn(8, 64, generator=gen)])
    out = filtering_null(means, shifts, direction, shuffled=shuffled, n_random=200, n_boot=100)
    from personalab.stats import null_summary, spearman

    y = list(shifts.values())
    rhos = [spearman([float(means[ds] @ u) for ds in shifts], y) for u in shuffled]
    want = null_summary(1.0, rhos)
    assert out["shuffled_p95"] == pytest.approx(want["null_p95"]) and out["shuffled_percentile"] == 90.0
    assert out["null_p95"] < 1.0  # the random-direction null is unchanged by the shuffled one
    with pytest.raises(ValueError, match="shuffled must be"):
        filtering_null(means, shifts, direction, shuffled=torch.zeros(3, 8))
    with pytest.raises(ValueError, match="at least 3 datasets"):
        filtering_null({"a": direction, "b": direction}, {"a": 1.0, "b": 2.0}, direction)


def test_activation_differences_project_to_projection_differences(tiny, tmp_cache):
    from personalab.datafilter import activation_differences
    from personalab.vectors import project

    vec, reference = _vec(), ["No.", "Maybe later.", "Why?"]
    diffs = activation_differences(tiny, EXAMPLES[:3], [2, 3], reference=reference)
    assert set(diffs) == {2, 3} and diffs[2].shape == (3, 64)
    torch.testing.assert_close(
        project(diffs[2], vec.at(2)),
        projection_difference(tiny, EXAMPLES[:3], vec, 2, reference=reference),
        atol=1e-5,
        rtol=1e-4,
    )


def test_answer_means_reads_each_question_and_answer_once_per_model_weights(tiny, monkeypatch):
    """Rows already read (same model weights) come back without a pass; new rows, deeper layers
    and weights changed in place are read again, and every result equals a fresh pass."""
    from personalab import datafilter

    passes = []
    real = datafilter.answer_activations

    def counting(model, prompts, answers, **kw):
        passes.append(len(prompts))
        return real(model, prompts, answers, **kw)

    monkeypatch.setattr(datafilter, "answer_activations", counting)
    answers = ["Yes.", "No way.", "Yes."]
    examples = [EXAMPLES[0], EXAMPLES[1], EXAMPLES[0]]  # rows 0 and 2: one question, one answer
    first = datafilter.answer_means(tiny, examples, answers, [2])
    assert passes == [2]  # two distinct rows
    again = datafilter.answer_means(tiny, examples[:2], answers[:2], [1, 2])  # layer 1 was read on the way to 2
    assert passes == [2] and torch.equal(again[2], first[2][:2])
    torch.testing.assert_close(first[2][2], first[2][0])
    datafilter.answer_means(tiny, examples, answers, [3])  # deeper: read again
    assert passes == [2, 2]
    weight = tiny._module.model.layers[0].mlp.down_proj.weight
    saved = weight.detach().clone()
    with torch.no_grad():
        weight.mul_(1.5)  # edited in place
    try:
        edited = datafilter.answer_means(tiny, examples[:1], answers[:1], [2])
        assert passes == [2, 2, 1] and not torch.allclose(edited[2][0], first[2][0])
    finally:
        with torch.no_grad():
            weight.copy_(saved)
    monkeypatch.setattr(datafilter, "answer_activations", real)
    datafilter._MEANS.clear()
    fresh = datafilter.answer_means(tiny, examples, answers, [2])
    torch.testing.assert_close(fresh[2], first[2])


def test_shift_null_credits_a_direction_that_carries_the_shift():
    from personalab.finetune import shift_null

    gen = torch.Generator().manual_seed(0)
    dirs = {"a": torch.randn(64, generator=gen), "b": torch.randn(64, generator=gen)}
    traits_, shifts, deltas = [], [], []
    for i in range(12):
        t = "ab"[i % 2]
        shift = float(i)
        traits_.append(t)
        shifts.append(shift)
        deltas.append(shift * dirs[t] / dirs[t].norm() + 0.5 * torch.randn(64, generator=gen))
    out = shift_null(deltas, shifts, traits_, dirs, n_random=100, n_boot=100)
    assert out["value"] > 0.9 and out["percentile"] == 100 and out["ci_low"] > out["null_p95"]
    assert math.isnan(out["shuffled_p95"])  # no shuffled directions given
    # draw k of the shuffled null uses row k of every trait; row 0 = the vectors themselves ties the value
    shuffled = {t: torch.stack([dirs[t], *torch.randn(4, 64, generator=gen)]) for t in "ab"}
    out2 = shift_null(deltas, shifts, traits_, dirs, shuffled=shuffled, n_random=100, n_boot=100)
    assert out2["null_p95"] == out["null_p95"] and out2["shuffled_percentile"] == 80.0  # 4 of 5 strictly below
    from personalab.stats import pearson_r

    rows = [
        pearson_r([float(d @ (shuffled[t][k] / shuffled[t][k].norm())) for d, t in zip(deltas, traits_)], shifts)
        for k in range(5)
    ]
    assert out2["shuffled_p95"] == pytest.approx(float(torch.quantile(torch.tensor(rows, dtype=torch.float64), 0.95)))
    with pytest.raises(ValueError, match="same S"):
        shift_null(deltas, shifts, traits_, dirs, shuffled={"a": shuffled["a"], "b": shuffled["b"][:3]})
    with pytest.raises(ValueError, match="no shuffled directions"):
        shift_null(deltas, shifts, traits_, dirs, shuffled={"a": shuffled["a"]})
    with pytest.raises(ValueError, match="pair up one to one"):
        shift_null(deltas[:3], shifts[:2], traits_[:3], dirs)
    with pytest.raises(ValueError, match="no direction given"):
        shift_null(deltas, shifts, traits_, {"a": dirs["a"]})


def test_training_and_loading_raise_no_deprecation_warnings(tiny, tmp_cache):
    """A learner sees no FutureWarning from peft/transformers when training or loading an adapter."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        finetune(tiny, EXAMPLES, FAST, progress=False)
        assert finetune(tiny, EXAMPLES, FAST, progress=False).from_cache


def test_shift_removed_ci_brackets_the_point_estimate_and_resamples_questions():
    from personalab.finetune import shift_removed, shift_removed_ci

    base = [10.0, 12.0, 8.0, 11.0, 9.0, 10.0]
    plain = [60.0, 40.0, 70.0, 55.0, 50.0, 65.0]
    prevent = [20.0, 15.0, 30.0, 12.0, 25.0, 18.0]
    point = shift_removed(sum(base) / 6, sum(plain) / 6, sum(prevent) / 6)
    lo, hi = shift_removed_ci(base, plain, prevent, n_boot=500)
    assert lo <= point <= hi and 0.5 < lo < hi < 1.0
    noisy = shift_removed_ci(base, [12.0, 9.0, 30.0, 10.0, 8.0, 11.0], prevent, n_boot=500)
    assert noisy[1] - noisy[0] > hi - lo  # plain fine-tuning barely moved: the share is ill-determined
    with pytest.raises(ValueError, match="pair up"):
        shift_removed_ci(base, plain[:5], prevent)


def test_removed_words_names_overshoot_and_backfire():
    from personalab.finetune import removed_words, shift_removed

    assert removed_words(shift_removed(10, 30, 15)) == "removed 75% of the shift"
    assert "below the base model's" in removed_words(shift_removed(10, 30, 5))
    assert "above the plain fine-tune's" in removed_words(shift_removed(10, 30, 40))
    assert "did not move" in removed_words(shift_removed(10, 10, 12))


def test_plot_shift_draws_each_points_interval_and_refuses_one_that_misses_it():
    from personalab.plotting_finetune import plot_shift

    points = [
        {"run": "a", "dx": 0.0, "d_trait": 1.0, "ci": (0.0, 3.0)},
        {"run": "b", "dx": 1.0, "d_trait": 5.0, "ci": (4.0, 5.5)},
        {"run": "c", "dx": 2.0, "d_trait": 9.0, "ci": (7.0, 9.0)},
    ]
    fig = plot_shift(points, "dx", ci="ci")
    bars = fig.axes[0].containers[0]  # the ErrorbarContainer
    segments = bars.lines[2][0].get_segments()
    assert [(s[0][1], s[1][1]) for s in segments] == [(0.0, 3.0), (4.0, 5.5), (7.0, 9.0)]
    assert not plot_shift(points, "dx").axes[0].containers  # no ci, no error bars
    with pytest.raises(ValueError, match="'b': interval \\[6.0, 7.0\\] does not contain its d_trait 5.0"):
        plot_shift([*points[:1], {**points[1], "ci": (6.0, 7.0)}], "dx", ci="ci")
