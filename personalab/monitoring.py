"""Monitoring: predict and watch a trait from activations.

* ``last_prompt_projection``: the projection of the **last prompt token** on the unit
  persona vector — read before the model writes anything — which the paper found
  predicts how strongly the answer will show the trait.
* ``Monitor``: records every generated token's projection *in the same forward pass*
  as the generation (an nnsight read inside the generation loop, no second pass),
  renders a token heatmap, and calls ``on_alert`` when a rolling mean crosses a
  threshold.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from personalab.extraction import residual_stream
from personalab.models import check_layer, layer_output
from personalab.prompting import generate_batch
from personalab.stats import pearson_r  # noqa: F401  (re-exported for the chapter)
from personalab.vectors import PersonaVector, VectorMismatchError


def project(acts: torch.Tensor, direction: torch.Tensor) -> torch.Tensor:
    """Scalar projection of activations ``[..., d]`` on ``direction`` ([d], normalised here)."""
    unit = direction / direction.norm().clamp_min(1e-8)
    return acts.float() @ unit.float()


def last_prompt_projection(model, prompts: Sequence[str], vector: PersonaVector, layer: int,
                           batch_size: int = 16) -> torch.Tensor:
    """Projection of each prompt's last token at ``layer`` on the trait direction ([n])."""
    vector.check_model(model)
    check_layer(model, layer)
    out = []
    for s in range(0, len(prompts), batch_size):
        hs = residual_stream(model, list(prompts[s:s + batch_size]), upto=layer)  # left-padded
        out.append(project(hs[:, layer, -1], vector.at(layer)))
    return torch.cat(out)


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
            spans.append(f'<span title="{v:.2f}" style="background: rgba({rgb},{a:.2f}); '
                         f'padding: 1px 0">{html.escape(tok)}</span>')
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

    def __init__(self, model, vectors: PersonaVector | Sequence[PersonaVector], layer: int,
                 threshold: float = math.inf, *, window: int = 4,
                 on_alert: Callable[[MonitorEvent], None] | None = None):
        vectors = [vectors] if isinstance(vectors, PersonaVector) else list(vectors)
        if not vectors:
            raise ValueError("Monitor needs at least one persona vector")
        ids = {(v.meta.get("model_id"), v.vectors.shape) for v in vectors}
        if len(ids) > 1:
            raise VectorMismatchError(f"the vectors come from different models: {sorted(map(str, ids))}")
        for v in vectors:
            v.check_model(model)
        if not isinstance(threshold, (int, float)) or math.isnan(threshold) or threshold == -math.inf:
            raise ValueError(f"threshold must be a number (use math.inf to never alert), got {threshold!r}")
        if threshold == math.inf and on_alert is not None:
            raise ValueError("an infinite threshold never alerts: give a finite threshold with on_alert")
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        self.model, self.vectors, self.threshold, self.window = model, vectors, float(threshold), window
        self.layers = (check_layer(model, layer),)
        self.on_alert = on_alert
        self.units = torch.stack([v.unit(layer) for v in vectors])  # [n_traits, d]
        self._steps: list[torch.Tensor] = []

    def cache_key(self) -> None:
        return None  # a monitor must see the run, so its generations are never served from cache

    def on_layer(self, model, layer: int, step: int) -> None:
        h = layer_output(model, layer)[:, -1]  # [batch, d]: the state that picks the next token
        self._steps.append((h.float() @ self.units.T.to(h.device)).detach().cpu())

    def generate(self, prompts: Sequence[str], *, max_new_tokens: int = 48,
                 sampling: dict | None = None) -> MonitorResult:
        """Generate (greedy by default) under monitoring: answers, per-token projections, alerts."""
        prompts = list(prompts)
        if not prompts:
            raise ValueError("Monitor.generate got no prompts")
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
        events = []
        for j, v in enumerate(self.vectors):
            x = proj[:, j]
            for t in range(len(x)):
                roll = x[max(0, t - self.window + 1): t + 1].mean().item()
                if roll > self.threshold:
                    events.append(MonitorEvent(sample, v.trait, t, roll))
                    break
        return events
