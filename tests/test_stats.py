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
