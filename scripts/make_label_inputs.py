"""Write the blind, unlabelled answers that the hand labels in personalab/data/labels start from.

Run once, offline, on the embedded model:  python scripts/make_label_inputs.py OUT_DIR [trait ...]

For each trait, the embedded model answers the 20 *evaluation* questions under p+ and
under p- (greedy, 48 new tokens: ``generate_contrastive(split="evaluation")``). The 40
answers are shuffled with a fixed seed and written as ``OUT_DIR/<trait>.jsonl`` rows
``{"id", "question", "answer"}``: no system prompt and no p+/p- flag, so whoever labels
them cannot tell which prompt produced an answer. A labeller adds ``"label"`` (0-100)
to every row; the labelled file goes to ``personalab/data/labels/<trait>.jsonl``.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import personalab as pl
from personalab import traits
from personalab.extraction import generate_contrastive

SEED = 7


def blind_rows(model, name: str) -> list[dict]:
    """The trait's 40 evaluation answers (p+ and p-), shuffled, without their source."""
    cset = generate_contrastive(model, traits.load(name), split="evaluation")
    rows = [
        {"question": q, "answer": a}
        for q, a in zip(cset.questions * 2, cset.answers_pos + cset.answers_neg, strict=True)
    ]
    random.Random(SEED).shuffle(rows)
    return [{"id": f"{name}-{i:02d}", **r} for i, r in enumerate(rows)]


def main(out: Path, names: list[str]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    model = pl.load_model()
    for name in names or traits.list_traits():
        rows = blind_rows(model, name)
        (out / f"{name}.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        print(f"{name}: {len(rows)} blind answers -> {out / name}.jsonl")


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2:])
