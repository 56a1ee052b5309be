"""Constitutional AI in miniature: critique -> revision data (chapter 7).

The supervised stage of Constitutional AI (Bai et al. 2022): a model answers a prompt;
it is asked to *critique* its answer against a principle drawn at random from a
constitution, then to *revise* the answer in the light of the critique; the pair can
repeat with other principles, and the final revisions become fine-tuning data. Each
turn is one more message in the same conversation, after a few worked examples
(``few_shot``) that show the format.

A *writer* produces the critiques and revisions: ``ModelWriter`` (a local model, batched
through ``prompting.generate``, cached) or ``EndpointWriter`` (any OpenAI-compatible
chat endpoint, the judge's client). Both take whole conversations, so the pipeline does
not care which one runs it.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from personalab._io import read_text
from personalab.finetune import Example
from personalab.prompting import conversation_prompt, generate
from personalab.validate import positive_int, random_seed, same_length, text_list

Message = dict[str, str]  # {"role": "user" | "assistant" | "system", "content": ...}


class Principle(BaseModel):
    """One principle of a constitution: what to look for, and how to rewrite."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(min_length=1)
    critique: str = Field(min_length=1)  # the critique request, e.g. "Identify ways in which ..."
    revision: str = Field(min_length=1)  # the revision request, e.g. "Please rewrite ..."


class Shot(BaseModel):
    """A worked example shown before every conversation: answer, critique and revision."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    question: str = Field(min_length=1)
    answer: str = Field(min_length=1)
    principle: str = Field(min_length=1)
    critique: str = Field(min_length=1)
    revision: str = Field(min_length=1)


class Constitution(BaseModel):
    """Principles (at least one) and few-shot examples, as shipped in ``data/constitutions``."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(min_length=1)
    description: str = ""
    principles: tuple[Principle, ...] = Field(min_length=1)
    few_shot: tuple[Shot, ...] = ()

    def principle(self, name: str) -> Principle:
        """The principle called ``name``."""
        for p in self.principles:
            if p.name == name:
                return p
        raise KeyError(f"constitution {self.name!r} has no principle {name!r}: {[p.name for p in self.principles]}")


def list_constitutions() -> list[str]:
    """Names of the constitutions shipped with personalab."""
    folder = resources.files("personalab") / "data" / "constitutions"
    return sorted(p.name.removesuffix(".json") for p in folder.iterdir() if p.name.endswith(".json"))


def load_constitution(name_or_path: str | Path) -> Constitution:
    """A shipped constitution by name (``list_constitutions()``) or a JSON file of your own."""
    if isinstance(name_or_path, Path) or str(name_or_path).endswith(".json"):
        path = Path(name_or_path)
        raw = read_text(path, "constitution file")
    elif isinstance(name_or_path, str):
        if name_or_path not in list_constitutions():
            raise ValueError(
                f"unknown constitution {name_or_path!r}: shipped ones are {list_constitutions()} "
                "(or pass the path of a .json file)"
            )
        path = Path(name_or_path)
        raw = (resources.files("personalab") / "data" / "constitutions" / f"{name_or_path}.json").read_text("utf-8")
    else:
        raise TypeError(f"load_constitution() takes a name or a path, got {type(name_or_path).__name__}")
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from None
    try:
        constitution = Constitution.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(x) for x in first["loc"])
        raise ValueError(f"{path}: {where}: {first['msg']} ({err.error_count()} problem(s) in all)") from None
    for shot in constitution.few_shot:
        constitution.principle(shot.principle)  # a shot must name one of the principles
    return constitution


# -- the conversation ---------------------------------------------------------------------


def critique_messages(question: str, answer: str, principle: Principle) -> list[Message]:
    """The conversation that asks for a critique of ``answer``: the question, the answer, the request."""
    return [
        {"role": "user", "content": question},
        {"role": "assistant", "content": answer},
        {"role": "user", "content": principle.critique},
    ]


def revision_messages(question: str, answer: str, principle: Principle, critique: str | None = None) -> list[Message]:
    """The conversation that asks for a revision; with ``critique=None`` the critique step is skipped.

    With a critique, the critique request and the model's critique stay in the
    conversation before the revision request (the paper's format); without, the revision
    request follows the answer directly (the paper's "no critique" ablation).
    """
    turns = critique_messages(question, answer, principle)
    if critique is None:
        turns = turns[:2]  # no critique request either: the revision request follows the answer
    else:
        turns.append({"role": "assistant", "content": critique})
    turns.append({"role": "user", "content": principle.revision})
    return turns


def few_shot_messages(constitution: Constitution, with_critique: bool = True) -> list[Message]:
    """The worked examples as earlier turns of the conversation (in the same format as the real ones)."""
    turns: list[Message] = []
    for shot in constitution.few_shot:
        p = constitution.principle(shot.principle)
        turns += revision_messages(shot.question, shot.answer, p, shot.critique if with_critique else None)
        turns.append({"role": "assistant", "content": shot.revision})
    return turns


# -- writers ------------------------------------------------------------------------------


class Writer(Protocol):
    """Anything that continues conversations: one reply per conversation."""

    def reply(self, conversations: Sequence[list[Message]], max_new_tokens: int) -> list[str]: ...


