"""Hand labels load and the agreement computation works on them."""

import dataclasses

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
