"""Steering: add (or subtract) a persona vector to the residual stream while the model runs.

``steer(model, vector, layers, coef)`` returns a context manager; inside it, every
personalab generation or trace on ``model`` (``generate``, ``ask``, ``logprobs``,
``capability_score``, ``Monitor``...) runs with ``coef x direction`` added to the
output of the chosen block(s), at every generation step, through nnsight
interventions. Negative ``coef`` suppresses the trait.

``coef_mode``:
  * ``"raw"``: add ``coef * v`` where ``v`` is the raw mean-difference vector at the layer;
  * ``"norm"``: add ``coef * r * v/|v|`` where ``r`` is the layer's typical residual norm
    (measured during extraction). Raw difference norms vary ~30x across layers, so
    "norm" makes one coefficient mean the same push everywhere.

``positions``:
  * ``"all"``: every position, prompt and answer;
  * ``"prompt"``: prompt positions only (the prefill step);
  * ``"response"``: the last prompt position at prefill, then every new token (as the
    paper's code does).

Steering only when needed (same ``with`` use, same generation paths):
  * ``cap(model, vector, layer, max_projection)``: activation capping; at every position,
    ``h <- h - relu(h·u - max_projection) u`` (``u`` the unit vector), so only positions
    that go further toward the trait than the cap are pulled back to it;
    ``typical_max_projection`` reads a cap off the model's own answers;
  * ``steer_when(model, vector, layer, coef, threshold=...)``: the push ``steer`` adds,
    only at the positions (per generation step) where a monitor's projection, on
    ``condition`` at ``condition_layer`` (defaults: the same vector and layer), exceeds
    ``threshold``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from personalab._io import stable_hash
from personalab.models import check_layer, layer_output
from personalab.options import CoefMode, Positions
from personalab.prompting import active_interventions
from personalab.validate import finite_real, integer, real_number, text_list
from personalab.vectors import PersonaVector, random_directions_like

POSITIONS = ("all", "prompt", "response")


def _layer_tuple(layers: object) -> tuple[int, ...]:
    """One layer (any integral type) or an iterable of layers, as a tuple of ints."""
    try:
        return (integer(layers, "layer"),)
    except TypeError:
        if isinstance(layers, (str, bytes)) or not isinstance(layers, Iterable):
            raise TypeError(f"layers must be a layer number or a list of them, got {layers!r}") from None
        return tuple(integer(x, "layer") for x in layers)


COEF_MODES = ("raw", "norm")


def _check_push(layer: int, delta: torch.Tensor) -> None:
    """Refuse a steering push the model cannot survive: NaN/inf, or so large that the model's
    float32 norms overflow (its square sum is inf) and every answer would come back empty."""
    if not torch.isfinite(delta).all():
        raise ValueError(
            f"the steering vector at layer {layer} is not finite (norm {delta.norm().item()}): "
            "check the vector and its residual_norm metadata"
        )
    if not torch.isfinite(delta.float().pow(2).sum()):
        raise ValueError(
            f"the steering push at layer {layer} is too large (norm {delta.double().norm().item():.3g}): "
            "the model's float32 norms would overflow to NaN and every answer would be empty; "
            "lower coef (the book's sweeps use norm-mode coefficients of 0.1-0.8)"
        )


def _questions(questions, trait) -> list[str]:
    """``questions`` as a list of strings (never a bare string), else the trait's evaluation questions."""
    return text_list(questions, "questions") if questions is not None else list(trait.evaluation_questions)


class Steering:
    """Adds ``coef x direction`` at ``layers`` (see the module docstring). Use via ``steer``."""

    def __init__(
        self,
        model,
        vector: PersonaVector,
        layers: int | Iterable[int],
        coef: float,
        positions: Positions = "all",
        coef_mode: CoefMode = "norm",
    ):
        vector.check_model(model)
        if positions not in POSITIONS:
            raise ValueError(f"positions must be one of {POSITIONS}, got {positions!r}")
        if coef_mode not in COEF_MODES:
            raise ValueError(f"coef_mode must be one of {COEF_MODES}, got {coef_mode!r}")
        coef = finite_real(coef, "coef")
        layers = _layer_tuple(layers)
        if not layers:
            raise ValueError("steer() needs at least one layer")
        self.layers = tuple(check_layer(model, layer, allow_embeddings=False) for layer in layers)
        self.model, self.vector, self.coef = model, vector, coef
        self.positions, self.coef_mode = positions, coef_mode
        self.deltas = {layer: self.delta(layer) for layer in self.layers}
        for layer, d in self.deltas.items():
            _check_push(layer, d)

    @property
    def prefix(self) -> str:
        """How it acts on a shared prompt prefix (``prompting.Intervention``): every prompt
        position is pushed, except with ``positions="response"`` (only the last one)."""
        return "skip" if self.positions == "response" else "apply"

    def delta(self, layer: int) -> torch.Tensor:
        """The vector added at ``layer`` ([d_model])."""
        return self.vector.shift(layer, self.coef, self.coef_mode)

    def cache_key(self) -> object:
        return [
            "steer",
            stable_hash(self.vector.vectors.tolist()),
            self.layers,
            self.coef,
            self.positions,
            self.coef_mode,
        ]

    def on_layer(self, model, layer: int, step: int) -> None:
        out = layer_output(model, layer)
        d = self.deltas[layer].to(dtype=out.dtype, device=out.device)
        if self.positions == "all" or (self.positions == "prompt" and step == 0):
            out[:] += d
        elif self.positions == "response":
            if step == 0:
                out[:, -1] += d
            else:
                out[:] += d

    def __enter__(self) -> Steering:
        active_interventions(self.model).insert(0, self)
        return self

    def __exit__(self, *exc) -> None:
        active_interventions(self.model).remove(self)

    def __repr__(self) -> str:
        return (
            f"Steering({self.vector.trait!r}, layers={self.layers}, coef={self.coef}, "
            f"mode={self.coef_mode!r}, positions={self.positions!r})"
        )


