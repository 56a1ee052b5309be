"""Trait artifacts: what a persona is, as data.

A trait artifact is a JSON file (schema below, built-ins in ``personalab/data/traits``)
holding everything the method needs to study one trait:

=================  =============================================================
``name``           identifier, e.g. ``"pirate"``
``adjective``      fills "You are a/an {adjective} assistant." in p+ prompts
``antonym``        fills the same slot in p- prompts ("helpful" when none fits)
``description``    one or two sentences: what the trait is
``instructions``   exactly 5 ``{"pos": ..., "neg": ...}`` instruction pairs
``questions``      ``{"extraction": [20], "evaluation": [20]}``, no overlap
``rubric``         LLM-judge prompt with ``{question}`` and ``{answer}``, asks 0-100
``exemplars``      optional ``{"pos": [...], "neg": [...]}``: short example answers
                   that show / don't show the trait (the offline judge learns from them)
``graded_prompts`` optional: 8 system prompts from trait-suppressing (0) to
                   trait-eliciting (7), used by the monitoring chapter
``sentiment``      optional -1, 0 or +1: the sign of sentiment the trait carries by its
                   definition (a mood: sad -1, optimistic +1; 0 = none). The offline
                   judge blends a lexicon sentiment score into its trait score when set
=================  =============================================================
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from personalab._io import read_text
from personalab.validate import safe_name

N_INSTRUCTIONS = 5
N_QUESTIONS = 20
N_GRADED = 8
_SILENT_H = ("honest", "hour", "honor", "honour", "heir")


class TraitError(ValueError):
    """A trait artifact is missing, malformed, or inconsistent."""


@dataclass
class Trait:
    """One trait artifact (see the module docstring for the schema)."""

    name: str
    adjective: str
    antonym: str
    description: str
    instructions: list[dict[str, str]]
    questions: dict[str, list[str]]
    rubric: str
    exemplars: dict[str, list[str]] = field(default_factory=dict)
    graded_prompts: list[str] = field(default_factory=list)
    sentiment: int = 0

    # -- the contrastive system prompts ---------------------------------------------------
    def system_prompt(self, i: int, positive: bool) -> str:
        """p+ (``positive=True``) or p- for instruction pair ``i``."""
        word = self.adjective if positive else self.antonym
        article = "an" if word[:1].lower() in "aeiou" or word.lower().startswith(_SILENT_H) else "a"
        instr = self.instructions[i]["pos" if positive else "neg"]
        return f"You are {article} {word} assistant. {instr}"

    def system_prompts(self, positive: bool) -> list[str]:
        """All 5 p+ (or p-) system prompts."""
        return [self.system_prompt(i, positive) for i in range(len(self.instructions))]

    @property
    def extraction_questions(self) -> list[str]:
        return self.questions["extraction"]

    @property
    def evaluation_questions(self) -> list[str]:
        return self.questions["evaluation"]

    def judge_prompt(self, question: str, answer: str) -> str:
        """The rubric filled in for one (question, answer)."""
        return self.rubric.replace("{question}", question).replace("{answer}", answer)

    # -- (de)serialisation ----------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: dict) -> Trait:
        validate(data)
        return cls(**{k: data[k] for k in data if k in cls.__dataclass_fields__})

    @classmethod
    def from_json(cls, text_or_path: str | os.PathLike) -> Trait:
        """Parse a trait from a JSON string or a path to a JSON file."""
        text = str(text_or_path)
        if not text.lstrip().startswith("{"):
            text = read_text(text_or_path, "trait file", TraitError)
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise TraitError(f"trait JSON is not valid JSON: {err}") from None
        return cls.from_dict(data)

    def to_json(self, path: str | os.PathLike | None = None) -> str:
        """The artifact as JSON text (also written to ``path`` if given)."""
        text = json.dumps(asdict(self), indent=2, ensure_ascii=False)
        if path is not None:
            from personalab._io import atomic_write_bytes

            atomic_write_bytes(path, text.encode())
        return text


def _need(cond: bool, field_name: str, msg: str) -> None:
    if not cond:
        raise TraitError(f"trait field {field_name!r}: {msg}")


def validate(data: dict) -> None:
    """Check a trait dict against the schema; raise TraitError naming the bad field."""
    _need(isinstance(data, dict), "(root)", "a trait must be a JSON object")
    for key in ("name", "adjective", "antonym", "description", "rubric"):
        _need(isinstance(data.get(key), str) and data[key].strip() != "", key, "must be a non-empty string")
    try:
        safe_name(data["name"], "the trait name")  # it names cache files
    except ValueError as err:
        raise TraitError(f"trait field 'name': {err}") from None
    ins: Any = data.get("instructions")  # checked field by field below
    _need(
        isinstance(ins, list) and len(ins) == N_INSTRUCTIONS,
        "instructions",
        f"must be a list of exactly {N_INSTRUCTIONS} {{'pos', 'neg'}} pairs",
    )
    for i, pair in enumerate(ins):
        _need(
            isinstance(pair, dict) and all(isinstance(pair.get(k), str) and pair[k].strip() for k in ("pos", "neg")),
            f"instructions[{i}]",
            "needs non-empty 'pos' and 'neg' strings",
        )
    qs: Any = data.get("questions")
    _need(isinstance(qs, dict), "questions", "must be an object with 'extraction' and 'evaluation' lists")
    for split in ("extraction", "evaluation"):
        lst = qs.get(split)
        _need(isinstance(lst, list) and len(lst) > 0, f"questions.{split}", "is empty or missing")
        _need(all(isinstance(q, str) and q.strip() for q in lst), f"questions.{split}", "must hold non-empty strings")
        _need(len(set(lst)) == len(lst), f"questions.{split}", "has duplicate questions")
    overlap = set(qs["extraction"]) & set(qs["evaluation"])
    _need(not overlap, "questions", f"extraction and evaluation overlap: {sorted(overlap)[:3]}")
    rub = data["rubric"]
    for ph in ("{question}", "{answer}"):
        _need(rub.count(ph) == 1, "rubric", f"must contain the placeholder {ph} exactly once")
    ex = data.get("exemplars", {})
    _need(isinstance(ex, dict), "exemplars", "must be an object with 'pos' and 'neg' lists")
    if ex:
        for side in ("pos", "neg"):
            _need(
                isinstance(ex.get(side), list) and len(ex[side]) >= 2,
                f"exemplars.{side}",
                "needs at least 2 example answers",
            )
            _need(
                all(isinstance(a, str) and a.strip() for a in ex[side]),
                f"exemplars.{side}",
                "must hold non-empty strings",
            )
    gp = data.get("graded_prompts", [])
    _need(
        isinstance(gp, list) and (not gp or len(gp) == N_GRADED),
        "graded_prompts",
        f"must be empty or hold exactly {N_GRADED} system prompts",
    )
    _need(all(isinstance(p, str) and p.strip() for p in gp), "graded_prompts", "must hold non-empty strings")
    sent = data.get("sentiment", 0)
    _need(type(sent) is int and sent in (-1, 0, 1), "sentiment", f"must be -1, 0 or 1, got {sent!r:.40}")


def _data_dir():
    return resources.files("personalab") / "data" / "traits"


def list_traits() -> list[str]:
    """Names of the built-in traits."""
    return sorted(p.name[:-5] for p in _data_dir().iterdir() if p.name.endswith(".json"))


def load(name: str) -> Trait:
    """A built-in trait by name, or a trait JSON file by path."""
    if isinstance(name, os.PathLike):
        return Trait.from_json(Path(name))
    if not isinstance(name, str):
        raise TypeError(f"trait must be a name or a path to a trait JSON file, got {type(name).__name__}")
    if name.endswith(".json") or os.sep in name:
        return Trait.from_json(Path(name))
    available = list_traits()
    if name not in available:
        raise TraitError(
            f"unknown trait {name!r}; built-in traits are: {', '.join(available)} (or pass a path to a trait JSON file)"
        )
    return Trait.from_json((_data_dir() / f"{name}.json").read_text(encoding="utf-8"))


# -- generating new artifacts with an LLM --------------------------------------------------

GENERATE_PROMPT = """You design data for studying a character trait in a chat assistant.
Trait name: {name}
Trait description: {description}

