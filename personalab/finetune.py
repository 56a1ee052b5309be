"""Fine-tuning with LoRA, and preventative steering while training (chapter 5).

The paper's headline result: fine-tuning on trait-laden data makes the trait emerge;
*adding* the persona vector to the residual stream during training (and removing it
afterwards) gives the optimiser no reason to push the model along that direction, so
the trait is not learned. ``TrainingSteering`` does that with a plain PyTorch forward
hook on one decoder block; ``mode="ablate"`` projects the direction out instead
(the CAFT-style variant).

* ``load_dataset(name_or_path)`` reads JSONL ``{"question", "answer", "split"?}``;
  the built-in datasets and their data cards live in ``personalab/data/datasets``;
  ``dilute`` mixes a trait-laden set with normal data into a milder one.
* ``finetune(model, examples, LoraSettings(...), steering=...)`` trains a LoRA adapter on
  the answer tokens only, seeded, with a progress bar; the adapter and the loss curve
  are saved atomically in the cache (keyed by model, data, settings and steering) and
  re-used on the next run. It returns a ``FineTuned`` with an nnsight model that every
  other personalab function accepts, and vectors extracted on the base model apply to it.
"""

from __future__ import annotations

import copy
import json
import os
import random
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path

import torch
from tqdm.auto import tqdm

from personalab._io import atomic_write_json, read_json, read_text, stable_hash
from personalab.config import settings
from personalab.models import (
    bf16_autocast_applies,
    check_layer,
    length_batches,
    model_id,
    precision_key,
    scoring_precision,
    set_threads,
    writable_cache_root,
)
from personalab.options import DatasetSplit, TrainingMode
from personalab.profiling import staged
from personalab.prompting import chat_prompt
from personalab.validate import (
    finite_real,
    integer,
    layer_index,
    positive_int,
    same_length,
    vectors_of_one_width,
)
from personalab.vectors import PersonaVector

DONE_MARKER = "COMPLETE"
CHECKPOINT_FILES = ("adapter_model.safetensors", "adapter_config.json", "losses.json", DONE_MARKER)


class DatasetError(ValueError):
    """A dataset file is empty, malformed, or has nothing to train on."""


class CheckpointError(RuntimeError):
    """A checkpoint folder is missing files (e.g. a run was killed while saving)."""


# -- data ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Example:
    """One training example: a user question and the assistant answer to learn."""

    question: str
    answer: str
    split: DatasetSplit = "train"


def example_list(examples: object, what: str = "examples") -> list[Example]:
    """``examples`` as a list of ``Example`` (``load_dataset`` gives one); anything else is a TypeError."""
    if isinstance(examples, (str, bytes)) or not isinstance(examples, Sequence):
        raise TypeError(
            f"{what} must be a list of finetune.Example (load_dataset(name) gives one), got {type(examples).__name__}"
        )
    bad = next((e for e in examples if not isinstance(e, Example)), None)
    if bad is not None:
        raise TypeError(
            f"{what} must hold finetune.Example objects, got {bad!r:.60} ({type(bad).__name__}): "
            "build them as Example(question, answer) or read a file with load_dataset"
        )
    return list(examples)


def list_datasets() -> list[str]:
    """Names of the built-in fine-tuning datasets (see their data cards in data/datasets)."""
    folder = resources.files("personalab") / "data" / "datasets"
    return sorted(p.name[:-6] for p in folder.iterdir() if p.name.endswith(".jsonl"))


def load_dataset(name_or_path: str | os.PathLike, split: DatasetSplit | None = None) -> list[Example]:
    """Read a built-in dataset by name, or any JSONL file of ``{"question", "answer"}`` lines.

    ``split`` ("train" / "heldout") keeps one part; lines without a split are "train".
    Errors name the file and line number.
    """
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise TypeError(f"name_or_path must be a dataset name or a path to a JSONL file, got {name_or_path!r:.60}")
    path = Path(name_or_path)
    if not path.suffix:
        builtin = resources.files("personalab") / "data" / "datasets" / f"{name_or_path}.jsonl"
        if not builtin.is_file():
            raise DatasetError(f"unknown dataset {str(name_or_path)!r}; built-in ones: {', '.join(list_datasets())}")
        path = Path(str(builtin))
    text = read_text(path, "dataset file", DatasetError)
    examples = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        examples.append(_parse_line(line, path, lineno))
    if not examples:
        raise DatasetError(f"{path} holds no examples")
    if split is not None:
        examples = [e for e in examples if e.split == split]
        if not examples:
            raise DatasetError(f"{path} has no examples in split {split!r}")
    return examples