def steer(
    model,
    vector: PersonaVector,
    layers: int | Iterable[int],
    coef: float,
    *,
    positions: Positions = "all",
    coef_mode: CoefMode = "norm",
) -> Steering:
    """Steer ``model`` with ``vector`` inside a ``with`` block (see the module docstring)."""
    return Steering(model, vector, layers, coef, positions, coef_mode)


# -- steering only when needed: capping and monitor-triggered steering ------------------------


def _direction(model, vector: object, layer: int, what: str) -> torch.Tensor:
    """``vector``'s unit direction at ``layer`` as float32 [d], after checking it belongs to
    ``model`` and has a direction there (a zero vector would silently do nothing)."""
    if not isinstance(vector, PersonaVector):
        raise TypeError(f"{what} must be a PersonaVector, got {vector!r:.60} ({type(vector).__name__})")
    vector.check_model(model)
    v = vector.at(layer)
    if not bool(torch.isfinite(v).all()):
        raise ValueError(f"the {what} at layer {layer} holds NaN or infinite values")
    if float(v.norm()) == 0.0:
        raise ValueError(f"the {what} is all zeros at layer {layer}: it has no direction")
    return vector.unit(layer).float()


def _projection(h: torch.Tensor, unit: torch.Tensor) -> torch.Tensor:
    """Projection of the residual stream ``h`` [batch, pos, d] on ``unit`` [d], in float32:
    [batch, pos]. An elementwise product and a sum, so bfloat16 autocast leaves it float32."""
    return (h.float() * unit.to(device=h.device)).sum(-1)


class Capping:
    """Caps the projection of the residual stream on ``vector``'s direction ``u`` (unit) at
    ``layer``: ``h <- h - relu(h·u - max_projection) u`` at every position and every
    generation step. A position at or below the cap is left exactly as it was; one above
    it loses only the excess along ``u``. Use via ``cap``."""

    prefix = "apply"  # position by position, the same at every prompt position (prompting.Intervention)

    def __init__(self, model, vector: PersonaVector, layer: int, max_projection: float):
        self.layer = check_layer(model, layer, allow_embeddings=False)
        self.unit = _direction(model, vector, self.layer, "vector")
        self.layers: tuple[int, ...] = (self.layer,)
        self.max_projection = finite_real(max_projection, "max_projection")
        self.model, self.vector = model, vector

    def cache_key(self) -> object:
        return ["cap", stable_hash(self.unit.tolist()), self.layer, self.max_projection]

    def on_layer(self, model, layer: int, step: int) -> None:
        out = layer_output(model, layer)
        u = self.unit.to(device=out.device)
        excess = torch.relu(_projection(out, u) - self.max_projection)  # [batch, pos], 0 where under the cap
        out[:] -= (excess[..., None] * u).to(out.dtype)

    def __enter__(self) -> Capping:
        active_interventions(self.model).insert(0, self)
        return self

    def __exit__(self, *exc) -> None:
        active_interventions(self.model).remove(self)

    def __repr__(self) -> str:
        return f"Capping({self.vector.trait!r}, layer={self.layer}, max_projection={self.max_projection})"


def cap(model, vector: PersonaVector, layer: int, max_projection: float) -> Capping:
    """Cap the projection on ``vector`` at ``layer`` to ``max_projection`` inside a ``with`` block.

    Where ``steer`` pushes every position by the same amount, capping acts only on
    positions that already go further toward the trait than ``max_projection`` (in
    the residual stream's own units, as ``vectors.project`` and ``Monitor`` measure):
    ordinary behaviour passes untouched. ``typical_max_projection`` picks a cap from
    the model's own answers. To keep a projection from falling *below* a floor ``m``,
    cap ``-vector`` at ``-m``.
    """
    return Capping(model, vector, layer, max_projection)


