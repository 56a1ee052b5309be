"""Where a chapter's time goes: wall seconds per stage of the method.

Library functions that do the heavy work wrap themselves in ``stage(name)``
(generation, judging, capability checks, activation passes, LoRA steps, model
loading). Time is *exclusive*: a stage nested inside another (the judge's log-prob
pass inside a sweep) is counted once, under the inner stage.

Nothing is written unless ``$PERSONALAB_CHAPTER`` names the chapter being executed
(the book's runner sets it); then the totals go to
``build/results/profile-<chapter>.json`` as ``perf.chapter_profile.<chapter>.<stage>``
after every stage, so a kernel that dies still leaves what it measured.
``make bench`` merges those files into ``benchmarks/results.json``.
"""

from __future__ import annotations

import functools
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import ParamSpec, TypeVar

from personalab.config import settings

STAGES = ("model_load", "generation", "judging", "capability", "activations", "lora_training")

_totals: dict[str, float] = defaultdict(float)
_stack: list[list] = []  # [stage name, start time of its current slice]

P = ParamSpec("P")
R = TypeVar("R")


@contextmanager
def stage(name: str) -> Iterator[None]:
    """Count the wall time of the ``with`` body under ``name`` (exclusive of nested stages)."""
    if name not in STAGES:
        raise ValueError(f"unknown profiling stage {name!r}; known stages: {', '.join(STAGES)}")
    now = time.perf_counter()
    if _stack:  # pause the enclosing stage
        parent = _stack[-1]
        _totals[parent[0]] += now - parent[1]
    _stack.append([name, now])
    try:
        yield
    finally:
        now = time.perf_counter()
        inner, start = _stack.pop()
        _totals[inner] += now - start
        if _stack:  # resume the enclosing stage
            _stack[-1][1] = now
        else:
            _flush()


def staged(name: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorator form of ``stage``."""

    def wrap(fn: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(fn)
        def inner(*args: P.args, **kwargs: P.kwargs) -> R:
            with stage(name):
                return fn(*args, **kwargs)

        return inner

    return wrap


def totals() -> dict[str, float]:
    """Seconds per stage so far in this process."""
    return {k: round(v, 2) for k, v in _totals.items()}


def _flush() -> None:
    chapter = settings().chapter
    if not chapter:
        return
    from personalab.results import record

    record(f"perf.chapter_profile.{chapter}", totals(), source=f"profile-{chapter}")
