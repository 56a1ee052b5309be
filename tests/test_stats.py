import math

import pytest
import torch

from personalab.stats import cohens_d, pearson_r, ranks, spearman


def test_pearson_and_spearman():
    x = [1, 2, 3, 4, 5]
    assert pearson_r(x, [2, 4, 6, 8, 10]) == pytest.approx(1.0)
    assert spearman(x, [1, 4, 9, 16, 100]) == pytest.approx(1.0)
    assert spearman(x, [5, 4, 3, 2, 1]) == pytest.approx(-1.0)
    assert math.isnan(pearson_r(x, [1, 1, 1, 1, 1]))
    with pytest.raises(ValueError):
        pearson_r([1], [2])


def test_ranks_ties():
    assert ranks([10, 20, 20, 30]).tolist() == [1.0, 2.5, 2.5, 4.0]


def test_cohens_d():
    torch.manual_seed(0)
    a, b = torch.randn(2000) + 1.0, torch.randn(2000)
    assert cohens_d(a, b) == pytest.approx(1.0, abs=0.1)
    assert cohens_d([1, 2, float("nan"), 3], [0, 1, 2]) == pytest.approx(1.0)


def test_bootstrap_ci_covers_the_mean_and_keeps_units_together():
    from personalab.stats import bootstrap_ci

    gen = torch.Generator().manual_seed(0)
    x = (torch.randn(200, generator=gen) + 3.0).tolist()
    lo, hi = bootstrap_ci(lambda idx: sum(x[i] for i in idx) / len(idx), len(x), n_boot=500)
    assert lo < 3.0 < hi and hi - lo < 0.6  # about 4 standard errors (0.07 each) wide
    assert bootstrap_ci(lambda idx: float("nan"), 5, n_boot=20) != bootstrap_ci(lambda idx: 1.0, 5, n_boot=20)
    # defined only on resamples that draw every unit once: those few would give a zero-width interval
    lo, hi = bootstrap_ci(lambda idx: 1.0 if len(set(idx)) == 5 else float("nan"), 5, n_boot=200)
    assert math.isnan(lo) and math.isnan(hi)
    lo, hi = bootstrap_ci(lambda idx: float(len(set(idx))) if len(set(idx)) >= 3 else float("nan"), 5, n_boot=200)
    assert 3 <= lo <= hi <= 5
    with pytest.raises(ValueError, match="at least 2 units"):
        bootstrap_ci(lambda idx: 0.0, 1)


def test_null_summary_percentile_and_p95():
    from personalab.stats import null_summary

    s = null_summary(0.5, [i / 100 for i in range(100)], (0.4, 0.6))
    assert s["percentile"] == pytest.approx(50.0) and s["null_p95"] == pytest.approx(0.9405)
    assert (s["ci_low"], s["ci_high"]) == (0.4, 0.6)
    with pytest.raises(ValueError, match="finite null"):
        null_summary(0.5, [float("nan")])


def test_bootstrap_ci_rejects_a_bad_level():
    from personalab.stats import bootstrap_ci

    with pytest.raises(ValueError, match="level must be between 0 and 1"):
        bootstrap_ci(lambda idx: 0.0, 5, level=95)


def test_leave_one_out_names_the_point_that_carries_a_correlation():
    from personalab.stats import leave_one_out, pearson_r

    x, y = [0.0, 1.0, 0.0, 1.0, 10.0], [1.0, 0.0, 0.0, 1.0, 10.0]  # r comes from the last point alone
    loo = leave_one_out(pearson_r, x, y)
    assert len(loo) == 5 and min(range(5), key=loo.__getitem__) == 4 and loo[4] == pytest.approx(0.0)
    with pytest.raises(ValueError, match="equal length >= 3"):
        leave_one_out(pearson_r, [1.0, 2.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="equal length"):
        leave_one_out(pearson_r, [1.0, 2.0, 3.0], [1.0, 2.0])


def test_grouped_bootstrap_draws_a_groups_rows_together():
    from personalab.stats import bootstrap_ci, grouped_bootstrap_ci

    groups = ["a", "a", "b", "b", "c", "c"]
    seen = []
    lo, hi = grouped_bootstrap_ci(lambda rows: seen.append(sorted(rows)) or float(len(rows)), groups, n_boot=50)
    assert len(seen) == 50 and all(len(r) == 6 for r in seen)  # three groups of two rows per draw
    for rows in seen:  # a row never comes without its partner
        assert all(rows.count(i) == rows.count(i ^ 1) for i in rows)
    assert lo == hi == 6.0
    values = [1.0, 1.0, 5.0, 5.0, 9.0, 9.0]  # one value per group: the same interval as a plain bootstrap of groups
    grouped = grouped_bootstrap_ci(lambda rows: sum(values[i] for i in rows) / len(rows), groups, n_boot=200, seed=3)
    plain = bootstrap_ci(lambda d: sum([1.0, 5.0, 9.0][i] for i in d) / len(d), 3, n_boot=200, seed=3)
    assert grouped == pytest.approx(plain)


def test_shuffled_summary_is_null_summary_under_its_own_names():
    import math

    from personalab.stats import null_summary, shuffled_summary

    null = [0.1, 0.5, 0.9, -0.2, 0.3]
    want = null_summary(0.6, null)
    assert shuffled_summary(0.6, null) == {"shuffled_p95": want["null_p95"], "shuffled_percentile": want["percentile"]}
    for empty in (None, []):
        assert all(math.isnan(v) for v in shuffled_summary(0.6, empty).values())


def test_paired_d_summary_interval_null_and_missing_pairs():
    from personalab.stats import cohens_d, paired_d_summary

    torch.manual_seed(0)
    neg = torch.randn(20) * 10 + 30
    pos = neg + 15 + torch.randn(20) * 5  # a prompt that moves every answer
    out = paired_d_summary(pos, neg, n_boot=300, n_null=300)
    assert out["value"] == pytest.approx(cohens_d(pos, neg)) and out["n"] == 20
    assert out["ci_low"] < out["value"] < out["ci_high"] and out["ci_low"] > out["null_p95"]
    assert out["percentile"] == 100.0
    same = paired_d_summary(neg + torch.randn(20), neg, n_boot=300, n_null=300)  # a prompt that changes nothing
    assert same["ci_low"] < same["null_p95"] and 1 < same["percentile"] < 99
    pos[3] = float("nan")
    assert paired_d_summary(pos, neg, n_boot=50, n_null=50)["n"] == 19  # the pair with a NaN is left out
    with pytest.raises(ValueError, match="paired"):
        paired_d_summary(pos, neg[:5])
    with pytest.raises(ValueError, match="at least 2 complete pairs, got 1"):  # NaNs leave one pair
        paired_d_summary([1.0, float("nan"), 3.0], [0.5, 2.0, float("nan")])