def typical_max_projection(
    model,
    vector: PersonaVector,
    layer: int,
    questions: Sequence[str],
    *,
    system: str | None = None,
    percentile: float = 99.0,
    max_new_tokens: int = 48,
) -> float:
    """A cap for ``cap``: the ``percentile``-th percentile of the projections on ``vector`` at
    ``layer`` over the answer tokens of the model's greedy answers to ``questions`` under
    ``system``. Capping there leaves about ``100 - percentile`` % of ordinary answer tokens
    touched. Prompt positions are left out: the cap should describe the positions the
    model writes, and the first token of every prompt is the attention sink, whose residual
    stream is orders of magnitude larger than the rest, so its projection can land far
    outside the answer tokens' range on either side (chapter 4 prints where it lands). The answers are generated under whatever steering is active: call it outside
    ``with`` blocks to measure the model's own behaviour."""
    from personalab.activations import residual_stream
    from personalab.prompting import ask, chat_prompt

    questions = text_list(questions, "questions")
    layer = check_layer(model, layer, allow_embeddings=False)
    unit = _direction(model, vector, layer, "vector")
    percentile = finite_real(percentile, "percentile")
    if not 0 <= percentile <= 100:
        raise ValueError(f"percentile must be between 0 and 100, got {percentile}")
    answers = ask(model, questions, system, max_new_tokens=max_new_tokens, progress=False)
    parts = []
    for q, a in zip(questions, answers, strict=True):
        prompt = chat_prompt(model.tokenizer, q, system)
        n_prompt = len(model.tokenizer(prompt)["input_ids"])
        # one text per trace: no padding positions to leave out
        proj = _projection(residual_stream(model, [prompt + a], upto=layer)[:, layer], unit)[0]
        parts.append(proj[n_prompt:])
    proj = torch.cat(parts)
    if proj.numel() == 0:
        raise ValueError("the model's answers were all empty: no answer tokens to take a cap from")
    return float(torch.quantile(proj.double(), percentile / 100))


class ConditionalSteering:
    """Adds ``coef x direction`` at ``layer`` only at the positions whose residual stream at
    ``condition_layer`` projects on the ``condition`` direction (unit) above ``threshold``.
    Use via ``steer_when``."""

    prefix = "apply"  # position by position, the same at every prompt position (prompting.Intervention)

    def __init__(
        self,
        model,
        vector: PersonaVector,
        layer: int,
        coef: float,
        threshold: float,
        condition: PersonaVector | None = None,
        condition_layer: int | None = None,
        coef_mode: CoefMode = "norm",
    ):
        vector.check_model(model)
        if coef_mode not in COEF_MODES:
            raise ValueError(f"coef_mode must be one of {COEF_MODES}, got {coef_mode!r}")
        self.layer = check_layer(model, layer, allow_embeddings=False)
        self.condition_layer = (
            self.layer if condition_layer is None else check_layer(model, integer(condition_layer, "condition_layer"))
        )
        if self.condition_layer > self.layer:
            raise ValueError(
                f"condition_layer {self.condition_layer} comes after layer {self.layer}: the condition is "
                "read in the same forward step, before the push, so it must be at or before the steered layer"
            )
        self.condition = vector if condition is None else condition
        self.gate = _direction(model, self.condition, self.condition_layer, "condition vector")
        self.coef, self.coef_mode = finite_real(coef, "coef"), coef_mode
        self.threshold = real_number(threshold, "threshold")  # +-inf allowed: never / always steer
        self.delta = vector.shift(self.layer, self.coef, coef_mode)  # [d], as steer() adds it
        _check_push(self.layer, self.delta)
        self.model, self.vector = model, vector
        self.layers: tuple[int, ...] = tuple(sorted({self.condition_layer, self.layer}))
        self.mask: torch.Tensor | None = None  # [batch, pos] of the current step: where to push

    def cache_key(self) -> object:
        return [
            "steer-when",
            stable_hash(self.delta.tolist()),
            self.layer,
            self.coef,
            self.coef_mode,
            stable_hash(self.gate.tolist()),
            self.condition_layer,
            self.threshold,
        ]

    def on_layer(self, model, layer: int, step: int) -> None:
        out = layer_output(model, layer)
        if layer == self.condition_layer:  # read before the push (same layer) or at an earlier one
            self.mask = _projection(out, self.gate) > self.threshold
        if layer == self.layer:
            if self.mask is None:
                raise RuntimeError("steer_when: the condition layer was not read before the steered layer")
            d = self.delta.to(dtype=out.dtype, device=out.device)
            out[:] = torch.where(self.mask[..., None], out + d, out)
            self.mask = None

    def __enter__(self) -> ConditionalSteering:
        active_interventions(self.model).insert(0, self)
        return self

    def __exit__(self, *exc) -> None:
        active_interventions(self.model).remove(self)

    def __repr__(self) -> str:
        return (
            f"ConditionalSteering({self.vector.trait!r}, layer={self.layer}, coef={self.coef}, "
            f"mode={self.coef_mode!r}, when {self.condition.trait!r} at layer {self.condition_layer} "
            f"> {self.threshold})"
        )


