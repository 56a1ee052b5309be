"""Every nnsight idiom chapter 0 teaches, checked against plain PyTorch forward hooks.

All tests run on the tiny random Llama (``personalab.tiny_model``): the reference for each
idiom is the same computation done with ``register_forward_hook`` on the underlying Hugging
Face model (``model._module``), so a change in nnsight's semantics shows up here first.
"""

import matplotlib
import pytest
import torch
from nnsight.intervention.interleaver import OutOfOrderError

from personalab import lens, plotting
from personalab.activations import residual_stream

PROMPT = "The cat sat on the mat"
BATCH = ["Hello", "Persona vectors live in the residual stream of a chat model."]
ATOL = 1e-5


def _out(o):
    return o if torch.is_tensor(o) else o[0]


def hook_outputs(model, texts, modules, edit=None):
    """Run the HF model on ``texts`` (a left-padded batch) and record ``modules``' outputs.

    ``edit`` maps a module to a function applied to its output (a forward hook that edits).
    Returns (recorded outputs in forward order, logits, attention mask).
    """
    hf = model._module
    enc = model.tokenizer(texts, return_tensors="pt", padding=True)
    seen = []
    handles = [m.register_forward_hook(lambda mod, i, o: seen.append(_out(o).detach().clone())) for m in modules]
    for mod, fn in (edit or {}).items():
        handles.append(
            mod.register_forward_hook(lambda m, i, o, fn=fn: fn(o) if torch.is_tensor(o) else (fn(o[0]), *o[1:]))
        )
    try:
        with torch.no_grad():
            logits = hf(**enc).logits
    finally:
        for h in handles:
            h.remove()
    return seen, logits, enc["attention_mask"]


# --- reading activations -------------------------------------------------------------------


def test_save_block_output_single_prompt(tiny):
    with tiny.trace(PROMPT):
        out = tiny.model.layers[1].output.save()
    (ref,), _, _ = hook_outputs(tiny, PROMPT, [tiny._module.model.layers[1]])
    assert torch.is_tensor(out) and out.shape == ref.shape == (1, len(tiny.tokenizer(PROMPT)["input_ids"]), 64)
    torch.testing.assert_close(out, ref, atol=ATOL, rtol=0)


def test_save_embeddings_output(tiny):
    with tiny.trace(PROMPT):
        emb = tiny.model.embed_tokens.output.save()
    (ref,), _, _ = hook_outputs(tiny, PROMPT, [tiny._module.model.embed_tokens])
    torch.testing.assert_close(emb, ref, atol=0, rtol=0)


def test_padded_batch_via_trace_list(tiny):
    with tiny.trace(BATCH):
        out = tiny.model.layers[2].output.save()
    (ref,), _, mask = hook_outputs(tiny, BATCH, [tiny._module.model.layers[2]])
    torch.testing.assert_close(out, ref, atol=ATOL, rtol=0)  # same padded batch: same numbers
    assert mask[0, 0] == 0 and mask[0, -1] == 1  # left padding: the short prompt's pads come first
    for i, text in enumerate(BATCH):  # non-pad tokens agree with an unbatched run, up to float noise
        (alone,), _, _ = hook_outputs(tiny, text, [tiny._module.model.layers[2]])
        n = alone.shape[1]
        torch.testing.assert_close(out[i, -n:], alone[0], atol=1e-4, rtol=1e-4)


def test_padded_batch_via_invokers(tiny):
    saved = []  # created outside the trace: a list created inside would not exist after it
    with tiny.trace() as tracer:
        for text in BATCH:
            with tracer.invoke(text):
                saved.append(tiny.model.layers[2].output.save())
    (ref,), _, _ = hook_outputs(tiny, BATCH, [tiny._module.model.layers[2]])
    assert [s.shape[0] for s in saved] == [1, 1]
    for i, s in enumerate(saved):  # each invoke sees its own row of the padded batch
        torch.testing.assert_close(s[0], ref[i], atol=ATOL, rtol=0)


