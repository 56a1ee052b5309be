"""Monitoring: predict and watch a trait from activations.

* ``last_prompt_projection``: the projection of the **last prompt token** on the unit
  persona vector — read before the model writes anything — which the paper found
  predicts how strongly the answer will show the trait.
* ``Monitor``: records every generated token's projection *in the same forward pass*
  as the generation (an nnsight read inside the generation loop, no second pass),
  renders a token heatmap, and calls ``on_alert`` when a rolling mean crosses a
  threshold (``first_alert``).
* ``prediction_experiment``: the paper's test of the first point — graded system
  prompts x questions, last-prompt projection against the judged trait of the answer —
  with ``r_by_layer`` to repeat it at other layers and ``response_threshold`` to pick a
  Monitor threshold from measured answers.
* ``monitoring_null`` and ``alert_null``: the same readings for random directions of the
  vector's norm (each alert direction with its own calibrated threshold), so a
  correlation or an alert is credited to the vector only where it beats them.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial

import torch

from personalab.activations import answer_activations, last_token_activations, last_token_stack
from personalab.judges import Judge
from personalab.models import check_context, check_layer, layer_output, model_id
from personalab.options import QuestionSplit
from personalab.prompting import chat_prompt, generate_batch, generate_reading_last_token
from personalab.stats import pearson_r
from personalab.traits import Trait
from personalab.validate import positive_int, real_number, text_list
from personalab.vectors import PersonaVector, VectorMismatchError, project


def last_prompt_projection(
    model, prompts: Sequence[str], vector: PersonaVector, layer: int, batch_size: int = 16
) -> torch.Tensor:
    """Projection of each prompt's last token at ``layer`` on the trait direction ([n])."""
    vector.check_model(model)
    return project(last_token_activations(model, prompts, layer, batch_size), vector.at(layer))


def _project_layers(acts: torch.Tensor, vector: PersonaVector, layers: Sequence[int]) -> torch.Tensor:
    """Projections of ``[n, L+1, d]`` last-token activations on the unit vector at each layer: ``[n, len(layers)]``."""
    units = torch.stack([vector.unit(lay) for lay in layers]).float()  # [n_layers_asked, d]
    return torch.einsum("bld,ld->bl", acts[:, list(layers)].float(), units)


def prompt_projections(
    model, prompts: Sequence[str], vector: PersonaVector, layers: Sequence[int], batch_size: int = 16
) -> torch.Tensor:
    """``last_prompt_projection`` at several layers from one pass per batch: ``[n, len(layers)]``."""
    vector.check_model(model)
    layers = [check_layer(model, lay) for lay in layers]
    if not layers:
        raise ValueError("prompt_projections needs at least one layer")
    return _project_layers(last_token_stack(model, prompts, upto=max(layers), batch_size=batch_size), vector, layers)


def _experiment_acts(model, experiment: dict) -> torch.Tensor:
    """An experiment's last-token activations at every layer: the ones it stored when it ran on
    this model, else computed now (one pass over its prompts)."""
    stored = experiment.get("last_token")
    if stored is not None and experiment.get("model_id") == model_id(model):
        return stored
    return last_token_stack(model, experiment["prompts"])


def first_alert(projections: Sequence[float] | torch.Tensor, threshold: float, window: int = 4) -> int | None:
    """First token index whose rolling mean (last ``window`` values, fewer at the start) exceeds ``threshold``."""
    window = positive_int(window, "window")
    threshold = real_number(threshold, "threshold")
    x = torch.as_tensor(projections, dtype=torch.float64)
    if x.dim() != 1:
        raise ValueError(f"projections must be one sequence of numbers (one per token), got shape {tuple(x.shape)}")
    for t in range(len(x)):
        if x[max(0, t - window + 1) : t + 1].mean().item() > threshold:
            return t
    return None


def _pearson_finite(x: Sequence[float], y: Sequence[float]) -> float:
    """Pearson r over the pairs where both values are finite (a judge may abstain: NaN)."""
    pairs = [(a, b) for a, b in zip(x, y, strict=True) if math.isfinite(a) and math.isfinite(b)]
    return pearson_r([a for a, _ in pairs], [b for _, b in pairs]) if len(pairs) >= 2 else math.nan


