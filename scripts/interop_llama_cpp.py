"""Steer the embedded model in llama.cpp with an exported persona vector (``make interop``).

Not part of CI: it builds ``llama-cpp-python`` from its PyPI source distribution (several
minutes on two cores). It exports the sad vector with ``PersonaVector.to_gguf`` at the
layer and strength chapter 3 uses, loads it into llama.cpp the way llama.cpp's own
``--control-vector-scaled`` does (``common_control_vector_load`` packs ``direction.{il}`` at
offset ``n_embd * (il - 1)`` and ``llama_set_adapter_cvec`` fills layers 1 .. n_layer - 1),
answers the same evaluation questions greedily in llama.cpp (the GGUF file, Q4_1) and in
personalab (its de-quantised weights), with and without the vector, and scores every answer
with the book's embedding judge. The claim it tests: the exported file moves the judged
trait the same way as ``steer()`` does. Writes ``build/interop.json``.

    .venv/bin/python scripts/interop_llama_cpp.py [--trait sad] [--coef 0.25] [--n 20]
"""

from __future__ import annotations

import argparse
import ctypes
import json
import tempfile
from pathlib import Path

import numpy as np

import personalab as pl
from personalab import traits
from personalab.export import llama_cpp_tensor_name, read_gguf
from personalab.extraction import persona_vector
from personalab.judges import EmbeddingJudge, repetition_rate
from personalab.models import d_model, embedded_gguf_path, n_layers
from personalab.prompting import ask
from personalab.stats import mean_ci
from personalab.steering import steer

ROOT = Path(__file__).resolve().parents[1]


def cvec_buffer(path: Path, n_embd: int, n_layer: int, scale: float) -> np.ndarray:
    """The float buffer llama.cpp's ``common_control_vector_load`` builds from one file.

    Its tensor ``direction.{il}`` (il >= 1) lands at offset ``n_embd * (il - 1)``; the buffer
    covers layers 1 .. n_layer. ``read_gguf`` returns personalab layers (``il + 1``).
    """
    buf = np.zeros(n_embd * n_layer, dtype=np.float32)
    for layer, tensor in read_gguf(path).items():
        il = layer - 1
        buf[n_embd * (il - 1) : n_embd * il] += scale * tensor.numpy()
    return buf


def llama_answers(questions: list[str], cvec: np.ndarray | None, max_tokens: int, n_layer: int) -> list[str]:
    import llama_cpp

    llm = llama_cpp.Llama(str(embedded_gguf_path()), n_ctx=1024, n_threads=2, seed=0, verbose=False)
    if cvec is not None:
        ptr = cvec.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
        # llama-cli's default layer range when none is given: 1 .. n_layer
        rc = llama_cpp.llama_set_adapter_cvec(llm.ctx, ptr, cvec.size, llm.n_embd(), 1, n_layer)
        if rc != 0:
            raise RuntimeError(f"llama_set_adapter_cvec returned {rc}")
    out = []
    for q in questions:
        llm.reset()
        reply = llm.create_chat_completion(
            messages=[{"role": "user", "content": q}], temperature=0.0, max_tokens=max_tokens, seed=0
        )
        out.append(reply["choices"][0]["message"]["content"].strip())
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trait", default="sad")
    ap.add_argument("--coef", type=float, default=0.25)
    ap.add_argument("--n", type=int, default=20, help="evaluation questions")
    ap.add_argument("--max-new-tokens", type=int, default=48)
    args = ap.parse_args()

    pl.set_threads(2)
    model = pl.load_model("SmolLM2-135M-Instruct")
    judge = EmbeddingJudge(model)
    trait = traits.load(args.trait)
    vec = persona_vector(model, args.trait, judge)
    layer = vec.default_layer
    questions = trait.evaluation_questions[: args.n]
    path = vec.to_gguf(Path(tempfile.mkdtemp()) / f"{args.trait}.gguf", layers=layer, coef=args.coef)
    n_layer = n_layers(model)
    cvec = cvec_buffer(path, d_model(model), n_layer, scale=1.0)

    answers = {
        "personalab, plain": ask(model, questions, max_new_tokens=args.max_new_tokens, cache=False, progress=False),
        "llama.cpp, plain": llama_answers(questions, None, args.max_new_tokens, n_layer),
        "llama.cpp, control vector": llama_answers(questions, cvec, args.max_new_tokens, n_layer),
        "llama.cpp, control vector x -1": llama_answers(questions, -cvec, args.max_new_tokens, n_layer),
    }
    with steer(model, vec, layers=layer, coef=args.coef):
        answers["personalab, steer()"] = ask(
            model, questions, max_new_tokens=args.max_new_tokens, cache=False, progress=False
        )
    with steer(model, vec, layers=layer, coef=-args.coef):
        answers["personalab, steer() x -1"] = ask(
            model, questions, max_new_tokens=args.max_new_tokens, cache=False, progress=False
        )
    scores = {k: judge.trait_scores(trait, v) for k, v in answers.items()}
    rows = {k: dict(zip(("mean", "ci_low", "ci_high"), mean_ci(s), strict=True)) for k, s in scores.items()}
    for k, v in answers.items():  # a trait only moves while the text holds: the book's coherence rule
        rows[k]["coherence"] = float(np.mean(judge.coherence_scores(questions, v)))
        rows[k]["repetition"] = float(np.mean([repetition_rate(a) for a in v]))
    for engine in ("personalab", "llama.cpp"):
        plain = np.array(scores[f"{engine}, plain"])
        for kind in (
            ("steer()", "steer() x -1") if engine == "personalab" else ("control vector", "control vector x -1")
        ):
            gain = np.array(scores[f"{engine}, {kind}"]) - plain
            rows[f"{engine}, {kind}"]["gain"] = dict(zip(("mean", "ci_low", "ci_high"), mean_ci(gain), strict=True))
    result = {
        "trait": args.trait,
        "layer": layer,
        "llama_cpp_tensor": llama_cpp_tensor_name(layer),
        "coef": args.coef,
        "n_questions": len(questions),
        "scores": rows,
        "examples": {k: v[:2] for k, v in answers.items()},
    }
    out = ROOT / "build" / "interop.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    for k, r in rows.items():
        gain = r.get("gain")
        g = f"; gain {gain['mean']:+.1f} [{gain['ci_low']:+.1f}, {gain['ci_high']:+.1f}]" if gain else ""
        print(
            f"{k:34s} judged {args.trait} {r['mean']:5.1f} [{r['ci_low']:.1f}, {r['ci_high']:.1f}]{g}; "
            f"coherence {r['coherence']:.0f}, repetition {r['repetition']:.2f}"
        )
    print(f"written {out}")


if __name__ == "__main__":
    main()