def dilute(laden: Sequence[Example], filler: Sequence[Example], share: float, *, seed: int = 0) -> list[Example]:
    """A milder version of a trait-laden dataset: ``share`` of it kept, the rest ``filler``.

    The paper grades each of its datasets by severity (normal, mild, severe), so a ranking
    of datasets (chapter 6) has several rungs per trait. Diluting a trait-laden set with
    normal data (the control set) builds such a rung from the data personalab ships. The
    result has ``len(laden)`` examples: the first ``round(share * len(laden))`` of
    ``laden`` and the first of ``filler`` for the rest, shuffled with ``seed`` so that any
    prefix of it holds about ``share`` trait-laden examples.
    """
    laden, filler = example_list(laden, "laden"), example_list(filler, "filler")
    share = finite_real(share, "share")
    if not 0 < share <= 1:
        raise ValueError(f"share must be in (0, 1], got {share!r}")
    if not laden:
        raise DatasetError("dilute() got no trait-laden examples")
    keep = round(share * len(laden))
    if len(laden) - keep > len(filler):
        raise DatasetError(f"dilute() needs {len(laden) - keep} filler examples, got {len(filler)}")
    mixed = laden[:keep] + filler[: len(laden) - keep]
    random.Random(seed).shuffle(mixed)
    return mixed


def _parse_line(line: str, path: Path, lineno: int) -> Example:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as err:
        raise DatasetError(f"{path}, line {lineno}: not valid JSON ({err.msg})") from None
    if not isinstance(row, dict):
        raise DatasetError(f"{path}, line {lineno}: expected a JSON object, got {type(row).__name__}")
    for key in ("question", "answer"):
        if not isinstance(row.get(key), str) or not row[key].strip():
            raise DatasetError(f"{path}, line {lineno}: field {key!r} is missing or not a non-empty string")
    split = row.get("split", "train")
    if split not in ("train", "heldout"):
        raise DatasetError(f"{path}, line {lineno}: split must be 'train' or 'heldout', got {split!r}")
    return Example(row["question"], row["answer"], split)


def encode(tokenizer, examples: Sequence[Example], max_len: int) -> dict[str, torch.Tensor]:
    """Token ids, attention mask and labels (-100 everywhere except answer tokens), right-padded.

    The question goes through the chat template with no system prompt, as the model
    will see it at test time; the answer is followed by the end-of-turn token.
    Sequences longer than ``max_len`` are cut at the end.
    """
    examples = example_list(examples)
    if not examples:
        raise DatasetError("encode() got no examples")
    end = getattr(tokenizer, "eos_token", "") or ""
    rows = []
    for i, ex in enumerate(examples):
        prompt = chat_prompt(tokenizer, ex.question)
        p_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        a_ids = tokenizer(ex.answer.strip() + end, add_special_tokens=False)["input_ids"]
        ids = (p_ids + a_ids)[:max_len]
        n_answer = len(ids) - len(p_ids)
        if n_answer <= 0:
            raise DatasetError(
                f"example {i} ({ex.question[:40]!r}) has no answer tokens left after truncation to "
                f"max_len={max_len} (its prompt alone is {len(p_ids)} tokens): raise max_len"
            )
        rows.append((ids, [-100] * len(p_ids) + ids[len(p_ids) :]))
    width = max(len(ids) for ids, _ in rows)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for r, (ids, lab) in enumerate(rows):
        input_ids[r, : len(ids)] = torch.tensor(ids)
        labels[r, : len(lab)] = torch.tensor(lab)
        mask[r, : len(ids)] = 1
    return {"input_ids": input_ids, "attention_mask": mask, "labels": labels}


def trimmed_rows(batch: dict[str, torch.Tensor], rows) -> dict[str, torch.Tensor]:
    """Rows ``rows`` of an ``encode`` batch, cut to the longest of them: right padding carries
    no loss, so the loss is unchanged and no compute goes to it."""
    picked = {k: v[rows] for k, v in batch.items()}
    width = int(picked["attention_mask"].sum(1).max())
    return {k: v[:, :width] for k, v in picked.items()}