class ModelWriter:
    """A local model (nnsight-wrapped) as the writer: greedy, batched and cached by ``generate``."""

    def __init__(self, model):
        self.model = model

    def reply(self, conversations: Sequence[list[Message]], max_new_tokens: int) -> list[str]:
        prompts = [conversation_prompt(self.model.tokenizer, c) for c in conversations]
        return [a.strip() for a in generate(self.model, prompts, max_new_tokens=max_new_tokens, desc="writing")]


class EndpointWriter:
    """Any OpenAI-compatible chat endpoint as the writer (a stronger critic than a 135M model).

    ``EndpointWriter(model="gpt-4o-mini")`` reads ``$OPENAI_BASE_URL``/``$OPENAI_API_KEY``;
    ``client=`` takes any object with ``chat.completions.create`` (the judge's client).
    """

    def __init__(self, model: str, *, base_url: str | None = None, api_key: str | None = None, client=None):
        from personalab.llm_client import make_openai_client

        self.model = model
        self.client = client or make_openai_client(base_url, api_key)

    def reply(self, conversations: Sequence[list[Message]], max_new_tokens: int) -> list[str]:
        out = []
        for conv in conversations:
            r = self.client.chat.completions.create(
                model=self.model, messages=conv, max_tokens=max_new_tokens, temperature=0
            )
            content = r.choices[0].message.content
            if not isinstance(content, str):
                raise ValueError(f"the endpoint returned no text for a conversation (got {content!r:.60})")
            out.append(content.strip())
        return out


# -- the pipeline -------------------------------------------------------------------------


@dataclass
class Step:
    """One critique -> revision round: the principle drawn, the critique ('' when skipped), the revision."""

    principle: str
    critique: str
    revision: str


@dataclass
class Revised:
    """A prompt, its initial answer and the rounds of critique and revision that followed."""

    question: str
    initial: str
    steps: list[Step] = field(default_factory=list)

    @property
    def final(self) -> str:
        """The last revision (the initial answer when there were no rounds)."""
        return self.steps[-1].revision if self.steps else self.initial


def critique_revise(
    writer: Writer,
    questions: Sequence[str],
    answers: Sequence[str],
    constitution: Constitution,
    *,
    rounds: int = 1,
    critique: bool = True,
    seed: int = 0,
    max_new_tokens: int = 64,
) -> list[Revised]:
    """Critique and revise each answer ``rounds`` times, a random principle per answer and round.

    ``critique=False`` is the paper's ablation: the revision request follows the answer
    directly. The principles drawn depend only on ``seed``, so runs with and without the
    critique step revise under the same principles. Each round revises the previous
    round's revision; all answers of a round go to the writer in one call (one batch).
    """
    questions = text_list(questions, "questions")
    answers = text_list(answers, "answers", allow_blank=True)
    same_length(questions, answers, "questions", "answers")
    rounds = positive_int(rounds, "rounds")
    max_new_tokens = positive_int(max_new_tokens, "max_new_tokens")
    rng = random.Random(random_seed(seed))
    shots = few_shot_messages(constitution, with_critique=critique)
    out = [Revised(q, a) for q, a in zip(questions, answers, strict=True)]
    for _ in range(rounds):
        drawn = [rng.choice(constitution.principles) for _ in out]
        current = [r.final for r in out]
        crits = [""] * len(out)
        if critique:
            crits = writer.reply(
                [shots + critique_messages(r.question, a, p) for r, a, p in zip(out, current, drawn, strict=True)],
                max_new_tokens,
            )
        revs = writer.reply(
            [
                shots + revision_messages(r.question, a, p, c if critique else None)
                for r, a, p, c in zip(out, current, drawn, crits, strict=True)
            ],
            max_new_tokens,
        )
        for r, p, c, v in zip(out, drawn, crits, revs, strict=True):
            r.steps.append(Step(p.name, c, v))
    return out


def to_examples(revised: Sequence[Revised], which: str = "final") -> list[Example]:
    """Fine-tuning data from the pipeline: ``"final"`` revisions (SL-CAI) or the ``"initial"`` answers."""
    if which not in ("final", "initial"):
        raise ValueError(f"which must be 'final' or 'initial', got {which!r}")
    return [Example(r.question, r.final if which == "final" else r.initial) for r in revised]


def copied_share(revised: Sequence[Revised], n_chars: int = 40) -> float:
    """Share of final revisions that begin exactly like the initial answer (first ``n_chars``).

    A writer that cannot revise tends to copy; this says how often it did.
    """
    if not revised:
        raise ValueError("copied_share() needs at least one revised answer")
    return sum(r.final[:n_chars] == r.initial[:n_chars] for r in revised) / len(revised)


def echoed_share(revised: Sequence[Revised], constitution: Constitution, n_chars: int = 40) -> float:
    """Share of critiques that begin like a few-shot critique (the writer copying the worked example)."""
    crits = [s.critique for r in revised for s in r.steps if s.critique]
    if not crits:
        return 0.0
    starts = {shot.critique[:n_chars] for shot in constitution.few_shot}
    return sum(c[:n_chars] in starts for c in crits) / len(crits)