def _per_prompt_means(levels: Sequence[int], values: Sequence[float]) -> list[float]:
    """Mean of ``values`` per graded-prompt level (NaNs ignored), in level order."""
    out = []
    for lev in sorted(set(levels)):
        vs = [v for lv, v in zip(levels, values, strict=True) if lv == lev and math.isfinite(v)]
        out.append(sum(vs) / len(vs) if vs else math.nan)
    return out


def prediction_experiment(
    model,
    trait: Trait | str,
    vector: PersonaVector,
    judge: Judge,
    layer: int,
    *,
    n_questions: int = 10,
    max_new_tokens: int = 48,
    with_coherence: bool = False,
    split: QuestionSplit = "evaluation",
) -> dict:
    """Does the last prompt token's projection predict the trait of the answer?

    For each of the trait's 8 graded system prompts (0 = suppressing ... 7 = eliciting)
    and the first ``n_questions`` questions of ``split`` (``"extraction"`` to choose a
    layer without touching the evaluation questions): the projection of the last
    prompt token at ``layer`` on the unit vector, and the judged trait score of the
    greedy answer. Returns per-sample lists (``levels``, ``questions``, ``prompts``,
    ``answers``, ``projections``, ``scores``, ``coherence``), per-prompt means
    (``prompt_projection``, ``prompt_score``), ``r_per_sample`` and ``r_per_prompt``
    (Pearson), ``layer``, ``trait``, ``n``, and ``last_token`` (the last prompt token's
    activations at every layer, ``[n, L+1, d]``, with the ``model_id`` they came from, so
    ``r_by_layer`` and ``monitoring_null`` reuse them). Coherence is only scored (a full forward
    pass per answer) with ``with_coherence=True`` or a judge without ``trait_scores``;
    otherwise it is NaN.
    """
    from personalab import traits as traits_mod

    trait = traits_mod.load(trait) if isinstance(trait, str) else trait
    if not trait.graded_prompts:
        raise ValueError(f"trait {trait.name!r} has no graded_prompts: the experiment needs 8 of them")
    if vector.trait != trait.name:
        raise ValueError(f"the vector is for {vector.trait!r}, the trait is {trait.name!r}")
    if split not in ("extraction", "evaluation"):
        raise ValueError(f"split must be 'extraction' or 'evaluation', got {split!r}")
    pool = trait.questions[split]
    if not 1 <= n_questions <= len(pool):
        raise ValueError(f"n_questions must be 1..{len(pool)} (the trait's {split} questions), got {n_questions}")
    check_layer(model, layer)
    qs = pool[:n_questions]
    rows = [(lev, q) for lev in range(len(trait.graded_prompts)) for q in qs]
    levels, questions = [r[0] for r in rows], [r[1] for r in rows]
    prompts = [chat_prompt(model.tokenizer, q, trait.graded_prompts[lev]) for lev, q in rows]
    vector.check_model(model)
    # the pass that generates also reads the last prompt token at every layer: [n, L+1, d], kept so
    # layer sweeps and nulls need no new pass
    answers, acts = generate_reading_last_token(
        model, prompts, max_new_tokens=max_new_tokens, desc=f"{trait.name} graded"
    )
    proj = project(acts[:, layer], vector.at(layer)).tolist()
    if not with_coherence and hasattr(judge, "trait_scores"):
        scores, coherence = [float(x) for x in judge.trait_scores(trait, answers)], [math.nan] * len(answers)
    else:
        judged = judge.score(trait, questions, answers)
        scores = [math.nan if s.trait is None else float(s.trait) for s in judged]
        coherence = [math.nan if s.coherence is None else float(s.coherence) for s in judged]
    p_proj, p_score = _per_prompt_means(levels, proj), _per_prompt_means(levels, scores)
    return dict(
        trait=trait.name,
        layer=layer,
        split=split,
        n=len(rows),
        levels=levels,
        questions=questions,
        prompts=prompts,
        last_token=acts,
        model_id=model_id(model),
        answers=answers,
        projections=proj,
        scores=scores,
        coherence=coherence,
        prompt_projection=p_proj,
        prompt_score=p_score,
        r_per_sample=_pearson_finite(proj, scores),
        r_per_prompt=_pearson_finite(p_proj, p_score),
    )