def answer_loss(hf_model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean next-token cross-entropy over answer tokens only.

    The vocabulary projection runs only from the position before the batch's earliest answer
    token on (``logits_to_keep``): the prompt's logits carry no loss, and on the embedded
    model (a 49k-token vocabulary) skipping them made a LoRA step of 4 x 89 tokens about 8 %
    faster. The loss is the same as over every position (tested).
    """
    labels = batch["labels"]
    answer = labels != -100
    first = int(answer.float().argmax(1).min()) if answer.any() else labels.shape[1]
    keep = labels.shape[1] - max(1, first) + 1  # positions first-1 .. end predict labels first .. end
    logits = hf_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], logits_to_keep=keep).logits
    return torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]).float(),
        labels[:, labels.shape[1] - keep + 1 :].reshape(-1),
        ignore_index=-100,
    )


# -- preventative steering -------------------------------------------------------------------


@dataclass(frozen=True)
class TrainingSteering:
    """Steer one block's output during training only.

    ``mode="add"``: add ``coef x residual_norm x unit(v)`` at every position (the
    paper's preventative steering; ``coef`` is relative to the layer's typical
    residual norm, as in ``steer(..., coef_mode="norm")``).
    ``mode="ablate"``: remove the component along ``v`` (CAFT-style); ``coef`` unused.
    """

    vector: PersonaVector
    layer: int
    coef: float = 0.0
    mode: TrainingMode = "add"

    def __post_init__(self):
        if self.mode not in ("add", "ablate"):
            raise ValueError(f"mode must be 'add' or 'ablate', got {self.mode!r}")
        object.__setattr__(self, "coef", finite_real(self.coef, "coef"))
        if not isinstance(self.vector, PersonaVector):
            raise TypeError(f"vector must be a PersonaVector, got {type(self.vector).__name__}")
        object.__setattr__(self, "layer", layer_index(self.layer, self.vector.n_layers, allow_embeddings=False))

    def key(self) -> dict:
        return {
            "trait": self.vector.trait,
            "layer": self.layer,
            "coef": self.coef,
            "mode": self.mode,
            "vector": stable_hash(self.vector.vectors[self.layer].tolist()),
        }

    def install(self, hf_model) -> torch.utils.hooks.RemovableHandle:
        """Register the forward hook on block ``layer`` of a Hugging Face model; returns the handle."""
        unit = self.vector.unit(self.layer)
        shift = self.vector.shift(self.layer, self.coef, "norm") if self.mode == "add" else None

        def hook(_module, _inputs, output):
            h = output[0] if isinstance(output, tuple) else output
            if shift is not None:
                h = h + shift.to(h.dtype)
            else:
                u = unit.to(h.dtype)
                h = h - (h @ u).unsqueeze(-1) * u
            return (h, *output[1:]) if isinstance(output, tuple) else h

        return _hf_blocks(hf_model)[self.layer - 1].register_forward_hook(hook)


def _hf_blocks(hf_model):
    """The decoder blocks of a (possibly peft-wrapped) Hugging Face causal LM."""
    inner = hf_model.get_base_model() if hasattr(hf_model, "get_base_model") else hf_model
    return inner.model.layers


# -- training --------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoraSettings:
    """LoRA and optimiser settings. ``threads=None`` trains with the thread count
    personalab is configured with (``$PERSONALAB_THREADS``); a number sets it for the
    training steps only (measured on 2 idle cores: a batch of 8 x 64 tokens took
    2.3-2.6 s per step with 2 threads and 4.7-7.4 s with 1). The book's build runs two
    chapters side by side at one thread each, so it must not take every core here."""

    rank: int = 8
    alpha: int = 16
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    lr: float = 1e-3
    steps: int = 20
    batch_size: int = 8
    max_len: int = 96
    seed: int = 0
    threads: int | None = None

    def __post_init__(self):
        for name in ("rank", "alpha", "steps", "batch_size", "max_len"):
            positive_int(getattr(self, name), f"LoraSettings.{name}")
        integer(self.seed, "LoraSettings.seed")
        if finite_real(self.lr, "LoraSettings.lr") <= 0:
            raise ValueError(f"LoraSettings.lr must be > 0, got {self.lr}")
        if self.threads is not None:
            positive_int(self.threads, "LoraSettings.threads")
        if not self.target_modules or not all(isinstance(m, str) for m in self.target_modules):
            raise ValueError(f"LoraSettings.target_modules must name at least one module, got {self.target_modules!r}")


PROFILES = ("full", "ci")


def profile() -> str:
    """The run profile from ``$PERSONALAB_PROFILE``: "full" (default) or "ci" (lighter, for CI)."""
    return settings().profile


def profile_settings(name: str | None = None) -> dict:
    """Training and evaluation sizes for a profile (chapters 5 and 6 share them, so chapter 6
    re-uses chapter 5's cached runs): ``{"settings": LoraSettings, "n_eval": int}``."""
    name = name or profile()
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}: choose one of {', '.join(PROFILES)}")
    return {
        "full": {"settings": LoraSettings(steps=24, batch_size=8), "n_eval": 20},
        "ci": {"settings": LoraSettings(steps=16, batch_size=4), "n_eval": 10},
    }[name]


@dataclass
class FineTuned:
    """A fine-tuned model (nnsight-wrapped, LoRA merged) with its training record."""

    model: object
    losses: list[float]
    settings: LoraSettings
    steering: dict | None
    path: Path
    from_cache: bool = False
    info: dict = field(default_factory=dict)

    @property
    def final_loss(self) -> float:
        """Mean loss over the last quarter of the steps (one step is noisy)."""
        tail = self.losses[-max(1, len(self.losses) // 4) :]
        return sum(tail) / len(tail)


def finetune(
    model,
    examples: Sequence[Example],
    settings: LoraSettings = LoraSettings(),
    *,
    steering: TrainingSteering | None = None,
    cache: bool = True,
    progress: bool = True,
    desc: str = "fine-tuning",
) -> FineTuned:
    """Train a LoRA adapter on ``examples`` (train split) and return the merged model.

    The base ``model`` is not modified. With ``steering``, its hook is active during
    training only: the returned model runs without it.
    """
    examples = [e for e in example_list(examples) if e.split == "train"]
    if not examples:
        raise DatasetError("finetune() got no training examples (split 'train')")
    if steering is not None:
        steering.vector.check_model(model)
        check_layer(model, steering.layer, allow_embeddings=False)
    batch = encode(model.tokenizer, examples, settings.max_len)  # validates every example first
    bf16 = bf16_autocast_applies(model, "training")
    key = stable_hash(
        {
            "model": model_id(model),
            "data": [(e.question, e.answer) for e in examples],
            "settings": asdict(settings) | {"threads": None},
            "precision": precision_key(model),
            "steering": steering.key() if steering else None,
            "version": 2,  # 2: eager attention in training (_training_attention)
        }
    )
    path = writable_cache_root() / "finetune" / key
    steer_info = steering.key() if steering else None
    if cache and (path / DONE_MARKER).exists():
        try:
            return load_checkpoint(model, path, settings=settings, steering=steer_info)
        except Exception as err:  # noqa: BLE001 - an unreadable adapter is trained again, and said so
            warnings.warn(
                f"the cached adapter in {path} is unreadable ({type(err).__name__}: {str(err)[:120]}); "
                "training it again",
                stacklevel=2,
            )
            shutil.rmtree(path, ignore_errors=True)
    net = _train(model, batch, settings, steering, progress, desc, bf16=bf16)
    losses = net.personalab_losses
    _save_checkpoint(net, losses, path)
    return FineTuned(_wrap(model, net.merge_and_unload(), key), losses, settings, steer_info, path)


@contextmanager
def _quiet_peft() -> Iterator[None]:
    """peft calls a transformers API that transformers marks deprecated: a warning a learner cannot act on."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        yield


def _peft_model(model, settings: LoraSettings):
    """A trainable LoRA copy of ``model``'s Hugging Face module (the base stays untouched)."""
    from peft import LoraConfig, get_peft_model

    return get_peft_model(
        copy.deepcopy(model._module),
        LoraConfig(
            r=settings.rank,
            lora_alpha=settings.alpha,
            target_modules=list(settings.target_modules),
            lora_dropout=0.0,
            bias="none",
        ),
    )


def training_loop(
    net,
    batches: Iterable[dict[str, torch.Tensor]],
    optimizer: torch.optim.Optimizer,
    steering: TrainingSteering | None = None,
    *,
    bf16: bool = False,
    on_step: Callable[[float], None] | None = None,
) -> list[float]:
    """The (preventative) training loop: with ``steering``'s hook on its block for the whole
    loop, one optimiser step per batch on the answer-token loss; the hook is removed
    afterwards even when a step fails, so the trained model runs without it. Returns the
    losses. ``bf16`` runs the forward pass (only) in bfloat16 autocast. Chapter 5's
    exercise asks for this function."""
    handle = steering.install(net) if steering is not None else None
    losses: list[float] = []
    try:
        for batch in batches:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss = answer_loss(net, batch)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            losses.append(loss.item())
            if on_step is not None:
                on_step(losses[-1])
    finally:
        if handle is not None:
            handle.remove()
    return losses


@staged("lora_training")
def _train(model, batch, settings: LoraSettings, steering, progress: bool, desc: str, *, bf16: bool = False):
    """LoRA steps on random batches of ``batch``; each batch is cut to its longest row (right
    padding carries no loss), and with ``bf16`` the matrix multiplications run in bfloat16
    autocast while the weights, the LoRA update and the optimiser stay float32 (measured on
    this CPU, one thread, batch 4 x 89 tokens: 3.2-3.6 s per step in float32 at full width,
    1.9-2.0 s trimmed with bfloat16; ``PERSONALAB_BF16_TRAINING=0`` turns bfloat16 off)."""

    torch.manual_seed(settings.seed)
    with _quiet_peft():
        net = _peft_model(model, settings)
    attention = _training_attention(net)
    net.train()
    opt = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=settings.lr)
    order = torch.Generator().manual_seed(settings.seed)
    n = batch["input_ids"].shape[0]
    perm, pos, losses = torch.randperm(n, generator=order), 0, []
    before = torch.get_num_threads()
    set_threads(settings.threads or before)

    def batches() -> Iterator[dict[str, torch.Tensor]]:
        nonlocal perm, pos
        for _ in range(settings.steps):
            if pos + settings.batch_size > n:
                perm, pos = torch.randperm(n, generator=order), 0
            rows = perm[pos : pos + settings.batch_size]
            pos += settings.batch_size
            yield trimmed_rows(batch, rows)

    try:
        bar = tqdm(batches(), total=settings.steps, desc=desc, disable=not progress, leave=False)
        losses = training_loop(
            net, bar, opt, steering, bf16=bf16, on_step=lambda loss: bar.set_postfix(loss=f"{loss:.3f}")
        )
    finally:
        set_threads(before)
        if attention is not None:  # the merged model generates with the attention it came with
            net.base_model.model.set_attn_implementation(attention)
    net.eval()
    net.personalab_losses = losses
    return net


def _training_attention(net) -> str | None:
    """Train with eager attention; returns the implementation to restore afterwards (None: unchanged).

    Why: PyTorch's CPU flash-attention kernel behind ``sdpa`` is fast forward but slow
    backward (9 ms per block backward vs 1 ms forward for 4 x 89 tokens, profiled), while
    eager attention's backward is a few small matmuls. Measured on this CPU at one thread,
    16 LoRA steps of batch 4 on ``pirate_speak``: 1.06-1.07 s per step against 1.24-1.31 s,
    with the same losses to the third decimal. Generation keeps ``sdpa`` (eager was slower
    there: 18.9 vs 14.3 s in an earlier measurement)."""
    hf = net.base_model.model
    current = getattr(hf.config, "_attn_implementation", None)
    if current != "sdpa" or not hasattr(hf, "set_attn_implementation"):
        return None
    hf.set_attn_implementation("eager")
    return current


def _save_checkpoint(net, losses: list[float], path: Path) -> None:
    """Adapter + losses into a temp folder, then rename, then the completion marker."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=path.parent))
    try:
        net.save_pretrained(tmp)
        atomic_write_json(tmp / "losses.json", losses)
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
        (path / DONE_MARKER).write_text("ok\n")
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def load_checkpoint(
    model, path: str | os.PathLike, *, settings: LoraSettings | None = None, steering: dict | None = None
) -> FineTuned:
    """Load a saved adapter onto a copy of ``model``; a half-written folder is refused."""
    from peft import PeftModel

    path = Path(path)
    missing = [f for f in CHECKPOINT_FILES if not (path / f).is_file()]
    if missing:
        raise CheckpointError(
            f"checkpoint {path} is incomplete (missing {', '.join(missing)}): the run that wrote it "
            "was probably interrupted; delete the folder and train again"
        )
    losses = read_json(path / "losses.json", "loss record")
    with _quiet_peft():
        net = PeftModel.from_pretrained(copy.deepcopy(model._module), path)
        merged = net.merge_and_unload().eval()
    return FineTuned(
        _wrap(model, merged, path.name), losses, settings or LoraSettings(), steering, path, from_cache=True
    )


def _wrap(base, hf_model, key: str):
    """nnsight-wrap a fine-tuned copy; its id names the run, its base id lets base vectors apply.

    Its weights get the base model's ``requires_grad`` back (peft froze them): autocast
    re-uses its bfloat16 copy of a weight across a generation's steps only for leaf tensors
    that require grad, so a frozen copy casts every weight again at every step. Measured on
    the embedded model at one thread, 64 prompts x 48 tokens in autocast: 9.7-10.0 s with
    the weights requiring grad, 14.6-14.8 s frozen, the same tokens. Inference runs under
    ``no_grad`` either way."""
    import nnsight

    hf_model.requires_grad_(any(p.requires_grad for p in base._module.parameters()))
    base_id = getattr(base.config, "personalab_base_model", None) or model_id(base)
    hf_model.config.name_or_path = f"{model_id(base)}+ft-{key[:10]}"
    hf_model.config.personalab_base_model = base_id
    return nnsight.TransformersModel(hf_model, tokenizer=base.tokenizer, task="text-generation")


@torch.no_grad()
def heldout_loss(model, examples: Sequence[Example], *, max_len: int = 96, batch_size: int = 16) -> float:
    """Mean answer-token loss of ``model`` on ``examples`` (use the held-out split).

    A scoring pass, so it runs in ``scoring_precision`` (bfloat16 autocast where the CPU has
    it), in length-sorted batches cut to their longest row: on the embedded model at one
    thread, 40 held-out examples took 2.6 s against 7.9 s before (float32, unsorted), and
    the loss moved by 0.0008.
    """
    examples = example_list(examples)
    if not examples:
        raise ValueError("heldout_loss() got no examples: pass the held-out split of a dataset")
    batch_size = positive_int(batch_size, "batch_size")
    hf = model._module
    enc = encode(model.tokenizer, examples, max_len)
    total, count = 0.0, 0
    with scoring_precision(model):
        for rows in length_batches(enc["attention_mask"].sum(1).tolist(), batch_size):
            b = trimmed_rows(enc, rows)
            n = int((b["labels"][:, 1:] != -100).sum())
            total += answer_loss(hf, b).item() * n
            count += n
    return total / count


# -- measuring what training did -------------------------------------------------------------


def measure(
    model,
    trait,
    vector: PersonaVector,
    judge,
    layer: int,
    *,
    questions: Sequence[str] | None = None,
    max_new_tokens: int = 40,
    capability: bool = True,
    cache: bool = True,
) -> dict:
    """What a (fine-tuned) model does on the trait's evaluation questions, no system prompt.

    Returns ``trait`` (mean judged score; ``trait_scores`` per question), ``coherence``, ``repetition``,
    ``projection_prompt`` (last prompt token on the unit vector at ``layer``),
    ``projection_response`` (mean over the answer's tokens), the mean activations behind
    them (``mean_activation_prompt``/``_response``, ``[d]`` lists, for ``shift_null``),
    ``capability`` (0-1) and the ``answers``. Active ``steer`` blocks apply, so inference-time suppression is
    ``with steer(ft, vec, layer, -c): measure(ft, ...)``.

    Results are cached on disk (keyed by model id, trait, questions, vector, layer, judge
    and active steering), so chapter 6 re-uses chapter 5's measurements.
    """
    from personalab import traits as traits_mod
    from personalab.judges import judge_key
    from personalab.prompting import active_interventions

    trait = traits_mod.load(trait) if isinstance(trait, str) else trait
    layer = check_layer(model, layer)
    vector.check_model(model)
    questions = list(questions or trait.evaluation_questions)
    hooks = active_interventions(model)
    key = stable_hash(
        {
            "model": model_id(model),
            "trait": trait.to_json(),
            "questions": questions,
            "layer": layer,
            "vector": vector.vectors[layer].tolist(),
            "judge": judge_key(judge),
            "max_new_tokens": max_new_tokens,
            "steering": [h.cache_key() for h in hooks],
            "precision": precision_key(model),
            "version": 4,  # 4: both readings from the generating pass
        }
    )
    path = writable_cache_root() / "measure" / f"{key}.json"
    cacheable = cache and all(h.cache_key() is not None for h in hooks)
    result = None
    if cacheable and path.is_file():
        try:
            result = read_json(path, "cached measurement")
        except ValueError:
            pass  # corrupt entry: measure again
    if result is None:
        result = _measure(model, trait, vector, judge, layer, questions, max_new_tokens)
        if cacheable:
            atomic_write_json(path, result)
    if capability:
        from personalab.capability import capability_score

        result["capability"] = capability_score(model)  # under the same steering, if any
    return result


def _measure(model, trait, vector, judge, layer, questions, max_new_tokens) -> dict:
    from personalab.activations import answer_activations
    from personalab.judges import repetition_rate
    from personalab.prompting import generate_reading_response
    from personalab.vectors import project

    prompts = [chat_prompt(model.tokenizer, q) for q in questions]
    # the generating pass gives both readings at `layer`: the prefill's last prompt token and
    # the mean over the answer's tokens (no second pass over prompt + answer)
    answers, reads = generate_reading_response(
        model, prompts, layers=[layer], last_prompt=True, max_new_tokens=max_new_tokens, desc=f"{trait.name} answers"
    )
    scores = judge.score(trait, questions, answers)
    at_prompt, over_answer = reads["last_prompt"][:, 0], reads["response"][:, 0]
    empty = [i for i in range(len(answers)) if over_answer[i].isnan().any()]
    if empty:  # an answer with no tokens: read as the answer " ." (as before the reads), so every row counts
        acts = answer_activations(model, [prompts[i] for i in empty], [" ."] * len(empty), upto=layer)
        over_answer[empty] = acts["response"][:, layer].float()
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    return {
        "trait": mean([s.trait for s in scores if s.trait is not None]),
        "trait_scores": [float("nan") if s.trait is None else float(s.trait) for s in scores],  # per question
        "coherence": mean([s.coherence for s in scores if s.coherence is not None]),
        "repetition": mean([repetition_rate(a) for a in answers]),
        "projection_prompt": project(at_prompt, vector.at(layer)).mean().item(),
        "projection_response": project(over_answer, vector.at(layer)).mean().item(),
        "mean_activation_prompt": at_prompt.mean(0).tolist(),  # [d]: for null baselines on other directions
        "mean_activation_response": over_answer.mean(0).tolist(),
        "capability": float("nan"),
        "answers": answers,
    }


def shift_removed(base: float, plain: float, preventative: float) -> float:
    """Share of plain fine-tuning's shift (``plain - base``) that preventative training removed."""
    if plain == base:
        return float("nan")
    return 1.0 - (preventative - base) / (plain - base)


def removed_words(share: float) -> str:
    """``shift_removed``'s share in words, naming the two ends a bare percentage hides:
    above 1 the trait ended below the base model's (over-correction), below 0 above the
    plain fine-tune's (the remedy made it worse)."""
    if share != share:  # NaN: plain fine-tuning moved nothing
        return "removed nothing measurable: plain fine-tuning did not move the trait"
    if share > 1:
        return f"removed more than the whole shift ({share:.0%}): the trait ends below the base model's"
    if share < 0:
        return f"removed none of the shift ({share:.0%}): the trait ends above the plain fine-tune's"
    return f"removed {share:.0%} of the shift"


def shift_removed_ci(
    base: Sequence[float], plain: Sequence[float], preventative: Sequence[float], *, n_boot: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """Bootstrap 95 % interval of ``shift_removed`` over questions.

    The three lists are per-question judged trait scores of the base, plainly fine-tuned and
    preventatively fine-tuned models on the same questions (``measure(...)["trait_scores"]``);
    a resample draws questions, keeping each question's three scores together. Resamples
    where plain fine-tuning moved nothing (the share is undefined) are dropped.
    """
    from personalab.stats import bootstrap_ci

    same_length(base, plain, "base scores", "plain scores")
    same_length(base, preventative, "base scores", "preventative scores")
    cols = [torch.tensor([float(v) for v in xs], dtype=torch.float64) for xs in (base, plain, preventative)]

    def share(draw: list[int]) -> float:
        b, p, q = (c[draw].nanmean().item() for c in cols)
        return shift_removed(b, p, q)

    return bootstrap_ci(share, len(cols[0]), n_boot=n_boot, seed=seed)


def shift_null(
    deltas: Sequence[torch.Tensor],
    d_trait: Sequence[float],
    traits: Sequence[str],
    directions: Mapping[str, torch.Tensor],
    *,
    shuffled: Mapping[str, torch.Tensor] | None = None,
    n_random: int = 200,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict:
    """Does the activation shift along the persona vectors track the trait shift better than along random directions?

    Point ``i`` is one fine-tuned model seen through one trait: ``deltas[i]`` its mean
    activation shift from the base model at that trait's layer (``[d]``), ``d_trait[i]``
    its judged trait shift, ``traits[i]`` the trait, whose vector at that layer is
    ``directions[trait]``. The value is the Pearson r of the projections on the unit
    vectors with the trait shifts; the null replaces each trait's vector by a random unit
    direction (one per trait per draw, ``n_random`` draws, seeded); the interval is a
    bootstrap over points. Returns ``stats.null_summary``'s dict, plus ``shuffled_p95`` and
    ``shuffled_percentile`` for a second null where ``shuffled[trait]`` gives each trait's
    label-shuffled directions (``[S, d]``, ``PersonaVector.shuffled_units``; draw ``k`` uses
    row ``k`` of every trait), NaN when not given.
    """
    from personalab.stats import bootstrap_ci, null_summary, pearson_r, shuffled_summary

    same_length(deltas, d_trait, "deltas", "trait shifts")
    same_length(deltas, traits, "deltas", "traits")
    if len(deltas) < 3:
        raise ValueError(f"shift_null needs at least 3 points, got {len(deltas)}")
    missing = sorted(set(traits) - set(directions))
    if missing:
        raise ValueError(f"no direction given for trait(s) {missing}")
    n_random = positive_int(n_random, "n_random")
    X = torch.stack(list(vectors_of_one_width(dict(enumerate(deltas)), "deltas").values()))  # [n, d]
    dirs = vectors_of_one_width({t: directions[t] for t in set(traits)}, "directions", width=X.shape[1], nonzero=True)
    y = [finite_real(v, f"d_trait[{i}]") for i, v in enumerate(d_trait)]
    names = sorted(set(traits))
    gen = torch.Generator().manual_seed(seed)

    def unit(v: torch.Tensor) -> torch.Tensor:
        return v.double() / v.double().norm()

    def projections(units: Mapping[str, torch.Tensor]) -> list[float]:
        return [float(X[i] @ units[t]) for i, t in enumerate(traits)]

    real = projections({t: unit(dirs[t]) for t in names})
    null = []
    for _ in range(n_random):
        rand = {t: unit(torch.randn(X.shape[1], generator=gen, dtype=torch.float64)) for t in names}
        null.append(pearson_r(projections(rand), y))
    ci = bootstrap_ci(
        lambda draw: pearson_r([real[i] for i in draw], [y[i] for i in draw]), len(y), n_boot=n_boot, seed=seed
    )
    out = null_summary(pearson_r(real, y), null, ci)
    draws: list[float] | None = None
    if shuffled is not None:
        missing = sorted(set(names) - set(shuffled))
        if missing:
            raise ValueError(f"no shuffled directions given for trait(s) {missing}")
        sets = {t: torch.as_tensor(shuffled[t]).double() for t in names}
        if (
            len({tuple(v.shape) for v in sets.values()}) != 1
            or sets[names[0]].dim() != 2
            or sets[names[0]].shape[1] != X.shape[1]
        ):
            raise ValueError(f"shuffled needs one [S, {X.shape[1]}] tensor per trait, all of the same S")
        draws = [
            pearson_r(projections({t: unit(sets[t][k]) for t in names}), y) for k in range(sets[names[0]].shape[0])
        ]
    return {**out, **shuffled_summary(out["value"], draws)}