def test_unsaved_values_do_not_leave_the_block(tiny):
    def forgot_save():
        with tiny.trace(PROMPT):
            out = tiny.model.layers[0].output  # noqa: F841
        return out  # noqa: F821

    with pytest.raises(UnboundLocalError):
        forgot_save()


def test_out_of_order_access_raises(tiny):
    with pytest.raises(OutOfOrderError, match="already ran past"):
        with tiny.trace(PROMPT):
            tiny.model.layers[2].output.save()
            tiny.model.layers[1].output.save()


def test_stop_ends_the_forward_early(tiny):
    calls = []
    handle = tiny._module.model.layers[-1].register_forward_hook(lambda *a: calls.append(1))
    try:
        with tiny.trace(PROMPT) as tracer:
            out = tiny.model.layers[0].output.save()
            tracer.stop()
    finally:
        handle.remove()
    assert calls == []  # the last block never ran
    (ref,), _, _ = hook_outputs(tiny, PROMPT, [tiny._module.model.layers[0]])
    torch.testing.assert_close(out, ref, atol=ATOL, rtol=0)


def test_residual_stream_vs_output_hidden_states(tiny):
    hs = residual_stream(tiny, BATCH)  # [batch, L+1, seq, d]
    enc = tiny.tokenizer(BATCH, return_tensors="pt", padding=True)
    with torch.no_grad():
        hf_states = tiny._module(**enc, output_hidden_states=True).hidden_states
    assert hs.shape[1] == len(hf_states) == 5
    for i in range(4):  # embeddings and blocks 1..3: identical conventions
        torch.testing.assert_close(hs[:, i], hf_states[i], atol=ATOL, rtol=0)
    blocks, _, _ = hook_outputs(tiny, BATCH, list(tiny._module.model.layers))
    torch.testing.assert_close(hs[:, -1], blocks[-1], atol=ATOL, rtol=0)  # ours: before the final norm
    assert not torch.allclose(hs[:, -1], hf_states[-1], atol=1e-3)  # HF's: after it
    with torch.no_grad():
        torch.testing.assert_close(tiny._module.model.norm(hs[:, -1]), hf_states[-1], atol=ATOL, rtol=0)


# --- editing activations ------------------------------------------------------------------


def test_in_place_edit_changes_saved_reference_and_clone_fixes_it(tiny):
    with tiny.trace(PROMPT):
        clean = tiny.model.layers[1].output.clone().save()
    with tiny.trace(PROMPT):
        ref = tiny.model.layers[1].output.save()
        tiny.model.layers[1].output[:] += 1.0
    torch.testing.assert_close(ref, clean + 1.0)  # the saved tensor saw the later edit
    with tiny.trace(PROMPT):
        copy = tiny.model.layers[1].output.clone().save()
        tiny.model.layers[1].output[:] += 1.0
    torch.testing.assert_close(copy, clean, atol=0, rtol=0)


def test_adding_a_vector_matches_a_hook(tiny):
    torch.manual_seed(0)
    v = 2.0 * torch.randn(64)
    with tiny.trace(PROMPT):
        tiny.model.layers[1].output[:] += v
        logits = tiny.lm_head.output.save()
    block = tiny._module.model.layers[1]
    _, ref, _ = hook_outputs(tiny, PROMPT, [], edit={block: lambda o: o + v})
    _, clean, _ = hook_outputs(tiny, PROMPT, [])
    torch.testing.assert_close(logits, ref, atol=1e-4, rtol=0)
    assert (logits - clean).abs().max() > 1e-2  # the edit really changed the output


