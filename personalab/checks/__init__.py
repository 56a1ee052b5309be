"""Check functions for the book's exercises.

Each ``check_...(fn)`` runs the learner's function on fixed inputs, compares it
with the library's reference implementation, prints a short "passed" line, and
raises ``AssertionError`` with a hint when the answer is wrong. The tests prove
every check accepts the reference and rejects at least one wrong answer.
"""

from personalab.checks._core import ExerciseFailed, assert_close

__all__ = ["ExerciseFailed", "assert_close"]
