"""Chapter 0 checks accept the reference solutions and reject wrong answers."""

import pytest
import torch

from personalab.checks import ExerciseFailed, check_add_vector, check_logit_lens, check_save_layer_output

# --- reference solutions (as in the chapter) ----------------------------------------------


def block_output(model, prompt, k):
    with model.trace(prompt):
        out = model.model.layers[k].output.save()
    return out


def logits_with_vector(model, prompt, k, vector):
    with model.trace(prompt):
        model.model.layers[k].output[:] += vector
        logits = model.lm_head.output[0, -1].save()
    return logits


def lens(model, hidden):
    return model.lm_head(model.model.norm(hidden))


# --- tests ---------------------------------------------------------------------------------


def test_save_layer_output_check():
    check_save_layer_output(block_output)
    check_save_layer_output(lambda m, p, k: block_output(m, p, k)[0])  # [seq, d] is accepted too

    def off_by_one(model, prompt, k):
        return block_output(model, prompt, k + 1)

    def embeddings(model, prompt, k):
        with model.trace(prompt):
            out = model.model.embed_tokens.output.save()
        return out

    def unsaved(model, prompt, k):
        with model.trace(prompt):
            out = model.model.layers[k].output  # noqa: F841 (forgot .save())
        return out  # noqa: F821

    with pytest.raises(ExerciseFailed, match="off-by-one"):
        check_save_layer_output(off_by_one)
    with pytest.raises(ExerciseFailed):
        check_save_layer_output(embeddings)
    with pytest.raises(ExerciseFailed, match="save"):
        check_save_layer_output(unsaved)
    with pytest.raises(ExerciseFailed, match="None"):
        check_save_layer_output(lambda m, p, k: None)

    def from_hidden_states(model, prompt, k):  # right for every block but the last (normed there)
        hf = model._module
        with torch.no_grad():
            out = hf(**model.tokenizer(prompt, return_tensors="pt"), output_hidden_states=True)
        return out.hidden_states[k + 1]

    with pytest.raises(ExerciseFailed, match="final norm"):
        check_save_layer_output(from_hidden_states)


def test_add_vector_check():
    check_add_vector(logits_with_vector)

    def not_added(model, prompt, k, vector):
        with model.trace(prompt):
            logits = model.lm_head.output[0, -1].save()
        return logits

    def last_position_only(model, prompt, k, vector):
        with model.trace(prompt):
            model.model.layers[k].output[:, -1] += vector
            logits = model.lm_head.output[0, -1].save()
        return logits

    def wrong_block(model, prompt, k, vector):
        return logits_with_vector(model, prompt, k - 1, vector)

    with pytest.raises(ExerciseFailed, match="not added"):
        check_add_vector(not_added)
    for wrong in (last_position_only, wrong_block):
        with pytest.raises(ExerciseFailed):
            check_add_vector(wrong)


def test_logit_lens_check():
    check_logit_lens(lens)
    with pytest.raises(ExerciseFailed, match="final norm"):
        check_logit_lens(lambda model, hidden: model.lm_head(hidden))
    with pytest.raises(ExerciseFailed):
        check_logit_lens(lambda model, hidden: torch.softmax(lens(model, hidden), -1))

    def rms_without_gain(model, hidden):  # passes on a norm whose gain is all ones
        eps = model.model.norm.variance_epsilon
        return model.lm_head(hidden * torch.rsqrt(hidden.pow(2).mean(-1, keepdim=True) + eps))

    with pytest.raises(ExerciseFailed, match="gain"):
        check_logit_lens(rms_without_gain)
