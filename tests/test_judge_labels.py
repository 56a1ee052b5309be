"""Hand labels load and the agreement computation works on them."""

from personalab import traits
from personalab.judges import judge_agreement, labelled_traits, load_labels


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
