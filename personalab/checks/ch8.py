"""Checks for chapter 8 (watched or not?): the context direction."""

from __future__ import annotations

import torch

from personalab.checks._core import ExerciseFailed, assert_close, call, passed


def check_context_direction(fn) -> None:
    """``fn(watched [n, L, d], unwatched [n, L, d]) -> [L, d]``: mean watched minus mean unwatched."""
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(6, 3, 8, generator=gen) + 0.5
    u = torch.randn(6, 3, 8, generator=gen)
    got = call(fn, w.clone(), u.clone())
    want = (w - u).mean(0)
    if got is not None and torch.as_tensor(got).shape == want.shape:
        got_t = torch.as_tensor(got, dtype=torch.float32)
        if torch.allclose(got_t, -want, atol=1e-5):
            raise ExerciseFailed(
                "sign flipped: the direction points from unwatched to watched (watched minus unwatched)"
            )
        if torch.allclose(got_t, (w - u).sum(0), atol=1e-4):
            raise ExerciseFailed("that is the sum over requests: take the mean, so the size does not grow with n")
    elif got is not None and torch.as_tensor(got).shape == (6, 3, 8):
        raise ExerciseFailed("average over the requests (dimension 0): one direction per layer, [L, d]")
    assert_close(got, want, "context direction [layers, d]")
    passed("context direction")
