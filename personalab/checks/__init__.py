"""Check functions for the book's exercises.

Each ``check_...(fn)`` runs the learner's function on fixed inputs, compares it
with the library's reference implementation, prints a short "passed" line, and
raises ``AssertionError`` with a hint when the answer is wrong. The tests prove
every check accepts the reference and rejects at least one wrong answer.
"""

from personalab.checks._core import ExerciseFailed, assert_close
from personalab.checks.ch0 import check_add_vector, check_logit_lens, check_save_layer_output
from personalab.checks.ch1 import check_contrastive_prompts, check_logprob_weighted_score
from personalab.checks.ch2 import (
    check_choose_layer,
    check_mean_over_response,
    check_pair_filter,
    check_persona_vector,
)
from personalab.checks.ch3 import check_coherent_best, check_steering_intervention

__all__ = [
    "ExerciseFailed",
    "assert_close",
    "check_add_vector",
    "check_choose_layer",
    "check_coherent_best",
    "check_contrastive_prompts",
    "check_logit_lens",
    "check_logprob_weighted_score",
    "check_mean_over_response",
    "check_pair_filter",
    "check_persona_vector",
    "check_save_layer_output",
    "check_steering_intervention",
]
# chapter 4's checks live in personalab.checks.ch4 (imported from there by the chapter)
