"""The ``personalab`` command: the method's steps from a terminal.

    personalab traits                                  # the built-in traits
    personalab extract pirate --out pirate             # a persona vector (cached), saved
    personalab steer pirate --coef 0.2 "Tell me about the sea."
    personalab monitor pirate "Tell me about the sea." # per-token projections
    personalab monitor pirate --prompt-only "Tell me about the sea."   # last prompt token only
    personalab export pirate --layer 12 --coef 0.2 --out pirate.gguf   # a llama.cpp control vector
    personalab export pirate --format safetensors --out pirate         # or pt: a torch.save dict

``VECTOR`` arguments take a trait name (its vector is extracted once and cached, as in
the book) or the path of a saved vector (``PersonaVector.save``). Every command loads the
embedded model (``load_model()``'s default) unless ``--model`` names another. Bad input ends in one line on stderr and
exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

EXIT_BAD_INPUT = 2


def _load_model(name: str | None):
    """The named model; None is ``load_model()``'s default (the embedded one), "tiny" the unit tests' model."""
    import personalab as pl

    if name is None:
        return pl.load_model()
    return pl.tiny_model() if name == "tiny" else pl.load_model(name)


def _vector(model, spec: str):
    """A saved vector (path) or a trait's cached vector (name)."""
    from personalab.vectors import PersonaVector

    path = Path(spec)
    if path.suffix in (".safetensors", ".json") or path.with_name(path.name + ".safetensors").is_file():
        return PersonaVector.load(path, model)
    from personalab import traits
    from personalab.extraction import persona_vector
    from personalab.judges import EmbeddingJudge

    trait = traits.load(spec)  # an unknown name fails here, before the judge is loaded
    return persona_vector(model, trait, EmbeddingJudge(model))


def cmd_traits(args: argparse.Namespace) -> None:
    """List the built-in traits: name, description, questions per split, graded prompts."""
    from personalab import traits

    rows: list[dict] = []
    for name in traits.list_traits():
        t = traits.load(name)
        rows.append(
            {
                "name": name,
                "description": t.description,
                "questions": {split: len(qs) for split, qs in t.questions.items()},
                "graded_prompts": len(t.graded_prompts),
            }
        )
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    for r in rows:
        qs = ", ".join(f"{n} {split}" for split, n in r["questions"].items())
        print(f"{r['name']:<14} {qs}; {r['graded_prompts']} graded prompts — {r['description']}")


def cmd_extract(args: argparse.Namespace) -> None:
    """Extract (or load from the cache) a trait's persona vector; optionally save it."""
    model = _load_model(args.model)
    vec = _vector(model, args.trait)
    meta = vec.meta
    print(
        f"{vec.trait}: {meta.get('n_kept', '?')} of {meta.get('n_pairs', '?')} pairs kept; "
        f"default layer {vec.default_layer} of {vec.n_layers}; "
        f"norm there {float(vec.at(vec.default_layer).norm()):.2f}"
    )
    if args.out:
        print(f"saved {vec.save(args.out)}.safetensors/.json")


def cmd_steer(args: argparse.Namespace) -> None:
    """Answer questions unsteered and steered, side by side."""
    from personalab.prompting import ask
    from personalab.steering import steer

    model = _load_model(args.model)
    vec = _vector(model, args.vector)
    layer = vec.default_layer if args.layer is None else args.layer
    plain = ask(model, args.questions, max_new_tokens=args.max_new_tokens, progress=False)
    with steer(model, vec, layer, args.coef):
        steered = ask(model, args.questions, max_new_tokens=args.max_new_tokens, progress=False)
    for q, a, b in zip(args.questions, plain, steered, strict=True):
        print(
            f"Q: {q}\n  unsteered: {a.strip()}\n  steered ({vec.trait}, layer {layer}, coef {args.coef}): {b.strip()}"
        )


