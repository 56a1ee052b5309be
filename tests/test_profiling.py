"""The stage profiler: exclusive time per stage, written only when a chapter is named."""

import json
import time

import pytest

from personalab import profiling


@pytest.fixture()
def fresh(monkeypatch, tmp_path):
    monkeypatch.setattr(profiling, "_totals", profiling.defaultdict(float))
    monkeypatch.setattr(profiling, "_stack", [])
    monkeypatch.setenv("PERSONALAB_RESULTS", str(tmp_path))
    return tmp_path


def test_nested_stages_are_counted_once(fresh, monkeypatch):
    monkeypatch.delenv("PERSONALAB_CHAPTER", raising=False)
    with profiling.stage("generation"):
        time.sleep(0.05)
        with profiling.stage("judging"):
            time.sleep(0.1)
        time.sleep(0.05)
    t = profiling.totals()
    assert 0.09 <= t["generation"] < 0.15 and 0.09 <= t["judging"] < 0.15
    assert not list(fresh.iterdir()), "nothing is written without PERSONALAB_CHAPTER"


def test_writes_chapter_profile(fresh, monkeypatch):
    monkeypatch.setenv("PERSONALAB_CHAPTER", "03_steering")

    @profiling.staged("capability")
    def work():
        time.sleep(0.02)

    work()
    data = json.loads((fresh / "profile-03_steering.json").read_text())
    assert data["perf.chapter_profile.03_steering"]["capability"] >= 0.02


def test_unknown_stage_is_refused():
    with pytest.raises(ValueError, match="unknown profiling stage 'plots'"), profiling.stage("plots"):
        pass
