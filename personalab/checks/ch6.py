"""Checks for chapter 6 (data filtering): the projection difference."""

from __future__ import annotations

import torch

from personalab.checks._core import ExerciseFailed, assert_close, passed
from personalab.vectors import project


def check_projection_difference(fn) -> None:
    """``fn(data_acts [n, d], base_acts [n, d], direction [d]) -> [n]``."""
    torch.manual_seed(0)
    direction = 4.0 * torch.randn(16)
    data, base = torch.randn(6, 16) + 0.3, torch.randn(6, 16)
    got = fn(data.clone(), base.clone(), direction.clone())
    want = project(data, direction) - project(base, direction)
    if got is not None and torch.as_tensor(got).shape == want.shape:
        got_t = torch.as_tensor(got, dtype=torch.float32)
        if torch.allclose(got_t, -want, atol=1e-4):
            raise ExerciseFailed("sign flipped: the difference is data minus the base model's own answers")
        if torch.allclose(got_t, (data - base) @ direction, atol=1e-4):
            raise ExerciseFailed("use the unit direction: divide the persona vector by its norm")
    assert_close(got, want, "projection difference per sample")
    passed("projection difference")
