"""PersonaVector: the per-layer direction of a trait, its metadata, and safe storage.

``vectors`` has shape ``[n_layers + 1, d_model]``: row 0 = embeddings, row i = output
of decoder block i (the convention of ``personalab.models``). Files are safetensors
(the tensor) plus JSON (the metadata) — never pickle — and loading checks them
against the model they will be used with.
"""

from __future__ import annotations

import json
import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from personalab._io import atomic_write_bytes, atomic_write_json, read_json
from personalab.options import CoefMode
from personalab.validate import (
    file_stem,
    finite_real,
    finite_reals,
    integer,
    layer_index,
    positive_int,
    random_seed,
    vectors_of_one_width,
)

REQUIRED_META = ("model_id", "n_layers", "d_model", "trait", "method")


class VectorMismatchError(ValueError):
    """A persona vector does not belong to the model it is used with."""


@dataclass
class PersonaVector:
    """A trait direction at every layer plus where it came from.

    ``pair_differences`` (optional, ``[n_kept, n_layers + 1, d_model]``): each kept pair's
    h+ - h-, whose mean is ``vectors``. Extraction stores them (float16 on disk) so that a
    label-shuffled null can be drawn later (``shuffled_units``, ``shuffled_like``); a vector made by
    arithmetic or loaded from an older file has none.
    """

    vectors: torch.Tensor  # [n_layers + 1, d_model]
    meta: dict = field(default_factory=dict)
    pair_differences: torch.Tensor | None = field(default=None, repr=False)

    def __post_init__(self):
        if not isinstance(self.vectors, torch.Tensor):
            raise TypeError(
                f"vectors must be a torch.Tensor [n_layers + 1, d_model], got {type(self.vectors).__name__}"
            )
        if self.vectors.ndim != 2:
            raise ValueError(f"vectors must be [n_layers + 1, d_model], got shape {tuple(self.vectors.shape)}")
        if not torch.isfinite(self.vectors).all():
            raise ValueError("persona vector contains NaN or inf values")
        _check_meta(self.meta, *self.vectors.shape)
        diffs = self.pair_differences
        if diffs is not None and (
            not isinstance(diffs, torch.Tensor) or diffs.dim() != 3 or diffs.shape[1:] != self.vectors.shape
        ):
            got = tuple(diffs.shape) if isinstance(diffs, torch.Tensor) else type(diffs).__name__
            raise ValueError(
                f"pair_differences must be [n_pairs, {', '.join(map(str, self.vectors.shape))}], got {got}"
            )

    @property
    def trait(self) -> str:
        return self.meta.get("trait", "?")

    @property
    def n_layers(self) -> int:
        return self.vectors.shape[0] - 1

    @property
    def default_layer(self) -> int:
        return int(self.meta.get("default_layer", self.n_layers // 2))

    def at(self, layer: int) -> torch.Tensor:
        """The raw difference vector at ``layer`` ([d_model])."""
        return self.vectors[layer_index(layer, self.n_layers)]

    def unit(self, layer: int) -> torch.Tensor:
        """The unit-length direction at ``layer``."""
        v = self.at(layer)
        return v / v.norm().clamp_min(1e-8)

    def shuffled_units(self, layer: int, n: int = 200, *, seed: int = 0) -> torch.Tensor:
        """``n`` label-shuffled directions at ``layer`` (``[n, d]``, unit rows): a null baseline.

        Each is the mean of the kept pairs' h+ - h- with the p+/p- labels of a random *half*
        of the pairs swapped (the same answers, labels permuted): a direction built like the
        vector from the same activations. Why exactly half: the direction, not the length,
        is what a projection uses, and with labels swapped at random one by one the swapped
        and unswapped pairs rarely balance, so the shared trait part of the differences
        survives in the mean and the direction still points along (or against) the trait
        whenever the pairs agree strongly; with half of them swapped it cancels (exactly
        when every pair's trait part is the same), leaving how these answers vary apart from
        the labels. Needs ``pair_differences`` (stored by extraction) and at least 2 pairs.
        """
        layer = layer_index(layer, self.n_layers)
        diffs = self._differences()[:, layer].double()  # [pairs, d]
        shuffled = self._half_swaps(n, seed) @ diffs / diffs.shape[0]
        return (shuffled / shuffled.norm(dim=1, keepdim=True).clamp_min(1e-12)).float()

    def shuffled_like(self, n: int = 1, *, seed: int = 0) -> list[PersonaVector]:
        """``n`` label-shuffled vectors with this vector's per-layer norms: the label-shuffled
        null for steering (``steering_null``), where a direction is pushed, not read.

        Vector ``k`` points, at every layer, along ``shuffled_units(layer, n, seed=seed)[k]``
        (the same swapped halves at every layer) and has this vector's length there, so a
        push of ``coef`` moves the residual stream as far as the persona vector's would.
        """
        diffs = self._differences().double()  # [pairs, L+1, d]
        swaps = self._half_swaps(n, seed)
        norms = self.vectors.double().norm(dim=-1, keepdim=True)  # [L+1, 1]
        out = []
        for k in range(swaps.shape[0]):
            mean = torch.einsum("p,pld->ld", swaps[k], diffs) / diffs.shape[0]
            unit = mean / mean.norm(dim=-1, keepdim=True).clamp_min(1e-12)
            meta = {**self.meta, "trait": f"shuffled-{k}", "method": f"label-shuffled/seed{seed}"}
            out.append(PersonaVector((unit * norms).float(), meta))
        return out

    def _differences(self) -> torch.Tensor:
        """The kept pairs' differences ``[pairs, L+1, d]``; raises where a null cannot be drawn."""
        if self.pair_differences is None:
            raise ValueError(
                f"the {self.trait!r} vector carries no per-pair differences (made by arithmetic, or saved "
                "before they were stored): extract it again for a label-shuffled null"
            )
        if self.pair_differences.shape[0] < 2:
            raise ValueError(
                f"a label-shuffled direction needs at least 2 pairs, the {self.trait!r} vector has "
                f"{self.pair_differences.shape[0]}"
            )
        return self.pair_differences

    def _half_swaps(self, n: int, seed: int) -> torch.Tensor:
        """``[n, pairs]`` signs, -1 on a random half of the pairs in each row (``shuffled_units``)."""
        return half_swap_signs(self._differences().shape[0], n, seed=seed)

    @property
    def beats_chance(self) -> bool | None:
        """Whether the held-out separation's whole interval lies above the label-shuffled
        vectors' 95th percentile (``meta["heldout"]``, made by extraction); None where it
        was not measured or its interval could not be estimated."""
        held = self.meta.get("heldout")
        if held is None or math.isnan(held["ci_low"]):
            return None
        return held["ci_low"] > held["null_p95"]

    def provenance(self) -> str:
        """One line on how much evidence is behind this vector: its kept pairs, and whether
        its direction separates held-out answers better than label-shuffled vectors do."""
        kept, pairs = self.meta.get("n_kept"), self.meta.get("n_pairs")
        line = f"{self.trait}: {kept if kept is not None else '?'} kept pairs of {pairs if pairs is not None else '?'}"
        rounds = (self.meta.get("settings") or {}).get("sampled_rounds")
        if rounds:  # the pairs include sampled answers to the same prompts (extraction.SAMPLED_ROUNDS)
            line += f" ({rounds} sampled round{'s' if rounds > 1 else ''})"
        held = self.meta.get("heldout")
        if held is None:
            need = f"fewer than {MIN_HELDOUT_PAIRS} kept pairs" if kept is not None else "no record"
            return f"{line}; held-out separation not measured ({need}): not shown to beat chance"
        d = f"{line}; held-out d at layer {held['layer']} = {held['value']:.2f}"
        if self.beats_chance is None:  # too few pairs for most bootstrap draws
            return f"{d} vs label-shuffled p95 {held['null_p95']:.2f}, interval not estimable: not shown to beat chance"
        verdict = "beats" if self.beats_chance else "not shown to beat"
        return (
            f"{d} [{held['ci_low']:.2f}, {held['ci_high']:.2f}] vs label-shuffled p95 {held['null_p95']:.2f}: "
            f"{verdict} chance"
        )

    def shift(self, layer: int, coef: float, coef_mode: CoefMode = "norm") -> torch.Tensor:
        """The vector that steering adds at ``layer`` ([d_model]); the one definition used
        at inference (``steer``) and during training (``TrainingSteering``).

        ``"norm"``: ``coef x residual_norm(layer) x unit(layer)``, so one coefficient is
        the same push at every layer; ``"raw"``: ``coef x at(layer)``.
        """
        coef = finite_real(coef, "coef")
        if coef_mode == "raw":
            return coef * self.at(layer)
        if coef_mode == "norm":
            return coef * self.residual_norm(layer) * self.unit(layer)
        raise ValueError(f"coef_mode must be 'raw' or 'norm', got {coef_mode!r}")

    def residual_norm(self, layer: int) -> float:
        """Typical residual-stream norm at ``layer`` (measured during extraction)."""
        norms = self.meta.get("residual_norm")
        if not norms:
            raise ValueError("this vector carries no residual_norm metadata: use coef_mode='raw'")
        return float(norms[layer])

    # -- arithmetic (as repeng's control vectors): combine traits, scale, compare ----------
    def _compatible(self, other: object) -> PersonaVector:
        if not isinstance(other, PersonaVector):
            raise TypeError(f"can only combine a PersonaVector with another PersonaVector, got {type(other).__name__}")
        if other.vectors.shape != self.vectors.shape or other.meta.get("model_id") != self.meta.get("model_id"):
            raise VectorMismatchError(
                f"cannot combine the {self.trait!r} vector ({self.meta.get('model_id')}, {tuple(self.vectors.shape)}) "
                f"with the {other.trait!r} vector ({other.meta.get('model_id')}, {tuple(other.vectors.shape)}): "
                "both must come from the same model"
            )
        return other

    def _derived(self, vectors: torch.Tensor, trait: str) -> PersonaVector:
        """A new vector with this one's model metadata (residual norms, layers) and a new trait label."""
        return PersonaVector(vectors, {**self.meta, "trait": trait, "method": "arithmetic"})

    def __add__(self, other: PersonaVector) -> PersonaVector:
        other = self._compatible(other)
        return self._derived(self.vectors + other.vectors, f"{self.trait}+{other.trait}")

    def __sub__(self, other: PersonaVector) -> PersonaVector:
        other = self._compatible(other)
        return self._derived(self.vectors - other.vectors, f"{self.trait}-{other.trait}")

    def __mul__(self, factor: float) -> PersonaVector:
        factor = finite_real(factor, "factor")
        return self._derived(factor * self.vectors, f"{factor:g}*{self.trait}")

    __rmul__ = __mul__

    def __neg__(self) -> PersonaVector:
        return self._derived(-self.vectors, f"-{self.trait}")

    def cosine(self, other: PersonaVector, layer: int) -> float:
        """Cosine similarity of the two directions at ``layer`` (1 = same direction)."""
        other = self._compatible(other)
        return float(torch.nn.functional.cosine_similarity(self.at(layer)[None], other.at(layer)[None]).item())

    def to_gguf(self, path: str | Path, layers: int | list[int], coef: float, *, coef_mode: CoefMode = "norm") -> Path:
        """Write this vector as a llama.cpp control vector (see ``personalab.export.to_gguf``)."""
        from personalab.export import to_gguf  # export sits above the vector maths; it only needs the shift

        return to_gguf(self, path, layers, coef, coef_mode=coef_mode)

    # -- compatibility -------------------------------------------------------------------
    def check_model(self, model) -> None:
        """Raise VectorMismatchError unless this vector was made on ``model``'s architecture."""
        from personalab.models import d_model, model_id, n_layers

        want = (n_layers(model), d_model(model))
        have = (self.meta.get("n_layers", self.n_layers), self.meta.get("d_model", self.vectors.shape[1]))
        if want != have:
            raise VectorMismatchError(
                f"the {self.trait!r} vector was made on a model with {have[0]} layers x {have[1]} dims "
                f"({self.meta.get('model_id', 'unknown model')}), but this model has {want[0]} x {want[1]} "
                f"({model_id(model)}): extract a new vector on this model"
            )
        # A fine-tuned copy (personalab.finetune) carries its base model's id: base vectors apply.
        ids = {model_id(model), getattr(model.config, "personalab_base_model", None)}
        if self.meta.get("model_id") and self.meta["model_id"] not in ids:
            raise VectorMismatchError(
                f"the {self.trait!r} vector was made on {self.meta['model_id']!r}, not on {model_id(model)!r}; "
                "same shape, but directions do not transfer between models: extract a new vector"
            )

    # -- storage -------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write ``path.safetensors`` and ``path.json``; returns the stem path.

        Only a ``.safetensors``/``.json`` ending is dropped from ``path``: ``save("sad_coef0.5")``
        and ``save("sad_coef0.8")`` write two different pairs of files.
        """
        path = file_stem(path)
        missing = [k for k in REQUIRED_META if k not in self.meta]
        if missing:
            raise ValueError(f"cannot save: metadata lacks {missing}")
        tmp = path.with_name(path.name + ".tmp.safetensors")
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors = {"vectors": self.vectors.contiguous().float()}
        if self.pair_differences is not None:
            tensors["pair_differences"] = self.pair_differences.contiguous().half()  # a null's raw material
        save_file(tensors, str(tmp))
        atomic_write_bytes(_with(path, ".safetensors"), tmp.read_bytes())
        tmp.unlink()
        atomic_write_json(_with(path, ".json"), self.meta)
        return path

    @classmethod
    def load(cls, path: str | Path, model=None) -> PersonaVector:
        """Read a saved vector; with ``model``, also check it belongs to that model."""
        path = file_stem(path)
        meta = read_json(_with(path, ".json"), "persona-vector metadata")
        tensor_file = _with(path, ".safetensors")
        if not tensor_file.is_file():
            raise FileNotFoundError(f"persona-vector tensor not found: {tensor_file}")
        try:
            tensors = load_file(str(tensor_file))
            vectors = tensors["vectors"]
        except (SafetensorError, KeyError, OSError, json.JSONDecodeError) as err:
            raise ValueError(f"persona-vector file {tensor_file} is corrupt or truncated ({err})") from None
        missing = [k for k in REQUIRED_META if k not in meta]
        if missing:
            raise ValueError(f"persona-vector metadata {_with(path, '.json')} lacks {missing}")
        want = (integer(meta["n_layers"], "metadata n_layers") + 1, integer(meta["d_model"], "metadata d_model"))
        if tuple(vectors.shape) != want:
            raise ValueError(
                f"{tensor_file}: tensor shape {tuple(vectors.shape)} does not match its metadata "
                f"({want[0]} x {want[1]})"
            )
        diffs = tensors.get("pair_differences")
        try:
            vec = cls(vectors, meta, None if diffs is None else diffs.float())
        except (TypeError, ValueError, IndexError) as err:
            raise type(err)(f"persona vector {path}: {err}") from None
        if model is not None:
            vec.check_model(model)
        return vec


def _check_meta(meta: dict, rows: int, width: int) -> None:
    """Metadata that agrees with its tensor (``rows`` = n_layers + 1, ``width`` = d_model): a clear
    error now instead of an IndexError or a NaN steering push later."""
    if not isinstance(meta, dict):
        raise TypeError(f"meta must be a dict, got {type(meta).__name__}")
    for key, want in (("n_layers", rows - 1), ("d_model", width)):
        if key in meta and integer(meta[key], f"meta[{key!r}]") != want:
            raise ValueError(f"meta[{key!r}] is {meta[key]} but the tensor's shape {(rows, width)} says {want}")
    norms = meta.get("residual_norm")
    if norms:
        for i, r in enumerate(finite_reals(norms, rows, "meta['residual_norm']")):
            if r < 0:
                raise ValueError(f"meta['residual_norm'][{i}] is {r}: a norm cannot be negative")
    if "default_layer" in meta:
        layer_index(meta["default_layer"], rows - 1)


def _with(stem: Path, suffix: str) -> Path:
    """``stem`` + ``suffix`` (``with_suffix`` would replace a dot already in the name)."""
    return stem.with_name(stem.name + suffix)


def project(acts: torch.Tensor, direction: torch.Tensor) -> torch.Tensor:
    """Scalar projection of activations ``[..., d]`` on ``direction`` ([d], normalised here)."""
    unit = direction / direction.norm().clamp_min(1e-8)
    return acts.float() @ unit.float()


# -- which layer? --------------------------------------------------------------------------


def layer_diagnostics(pos: torch.Tensor, neg: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-layer quality of the difference vector, from pooled activations [n, L+1, d].

    * ``separation``: (mean projection of h+ minus that of h-) on the unit difference
      vector, over the pooled std of the projections (a Cohen's d per layer);
    * ``neighbour_cos``: cosine between the vectors of layer i and i-1 (NaN at 0);
    * ``norm``: length of the raw difference vector.
    """
    diff = pos.mean(0) - neg.mean(0)  # [L+1, d]
    unit = diff / diff.norm(dim=-1, keepdim=True).clamp_min(1e-8)
    pp = torch.einsum("nld,ld->nl", pos, unit)
    pn = torch.einsum("nld,ld->nl", neg, unit)
    if pos.shape[0] < 2 or neg.shape[0] < 2:  # no spread to compare against
        sep = torch.full((diff.shape[0],), float("nan"))
    else:
        pooled = ((pp.var(0) + pn.var(0)) / 2).sqrt()
        sep = (pp.mean(0) - pn.mean(0)) / pooled.clamp_min(1e-6)
    cos = torch.full((diff.shape[0],), float("nan"))
    cos[1:] = torch.nn.functional.cosine_similarity(diff[1:], diff[:-1], dim=-1)
    return {"separation": sep, "neighbour_cos": cos, "norm": diff.norm(dim=-1)}


def choose_layer(diag: dict[str, torch.Tensor], lo_frac: float = 0.3, hi_frac: float = 0.6) -> int:
    """Default layer: the best-separating layer in the middle of the network.

    Early layers carry token identity and late layers prepare the next token; the
    paper and our steering sweeps (chapter 3: on SmolLM2-135M, steering at layers
    ~20-24 of 30 collapsed into repetition sooner than at 12-16) find middle layers
    most useful, so the search is restricted to ``[lo_frac, hi_frac]`` of the depth.
    """
    sep = diag["separation"]
    n = sep.shape[0] - 1
    lo, hi = max(1, round(lo_frac * n)), max(1, round(hi_frac * n))
    if torch.isnan(sep[lo : hi + 1]).all():
        return (lo + hi) // 2  # too few answers to measure separation: the middle of the range
    return int(lo + torch.argmax(sep[lo : hi + 1].nan_to_num(-float("inf"))).item())


def decode_direction(model, direction: torch.Tensor, k: int = 10) -> dict[str, list[str]]:
    """Tokens a direction promotes and suppresses, read through the unembedding.

    Multiplies by the final norm's gain and the unembedding matrix (the logit lens
    applied to a direction rather than to an activation).
    """
    hf = model._module
    k = positive_int(k, "k")
    if direction.shape != (hf.lm_head.weight.shape[1],):
        raise ValueError(
            f"direction must be one vector [d_model={hf.lm_head.weight.shape[1]}], got shape "
            f"{tuple(direction.shape)}: pass vector.at(layer)"
        )
    k = min(k, hf.lm_head.weight.shape[0])
    gain = getattr(hf.model.norm, "weight", None)
    d = direction.float() * (gain.detach().float() if gain is not None else 1.0)
    logits = hf.lm_head.weight.detach().float() @ d  # [vocab]
    tok = model.tokenizer
    top = torch.topk(logits, k).indices.tolist()
    bottom = torch.topk(-logits, k).indices.tolist()
    return {"promotes": [tok.decode([i]) for i in top], "suppresses": [tok.decode([i]) for i in bottom]}


def half_swap_signs(n_pairs: int, n: int, *, seed: int = 0) -> torch.Tensor:
    """``[n, n_pairs]`` label swaps for a label-shuffled null: each row is +1 with -1 on a random
    ``n_pairs // 2`` of its entries (the pairs whose p+/p- labels are swapped).

    Exactly half, not each pair by a coin flip: a projection or a push uses only a
    direction, and with coin flips the trait part shared by every pair survives in the mean
    whenever the swaps do not balance (``PersonaVector.shuffled_units``).
    """
    n_pairs, n = positive_int(n_pairs, "n_pairs"), positive_int(n, "n")
    gen = torch.Generator().manual_seed(random_seed(seed))
    signs = torch.ones(n, n_pairs, dtype=torch.float64)
    for row in signs:
        row[torch.randperm(n_pairs, generator=gen)[: n_pairs // 2]] = -1.0
    return signs


def random_directions_like(vector: PersonaVector, n: int, *, seed: int = 0) -> list[PersonaVector]:
    """``n`` random directions with ``vector``'s per-layer norms and metadata: a null baseline.

    Steering, monitoring or filtering with these shows what *any* direction of the same
    size does; a persona vector earns credit only for what it does beyond them.
    """
    n = positive_int(n, "n")
    seed = random_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    norms = vector.vectors.norm(dim=-1, keepdim=True)  # [L+1, 1]
    out = []
    for k in range(n):
        r = torch.randn(tuple(vector.vectors.shape), generator=gen)
        out.append(
            PersonaVector(
                r / r.norm(dim=-1, keepdim=True) * norms,
                {**vector.meta, "trait": f"random-{k}", "method": f"random/seed{seed}"},
            )
        )
    return out


def cosine_matrix(vectors: list[PersonaVector], layer: int) -> torch.Tensor:
    """Cosine similarity between several traits' directions at one layer ([n, n])."""
    if not vectors:
        raise ValueError("cosine_matrix() got no vectors: pass a list of PersonaVectors")
    units = torch.stack([v.unit(layer) for v in vectors])
    return units @ units.T


# -- how much to trust a vector ------------------------------------------------------------


MIN_SPLIT_PAIRS = 4  # kept pairs a split-half check needs: two disjoint halves of at least 2 pairs


def _pair_differences(pos: torch.Tensor, neg: torch.Tensor, layer: int) -> torch.Tensor:
    """Per-pair h+ - h- at ``layer`` from paired activations ``[n, L+1, d]`` (row k = pair k): ``[n, d]``."""
    if pos.shape != neg.shape or pos.dim() != 3:
        raise ValueError(
            f"need paired activations of one shape [n, L+1, d], got {tuple(pos.shape)} and {tuple(neg.shape)}"
        )
    layer = layer_index(layer, pos.shape[1] - 1)
    if pos.shape[0] < MIN_SPLIT_PAIRS:
        raise ValueError(f"need at least {MIN_SPLIT_PAIRS} pairs to split in halves, got {pos.shape[0]}")
    return (pos[:, layer] - neg[:, layer]).double()


def _group_members(groups: Sequence[Hashable] | None, n: int) -> list[torch.Tensor]:
    """The rows of each group, groups in first-seen order; every row its own group for None."""
    if groups is None:
        return [torch.tensor([i]) for i in range(n)]
    labels = list(groups)
    if len(labels) != n:
        raise ValueError(f"groups must give one label per pair: {len(labels)} labels for {n} pairs")
    members: dict[Hashable, list[int]] = {}
    for i, g in enumerate(labels):
        members.setdefault(g, []).append(i)
    return [torch.tensor(rows) for rows in members.values()]


def split_half_cosine(
    pos: torch.Tensor,
    neg: torch.Tensor,
    layer: int,
    *,
    pairs_per_half: int | None = None,
    groups: Sequence[Hashable] | None = None,
    n_splits: int = 200,
    seed: int = 0,
) -> list[float]:
    """How stable is the vector? Cosine between vectors from two disjoint random halves of the pairs.

    ``pos``/``neg`` are paired activations ``[n, L+1, d]``. Each split draws two disjoint
    sets of ``pairs_per_half`` pairs (default: half of them), builds the mean difference
    from each, and compares the two at ``layer``. Near 1: more pairs would not change the
    direction; well below 1: the vector still depends on which pairs went in.
    ``groups`` (one label per pair, e.g. its prompt) makes each half of whole groups and
    ``pairs_per_half`` count groups: two sampled answers to one prompt in both halves would
    make the halves agree more than two sets of new prompts would. Without repeated labels
    the draws are the ungrouped ones.
    """
    diff = _pair_differences(pos, neg, layer)
    n_splits = positive_int(n_splits, "n_splits")
    members = _group_members(groups, diff.shape[0])
    g = len(members)
    m = pairs_per_half or g // 2
    unit = "pairs" if g == diff.shape[0] else "groups"
    if not 1 <= m <= g // 2:
        raise ValueError(f"pairs_per_half must be 1..{g // 2} for {g} {unit}, got {m}")
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n_splits):
        perm = torch.randperm(g, generator=gen)
        if g == diff.shape[0]:  # every pair its own group
            a, b = diff[perm[:m]].mean(0), diff[perm[m : 2 * m]].mean(0)
        else:
            a = diff[torch.cat([members[i] for i in perm[:m]])].mean(0)
            b = diff[torch.cat([members[i] for i in perm[m : 2 * m]])].mean(0)
        out.append(float(torch.nn.functional.cosine_similarity(a, b, dim=0)))
    return out


def stability_curve(
    pos: torch.Tensor,
    neg: torch.Tensor,
    layer: int,
    *,
    groups: Sequence[Hashable] | None = None,
    n_splits: int = 200,
    seed: int = 0,
) -> dict[str, float]:
    """How fast does the direction settle as pairs are added? ``{"m": mean split-half cosine}``
    for every ``m`` = 1 .. n // 2 pairs per half (``split_half_cosine``, ``n_splits`` splits each);
    with ``groups``, ``m`` counts groups (prompts) per half.

    Keys are strings so the curve survives a JSON round trip in a vector's metadata unchanged.
    A curve still rising at its last point says more pairs would still move the vector.
    """
    n = _pair_differences(pos, neg, layer).shape[0]  # validates: paired, at least MIN_SPLIT_PAIRS
    g = len(_group_members(groups, n))
    curve = {}
    for m in range(1, g // 2 + 1):
        cos = split_half_cosine(pos, neg, layer, pairs_per_half=m, groups=groups, n_splits=n_splits, seed=seed)
        curve[str(m)] = sum(cos) / len(cos)
    return curve


def _heldout_d(diff_build: torch.Tensor, pos_test: torch.Tensor, neg_test: torch.Tensor) -> float:
    """Cohen's d of held-out h+ vs h- projected on the unit mean of ``diff_build``."""
    unit = diff_build.mean(0)
    unit = unit / unit.norm().clamp_min(1e-12)
    a, b = pos_test @ unit, neg_test @ unit
    pooled = ((a.var() + b.var()) / 2).sqrt()
    return float((a.mean() - b.mean()) / pooled) if pooled > 0 else float("nan")


MIN_HELDOUT_PAIRS = 8


def heldout_separation(
    pos: torch.Tensor,
    neg: torch.Tensor,
    layer: int,
    *,
    groups: Sequence[Hashable] | None = None,
    n_splits: int = 50,
    n_shuffles: int = 200,
    n_boot: int = 200,
    seed: int = 0,
) -> dict:
    """Does the direction separate *new* answers better than a label-shuffled vector does?

    Each split builds the vector from a random half of the pairs and measures the
    separation (Cohen's d of projections, h+ vs h-) on the other half; ``value`` is the
    mean over splits. The null: the same with the p+/p- labels of a random half of the
    build half's pairs swapped (same answers, labels permuted; exactly half, as in
    ``half_swap_signs``, so the trait part every pair shares cancels instead of
    surviving wherever coin-flip swaps do not balance), ``n_shuffles`` times. The
    interval is a bootstrap over pairs that keeps each drawn pair once (a pair on both sides
    of a split would leak), so it is wider than a plain bootstrap's: a conservative interval.
    ``groups`` (one label per pair) keeps pairs with the same label on one side of every
    split, and the interval resamples whole groups: two sampled answers to one prompt
    (extraction's sampled rounds) are never one in the build half and one in the test half.
    With no label repeated (or None) every pair is its own group: the splits, swaps and
    bootstrap draws are then the ungrouped ones, draw for draw (a test holds the two equal).
    Returns ``stats.null_summary``'s dict plus ``n_pairs`` (and ``n_groups`` when grouped).
    """
    from personalab.stats import grouped_bootstrap_ci, null_summary

    _pair_differences(pos, neg, layer)  # validates the shapes
    if pos.shape[0] < MIN_HELDOUT_PAIRS:
        raise ValueError(
            f"a held-out separation needs at least {MIN_HELDOUT_PAIRS} pairs (4 to build, 4 to test), "
            f"got {pos.shape[0]}: generate more pairs (e.g. instructions_per_question=5)"
        )
    n_splits, n_shuffles = positive_int(n_splits, "n_splits"), positive_int(n_shuffles, "n_shuffles")
    P, N = pos[:, layer].double(), neg[:, layer].double()
    n = P.shape[0]
    labels = list(range(n)) if groups is None else list(groups)  # by default every pair is its own group
    if len(labels) != n:
        raise ValueError(f"groups must give one label per pair: {len(labels)} labels for {n} pairs")
    index = {g: i for i, g in enumerate(dict.fromkeys(labels))}
    gid = torch.tensor([index[g] for g in labels])

    def mean_d(rows: list[int], shuffle: int | None = None) -> float:
        """Mean held-out d over ``n_splits`` random halves of the groups among the distinct
        pairs in ``rows``; with ``shuffle`` = s, null draw s: half of each build half's labels swapped."""
        idx = torch.tensor(sorted(set(rows)))
        distinct, local = gid[idx].unique(return_inverse=True)
        if len(idx) < MIN_HELDOUT_PAIRS or len(distinct) < 4:  # too little to split into two scorable halves
            return float("nan")
        diff = P[idx] - N[idx]
        split_gen = torch.Generator().manual_seed(seed + 1)  # the same splits for the vector and its nulls
        # the swaps of draw s: the same stream as half_swap_signs(seed=seed + 2 + s), one build half a split
        swap_gen = None if shuffle is None else torch.Generator().manual_seed(random_seed(seed + 2 + shuffle))
        g, half, ds = len(distinct), len(distinct) // 2, []
        steps, rank = torch.arange(g), torch.empty_like(distinct)
        for _ in range(n_splits):
            perm = torch.randperm(g, generator=split_gen)  # an order of the groups; the first half builds
            if g == len(idx):  # every pair its own group: the order is the pairs' order
                order, n_build = perm, half
            else:
                rank[perm] = steps
                order = torch.argsort(rank[local], stable=True)  # pairs in their group's drawn order
                n_build = int((rank[local] < half).sum())
            build, test = order[:n_build], order[n_build:]
            built = diff[build]
            if swap_gen is not None:
                signs = torch.ones(n_build, dtype=torch.float64)
                signs[torch.randperm(n_build, generator=swap_gen)[: n_build // 2]] = -1.0
                built = built * signs[:, None]
            ds.append(_heldout_d(built, P[idx[test]], N[idx[test]]))
        finite = [d for d in ds if d == d]
        return sum(finite) / len(finite) if finite else float("nan")

    every = list(range(n))
    ci = grouped_bootstrap_ci(mean_d, labels, n_boot=n_boot, seed=seed)
    out = null_summary(mean_d(every), [mean_d(every, s) for s in range(n_shuffles)], ci)
    return {**out, "n_pairs": n} | ({"n_groups": len(index)} if len(index) < n else {})


def difference_null(
    differences: torch.Tensor, direction: torch.Tensor, *, n_random: int = 200, n_boot: int = 1000, seed: int = 0
) -> dict:
    """Is a mean projection difference on the persona vector larger than on a random direction?

    ``differences`` is ``[n, d]``: per sample, one activation minus its pair at one layer
    (``datafilter.activation_differences(...)[layer]``: data answer minus the model's own;
    chapter 8: watched minus unwatched context). Activations that differ in *any* way
    move along many directions, so the size of the mean projection difference means
    something only next to the same number on ``n_random`` random unit directions.
    Compares magnitudes (``value`` = |mean projection difference| on the unit persona
    vector; its interval a bootstrap over samples); ``mean`` keeps the sign. Returns
    ``stats.null_summary``'s dict plus ``mean``.
    """
    from personalab.stats import bootstrap_ci, null_summary

    acts = torch.as_tensor(differences).detach().double()
    if acts.dim() != 2 or acts.shape[0] < 2:
        raise ValueError(f"differences must be [n >= 2, d] (activation_differences()[layer]), got {tuple(acts.shape)}")
    if not bool(torch.isfinite(acts).all()):
        raise ValueError("differences hold NaN or infinite values")
    direction = vectors_of_one_width({"direction": direction}, "argument", width=acts.shape[1], nonzero=True)[
        "direction"
    ]
    n_random = positive_int(n_random, "n_random")
    gen = torch.Generator().manual_seed(seed)
    rand = torch.randn(n_random, acts.shape[1], generator=gen, dtype=torch.float64)
    units = torch.cat([(direction.double() / direction.double().norm())[None], rand / rand.norm(dim=1, keepdim=True)])
    proj = acts.double() @ units.T  # [n, 1 + R]; column 0 = the persona vector
    means = proj.mean(0)
    ci = bootstrap_ci(lambda draw: abs(float(proj[draw, 0].mean())), acts.shape[0], n_boot=n_boot, seed=seed)
    return {**null_summary(abs(float(means[0])), means[1:].abs(), ci), "mean": float(means[0])}