def steer_when(
    model,
    vector: PersonaVector,
    layer: int,
    coef: float,
    *,
    threshold: float,
    condition: PersonaVector | None = None,
    condition_layer: int | None = None,
    coef_mode: CoefMode = "norm",
) -> ConditionalSteering:
    """Steer with ``vector`` only where a monitor says so, inside a ``with`` block.

    At every generation step and every position, the residual stream at
    ``condition_layer`` (default ``layer``) is projected on the unit ``condition``
    vector (default ``vector`` itself) there; where the projection exceeds
    ``threshold``, ``coef x direction`` is added at ``layer`` (the push ``steer``
    adds, same ``coef_mode``), elsewhere nothing. The prompt pass gates each prompt
    position on its own projection; each later step gates the new token. The
    projection is read before the push (``condition_layer`` must not come after
    ``layer``), on the residual stream as earlier interventions left it.
    ``threshold=math.inf`` never steers; ``-math.inf`` always does (= ``steer``).
    A negative ``coef`` with ``condition=vector`` pulls back only the positions that
    drift toward the trait.
    """
    return ConditionalSteering(model, vector, layer, coef, threshold, condition, condition_layer, coef_mode)


# -- sweeps: what steering buys and what it costs ---------------------------------------------


def steered_answers(
    model,
    vector: PersonaVector,
    questions: list[str],
    layer: int,
    coef: float,
    *,
    system: str | None = None,
    max_new_tokens: int = 48,
    positions: Positions = "all",
    coef_mode: CoefMode = "norm",
) -> list[str]:
    """Greedy answers to ``questions`` under ``system`` while steering at one layer."""
    from personalab.prompting import ask

    layer = check_layer(model, integer(layer, "layer"), allow_embeddings=False)
    if finite_real(coef, "coef") == 0:  # checked first: a bad layer is refused even at coefficient 0
        return ask(model, questions, system, max_new_tokens=max_new_tokens, progress=False)
    with steer(model, vector, layer, coef, positions=positions, coef_mode=coef_mode):
        return ask(model, questions, system, max_new_tokens=max_new_tokens, progress=False)


class RowSteering:
    """Steering that differs per prompt: row ``i`` adds ``vector_i.shift(layer_i, coef_i)`` at its layer.

    ``specs[i]`` is ``(vector, layer, coef)`` or None (row ``i`` unsteered). Passed to
    ``generate(..., interventions=[...])``, which asks it for each batch's rows
    (``select``), so one batched generation answers every point of a sweep — or a
    persona vector and its random-direction controls — at once. Every position of a
    steered row is shifted, at every step (``positions="all"``).
    """

    def __init__(self, model, specs: Sequence[tuple[PersonaVector, int, float] | None], coef_mode: CoefMode = "norm"):
        self.model, self.coef_mode = model, coef_mode
        self.specs = [
            None
            if sp is None or sp[2] == 0
            else (sp[0], check_layer(model, sp[1], allow_embeddings=False), float(sp[2]))
            for sp in specs
        ]
        for vec in {id(sp[0]): sp[0] for sp in self.specs if sp is not None}.values():
            vec.check_model(model)
        self.layers = tuple(sorted({sp[1] for sp in self.specs if sp is not None}))
        d = next((sp[0].vectors.shape[1] for sp in self.specs if sp is not None), 0)
        self.deltas = {layer: torch.zeros(len(self.specs), d) for layer in self.layers}  # [rows, d] per layer
        for i, sp in enumerate(self.specs):
            if sp is not None:
                self.deltas[sp[1]][i] = sp[0].shift(sp[1], sp[2], coef_mode)
                _check_push(sp[1], self.deltas[sp[1]][i])

    prefix = "apply"  # every position of a row (prompting.Intervention), rows apart by prefix_key

    def select(self, rows: Sequence[int]) -> RowSteering:
        """The same steering for a batch made of ``rows`` (indices into ``specs``)."""
        return RowSteering(self.model, [self.specs[i] for i in rows], self.coef_mode)

    def prefix_key(self, row: int) -> object:
        """Rows share a prompt prefix only where they are steered alike (``prompting.shared_prefix_length``)."""
        sp = self.specs[row]
        return None if sp is None else (id(sp[0]), sp[1], sp[2])

    def cache_key(self) -> object:
        return ["row-steer", self.coef_mode, {layer: stable_hash(d.tolist()) for layer, d in self.deltas.items()}]

    def on_layer(self, model, layer: int, step: int) -> None:
        out = layer_output(model, layer)
        out[:] += self.deltas[layer].to(dtype=out.dtype, device=out.device)[:, None, :]


