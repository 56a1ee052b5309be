import pytest
import torch

from personalab.vectors import PersonaVector, VectorMismatchError, choose_layer, layer_diagnostics


def _vec(n_layers=4, d=64, model_id="tiny-llama-4x64-seed0"):
    return PersonaVector(
        torch.randn(n_layers + 1, d),
        dict(
            model_id=model_id,
            n_layers=n_layers,
            d_model=d,
            trait="toy",
            method="mean_diff",
            residual_norm=[1.0] * (n_layers + 1),
        ),
    )


def test_save_load_roundtrip(tmp_path, tiny):
    v = _vec()
    v.save(tmp_path / "toy")
    w = PersonaVector.load(tmp_path / "toy", model=tiny)
    assert torch.equal(v.vectors, w.vectors) and w.meta == v.meta


def test_other_model_is_rejected(tiny):
    with pytest.raises(VectorMismatchError, match="30 layers x 576 dims"):
        _vec(30, 576, "SmolLM2-135M-Instruct").check_model(tiny)
    with pytest.raises(VectorMismatchError, match="directions do not transfer"):
        _vec(model_id="some-other-model").check_model(tiny)


def test_corrupt_and_truncated_files(tmp_path):
    v = _vec()
    v.save(tmp_path / "toy")
    st = tmp_path / "toy.safetensors"
    st.write_bytes(st.read_bytes()[:50])
    with pytest.raises(ValueError, match="corrupt or truncated"):
        PersonaVector.load(tmp_path / "toy")
    v.save(tmp_path / "toy")
    (tmp_path / "toy.json").write_text('{"model_id": ')
    with pytest.raises(ValueError, match="corrupt or truncated"):
        PersonaVector.load(tmp_path / "toy")


def test_nan_vector_refused():
    with pytest.raises(ValueError, match="NaN"):
        PersonaVector(torch.full((3, 4), float("nan")))


def test_layer_out_of_range():
    with pytest.raises(IndexError, match="layers run 0-4"):
        _vec().at(5)


def test_diagnostics_find_the_planted_layer():
    torch.manual_seed(0)
    n, L, d = 40, 8, 16
    pos, neg = torch.randn(n, L + 1, d), torch.randn(n, L + 1, d)
    pos[:, 5, 0] += 3.0  # the trait lives at layer 5
    diag = layer_diagnostics(pos, neg)
    assert choose_layer(diag) == 5
    assert diag["separation"][5] > 2 and torch.isnan(diag["neighbour_cos"][0])


