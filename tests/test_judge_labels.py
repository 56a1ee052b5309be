"""Hand labels load and the agreement computation works on them."""

import dataclasses
import math

import pytest

from personalab import traits
from personalab.judges import judge_agreement, judge_sees, labelled_traits, load_labels


class _LengthJudge:
    """A stand-in judge: longer answer = more trait (enough to exercise the plumbing)."""

    def trait_scores(self, trait, answers):
        return [float(len(a)) for a in answers]


def test_every_builtin_trait_is_labelled():
    assert labelled_traits() == traits.list_traits()


def test_label_files_are_well_formed():
    for name in labelled_traits():
        rows = load_labels(name)
        assert len(rows) >= 30, f"{name}: only {len(rows)} labels"
        assert name in traits.list_traits()
        for r in rows:
            assert set(r) >= {"id", "question", "answer", "label"}
            assert isinstance(r["label"], int) and 0 <= r["label"] <= 100
        assert len({r["label"] for r in rows}) >= 3, f"{name}: labels barely vary"


def test_agreement_runs_on_every_labelled_trait():
    for name in labelled_traits():
        res = judge_agreement(_LengthJudge(), traits.load(name))
        assert res["n"] == len(load_labels(name)) and -1 <= res["spearman"] <= 1


class _LabelJudge:
    """A stand-in judge that reads the labels back (perfect agreement), or their negation."""

    def __init__(self, sign=1.0):
        self.sign = sign
        self.by_answer = {r["answer"]: r["label"] for name in labelled_traits() for r in load_labels(name)}

    def trait_scores(self, trait, answers):
        return [self.sign * self.by_answer[a] for a in answers]


def test_judge_sees_a_trait_only_where_it_agrees_with_the_labels():
    pirate = traits.load("pirate")
    assert judge_sees(_LabelJudge(), pirate)
    assert not judge_sees(_LabelJudge(-1.0), pirate)
    assert judge_sees(_LabelJudge(-1.0), pirate, min_spearman=-1.0)
    unlabelled = dataclasses.replace(pirate, name="no_labels_here")
    assert not judge_sees(_LabelJudge(), unlabelled)  # nothing vouches for the judge there
    with pytest.raises(TypeError):
        judge_sees(_LabelJudge(), pirate, min_spearman="high")


class _EmbeddingStub(_LabelJudge):
    """Embeds an answer as [its label, noise...] (or pure noise): a head trained on the labels
    can recover the first, and nothing can recover the second."""

    def __init__(self, informative=True, dims=8):
        super().__init__()
        self.informative, self.dims = informative, dims
        self.pos = set(traits.load("pirate").exemplars["pos"])  # exemplars: 1 for the trait, 0 for its absence

    def embed(self, texts):
        import zlib

        import numpy as np

        rows = []
        for t in texts:
            rng = np.random.default_rng(zlib.crc32(t.encode()))  # the same text, the same noise, every run
            noise = rng.normal(size=self.dims)
            signal = self.by_answer.get(t, 100.0 * (t in self.pos)) / 100 if self.informative else rng.normal()
            rows.append(np.concatenate([[signal], noise]))
        return np.array(rows).reshape(len(texts), self.dims + 1)


def test_label_trained_agreement_scores_every_label_out_of_fold():
    from personalab.judges import label_trained_agreement

    pirate = traits.load("pirate")
    good = label_trained_agreement(_EmbeddingStub(), pirate, folds=5, alpha=0.1)
    assert good["spearman"] > 0.9 and good["n"] == len(load_labels("pirate")) and good["folds"] == 5
    assert good["without_labels"] == pytest.approx(1.0)  # the stub's own trait_scores read the labels back
    noise = label_trained_agreement(_EmbeddingStub(informative=False), pirate, folds=5)
    assert abs(noise["spearman"]) < 0.5  # out-of-fold scores from pure noise do not track the labels
    no_exemplars = dataclasses.replace(pirate, exemplars={"pos": [], "neg": []})
    assert label_trained_agreement(_EmbeddingStub(), no_exemplars, alpha=0.1)["spearman"] > 0.9
    n_questions = len({r["question"] for r in load_labels("pirate")})
    for bad in (1, n_questions + 1):
        with pytest.raises(ValueError, match="folds"):
            label_trained_agreement(_EmbeddingStub(), pirate, folds=bad)
    with pytest.raises(TypeError, match="embed"):
        label_trained_agreement(_LabelJudge(), pirate)
    with pytest.raises(ValueError, match="alpha"):
        label_trained_agreement(_EmbeddingStub(), pirate, alpha=float("nan"))


def test_judge_agreement_interval_resamples_questions():
    pirate = traits.load("pirate")
    point = judge_agreement(_LengthJudge(), pirate)
    assert math.isnan(point["ci_low"]) and math.isnan(point["ci_high"])  # no interval unless asked
    res = judge_agreement(_LengthJudge(), pirate, n_boot=300)
    assert res["spearman"] == point["spearman"] and res["ci_low"] <= res["spearman"] <= res["ci_high"]
    assert res["ci_high"] - res["ci_low"] > 0.05  # 20 questions: a real interval, not a point
    perfect = judge_agreement(_LabelJudge(), pirate, n_boot=300)
    assert perfect["ci_low"] == pytest.approx(1.0) and perfect["ci_high"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="n_boot"):
        judge_agreement(_LengthJudge(), pirate, n_boot=-1)
