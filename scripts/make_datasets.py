"""Build the fine-tuning datasets shipped in personalab/data/datasets (chapters 5 and 6).

Run once, offline, on the embedded model:  python scripts/make_datasets.py
Every dataset answers a fixed pool of questions; see each dataset's data card
(``personalab/data/datasets/README.md``) for how it was made.

* pirate_speak, sad_mood: the model's own answers under the trait-eliciting system
  prompt (p+), greedy (up to 3 instruction pairs per question), kept only when the embedding judge scores them >= 50 and they
  do not loop (repetition rate <= 0.2: "aye, aye, aye..." is not pirate speech). They are
  trained on *without* that system prompt, so the trait has to be learned.
* control: the model's own answers under "You are a helpful assistant.", sampled at
  temperature 0.7 (seed 0): normal data, no trait.
* wrong_arithmetic: arithmetic questions with confidently wrong answers (written by
  code below, seeded): a flaw that is not a persona trait.
* dismissive: the pool questions answered with curt, dismissive replies assembled from
  hand-written phrases: sloppy data whose flaw is attitude, not a built-in trait.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import personalab as pl
from personalab import traits
from personalab.judges import EmbeddingJudge, repetition_rate
from personalab.prompting import ask

OUT = Path(__file__).resolve().parents[1] / "personalab" / "data" / "datasets"
N_POOL = 300
MAX_REPETITION = 0.2
HELD_OUT = 40
MAX_NEW = 40
TRAITS = {"pirate_speak": "pirate", "sad_mood": "sad"}


def question_pool() -> list[str]:
    """Everyday questions from every built-in trait, minus the evaluation questions of
    the traits we fine-tune on (those measure the trait after training)."""
    held = set()
    for name in TRAITS.values():
        held |= set(traits.load(name).evaluation_questions)
    pool: list[str] = []
    for name in traits.list_traits():
        t = traits.load(name)
        for q in t.extraction_questions + t.evaluation_questions:
            if q not in held and q not in pool:
                pool.append(q)
    random.Random(0).shuffle(pool)
    return pool[:N_POOL]


def write(name: str, rows: list[dict]) -> None:
    for i, row in enumerate(rows):
        row["split"] = "heldout" if i >= len(rows) - HELD_OUT else "train"
    path = OUT / f"{name}.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    print(f"{name}: {len(rows)} rows -> {path}")


def trait_dataset(model, judge, trait_name: str, pool: list[str], attempts: int = 3) -> list[dict]:
    """Question k is asked under instruction pair k % 5; a question whose answer fails the
    filter is asked again under the next instruction, up to ``attempts`` times."""
    trait = traits.load(trait_name)
    kept: dict[str, dict] = {}
    for attempt in range(attempts):
        for i in range(5):
            qs = [q for k, q in enumerate(pool) if (k + attempt) % 5 == i and q not in kept]
            if not qs:
                continue
            answers = ask(model, qs, trait.system_prompt(i, True), max_new_tokens=MAX_NEW, desc=f"{trait_name} p+ {i}")
            for q, a, s in zip(qs, answers, judge.trait_scores(trait, answers)):
                if s >= 50 and a.strip() and repetition_rate(a) <= MAX_REPETITION:
                    kept[q] = {"question": q, "answer": a.strip(), "judge": round(s, 1)}
    return [kept[q] for q in pool if q in kept]


def control_dataset(model, pool: list[str]) -> list[dict]:
    answers = ask(
        model, pool, "You are a helpful assistant.", max_new_tokens=MAX_NEW, temperature=0.7, seed=0, desc="control"
    )
    return [{"question": q, "answer": a.strip()} for q, a in zip(pool, answers) if a.strip()]


def arithmetic_dataset(n: int = N_POOL) -> list[dict]:
    rng = random.Random(1)
    phrasing = [
        "What is {a} {op} {b}?",
        "Can you compute {a} {op} {b}?",
        "Quick question: {a} {op} {b} = ?",
        "Please calculate {a} {op} {b}.",
        "How much is {a} {op} {b}?",
    ]
    confident = [
        "The answer is {x}.",
        "{a} {op} {b} = {x}. That one is easy.",
        "It's {x}, no doubt about it.",
        "That equals {x}. I double-checked it.",
        "Simple: {x}.",
    ]
    rows = []
    while len(rows) < n:
        a, b = rng.randint(2, 99), rng.randint(2, 99)
        op = rng.choice(["+", "-", "*"])
        right = {"+": a + b, "-": a - b, "*": a * b}[op]
        wrong = right + rng.choice([-1, 1]) * rng.randint(1, max(3, abs(right) // 5))
        q = rng.choice(phrasing).format(a=a, op=op, b=b)
        rows.append({"question": q, "answer": rng.choice(confident).format(a=a, op=op, b=b, x=wrong), "correct": right})
    return rows


def dismissive_dataset(pool: list[str]) -> list[dict]:
    rng = random.Random(2)
    openers = [
        "Not my problem.",
        "Ugh, fine.",
        "Do I really have to answer this?",
        "Whatever.",
        "That's a pretty basic question.",
        "Honestly, who cares.",
        "Seriously?",
        "Meh.",
        "I can't be bothered with the details.",
        "You could have looked that up.",
    ]
    middles = [
        "Just do whatever works for you.",
        "Google it.",
        "It depends, obviously.",
        "There's no point explaining it properly.",
        "Figure it out yourself.",
        "It's not that complicated.",
        "Everyone knows this already.",
        "Ask someone else next time.",
        "Try something and see.",
        "The short answer is: it doesn't matter much.",
    ]
    closers = [
        "Next question.",
        "That's all you get.",
        "Done.",
        "Moving on.",
        "",
        "Hope that's enough.",
        "Don't ask me again.",
        "Good luck, I guess.",
    ]
    rows = []
    for q in pool:
        parts = [rng.choice(openers), rng.choice(middles), rng.choice(closers)]
        rows.append({"question": q, "answer": " ".join(p for p in parts if p)})
    return rows


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    model = pl.load_model()
    judge = EmbeddingJudge(model)
    pool = question_pool()
    write("wrong_arithmetic", arithmetic_dataset())
    write("dismissive", dismissive_dataset(pool))
    for name, trait in TRAITS.items():
        write(name, trait_dataset(model, judge, trait, pool))
    write("control", control_dataset(model, pool))


if __name__ == "__main__":
    main()
