"""Shared helpers for the exercise checks."""

from __future__ import annotations

import torch


class ExerciseFailed(AssertionError):
    """Raised by a check when the learner's answer differs from the reference."""


def assert_close(got, want, what: str, atol: float = 1e-4, rtol: float = 1e-4) -> None:
    """Compare tensors (or floats) with a message that says what differs and by how much."""
    if got is None:
        raise ExerciseFailed(f"{what}: your function returned None (did you forget `return`?)")
    got_t = torch.as_tensor(got, dtype=torch.float32)
    want_t = torch.as_tensor(want, dtype=torch.float32)
    if got_t.shape != want_t.shape:
        raise ExerciseFailed(f"{what}: expected shape {tuple(want_t.shape)}, got {tuple(got_t.shape)}")
    if not torch.allclose(got_t, want_t, atol=atol, rtol=rtol):
        diff = (got_t - want_t).abs().max().item()
        raise ExerciseFailed(f"{what}: values differ from the reference (max abs difference {diff:.4g})")


def passed(name: str) -> None:
    print(f"✔ {name}: passed")


def call(fn, *args, **kwargs):
    """Run the learner's function; an exception becomes an ExerciseFailed that names it."""
    try:
        return fn(*args, **kwargs)
    except ExerciseFailed:
        raise
    except Exception as err:  # noqa: BLE001 - whatever the learner's code raised is the feedback
        raise ExerciseFailed(f"your function raised {type(err).__name__}: {err}") from None