def steered_answers_many(
    model,
    specs: dict[str, tuple[PersonaVector, int, float] | None],
    questions: list[str],
    *,
    system: str | None = None,
    max_new_tokens: int = 48,
    coef_mode: CoefMode = "norm",
) -> dict[str, list[str]]:
    """``steered_answers`` for several steerings at once: ``specs`` names each one's
    ``(vector, layer, coef)`` (None: unsteered); returns the greedy answers to ``questions``
    under each name. One batched generation (``RowSteering``) instead of one per steering:
    a side-by-side table of a few single answers costs a batch, not a generation each."""
    from personalab.prompting import chat_prompt, generate

    if not isinstance(specs, dict) or not specs:
        raise TypeError("specs must be a non-empty dict: name -> (vector, layer, coef) or None")
    questions = text_list(questions, "questions")
    names = list(specs)
    rows = [specs[name] for name in names for _ in questions]
    prompts = [chat_prompt(model.tokenizer, q, system) for q in questions] * len(names)
    answers = generate(
        model,
        prompts,
        max_new_tokens=max_new_tokens,
        interventions=[RowSteering(model, rows, coef_mode)],
        progress=False,
    )
    n = len(questions)
    return {name: answers[k * n : (k + 1) * n] for k, name in enumerate(names)}


def sweep(
    model,
    trait,
    vector: PersonaVector,
    judge,
    *,
    layers: Iterable[int],
    coefs: Iterable[float],
    questions: list[str] | None = None,
    system: str | None = None,
    capability: bool = False,
    max_new_tokens: int = 48,
    coef_mode: CoefMode = "norm",
    progress: bool = True,
) -> list[dict]:
    """Layer x coefficient grid: judged trait, coherence, repetition (and capability) per point.

    Every row: ``{layer, coef, trait, trait_ci, coherence, coherence_ci, repetition,
    capability, answers}``; trait/coherence are means over ``questions`` (the trait's
    evaluation questions by default) with 95 % bootstrap intervals over them, repetition
    is the mean share of repeated word 3-grams, capability the accuracy on the capability
    items under the same steering (None unless asked).
    All points are answered in one batched generation (``RowSteering``) and judged in
    one call; coefficient 0 is the same model at every layer, so it is answered once.
    ``sweep_many`` does the same for several traits with one generation.
    """
    job = SweepJob(trait, vector, layers, questions)
    return sweep_many(
        model,
        [job],
        judge,
        coefs=coefs,
        system=system,
        capability=capability,
        max_new_tokens=max_new_tokens,
        coef_mode=coef_mode,
        progress=progress,
    )[0]


@dataclass(frozen=True)
class SweepJob:
    """One trait's part of ``sweep_many``: its vector, the layers to steer, its questions
    (None: the trait's evaluation questions) and its system prompt (None: ``sweep_many``'s
    ``system``), e.g. each trait's own eliciting prompt for a suppression sweep."""

    trait: Any
    vector: PersonaVector
    layers: Iterable[int]
    questions: list[str] | None = None
    system: str | None = None


def sweep_many(
    model,
    jobs: Sequence[SweepJob],
    judge,
    *,
    coefs: Iterable[float],
    system: str | None = None,
    capability: bool = False,
    max_new_tokens: int = 48,
    coef_mode: CoefMode = "norm",
    progress: bool = True,
) -> list[list[dict]]:
    """``sweep`` for several traits at once: one list of rows per job, in order.

    Every job's points go to one ``generate`` call (``RowSteering`` gives each row its own
    vector, layer and coefficient), so a few traits of a few points each fill batches that
    one trait alone would leave small; each trait is then judged, and checked for
    capability, as ``sweep`` does. With one job this is ``sweep``'s very generation.
    """
    from tqdm.auto import tqdm

    from personalab.capability import capability_score
    from personalab.judges import repetition_rate
    from personalab.prompting import chat_prompt, generate

    jobs = list(jobs)
    if not jobs or not all(isinstance(j, SweepJob) for j in jobs):
        raise TypeError("jobs must be a non-empty list of SweepJob(trait, vector, layers, questions)")
    coefs = [finite_real(c, "coef") for c in coefs]
    plans = []
    for job in jobs:
        questions = _questions(job.questions, job.trait)
        layers = [check_layer(model, layer, allow_embeddings=False) for layer in _layer_tuple(job.layers)]
        if not layers or not coefs:
            raise ValueError(
                f"sweep() needs at least one layer and one coefficient, got {len(layers)} and {len(coefs)}"
            )
        grid = [(layer, c) for layer in layers for c in coefs]
        points = list(dict.fromkeys((None if c == 0 else (layer, c)) for layer, c in grid))  # unique, in order
        plans.append((job, questions, grid, points))
    prompts, specs = [], []
    for job, questions, _, points in plans:
        own = job.system if job.system is not None else system
        prompts += [chat_prompt(model.tokenizer, q, own) for q in questions] * len(points)
        specs += [None if p is None else (job.vector, *p) for p in points for _ in questions]
    names = ", ".join(getattr(job.trait, "name", "?") for job in jobs)
    answers = generate(
        model,
        prompts,
        max_new_tokens=max_new_tokens,
        desc=f"sweep {names}",
        interventions=[RowSteering(model, specs, coef_mode)],
        progress=progress,
    )
    out, start = [], 0
    for job, questions, grid, points in plans:
        n = len(questions)
        mine = answers[start : start + n * len(points)]
        start += n * len(points)
        scores = judge.score(job.trait, questions * len(points), mine)
        measured = {}
        desc = f"capability {getattr(job.trait, 'name', '?')}"
        for k, point in enumerate(tqdm(points, desc=desc, disable=not (progress and capability))):
            ans, sc = mine[k * n : (k + 1) * n], scores[k * n : (k + 1) * n]
            cap = None
            if capability and point is None:
                cap = capability_score(model)  # remembered after the first call
            elif capability:
                with steer(model, job.vector, point[0], point[1], coef_mode=coef_mode):
                    cap = capability_score(model)
            measured[point] = {
                "trait": _mean([s.trait for s in sc]),
                "trait_ci": _mean_interval([s.trait for s in sc]),
                "coherence": _mean([s.coherence for s in sc]),
                "coherence_ci": _mean_interval([s.coherence for s in sc]),
                "repetition": _mean([repetition_rate(a) for a in ans]),
                "capability": cap,
                "answers": ans,
            }
        out.append([{"layer": layer, "coef": c, **measured[None if c == 0 else (layer, c)]} for layer, c in grid])
    return out


