import math

import pytest
import torch

import personalab as pl
from personalab.models import check_layer
from personalab.prompting import chat_prompt, generate
from personalab.steering import steer
from personalab.vectors import PersonaVector, VectorMismatchError


def _vec(tiny, scale=3.0):
    torch.manual_seed(1)
    return PersonaVector(scale * torch.randn(5, 64), dict(model_id="tiny-llama-4x64-seed0", n_layers=4, d_model=64,
                                                          trait="toy", method="test", residual_norm=[2.0] * 5))


def _hook_generate(tiny, prompts, layer, delta, positions, n=5):
    """Reference steering with a plain forward hook on block ``layer`` during HF generate."""
    hf, tok = tiny._module, tiny.tokenizer
    state = {"step": 0}

    def hook(mod, inp, out):
        h = out.clone()
        if positions == "all" or (positions == "prompt" and state["step"] == 0):
            h += delta
        elif positions == "response":
            if state["step"] == 0:
                h[:, -1] += delta
            else:
                h += delta
        state["step"] += 1
        return h

    handle = hf.model.layers[layer - 1].register_forward_hook(hook)
    enc = tok(prompts, return_tensors="pt", padding=True)
    with torch.no_grad():
        ids = hf.generate(**enc, max_new_tokens=n, do_sample=False, pad_token_id=tok.pad_token_id)
    handle.remove()
    return tok.batch_decode(ids[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)


@pytest.mark.parametrize("positions", ["all", "prompt", "response"])
def test_steering_matches_forward_hook(tiny, tmp_cache, positions):
    vec = _vec(tiny)
    prompts = [chat_prompt(tiny.tokenizer, q) for q in ("Hello there?", "Why?")]
    with steer(tiny, vec, 2, 1.5, positions=positions, coef_mode="raw"):
        got = generate(tiny, prompts, max_new_tokens=5)
    want = _hook_generate(tiny, prompts, 2, 1.5 * vec.at(2), positions)
    assert got == want
    plain = generate(tiny, prompts, max_new_tokens=5)
    assert plain == _hook_generate(tiny, prompts, 2, torch.zeros(64), "all")


def test_norm_mode_scales_unit_vector(tiny):
    vec = _vec(tiny)
    s = steer(tiny, vec, [1, 3], -0.5)
    torch.testing.assert_close(s.delta(3), -0.5 * 2.0 * vec.unit(3))
    assert s.layers == (1, 3)


def test_bad_inputs(tiny):
    vec = _vec(tiny)
    with pytest.raises(IndexError, match="layers run 1-4"):
        steer(tiny, vec, 7, 1.0)
    with pytest.raises(ValueError, match="positions must be one of"):
        steer(tiny, vec, 2, 1.0, positions="responses")
    with pytest.raises(ValueError, match="finite number"):
        steer(tiny, vec, 2, math.nan)
    other = PersonaVector(torch.randn(31, 576), dict(model_id="SmolLM2-135M-Instruct", n_layers=30, d_model=576,
                                                     trait="toy", method="test"))
    with pytest.raises(VectorMismatchError):
        steer(tiny, other, 2, 1.0)
    assert check_layer(tiny, 2) == 2
    assert pl.tiny_model is not None