def _paired(n: int, signal: float, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Paired activations [n, 3, 32]: h+ = shared + signal * planted direction + noise, h- = shared + noise."""
    gen = torch.Generator().manual_seed(seed)
    shared = torch.randn(n, 3, 32, generator=gen) * 3
    planted = torch.zeros(32)
    planted[0] = 1.0
    pos = shared + signal * planted + torch.randn(n, 3, 32, generator=gen)
    neg = shared + torch.randn(n, 3, 32, generator=gen)
    return pos, neg


def test_split_half_cosine_grows_with_signal_and_pairs():
    from personalab.vectors import split_half_cosine

    strong = split_half_cosine(*_paired(40, 8.0), 1, n_splits=50)
    noise = split_half_cosine(*_paired(40, 0.0), 1, n_splits=50)
    assert len(strong) == 50 and sum(strong) / 50 > 0.8 and abs(sum(noise) / 50) < 0.3
    few = split_half_cosine(*_paired(40, 4.0), 1, pairs_per_half=2, n_splits=50)
    many = split_half_cosine(*_paired(40, 4.0), 1, pairs_per_half=20, n_splits=50)
    assert sum(many) / 50 > sum(few) / 50
    with pytest.raises(ValueError, match="at least 4 pairs"):
        split_half_cosine(*_paired(3, 1.0), 1)
    with pytest.raises(ValueError, match="pairs_per_half"):
        split_half_cosine(*_paired(10, 1.0), 1, pairs_per_half=6)
    with pytest.raises(ValueError, match="paired activations"):
        split_half_cosine(torch.zeros(5, 3, 32), torch.zeros(6, 3, 32), 1)


def test_stability_curve_rises_with_pairs_per_half_and_matches_split_half_cosine():
    from personalab.vectors import split_half_cosine, stability_curve

    pos, neg = _paired(20, 3.0)
    curve = stability_curve(pos, neg, 1, n_splits=100)
    assert list(curve) == [str(m) for m in range(1, 11)]  # 1 .. n // 2, string keys (JSON-safe)
    assert curve["10"] > curve["1"] + 0.2  # more pairs per half, a steadier direction
    assert curve["4"] == pytest.approx(
        sum(c := split_half_cosine(pos, neg, 1, pairs_per_half=4, n_splits=100)) / len(c)
    )
    with pytest.raises(ValueError, match="at least 4 pairs"):
        stability_curve(*_paired(3, 1.0), 1)


def test_split_half_by_groups_keeps_copies_of_one_prompt_in_one_half():
    """Pure noise, each prompt answered twice with near-copies: split by pair, copies land in
    both halves and the halves agree far more than noise should; split by prompt they do not.
    Labels that never repeat change nothing."""
    from personalab.vectors import split_half_cosine, stability_curve

    gen = torch.Generator().manual_seed(0)
    pos, neg = torch.randn(20, 3, 64, generator=gen), torch.randn(20, 3, 64, generator=gen)
    P = torch.cat([pos, pos + 0.05 * torch.randn(pos.shape, generator=gen)])
    N = torch.cat([neg, neg + 0.05 * torch.randn(neg.shape, generator=gen)])
    prompts = [f"q{k % 20}" for k in range(40)]
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    by_pair = mean(split_half_cosine(P, N, 1, pairs_per_half=10))
    by_prompt = mean(split_half_cosine(P, N, 1, pairs_per_half=10, groups=prompts))
    alone = mean(split_half_cosine(pos, neg, 1, pairs_per_half=10))  # 10 independent pairs a half
    assert by_pair > alone + 0.15 and abs(by_prompt - alone) < 0.1, (by_pair, by_prompt, alone)
    assert list(stability_curve(P, N, 1, groups=prompts, n_splits=20)) == [str(m) for m in range(1, 11)]
    assert split_half_cosine(P, N, 1, groups=list(range(40)), n_splits=30) == split_half_cosine(P, N, 1, n_splits=30)
    with pytest.raises(ValueError, match="1..10 for 20 groups"):
        split_half_cosine(P, N, 1, pairs_per_half=11, groups=prompts)
    with pytest.raises(ValueError, match="one label per pair"):
        split_half_cosine(P, N, 1, groups=prompts[:-1])


def test_heldout_separation_beats_label_shuffled_vectors_only_with_a_signal():
    from personalab.vectors import heldout_separation

    real = heldout_separation(*_paired(24, 3.0), 1, n_splits=10, n_shuffles=50, n_boot=20)
    assert real["n_pairs"] == 24 and real["value"] > real["null_p95"] and real["percentile"] == 100
    assert real["ci_low"] <= real["value"] <= real["ci_high"]
    noise = heldout_separation(*_paired(24, 0.0), 1, n_splits=10, n_shuffles=50, n_boot=20)
    assert noise["value"] < noise["null_p95"]
    # a strong trait part shared by every pair: swapping half of the build pairs' labels cancels
    # it, so the null stays near 0 (with a coin flip per pair it survived: p95 0.77 x the value)
    strong = heldout_separation(*_paired(24, 8.0), 1, n_splits=10, n_shuffles=50, n_boot=20)
    assert strong["value"] > 1.5 and strong["null_p95"] < 0.25 * strong["value"]
    with pytest.raises(ValueError, match="n_shuffles"):
        heldout_separation(*_paired(24, 3.0), 1, n_shuffles=0)


def test_heldout_separation_by_groups_keeps_answers_to_one_prompt_on_one_side():
    """Pure noise, each prompt answered twice (near-identical answers, as a sampled round can
    give): split by pairs, copies of build pairs sit in the test half and the whole interval
    clears the label-shuffled null on 4 of 10 datasets; split by prompt (``groups``), on none
    (as for pure noise without copies). Labels that never repeat change nothing."""
    from personalab.vectors import heldout_separation

    kw = dict(n_splits=10, n_shuffles=50, n_boot=100)
    prompts = list(range(30)) * 2  # pair k and pair 30 + k answer the same prompt
    by_pair, by_prompt = [], []
    for seed in range(10):
        gen = torch.Generator().manual_seed(seed)
        pos, neg = torch.randn(30, 3, 16, generator=gen), torch.randn(30, 3, 16, generator=gen)
        P = torch.cat([pos, pos + 0.05 * torch.randn(pos.shape, generator=gen)])
        N = torch.cat([neg, neg + 0.05 * torch.randn(neg.shape, generator=gen)])
        leaky, grouped = heldout_separation(P, N, 1, **kw), heldout_separation(P, N, 1, groups=prompts, **kw)
        by_pair.append(leaky["ci_low"] > leaky["null_p95"])
        by_prompt.append(grouped["ci_low"] > grouped["null_p95"])
    assert sum(by_pair) >= 3 and sum(by_prompt) == 0, (by_pair, by_prompt)
    assert grouped["n_pairs"] == 60 and grouped["n_groups"] == 30 and "n_groups" not in leaky
    assert heldout_separation(P, N, 1, groups=list(range(60)), **kw) == leaky  # every pair its own prompt
    with pytest.raises(ValueError, match="one label per pair"):
        heldout_separation(P, N, 1, groups=prompts[:-1])


def test_heldout_separation_without_repeated_labels_is_the_plain_random_half_procedure():
    """Every pair its own group: exactly the procedure the docstring describes, written out
    here from its parts (random halves, ``half_swap_signs``, ``stats.bootstrap_ci``)."""
    from personalab.stats import bootstrap_ci, null_summary
    from personalab.vectors import _heldout_d, half_swap_signs, heldout_separation

    pos, neg = _paired(20, 1.0)
    P, N, n_splits = pos[:, 1].double(), neg[:, 1].double(), 6

    def mean_d(rows, shuffle=None):
        idx = torch.tensor(sorted(set(rows)))
        k, diff = len(idx), P[idx] - N[idx]
        if k < 8:
            return float("nan")
        swaps = None if shuffle is None else half_swap_signs(k // 2, n_splits, seed=2 + shuffle)
        split_gen, ds = torch.Generator().manual_seed(1), []
        for j in range(n_splits):
            perm = torch.randperm(k, generator=split_gen)
            build = diff[perm[: k // 2]] * (1 if swaps is None else swaps[j, :, None])
            ds.append(_heldout_d(build, P[idx[perm[k // 2 :]]], N[idx[perm[k // 2 :]]]))
        return sum(ds) / len(ds)

    every = list(range(20))
    expected = null_summary(mean_d(every), [mean_d(every, s) for s in range(7)], bootstrap_ci(mean_d, 20, n_boot=30))
    got = heldout_separation(pos, neg, 1, n_splits=n_splits, n_shuffles=7, n_boot=30)
    assert got == {**expected, "n_pairs": 20}
    assert (
        heldout_separation(pos, neg, 1, groups=[f"q{i}" for i in range(20)], n_splits=6, n_shuffles=7, n_boot=30) == got
    )


def test_heldout_separation_refuses_too_few_pairs():
    from personalab.vectors import MIN_HELDOUT_PAIRS, heldout_separation

    with pytest.raises(ValueError, match=f"at least {MIN_HELDOUT_PAIRS} pairs"):
        heldout_separation(*_paired(MIN_HELDOUT_PAIRS - 1, 3.0), 1)


def test_vector_arithmetic_combines_scales_and_compares_vectors_of_one_model():
    import pytest

    from personalab.vectors import PersonaVector, VectorMismatchError

    meta = dict(model_id="tiny-llama-4x64-seed0", n_layers=4, d_model=64, method="test", residual_norm=[2.0] * 5)
    torch.manual_seed(0)
    a = PersonaVector(torch.randn(5, 64), {**meta, "trait": "a"})
    b = PersonaVector(torch.randn(5, 64), {**meta, "trait": "b"})
    assert torch.equal((a + b).vectors, a.vectors + b.vectors) and (a + b).trait == "a+b"
    assert torch.equal((a - b).vectors, a.vectors - b.vectors)
    assert torch.equal((0.5 * a).vectors, 0.5 * a.vectors) and torch.equal((a * 2).vectors, 2 * a.vectors)
    assert torch.equal((-a).vectors, -a.vectors) and (-a).residual_norm(2) == 2.0
    assert a.cosine(a, 2) == pytest.approx(1.0) and a.cosine(-a, 2) == pytest.approx(-1.0)
    other = PersonaVector(torch.randn(5, 64), {**meta, "trait": "c", "model_id": "another-model"})
    with pytest.raises(VectorMismatchError, match="same model"):
        a + other  # noqa: B018
    with pytest.raises(TypeError, match="another PersonaVector"):
        a + 1  # noqa: B018
    with pytest.raises(ValueError, match="finite"):
        a * float("nan")  # noqa: B018


def test_beats_chance_reads_the_heldout_metadata():
    import torch

    from personalab.vectors import PersonaVector

    meta = dict(model_id="m", n_layers=2, d_model=4, trait="toy", method="test", n_kept=20, n_pairs=100)
    held = dict(layer=1, value=2.0, ci_low=1.5, ci_high=2.5, null_p95=1.0, percentile=100.0)
    vec = lambda **h: PersonaVector(torch.ones(3, 4), {**meta, "heldout": h or None})  # noqa: E731
    assert vec().beats_chance is None and "not measured" in vec().provenance()
    assert vec(**held).beats_chance is True and vec(**held).provenance().endswith(": beats chance")
    assert vec(**{**held, "ci_low": 0.5}).beats_chance is False
    nan = vec(**{**held, "ci_low": float("nan"), "ci_high": float("nan")})
    assert nan.beats_chance is None and "interval not estimable" in nan.provenance()


def _with_differences(vec, diffs):
    return PersonaVector(diffs.mean(0), vec.meta, diffs)


def test_shuffled_units_are_label_shuffled_means_of_the_pair_differences(tmp_path, tiny):
    base = _vec()
    gen = torch.Generator().manual_seed(0)
    u = torch.randn(5, 64, generator=gen)
    # 8 pairs that share a strong trait part u[2] plus noise: the vector points along it, and
    # swapping the labels of half the pairs cancels it, so shuffled directions are noise
    diffs = u.expand(8, 5, 64) + 0.04 * u.norm(dim=-1, keepdim=True) * torch.randn(8, 5, 64, generator=gen)
    strong = _with_differences(base, diffs)
    units = strong.shuffled_units(2, 50, seed=1)
    assert units.shape == (50, 64)
    torch.testing.assert_close(units.norm(dim=1), torch.ones(50))
    t = u[2] / u[2].norm()
    cos = (units @ t).abs()
    assert float(strong.unit(2) @ t) > 0.98 and float(cos.mean()) < 0.3 and float(cos.max()) < 0.6
    # each is the mean of the differences with exactly half of them negated
    d2 = diffs[:, 2].double()
    first = units[0].double()
    signs = torch.sign(torch.linalg.lstsq(d2.T, first[:, None]).solution[:, 0])
    assert int((signs < 0).sum()) == 4
    torch.testing.assert_close(first, (signs @ d2 / (signs @ d2).norm()), rtol=1e-4, atol=1e-4)
    noisy = _with_differences(base, torch.randn(9, 5, 64, generator=gen).half().float())
    assert torch.equal(noisy.shuffled_units(3, 10, seed=4), noisy.shuffled_units(3, 10, seed=4))
    assert not torch.equal(noisy.shuffled_units(3, 10, seed=4), noisy.shuffled_units(3, 10, seed=5))
    noisy.save(tmp_path / "noisy")  # stored in float16: a vector whose differences are float16 reloads the same nulls
    back = PersonaVector.load(tmp_path / "noisy", model=tiny)
    assert torch.equal(back.pair_differences, noisy.pair_differences)
    assert torch.equal(back.shuffled_units(3, 10, seed=4), noisy.shuffled_units(3, 10, seed=4))
    base.save(tmp_path / "plain")
    assert PersonaVector.load(tmp_path / "plain").pair_differences is None
    with pytest.raises(ValueError, match="no per-pair differences"):
        base.shuffled_units(2)
    with pytest.raises(ValueError, match="no per-pair differences"):
        (noisy * 2.0).shuffled_units(2)  # arithmetic makes a new direction with no pairs behind it
    with pytest.raises(ValueError, match="pair_differences must be"):
        PersonaVector(base.vectors, base.meta, torch.zeros(3, 4, 64))
    with pytest.raises(ValueError, match="at least 2 pairs"):
        _with_differences(base, diffs[:1]).shuffled_units(2)


def test_shuffled_like_pushes_along_the_shuffled_units_with_the_vectors_norms():
    from personalab.vectors import half_swap_signs

    base = _vec()
    diffs = torch.randn(9, 5, 64, generator=torch.Generator().manual_seed(3))
    vec = _with_differences(base, diffs)
    like = vec.shuffled_like(3, seed=2)
    assert [v.trait for v in like] == ["shuffled-0", "shuffled-1", "shuffled-2"]
    assert all(v.pair_differences is None and v.meta["model_id"] == vec.meta["model_id"] for v in like)
    for layer in range(1, 5):
        units = vec.shuffled_units(layer, 3, seed=2)
        for k, v in enumerate(like):
            torch.testing.assert_close(v.unit(layer), units[k], rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(v.at(layer).norm(), vec.at(layer).norm(), rtol=1e-5, atol=1e-5)
    signs = half_swap_signs(9, 4, seed=1)
    assert signs.shape == (4, 9) and bool(((signs == -1).sum(1) == 4).all()) and bool((signs.abs() == 1).all())
    assert torch.equal(signs, half_swap_signs(9, 4, seed=1))
    with pytest.raises(ValueError, match="no per-pair differences"):
        base.shuffled_like(1)
    with pytest.raises(ValueError, match="n must be"):
        vec.shuffled_like(0)