Reply with ONE JSON object and nothing else, with exactly these keys:
"name" (the trait name), "adjective" (an adjective for "You are a/an ... assistant."),
"antonym" (its opposite, or "helpful"), "description",
"instructions": a list of 5 objects {{"pos": an instruction that makes an assistant show the
trait, "neg": an instruction that makes it show the opposite}},
"questions": {{"extraction": 20 everyday questions, "evaluation": 20 different ones}},
"rubric": a judge prompt containing the placeholders {{question}} and {{answer}} once each
that asks for a single integer from 0 (no trait) to 100 (strong trait),
"exemplars": {{"pos": 10 short answers showing the trait, "neg": 10 not showing it}},
"graded_prompts": 8 system prompts from strongly suppressing to strongly eliciting it."""


def generate_trait(
    name: str,
    description: str,
    client=None,
    *,
    model: str | None = None,
    base_url: str | None = None,
    api_key: str | None = None,
    max_attempts: int = 3,
) -> Trait:
    """Ask an OpenAI-compatible chat endpoint to write a trait artifact, validated.

    ``client`` is anything with ``client.chat.completions.create(...)`` (the openai
    package's client, or a stand-in); otherwise one is built from ``base_url``/``api_key``
    or ``$OPENAI_BASE_URL``/``$OPENAI_API_KEY`` and ``model``/``$PERSONALAB_JUDGE_MODEL``.
    A malformed reply is sent back with the validation error, up to ``max_attempts``.
    """
    from personalab.config import settings
    from personalab.llm_client import make_openai_client

    client = client or make_openai_client(base_url=base_url, api_key=api_key)
    model = model or settings().judge_model
    messages = [{"role": "user", "content": GENERATE_PROMPT.format(name=name, description=description)}]
    last_err = "no reply"
    for attempt in range(max_attempts):
        reply = client.chat.completions.create(model=model, messages=messages, temperature=0.7)
        text = reply.choices[0].message.content or ""
        match = re.search(r"\{.*\}", text, flags=re.S)
        try:
            if match is None:
                raise TraitError("the reply holds no JSON object")
            return Trait.from_json(match.group(0))
        except TraitError as err:
            last_err = str(err)
            messages += [
                {"role": "assistant", "content": text},
                {"role": "user", "content": f"That reply was invalid ({err}). Reply with the corrected JSON only."},
            ]
            time.sleep(min(2**attempt, 4) * 0.1)
    raise TraitError(f"the endpoint did not produce a valid trait after {max_attempts} attempts: {last_err}")