def steering_null(
    model,
    trait,
    vector: PersonaVector,
    judge,
    *,
    layer: int,
    coef: float,
    questions: list[str] | None = None,
    n_random: int = 5,
    n_shuffled: int = 1,
    system: str | None = None,
    max_new_tokens: int = 48,
    seed: int = 0,
    n_boot: int = 1000,
    unsteered: Sequence[str] | None = None,
    steered: Sequence[str] | None = None,
) -> dict:
    """The trait gain of steering with ``vector`` at (``layer``, ``coef``), against random directions.

    One batched generation answers ``questions`` unsteered, steered by ``vector``, and
    steered by ``n_random`` random directions of the same per-layer norm at the same
    point (``random_directions_like``) and by ``n_shuffled`` label-shuffled vectors of that
    norm (``PersonaVector.shuffled_like``: the same answers' pair differences with half
    the labels swapped; none for a vector without stored pair differences); pass ``unsteered``/``steered`` answers you already
    have (e.g. from a ``sweep`` at that point) to skip generating them again. The gain is
    the mean judged trait minus the unsteered mean; its bootstrap 95 % interval resamples
    questions (gains are paired per question). Returns ``{"gain": stats.null_summary
    dict plus stats.shuffled_summary's keys, "rows": [...]}`` where each row gives trait, coherence and repetition of one
    condition, so the price of every direction is visible next to its gain.
    ``steering_nulls`` runs the control for several traits with one generation.
    """
    job = NullJob(trait, vector, layer, coef, questions, unsteered, steered)
    return steering_nulls(
        model,
        [job],
        judge,
        n_random=n_random,
        n_shuffled=n_shuffled,
        system=system,
        max_new_tokens=max_new_tokens,
        seed=seed,
        n_boot=n_boot,
    )[0]


@dataclass(frozen=True)
class NullJob:
    """One trait's part of ``steering_nulls``: the point to test (vector, layer, coef), its
    questions (None: the trait's evaluation questions) and any answers already generated."""

    trait: Any
    vector: PersonaVector
    layer: int
    coef: float
    questions: list[str] | None = None
    unsteered: Sequence[str] | None = None
    steered: Sequence[str] | None = None


def steering_nulls(
    model,
    jobs: Sequence[NullJob],
    judge,
    *,
    n_random: int = 5,
    n_shuffled: int = 1,
    system: str | None = None,
    max_new_tokens: int = 48,
    seed: int = 0,
    n_boot: int = 1000,
) -> list[dict]:
    """``steering_null`` for several traits: every trait's conditions still to answer go to
    one ``generate`` call (``RowSteering``), then each trait is judged and summarised as
    ``steering_null`` does. One result per job, in order."""
    from personalab.prompting import chat_prompt, generate

    jobs = list(jobs)
    if not jobs or not all(isinstance(j, NullJob) for j in jobs):
        raise TypeError("jobs must be a non-empty list of NullJob(trait, vector, layer, coef, ...)")
    n_shuffled = integer(n_shuffled, "n_shuffled")
    if n_shuffled < 0:
        raise ValueError(f"n_shuffled must be >= 0 (0: no label-shuffled control), got {n_shuffled}")
    plans = [_null_plan(model, job, n_random, n_shuffled, seed) for job in jobs]
    prompts: list[str] = []
    specs: list[tuple[PersonaVector, int, float] | None] = []
    for plan in plans:
        for k in plan["todo"]:
            direction = plan["conditions"][k][1]
            spec = None if direction is None else (direction, plan["layer"], plan["coef"])
            prompts += [chat_prompt(model.tokenizer, q, system) for q in plan["questions"]]
            specs += [spec] * len(plan["questions"])
    new = generate(
        model, prompts, max_new_tokens=max_new_tokens, progress=False, interventions=[RowSteering(model, specs)]
    )
    out, start = [], 0
    for job, plan in zip(jobs, plans, strict=True):
        n = len(plan["questions"]) * len(plan["todo"])
        out.append(_null_measure(job, plan, new[start : start + n], judge, n_boot, seed))
        start += n
    return out