def test_skipping_blocks_with_their_saved_output_matches_a_hook(tiny):
    """``.skip(h)`` (used by the capability check under steering): the blocks below a steered
    layer do not run, their saved output stands in, and the steered logits are the hook's."""
    torch.manual_seed(1)
    v = 2.0 * torch.randn(64)
    with tiny.trace(PROMPT) as tracer:
        h = tiny.model.layers[1].output.save()
        tracer.stop()
    ran = []
    handle = tiny._module.model.layers[0].mlp.register_forward_hook(lambda *a: ran.append(1))
    try:
        with tiny.trace(PROMPT):
            tiny.model.layers[0].skip(h)
            tiny.model.layers[1].skip(h.clone())  # a clone: the edit below is in place
            tiny.model.layers[1].output[:] += v
            logits = tiny.lm_head.output.save()
    finally:
        handle.remove()
    assert ran == []  # block 0 never ran
    block = tiny._module.model.layers[1]
    _, ref, _ = hook_outputs(tiny, PROMPT, [], edit={block: lambda o: o + v})
    torch.testing.assert_close(logits, ref, atol=1e-4, rtol=0)


# --- generation ----------------------------------------------------------------------------


def _hf_generate(model, texts, n, edit=None):
    hf, tok = model._module, model.tokenizer
    enc = tok(texts, return_tensors="pt", padding=True)
    handles = [
        mod.register_forward_hook(lambda m, i, o, fn=fn: fn(o) if torch.is_tensor(o) else (fn(o[0]), *o[1:]))
        for mod, fn in (edit or {}).items()
    ]
    try:
        with torch.no_grad():
            return hf.generate(**enc, max_new_tokens=n, do_sample=False, pad_token_id=tok.pad_token_id)
    finally:
        for h in handles:
            h.remove()


def test_tracer_result_equals_hf_generate(tiny):
    with tiny.generate(BATCH, max_new_tokens=6, do_sample=False, pad_token_id=tiny.tokenizer.pad_token_id) as tracer:
        ids = tracer.result.save()
    torch.testing.assert_close(ids, _hf_generate(tiny, BATCH, 6), atol=0, rtol=0)


@pytest.mark.filterwarnings("ignore:.*was never reached")
def test_steering_every_generated_token_matches_a_hook(tiny):
    torch.manual_seed(1)
    v = 3.0 * torch.randn(64)
    steps = []
    with tiny.generate(max_new_tokens=6, do_sample=False, pad_token_id=tiny.tokenizer.pad_token_id) as tracer:
        with tracer.invoke(BATCH):
            for step in tracer.iter[:]:
                tiny.model.layers[1].output[:] += v
                steps.append(step)
        with tracer.invoke():  # after an open-ended iter loop: a separate, empty invoke
            ids = tracer.result.save()
    block = tiny._module.model.layers[1]
    ref = _hf_generate(tiny, BATCH, 6, edit={block: lambda o: o + v})
    torch.testing.assert_close(ids, ref, atol=0, rtol=0)
    assert not torch.equal(ref, _hf_generate(tiny, BATCH, 6))  # steering changed the tokens
    assert steps == list(range(6))  # one step per forward pass: the prompt, then each new token


@pytest.mark.filterwarnings("ignore:.*was never reached")
def test_code_after_open_ended_iter_in_same_invoke_does_not_run(tiny):
    ran = []
    with tiny.generate(max_new_tokens=3, do_sample=False, pad_token_id=tiny.tokenizer.pad_token_id) as tracer:
        with tracer.invoke(PROMPT):
            for _ in tracer.iter[:]:
                tiny.model.layers[0].output[:] += 0.0
            ran.append("after the loop")
    assert ran == []


# --- the logit lens ------------------------------------------------------------------------


