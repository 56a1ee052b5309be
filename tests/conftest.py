import os

import pytest

os.environ.setdefault("PERSONALAB_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
# Exact comparisons with plain PyTorch need float32 scoring; test_capability checks the bf16 path.
os.environ.setdefault("PERSONALAB_BF16_SCORING", "0")
os.environ.setdefault("PERSONALAB_BF16_TRAINING", "0")
os.environ.setdefault("PERSONALAB_BF16_GENERATION", "0")


@pytest.fixture(scope="session")
def tiny():
    """A 4-layer, 64-wide random Llama with the SmolLM2 tokenizer (builds in < 1 s)."""
    import personalab as pl

    return pl.tiny_model()


@pytest.fixture()
def tmp_cache(tmp_path, monkeypatch):
    """An empty personalab cache for tests that must not see the real one."""
    monkeypatch.setenv("PERSONALAB_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"