def cmd_monitor(args: argparse.Namespace) -> None:
    """Print each generated token's projection on the vector, or with --prompt-only the last prompt token's."""
    from personalab.monitoring import Monitor, last_prompt_projection
    from personalab.prompting import chat_prompt

    model = _load_model(args.model)
    vec = _vector(model, args.vector)
    layer = vec.default_layer if args.layer is None else args.layer
    prompts = [chat_prompt(model.tokenizer, q) for q in args.questions]
    if args.prompt_only:
        for q, p in zip(args.questions, last_prompt_projection(model, prompts, vec, layer).tolist(), strict=True):
            print(f"{p:.4f}\t{q}   ({vec.trait}, layer {layer}; last prompt token)")
        return
    result = Monitor(model, vec, layer).generate(prompts, max_new_tokens=args.max_new_tokens)
    for q, toks, proj in zip(args.questions, result.tokens, result.projections, strict=True):
        print(f"Q: {q}   ({vec.trait}, layer {layer}; projection per generated token)")
        print("  " + " ".join(f"{t!r}:{p:.1f}" for t, p in zip(toks, proj[:, 0].tolist(), strict=True)))


def cmd_export(args: argparse.Namespace) -> None:
    """Write a vector as a llama.cpp control vector (GGUF), a saved vector (safetensors) or a torch file (pt)."""
    model = _load_model(args.model)
    vec = _vector(model, args.vector)
    if args.format == "gguf":
        if args.coef is None:
            raise ValueError("--format gguf needs --coef (the strength baked into the control vector)")
        layers = args.layer if args.layer else [vec.default_layer]
        path = vec.to_gguf(args.out, layers, args.coef)
        print(f"wrote {path}: layers {layers}, coef {args.coef} x residual norm")
    elif args.format == "safetensors":
        print(f"wrote {vec.save(args.out)}.safetensors/.json (load with PersonaVector.load)")
    else:
        import torch

        torch.save({"vectors": vec.vectors, "meta": vec.meta}, args.out)
        print(f"wrote {args.out}: torch.load(...) gives {{'vectors': [n_layers + 1, d_model], 'meta': dict}}")


def build_parser() -> argparse.ArgumentParser:
    """The command line: one subcommand per step of the method."""
    parser = argparse.ArgumentParser(prog="personalab", description="Persona vectors from a terminal.")
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name: str, fn, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(func=fn)
        if name != "traits":
            p.add_argument("--model", help="model name or folder (default: the embedded SmolLM2-135M-Instruct)")
        return p

    p = command("traits", cmd_traits, "list the built-in traits")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p = command("extract", cmd_extract, "extract a trait's persona vector (cached) and optionally save it")
    p.add_argument("trait", help="a built-in trait name or a trait JSON file")
    p.add_argument("--out", help="save the vector here (PATH.safetensors and PATH.json)")
    for name, fn, help_text in (
        ("steer", cmd_steer, "answer questions unsteered and steered by a persona vector"),
        ("monitor", cmd_monitor, "print every generated token's projection on a persona vector"),
    ):
        p = command(name, fn, help_text)
        p.add_argument("vector", help="a trait name or the path of a saved vector")
        p.add_argument("questions", nargs="+", help="one or more questions")
        p.add_argument("--layer", type=int, help="layer to steer or read (default: the vector's default layer)")
        p.add_argument("--max-new-tokens", type=int, default=48, help="tokens per answer (default: %(default)s)")
        if name == "steer":
            p.add_argument("--coef", type=float, required=True, help="strength, times the layer's residual norm")
        else:
            p.add_argument(
                "--prompt-only", action="store_true", help="only the last prompt token's projection, no generation"
            )
    p = command("export", cmd_export, "write a persona vector as GGUF (llama.cpp), safetensors or a torch file")
    p.add_argument("vector", help="a trait name or the path of a saved vector")
    p.add_argument("--out", required=True, help="the file to write (safetensors: a stem, PATH.safetensors + .json)")
    p.add_argument("--format", choices=("gguf", "safetensors", "pt"), default="gguf", help="default: %(default)s")
    p.add_argument("--coef", type=float, help="gguf only: strength, times each layer's residual norm")
    p.add_argument("--layer", type=int, action="append", help="a layer to steer (repeatable; default: the vector's)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; bad input prints ``personalab: error: ...`` and returns 2."""
    from personalab.llm_client import JudgeError

    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (
        ValueError,
        TypeError,
        KeyError,
        IndexError,
        FileNotFoundError,
        JudgeError,
    ) as err:  # ConfigError, TraitError are ValueErrors
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"personalab: error: {message}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return 0


if __name__ == "__main__":
    sys.exit(main())
