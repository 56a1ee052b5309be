import os

import pytest
import torch

os.environ.setdefault("PERSONALAB_THREADS", "1")
# One thread per test process (set before torch is imported, inherited by the subprocesses some
# tests start): `make unit` runs two pytest-xdist workers on two cores, and the tiny model's
# ops are too small to gain from a second thread.
os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))  # in case a plugin imported torch first
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
# Exact comparisons with plain PyTorch need float32 scoring; test_capability checks the bf16 path.
os.environ.setdefault("PERSONALAB_BF16_SCORING", "0")
os.environ.setdefault("PERSONALAB_BF16_TRAINING", "0")
os.environ.setdefault("PERSONALAB_BF16_GENERATION", "0")
os.environ.setdefault("PERSONALAB_BF16_ACTIVATIONS", "0")
# The unit tests run the `ci` profile, as `make test` does (no sampled extraction rounds); a test
# of the `full` profile's behaviour sets it itself.
os.environ.setdefault("PERSONALAB_PROFILE", "ci")


_LOCAL = ("127.0.0.1", "localhost", "::1")


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Every unit test runs with outside connections refused: the package must not touch the
    network (the judge tests talk to a server on 127.0.0.1, which stays allowed)."""
    import socket

    real_connect = socket.socket.connect

    def guarded(sock, address):
        host = address[0] if isinstance(address, tuple) else address
        if host not in _LOCAL:
            raise RuntimeError(f"a unit test tried to reach {address!r}: personalab must work offline")
        return real_connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", guarded)


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