def r_by_layer(model, experiment: dict, vector: PersonaVector, layers: Sequence[int]) -> dict[str, list[float]]:
    """Repeat a ``prediction_experiment``'s correlations at other layers (same answers and scores).

    Returns ``{"layers", "r_per_sample", "r_per_prompt"}``, one value per layer (NaN where
    the projection does not vary, e.g. at layer 0 the last prompt token is always the same).
    """
    vector.check_model(model)
    layers = [check_layer(model, lay) for lay in layers]
    if not layers:
        raise ValueError("r_by_layer needs at least one layer")
    proj = _project_layers(_experiment_acts(model, experiment), vector, layers)  # [n, len(layers)]
    levels, scores = experiment["levels"], experiment["scores"]
    p_score = _per_prompt_means(levels, scores)
    per_sample, per_prompt = [], []
    for j in range(len(layers)):
        col = proj[:, j].tolist()
        per_sample.append(_pearson_finite(col, scores))
        per_prompt.append(_pearson_finite(_per_prompt_means(levels, col), p_score))
    return {"layers": list(layers), "r_per_sample": per_sample, "r_per_prompt": per_prompt}


def choose_monitoring_layer(
    model,
    trait: Trait | str,
    vector: PersonaVector,
    judge: Judge,
    *,
    layers: Sequence[int] | None = None,
    n_questions: int = 5,
    max_new_tokens: int = 48,
) -> dict:
    """Which layer's last-prompt projection predicts the trait, chosen on *extraction* questions.

    Runs ``prediction_experiment`` on the first ``n_questions`` extraction questions and
    ``r_by_layer`` over ``layers`` (default: every block), and picks the layer with the
    highest per-sample r. The evaluation questions play no part, so correlations
    reported there at this layer are not flattered by the choice. Returns ``{"layer",
    "sweep", "experiment"}``.
    """
    layers = list(layers) if layers is not None else list(range(1, vector.n_layers + 1))
    exp = prediction_experiment(
        model,
        trait,
        vector,
        judge,
        vector.default_layer,
        n_questions=n_questions,
        max_new_tokens=max_new_tokens,
        split="extraction",
    )
    sweep = r_by_layer(model, exp, vector, layers)
    finite = [j for j, r in enumerate(sweep["r_per_sample"]) if math.isfinite(r)]
    if not finite:
        raise ValueError(f"no layer gives a finite correlation for {exp['trait']!r}: the judged scores do not vary")
    best = max(finite, key=lambda j: sweep["r_per_sample"][j])
    return {"layer": layers[best], "sweep": sweep, "experiment": exp}


def response_threshold(
    model, experiment: dict, vector: PersonaVector, layer: int, low: int = 0, high: int = 7
) -> float:
    """A Monitor threshold calibrated on measured answers.

    The midpoint between the mean response-token projection of ``experiment``'s answers
    under graded prompt ``low`` and under ``high`` (one forward pass over those answers).
    """
    return _response_thresholds(model, experiment, vector.unit(check_layer(model, layer))[None], layer, low, high)[0]


def _response_thresholds(
    model, experiment: dict, units: torch.Tensor, layer: int, low: int = 0, high: int = 7
) -> list[float]:
    """``response_threshold`` for each row of ``units`` ([k, d] unit directions): one pass, k thresholds."""
    means = []
    for lev in (low, high):
        idx = [i for i, lv in enumerate(experiment["levels"]) if lv == lev and experiment["answers"][i]]
        if not idx:
            raise ValueError(f"no non-empty answers under graded prompt {lev} to calibrate on")
        acts = answer_activations(
            model,
            [experiment["prompts"][i] for i in idx],
            [experiment["answers"][i] for i in idx],
            upto=layer,
            desc=f"calibrate {lev}",
        )
        means.append((acts["response"][:, layer].float() @ units.float().T).mean(0))  # [k]
    return ((means[0] + means[1]) / 2).tolist()