def _null_plan(model, job: NullJob, n_random: int, n_shuffled: int, seed: int) -> dict:
    """The conditions of one trait's control (unsteered, its vector, random directions and
    label-shuffled vectors of the same norm) and which of them still need answers."""
    questions = _questions(job.questions, job.trait)
    layer = check_layer(model, job.layer, allow_embeddings=False)
    coef = finite_real(job.coef, "coef")
    conditions = [("unsteered", None), ("persona vector", job.vector)]
    conditions += [(f"random {k}", r) for k, r in enumerate(random_directions_like(job.vector, n_random, seed=seed))]
    if n_shuffled and job.vector.pair_differences is not None:
        conditions += [
            (f"label-shuffled {k}", r) for k, r in enumerate(job.vector.shuffled_like(n_shuffled, seed=seed))
        ]
    given = {0: job.unsteered, 1: job.steered}
    for k, ans in given.items():
        if ans is not None and len(ans) != len(questions):
            raise ValueError(f"{len(ans)} {conditions[k][0]} answers for {len(questions)} questions")
    todo = [k for k in range(len(conditions)) if given.get(k) is None]
    return {
        "questions": questions,
        "layer": layer,
        "coef": coef,
        "conditions": conditions,
        "given": given,
        "todo": todo,
    }


def _null_measure(job: NullJob, plan: dict, new: list[str], judge, n_boot: int, seed: int) -> dict:
    """Judge one trait's conditions and summarise its gain against the random directions'."""
    from personalab.judges import repetition_rate
    from personalab.stats import bootstrap_ci, null_summary, shuffled_summary

    questions, conditions, given = plan["questions"], plan["conditions"], plan["given"]
    n = len(questions)
    by_condition = {k: new[j * n : (j + 1) * n] for j, k in enumerate(plan["todo"])}
    answers = [a for k in range(len(conditions)) for a in (by_condition.get(k) or list(given[k] or []))]
    scores = judge.score(job.trait, questions * len(conditions), answers)
    trait_of = [
        [s.trait if s.trait is not None else float("nan") for s in scores[k * n : (k + 1) * n]]
        for k in range(len(conditions))
    ]
    rows = [
        {
            "condition": name,
            "trait": _mean(trait_of[k]),
            "coherence": _mean([s.coherence for s in scores[k * n : (k + 1) * n]]),
            "repetition": _mean([repetition_rate(a) for a in answers[k * n : (k + 1) * n]]),
            "answers": answers[k * n : (k + 1) * n],
        }
        for k, (name, _) in enumerate(conditions)
    ]
    base = trait_of[0]

    def gain(k: int, idx: Sequence[int]) -> float:
        return _mean([trait_of[k][i] - base[i] for i in idx])

    every = range(n)
    ci = bootstrap_ci(lambda idx: gain(1, idx), n, n_boot=n_boot, seed=seed)
    of_kind = lambda kind: [gain(k, every) for k, (name, _) in enumerate(conditions) if name.startswith(kind)]  # noqa: E731
    value = gain(1, every)
    return {
        "gain": null_summary(value, of_kind("random"), ci) | shuffled_summary(value, of_kind("label-shuffled")),
        "rows": rows,
        "layer": plan["layer"],
        "coef": plan["coef"],
    }


def _mean(xs) -> float:
    xs = [x for x in xs if x is not None and not math.isnan(x)]
    return sum(xs) / len(xs) if xs else float("nan")


def _mean_interval(xs) -> tuple[float, float]:
    """95 % bootstrap interval of ``_mean(xs)`` over the questions (one value each; a judge's
    abstentions dropped); NaNs when fewer than two values remain."""
    from personalab.stats import mean_ci

    xs = [x for x in xs if x is not None and not math.isnan(x)]
    if len(xs) < 2:
        return (float("nan"), float("nan"))
    _, lo, hi = mean_ci(xs)
    return (lo, hi)


def is_coherent(row: dict, *, min_coherence: float = 50, max_repetition: float = 0.1) -> bool:
    """A sweep point whose answers still read as text: coherence >= min and repetition <= max."""
    return row["coherence"] >= min_coherence and row["repetition"] <= max_repetition