def test_logit_lens_last_layer_is_the_models_own_prediction(tiny):
    result = lens.logit_lens(tiny, PROMPT)
    n = len(tiny.tokenizer(PROMPT)["input_ids"])
    assert result.probs.shape == result.top_probs.shape == (5, n)
    assert len(result.top_tokens) == 5 and len(result.input_tokens) == len(result.final_tokens) == n
    _, logits, _ = hook_outputs(tiny, PROMPT, [])
    probs = logits[0].softmax(-1)  # [seq, vocab]
    torch.testing.assert_close(result.probs[-1], probs.max(-1).values, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(result.top_probs[-1], result.probs[-1], atol=0, rtol=0)
    want = [tiny.tokenizer.decode([i]) for i in probs.argmax(-1).tolist()]
    assert result.final_tokens == result.top_tokens[-1] == want
    with torch.no_grad():
        torch.testing.assert_close(
            lens.lens_logits(tiny, residual_stream(tiny, PROMPT)[0, -1]), logits[0], atol=1e-4, rtol=0
        )


def test_residual_norms_match_hooks(tiny):
    mods = [tiny._module.model.embed_tokens, *tiny._module.model.layers]
    outs, _, _ = hook_outputs(tiny, PROMPT, mods)
    want = torch.stack([o[0].norm(dim=-1).mean() for o in outs])
    torch.testing.assert_close(lens.residual_norms(tiny, PROMPT), want, atol=1e-4, rtol=1e-5)
    skip = torch.stack([o[0, 1:].norm(dim=-1).mean() for o in outs])
    torch.testing.assert_close(lens.residual_norms(tiny, PROMPT, skip_first=True), skip, atol=1e-4, rtol=1e-5)


def test_lens_plots_return_figures(tiny):
    fig = plotting.plot_residual_norms(lens.residual_norms(tiny, PROMPT), label="all", log=True)
    plotting.plot_residual_norms(lens.residual_norms(tiny, PROMPT, skip_first=True), ax=fig.axes[0], label="skip")
    assert isinstance(fig, matplotlib.figure.Figure) and len(fig.axes[0].lines) == 2
    fig2 = plotting.plot_logit_lens(lens.logit_lens(tiny, "Hi $x$\nthere"), layers=[0, 2, 4])
    assert isinstance(fig2, matplotlib.figure.Figure)
    fig2.canvas.draw()  # labels with '$' and newlines must render
    matplotlib.pyplot.close("all")


@pytest.mark.filterwarnings("ignore:.*was never reached")
def test_reading_the_prefill_during_generation_matches_hooks(tiny, tmp_cache, monkeypatch):
    """generate_reading_last_token: the answers are generate()'s, and the activations are those
    a plain forward hook sees at every layer's last prompt position, with steering active too."""
    from personalab.prompting import chat_prompt, generate, generate_reading_last_token
    from personalab.steering import steer
    from personalab.vectors import PersonaVector

    monkeypatch.setenv("PERSONALAB_BF16_GENERATION", "0")  # exact comparison in float32
    texts = [
        chat_prompt(tiny.tokenizer, q, s)
        for q in ("Hi?", "Why is the sky blue today?")
        for s in ("Be a pirate.", "You are a helpful and patient assistant.")
    ]
    hf = tiny._module
    modules = [hf.model.embed_tokens, *hf.model.layers]
    answers, acts = generate_reading_last_token(tiny, texts, max_new_tokens=5)
    seen, _, _ = hook_outputs(tiny, texts, modules)
    torch.testing.assert_close(acts, torch.stack([h[:, -1] for h in seen], dim=1), atol=ATOL, rtol=0)
    assert answers == generate(tiny, texts, max_new_tokens=5, cache=False)
    again = generate_reading_last_token(tiny, texts, max_new_tokens=5)  # served from the cache
    assert again[0] == answers and torch.equal(again[1], acts)
    for entry in (tmp_cache / "generations_with_last_token").glob("*.safetensors"):
        entry.write_bytes(b"truncated")  # an unreadable entry is rebuilt, not returned
    assert torch.equal(generate_reading_last_token(tiny, texts, max_new_tokens=5)[1], acts)

    torch.manual_seed(2)
    vec = PersonaVector(
        torch.randn(5, 64),
        dict(
            model_id="tiny-llama-4x64-seed0",
            n_layers=4,
            d_model=64,
            trait="toy",
            method="test",
            residual_norm=[2.0] * 5,
        ),
    )
    with steer(tiny, vec, 2, 3.0) as s:
        steered_answers, steered = generate_reading_last_token(tiny, texts, max_new_tokens=5)
        delta = s.deltas[2]
    edit = hf.model.layers[1].register_forward_hook(
        lambda m, i, o: o + delta if torch.is_tensor(o) else (o[0] + delta, *o[1:])
    )
    try:  # the edit is registered first, so the recorded output of block 2 is the steered one
        seen, _, _ = hook_outputs(tiny, texts, modules)
    finally:
        edit.remove()
    torch.testing.assert_close(steered, torch.stack([h[:, -1] for h in seen], dim=1), atol=ATOL, rtol=0)
    assert not torch.allclose(steered[:, 3], acts[:, 3])  # layers after the steered one moved
    assert torch.equal(generate_reading_last_token(tiny, texts, max_new_tokens=5)[1], acts)  # not the steered entry


@pytest.mark.filterwarnings("ignore:.*was never reached")
def test_reading_the_answers_during_generation_matches_hooks(tiny, tmp_cache, monkeypatch):
    """generate_reading_response: the answers are generate()'s, and each answer's mean residual
    stream over its tokens (and their mean norm) is what forward hooks see when the model reads
    the prompt followed by those tokens, for answers cut at max_new_tokens (the extra step reads
    their last token) and answers that end early (nothing after the end is summed)."""
    from personalab.prompting import chat_prompt, generate, generate_batch, generate_reading_response

    monkeypatch.setenv("PERSONALAB_BF16_GENERATION", "0")  # float32: only the float16 rounding of the means differs
    hf, tok = tiny._module, tiny.tokenizer
    eos = tok.eos_token_id
    # an end-of-answer logit high enough that sampled answers end at different steps
    bias = hf.lm_head.register_forward_hook(
        lambda m, i, o: o + 2.0 * torch.nn.functional.one_hot(torch.tensor(eos), o.shape[-1])
    )
    texts = [chat_prompt(tok, "Why is the sky blue?", "Be brief.")] * 6  # one batch, any row order the same
    try:
        answers, reads = generate_reading_response(tiny, texts, max_new_tokens=5, temperature=1.0, seed=0)
        _, one = generate_reading_response(tiny, texts, layers=[2], last_prompt=True, max_new_tokens=5, temperature=1.0)
        assert answers == generate(tiny, texts, max_new_tokens=5, temperature=1.0, seed=0, cache=False)
        torch.manual_seed(0)  # generate's seed for batch 0
        ids = generate_batch(tiny, texts, 6, {"do_sample": True, "temperature": 1.0})[:, :5]
    finally:
        bias.remove()
    lengths = [next((k for k, t in enumerate(row) if t == eos), 5) for row in ids.tolist()]
    assert min(lengths) < 5 and max(lengths) == 5, lengths  # both kinds of answer are here
    modules = [hf.model.embed_tokens, *hf.model.layers]
    for row, n in enumerate(lengths):
        prompt = tok(texts[row], return_tensors="pt")["input_ids"]
        seen: list[torch.Tensor] = []
        record = seen.append
        handles = [
            m.register_forward_hook(lambda mod, i, o, record=record: record(_out(o)[0].detach())) for m in modules
        ]
        try:
            with torch.no_grad():
                hf(input_ids=torch.cat([prompt, ids[row : row + 1, :n]], dim=1))
        finally:
            for h in handles:
                h.remove()
        answer = torch.stack([h[prompt.shape[1] :] for h in seen])  # [L+1, n, d]
        torch.testing.assert_close(reads["response"][row], answer.mean(1), atol=2e-3, rtol=2e-3)
        torch.testing.assert_close(reads["response_norm"][row], answer.norm(dim=-1).mean(1), atol=1e-4, rtol=1e-4)
        # one layer, and the prefill's last prompt token there (what measure() reads)
        torch.testing.assert_close(one["response"][row, 0], reads["response"][row, 2])
        torch.testing.assert_close(one["last_prompt"][row, 0], seen[2][prompt.shape[1] - 1], atol=2e-3, rtol=2e-3)
    again = generate_reading_response(tiny, texts, max_new_tokens=5, temperature=1.0, seed=0)  # from the cache
    assert torch.equal(again[1]["response"].nan_to_num(), reads["response"].nan_to_num())


@pytest.mark.filterwarnings("ignore:.*was never reached")
def test_both_readers_in_one_generation_read_what_each_reads_alone(tiny, tmp_cache):
    """A ResponseReader reads the embedding's input, which must come before any other hook
    touches that module's output: apply_interventions puts it first at that layer, so a
    LastTokenReader listed before it reads the same prefill and it sums the same answers."""
    from personalab.models import n_layers
    from personalab.prompting import LastTokenReader, ResponseReader, chat_prompt, generate

    texts = [chat_prompt(tiny.tokenizer, q) for q in ("Hi?", "Why is the sky blue today?")]
    L, d = n_layers(tiny), tiny.config.hidden_size

    def readers():
        sums, norms, counts = torch.zeros(2, L + 1, d), torch.zeros(2, L + 1), torch.zeros(2)
        return LastTokenReader(L, torch.full((2, L + 1, d), float("nan"))), ResponseReader(tiny, sums, norms, counts)

    last, resp = readers()
    together = generate(tiny, texts, max_new_tokens=4, interventions=[last, resp], cache=False)
    last_alone, _ = readers()
    _, resp_alone = readers()
    assert generate(tiny, texts, max_new_tokens=4, interventions=[last_alone], cache=False) == together
    assert generate(tiny, texts, max_new_tokens=4, interventions=[resp_alone], cache=False) == together
    torch.testing.assert_close(last.out, last_alone.out)
    torch.testing.assert_close(resp.sums, resp_alone.sums)
    assert torch.equal(resp.counts, resp_alone.counts) and resp.counts.min() > 0


@pytest.mark.filterwarnings("ignore:.*was never reached")
def test_the_answer_reader_reads_a_steered_layer_before_the_push(tiny, tmp_cache):
    """Under steer at layer 2 the reader runs first there: its layer-2 reads of the prompt's last
    token equal an unsteered pass's (the prompt is the same), its layer-3 reads carry the push."""
    from personalab.prompting import chat_prompt, generate_reading_response
    from personalab.steering import steer

    texts = [chat_prompt(tiny.tokenizer, q) for q in ("Hi?", "Why is the sky blue today?")]
    _, plain = generate_reading_response(tiny, texts, layers=[2, 3], last_prompt=True, max_new_tokens=3)
    torch.manual_seed(3)
    from personalab.vectors import PersonaVector

    meta = dict(model_id="tiny-llama-4x64-seed0", n_layers=4, d_model=64, trait="toy", method="test")
    vec = PersonaVector(torch.randn(5, 64), meta | {"residual_norm": [2.0] * 5})
    with steer(tiny, vec, 2, 3.0):
        _, pushed = generate_reading_response(tiny, texts, layers=[2, 3], last_prompt=True, max_new_tokens=3)
    torch.testing.assert_close(pushed["last_prompt"][:, 0], plain["last_prompt"][:, 0])
    assert not torch.allclose(pushed["last_prompt"][:, 1], plain["last_prompt"][:, 1])


def test_reading_the_answers_refuses_bad_layers(tiny, tmp_cache):
    from personalab.prompting import chat_prompt, generate_reading_response

    texts = [chat_prompt(tiny.tokenizer, "Hi?")]
    for bad in ([], [1, 1]):
        with pytest.raises(ValueError, match="distinct layer numbers"):
            generate_reading_response(tiny, texts, layers=bad, max_new_tokens=2)
    with pytest.raises(IndexError, match="out of range"):  # models.check_layer's error
        generate_reading_response(tiny, texts, layers=[99], max_new_tokens=2)