def rolling_alerts(
    projections: torch.Tensor, thresholds: Sequence[float] | torch.Tensor, window: int = 4
) -> list[bool]:
    """For ``projections`` ``[n_tokens, k]`` (one column per direction), whether ``first_alert``
    would fire in each column at its own threshold: the same rule, computed for all columns at once."""
    window = positive_int(window, "window")
    x = torch.as_tensor(projections, dtype=torch.float64)
    thr = torch.as_tensor(thresholds, dtype=torch.float64)
    if x.dim() != 2 or thr.shape != (x.shape[1],):
        raise ValueError(
            f"projections must be [n_tokens, k] and thresholds k values, got {tuple(x.shape)} and {tuple(thr.shape)}"
        )
    fired = torch.zeros(x.shape[1], dtype=torch.bool)
    for t in range(x.shape[0]):  # the same slices and means as first_alert, every column at once
        fired |= x[max(0, t - window + 1) : t + 1].mean(0) > thr
    return fired.tolist()


def alert_null(
    model,
    vector: PersonaVector,
    layer: int,
    experiment: dict,
    prompts: Sequence[str],
    eliciting: Sequence[bool],
    *,
    groups: Sequence[str] | None = None,
    window: int = 4,
    n_random: int = 200,
    seed: int = 0,
    n_boot: int = 1000,
    max_new_tokens: int = 48,
) -> dict:
    """Do the Monitor's alerts tell eliciting prompts from suppressing ones better than random directions?

    One monitored greedy generation of ``prompts`` reads, at ``layer``, the projection on
    the persona vector and on ``n_random`` random directions of the same norm
    (``random_directions_like``). Every direction gets its own threshold, calibrated on
    ``experiment`` the way ``response_threshold`` calibrates the vector's, and alerts by the
    Monitor's rule (``rolling_alerts``, ``window`` tokens). The score is the alerts'
    accuracy: the share of answers that alerted exactly when their prompt is eliciting
    (``eliciting[i]``). The vector's accuracy gets a bootstrap 95 % interval over
    ``groups`` (e.g. the question of each prompt: both prompts of a question are drawn
    together; default: each prompt alone). Returns ``stats.null_summary``'s dict
    (``value, ci_low, ci_high, null_p95, percentile``) plus ``alerts`` (the vector's, per
    prompt), ``threshold`` (the vector's) and ``n``.
    """
    from personalab.stats import grouped_bootstrap_ci, null_summary
    from personalab.vectors import random_directions_like

    prompts = text_list(prompts, "prompts")
    eliciting = [bool(e) for e in eliciting]
    if len(eliciting) != len(prompts):
        raise ValueError(f"eliciting needs one flag per prompt: {len(eliciting)} for {len(prompts)} prompts")
    if all(eliciting) or not any(eliciting):
        raise ValueError("alert accuracy needs both eliciting and suppressing prompts")
    groups = [str(i) for i in range(len(prompts))] if groups is None else list(groups)
    if len(groups) != len(prompts):
        raise ValueError(f"groups needs one entry per prompt: {len(groups)} for {len(prompts)} prompts")
    layer = check_layer(model, layer)
    directions = [vector, *random_directions_like(vector, n_random, seed=seed)]
    units = torch.stack([d.unit(layer) for d in directions])  # [1 + R, d]; row 0 = the persona vector
    thresholds = _response_thresholds(model, experiment, units, layer)
    result = Monitor(model, directions, layer).generate(prompts, max_new_tokens=max_new_tokens)
    alerts = torch.tensor([rolling_alerts(p, thresholds, window) for p in result.projections])  # [n, 1 + R]
    right = (alerts == torch.tensor(eliciting)[:, None]).double()

    def accuracy(col: int, rows: list[int]) -> float:
        return float(right[rows, col].mean())

    every = list(range(len(prompts)))
    ci = grouped_bootstrap_ci(partial(accuracy, 0), groups, n_boot=n_boot, seed=seed)
    summary = null_summary(accuracy(0, every), [accuracy(j, every) for j in range(1, units.shape[0])], ci)
    return {**summary, "alerts": alerts[:, 0].tolist(), "threshold": thresholds[0], "n": len(prompts)}