def best_setting(rows: list[dict], *, min_coherence: float = 50, max_repetition: float = 0.1) -> dict | None:
    """The coherent point (``is_coherent``) with the largest trait score."""
    ok = [r for r in rows if is_coherent(r, min_coherence=min_coherence, max_repetition=max_repetition)]
    return max(ok, key=lambda r: r["trait"]) if ok else None


def choose_steering_layer(
    model,
    trait,
    vector: PersonaVector,
    judge,
    *,
    layers: Iterable[int],
    coef: float = 0.3,
    questions: list[str] | None = None,
    **kwargs,
) -> dict:
    """Which layer to steer: the one whose answers at ``coef`` show the most trait while coherent.

    Scans ``layers`` at a single coefficient (``is_coherent``). Scan on questions you will
    not report on (e.g. the trait's extraction questions) so the layer is not picked on
    the test set. Returns ``{"layer", "from_scan", "rows"}``: when no layer stays coherent
    at ``coef``, ``layer`` falls back to the vector's default layer (chapter 2's
    diagnostics) and ``from_scan`` is False. ``choose_steering_layers`` scans several
    traits with one generation.
    """
    job = SweepJob(trait, vector, layers, questions)
    return choose_steering_layers(model, [job], judge, coef=coef, **kwargs)[0]


def choose_steering_layers(model, jobs: Sequence[SweepJob], judge, *, coef: float = 0.3, **kwargs) -> list[dict]:
    """``choose_steering_layer`` for several traits (one ``SweepJob`` each, its ``layers`` the
    ones to scan), their scans answered in one generation (``sweep_many``)."""
    picks = []
    for job, rows in zip(jobs, sweep_many(model, jobs, judge, coefs=[coef], **kwargs), strict=True):
        best = best_setting(rows)
        layer = best["layer"] if best else job.vector.default_layer
        picks.append({"layer": layer, "from_scan": best is not None, "rows": rows})
    return picks


def choose_steering_coefs(
    model,
    jobs: Sequence[SweepJob],
    judge,
    *,
    coefs: Iterable[float],
    fallback: float,
    answered: Sequence[list[dict]] | None = None,
    **kwargs,
) -> list[dict]:
    """Which coefficient to test each trait at: the most trait while coherent (``best_setting``).

    Each job names one layer (e.g. the one ``choose_steering_layers`` chose) and questions
    you will not report on; its ``coefs`` are answered in one generation (``sweep_many``)
    and compete with any rows already answered at that layer (``answered[i]``, e.g. the
    layer scan's rows), so the choice is made before the evaluation questions are seen.
    Returns ``{"coef", "from_scan", "rows"}`` per job; ``coef`` is ``fallback`` and
    ``from_scan`` False when no point stays coherent.
    """
    jobs = list(jobs)
    answered = [[] for _ in jobs] if answered is None else list(answered)
    if len(answered) != len(jobs):
        raise ValueError(f"answered needs one list of rows per job: {len(answered)} for {len(jobs)} jobs")
    fallback = finite_real(fallback, "fallback")
    for job in jobs:
        if len(set(_layer_tuple(job.layers))) != 1:
            raise ValueError(f"choose_steering_coefs needs one layer per job, got {job.layers!r}")
    picks = []
    for rows, known in zip(sweep_many(model, jobs, judge, coefs=coefs, **kwargs), answered, strict=True):
        rows = rows + [r for r in known if r["layer"] == rows[0]["layer"]]
        best = best_setting(rows)
        picks.append({"coef": best["coef"] if best else fallback, "from_scan": best is not None, "rows": rows})
    return picks


def curve_summary(rows: list[dict], *, min_coherence: float = 50, max_repetition: float = 0.1) -> dict:
    """For a coefficient curve at one layer: is the trait monotonic over the coherent range, and the gain.

    The coherent range is the coefficients from 0 up to the last one whose answers keep
    coherence >= ``min_coherence`` and repetition <= ``max_repetition``.
    """
    rows = sorted(rows, key=lambda r: r["coef"])
    base = next((r for r in rows if r["coef"] == 0), None)
    if base is None:
        raise ValueError(
            f"curve_summary needs a row at coef=0 (the unsteered baseline); got coefs "
            f"{[r['coef'] for r in rows]}: include 0 in the sweep's coefs"
        )
    coherent = []
    for r in rows:
        if r["coef"] < 0:
            continue
        if not is_coherent(r, min_coherence=min_coherence, max_repetition=max_repetition):
            break
        coherent.append(r)
    traits_ = [r["trait"] for r in coherent]
    best = max(coherent, key=lambda r: r["trait"]) if coherent else base
    return {
        "coherent_coefs": [r["coef"] for r in coherent],
        "monotonic": len(traits_) >= 2 and all(b >= a for a, b in zip(traits_, traits_[1:], strict=False)),
        "best_coef": best["coef"],
        "gain": best["trait"] - base["trait"],
        "capability_cost": (
            None
            if best.get("capability") is None or base.get("capability") is None
            else base["capability"] - best["capability"]
        ),
    }
