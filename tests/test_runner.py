"""The chapter runner (scripts/execute_chapters.py) gives each chapter its thread count everywhere."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _runner():
    spec = importlib.util.spec_from_file_location("execute_chapters", ROOT / "scripts" / "execute_chapters.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_chapter_runs_with_its_threads_for_torch_and_for_blas(tmp_path, monkeypatch):
    runner = _runner()
    seen = {}

    def fake_popen(cmd, env, **kw):
        seen.update(env=env, cmd=cmd)
        return None

    monkeypatch.setattr(runner.subprocess, "Popen", fake_popen)
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "8")  # a value from outside would oversubscribe the cores
    runner.launch(Path("build/book/chapters/08_watched_or_not.ipynb"), 1, 60, tmp_path)
    env = seen["env"]
    assert env["PERSONALAB_THREADS"] == "1" and env["PERSONALAB_CHAPTER"] == "08_watched_or_not"
    assert all(env[name] == "1" for name in runner.BLAS_THREAD_VARIABLES)
    assert {"OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"} <= set(runner.BLAS_THREAD_VARIABLES)


def test_the_model_is_prepared_with_the_chapters_thread_settings(monkeypatch):
    runner = _runner()
    seen = {}
    monkeypatch.setattr(runner.subprocess, "run", lambda cmd, env, **kw: seen.update(env=env, cmd=cmd))
    monkeypatch.setenv("OMP_NUM_THREADS", "8")
    monkeypatch.delenv("PERSONALAB_CHAPTER", raising=False)
    assert runner.prepare_model(1) >= 0
    assert "load_model()" in seen["cmd"][-1] and seen["env"]["PERSONALAB_THREADS"] == "1"
    assert all(seen["env"][name] == "1" for name in runner.BLAS_THREAD_VARIABLES)
    assert "PERSONALAB_CHAPTER" not in seen["env"]