def monitoring_null(
    model,
    experiment: dict,
    vector: PersonaVector,
    layer: int,
    *,
    n_random: int = 200,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict[str, dict]:
    """A ``prediction_experiment``'s correlations at ``layer``, with intervals and two nulls.

    For the persona vector and for ``n_random`` random unit directions (seeded), the
    last-prompt-token projections of the experiment's prompts are correlated with its
    judged scores, per sample and per prompt (level means). The persona vector's r gets
    a bootstrap 95 % interval over questions. Returns ``{"per_sample": ..., "per_prompt":
    ...}``, each ``stats.null_summary``'s dict: ``value, ci_low, ci_high, null_p95,
    percentile`` (against the random directions), plus ``shuffled_p95`` and
    ``shuffled_percentile`` against ``n_random`` label-shuffled vectors
    (``PersonaVector.shuffled_units``: the same answers' pair differences with the
    p+/p- labels of a random half of the pairs swapped) where the vector carries its pair differences, else NaN. A correlation
    is only evidence for the vector when it beats most of both: with 8 graded prompts, a
    per-prompt r of 0.9 happens by chance.
    """
    from personalab.stats import grouped_bootstrap_ci, null_summary, shuffled_summary

    vector.check_model(model)
    layer = check_layer(model, layer)
    acts = _experiment_acts(model, experiment)[:, layer].float()  # [n, d]
    gen = torch.Generator().manual_seed(seed)
    rand = torch.randn(n_random, acts.shape[1], generator=gen)
    units = torch.cat([vector.unit(layer)[None].float(), rand / rand.norm(dim=1, keepdim=True)])  # [1 + R, d]
    shuffled = vector.shuffled_units(layer, n_random, seed=seed) if vector.pair_differences is not None else None
    if shuffled is not None:
        units = torch.cat([units, shuffled])  # [1 + 2R, d]: then the label-shuffled vectors
    proj = (acts @ units.T).double()  # column 0 = the persona vector
    levels, scores = experiment["levels"], experiment["scores"]

    def r_sample(col: list[float], rows: list[int]) -> float:
        return _pearson_finite([col[i] for i in rows], [scores[i] for i in rows])

    def r_prompt(col: list[float], rows: list[int]) -> float:
        lev = [levels[i] for i in rows]
        return _pearson_finite(
            _per_prompt_means(lev, [col[i] for i in rows]), _per_prompt_means(lev, [scores[i] for i in rows])
        )

    every = list(range(len(scores)))
    cols = [proj[:, j].tolist() for j in range(proj.shape[1])]
    out = {}
    for name, fn in (("per_sample", r_sample), ("per_prompt", r_prompt)):
        ci = grouped_bootstrap_ci(partial(fn, cols[0]), experiment["questions"], n_boot=n_boot, seed=seed)
        value = fn(cols[0], every)
        out[name] = {
            **null_summary(value, [fn(c, every) for c in cols[1 : 1 + n_random]], ci),
            **shuffled_summary(value, [fn(c, every) for c in cols[1 + n_random :]]),  # empty without shuffled
        }
    return out


@dataclass
class MonitorEvent:
    """One alert: which answer, trait, token index, and the rolling value that crossed."""

    sample: int
    trait: str
    token: int
    value: float


@dataclass
class MonitorResult:
    """What a monitored generation produced: answers, tokens, projections, alerts."""

    answers: list[str]
    tokens: list[list[str]]
    projections: list[torch.Tensor]  # per sample: [n_tokens, n_traits]
    traits: list[str]
    alerts: list[MonitorEvent] = field(default_factory=list)

    def html(self, sample: int = 0, trait: int = 0, scale: float | None = None) -> str:
        """The answer as tokens tinted by projection (red = toward the trait, blue = away)."""
        proj = self.projections[sample][:, trait]
        scale = scale or float(proj.abs().max().clamp_min(1e-6))
        spans = []
        for tok, v in zip(self.tokens[sample], proj.tolist(), strict=False):
            a = min(1.0, abs(v) / scale)
            rgb = "220,50,47" if v > 0 else "38,139,210"
            spans.append(
                f'<span title="{v:.2f}" style="background: rgba({rgb},{a:.2f}); '
                f'padding: 1px 0">{html.escape(tok)}</span>'
            )
        return f'<div style="line-height: 1.9; font-family: monospace">{"".join(spans)}</div>'

    def _repr_html_(self) -> str:
        return "".join(self.html(i) for i in range(len(self.answers)))


class Monitor:
    """Watch generations for traits, token by token, in the generation pass itself.

    Args:
        model: the personalab model.
        vectors: one PersonaVector or several (all from this model).
        layer: the layer whose residual stream is projected.
        threshold: alert when the rolling mean projection (over ``window`` tokens) exceeds it.
        on_alert: called with a ``MonitorEvent`` for the first crossing per (answer, trait).
    """

    def __init__(
        self,
        model,
        vectors: PersonaVector | Sequence[PersonaVector],
        layer: int,
        threshold: float = math.inf,
        *,
        window: int = 4,
        on_alert: Callable[[MonitorEvent], None] | None = None,
    ):
        vectors = [vectors] if isinstance(vectors, PersonaVector) else list(vectors)
        if not vectors:
            raise ValueError("Monitor needs at least one persona vector")
        ids = {(v.meta.get("model_id"), v.vectors.shape) for v in vectors}
        if len(ids) > 1:
            raise VectorMismatchError(f"the vectors come from different models: {sorted(map(str, ids))}")
        for v in vectors:
            v.check_model(model)
        threshold = real_number(threshold, "threshold")
        if threshold == -math.inf:
            raise ValueError(
                "threshold is -inf, which alerts on every token: use a finite number (or math.inf to never alert)"
            )
        if threshold == math.inf and on_alert is not None:
            raise ValueError("an infinite threshold never alerts: give a finite threshold with on_alert")
        window = positive_int(window, "window")
        self.model, self.vectors, self.threshold, self.window = model, vectors, float(threshold), window
        self.layers: tuple[int, ...] = (check_layer(model, layer),)
        self.on_alert = on_alert
        self.units = torch.stack([v.unit(layer) for v in vectors])  # [n_traits, d]
        self._steps: list[torch.Tensor] = []

    prefix = "skip"  # reads only the last position of each step (prompting.Intervention)

    def cache_key(self) -> None:
        return None  # a monitor must see the run, so its generations are never served from cache

    def on_layer(self, model, layer: int, step: int) -> None:
        h = layer_output(model, layer)[:, -1]  # [batch, d]: the state that picks the next token
        self._steps.append((h.float() @ self.units.T.to(h.device)).detach().cpu())

    def generate(
        self, prompts: Sequence[str], *, max_new_tokens: int = 48, sampling: dict | None = None
    ) -> MonitorResult:
        """Generate (greedy by default) under monitoring: answers, per-token projections, alerts."""
        prompts = text_list(prompts, "prompts")
        max_new_tokens = positive_int(max_new_tokens, "max_new_tokens")
        check_context(self.model, prompts, max_new_tokens)
        self._steps = []
        new_ids = generate_batch(self.model, prompts, max_new_tokens, sampling, extra=[self])
        if not self._steps or new_ids.shape[1] == 0:
            raise RuntimeError("the generation produced no tokens to monitor")
        steps = torch.stack(self._steps, dim=1)  # [batch, steps, n_traits]; step k chose token k
        tok = self.model.tokenizer
        special = set(tok.all_special_ids)
        answers = tok.batch_decode(new_ids, skip_special_tokens=True)
        result = MonitorResult(answers, [], [], [v.trait for v in self.vectors])
        for i in range(len(prompts)):
            ids = new_ids[i].tolist()
            n = next((k for k, t in enumerate(ids) if t in special), len(ids))  # stop at EOS/pad
            n = min(n, steps.shape[1])
            result.tokens.append([tok.decode([t]) for t in ids[:n]])
            result.projections.append(steps[i, :n])
            result.alerts += self._alerts(i, steps[i, :n])
        for ev in result.alerts:
            if self.on_alert is not None:
                self.on_alert(ev)
        return result

    def _alerts(self, sample: int, proj: torch.Tensor) -> list[MonitorEvent]:
        """First token per trait where the rolling mean of ``window`` projections exceeds the threshold."""
        events: list[MonitorEvent] = []
        if self.threshold == math.inf:
            return events  # never alerts: nothing to compute
        for j, v in enumerate(self.vectors):
            t = first_alert(proj[:, j], self.threshold, self.window)
            if t is not None:
                roll = proj[max(0, t - self.window + 1) : t + 1, j].mean().item()
                events.append(MonitorEvent(sample, v.trait, t, roll))
        return events
