"""Checks for chapter 7 (Constitutional AI in miniature): the revision conversation."""

from __future__ import annotations

from personalab.cai import Principle, revision_messages
from personalab.checks._core import ExerciseFailed, call, passed

_P = Principle(
    name="hope", critique="Identify ways the last response is gloomy.", revision="Please rewrite it to be hopeful."
)


def _explain(got: list, want: list, label: str) -> None:
    if not isinstance(got, list) or not all(isinstance(m, dict) and set(m) == {"role", "content"} for m in got):
        raise ExerciseFailed(f"{label}: return a list of {{'role': ..., 'content': ...}} dicts, got {got!r:.120}")
    if got == want:
        return
    roles, want_roles = [m["role"] for m in got], [m["role"] for m in want]
    contents = [m["content"] for m in got]
    if roles != want_roles:
        raise ExerciseFailed(f"{label}: the turns' roles should be {want_roles}, got {roles}")
    if label.startswith("without") and _P.critique in contents:
        raise ExerciseFailed(f"{label}: with no critique, leave the critique request out too")
    if contents[-1] != _P.revision:
        raise ExerciseFailed(f"{label}: the last turn is the principle's revision request")
    raise ExerciseFailed(f"{label}: the contents differ: expected {[m['content'] for m in want]}, got {contents}")


def check_revision_messages(fn) -> None:
    """``fn(question, answer, principle, critique=None) -> list of messages`` (see ``cai.revision_messages``)."""
    q, a, c = "How was your day?", "Grey, like every day since the light went out.", "The answer is hopeless."
    _explain(call(fn, q, a, _P, c), revision_messages(q, a, _P, c), "with a critique")
    _explain(call(fn, q, a, _P, None), revision_messages(q, a, _P, None), "without a critique")
    passed("revision conversation")
