"""``make bench``: measure performance here and merge the chapters' measured results.

Writes ``benchmarks/results.json`` (one JSON object). Performance keys are measured by
this script; science keys (``judge.*``, ``traits.*``, ``science.*``) come from the
chapters' last execution (``build/results/*.json``, written by ``make test``/``make
book``); ``perf.chapter_seconds`` from ``build/chapter_seconds.json``.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import personalab as pl  # noqa: E402
from personalab.activations import answer_activations  # noqa: E402
from personalab.models import cpu_name  # noqa: E402
from personalab.prompting import chat_prompt, generate  # noqa: E402
from personalab.results import nest  # noqa: E402

QUESTIONS = [f"Tell me one thing about topic number {i} and why it matters." for i in range(100)]


def timed(fn, repeats: int = 1) -> float:
    """Median wall time of ``fn()`` over ``repeats`` runs."""
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def bench_load() -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        cold = timed(lambda: pl.load_model(cache_dir=tmp))
        warm = timed(lambda: pl.load_model(cache_dir=tmp), repeats=3)
    return {"perf.model_load_cold_s": cold, "perf.model_load_warm_s": warm}


def bench_extract_vs_hook(model, layer: int = 15, n: int = 32) -> dict:
    """nnsight trace vs a plain forward hook: layer-``layer`` activations of ``n`` prompts."""
    prompts = [chat_prompt(model.tokenizer, q) for q in QUESTIONS[:n]]
    hf, tok = model._module, model.tokenizer

    def with_nnsight():
        with model.trace(prompts) as tracer:
            h = model.model.layers[layer - 1].output.save()
            tracer.stop()
        return h

    def with_hook():
        box = {}

        def hook(mod, inp, out):
            box["h"] = out
            raise StopForward

        handle = hf.model.layers[layer - 1].register_forward_hook(hook)
        try:
            with torch.no_grad():
                hf(**tok(prompts, return_tensors="pt", padding=True))
        except StopForward:
            pass
        finally:
            handle.remove()
        return box["h"]

    # the same activations up to float rounding: relative to the largest entry (the residual
    # stream has outlier dimensions of ~2.5e4 here, so a fixed absolute tolerance would not do)
    a, b = with_nnsight().detach(), with_hook()
    assert (a - b).abs().max() <= 1e-6 * b.abs().max(), "nnsight and the forward hook read different activations"
    t_nn = timed(with_nnsight, repeats=5)
    t_hook = timed(with_hook, repeats=5)
    return {
        "perf.extract_nnsight_vs_hook": t_nn / t_hook,
        "perf.extract_nnsight_s": t_nn,
        "perf.extract_hook_s": t_hook,
    }


class StopForward(Exception):
    """Ends a forward pass early once the hooked layer has run (what tracer.stop() does)."""


def bench_generate(model) -> dict:
    """Float32 generation speed by batch size (bfloat16 autocast is compared in ``bench_bf16``)."""
    prompts = [chat_prompt(model.tokenizer, q) for q in QUESTIONS]
    out = {}
    for bs, n in ((1, 4), (16, 32), (32, 64), (64, 64)):  # larger batches: is batch 16 leaving speed unused?
        t = timed(
            lambda n=n, bs=bs: generate(
                model, prompts[:n], max_new_tokens=48, batch_size=bs, cache=False, progress=False
            )
        )
        out[f"batch_{bs}"] = n * 48 / t
    return {"perf.generate_tokens_per_s": out}


def bench_extract_100(model) -> dict:
    prompts = [chat_prompt(model.tokenizer, q) for q in QUESTIONS]
    answers = generate(model, prompts, max_new_tokens=48, batch_size=16, progress=False)
    return {"perf.extract_100_responses_s": timed(lambda: answer_activations(model, prompts, answers))}


def bench_steer_and_monitor(model, n: int = 16, tokens: int = 48) -> dict:
    """Steered and monitored generation time over plain generation: same prompts, tokens, process.

    ``min_new_tokens`` holds every run to exactly ``tokens`` new tokens, so the three
    runs do the same work apart from the intervention.
    """
    import torch as _torch

    from personalab.monitoring import Monitor
    from personalab.prompting import generate_batch
    from personalab.steering import steer
    from personalab.vectors import PersonaVector

    prompts = [chat_prompt(model.tokenizer, q) for q in QUESTIONS[:n]]
    L, d = model.config.num_hidden_layers, model.config.hidden_size
    gen = _torch.Generator().manual_seed(0)
    vec = PersonaVector(
        _torch.randn(L + 1, d, generator=gen),
        dict(
            model_id=pl.models.model_id(model),
            n_layers=L,
            d_model=d,
            trait="bench",
            method="random",
            residual_norm=[100.0] * (L + 1),
        ),
    )
    sampling = {"do_sample": False, "min_new_tokens": tokens}

    def plain():
        generate_batch(model, prompts, tokens, sampling)

    def steered():
        with steer(model, vec, L // 2, 0.1):
            generate_batch(model, prompts, tokens, sampling)

    monitor = Monitor(model, vec, L // 2)

    def monitored():
        monitor.generate(prompts, max_new_tokens=tokens, sampling=sampling)

    t_plain, t_steer, t_mon = (timed(f, repeats=3) for f in (plain, steered, monitored))
    return {
        "perf.steer_vs_plain_generate": t_steer / t_plain,
        "perf.monitor_vs_plain_generate": t_mon / t_plain,
        "perf.plain_generate_16x48_s": t_plain,
    }


def bench_matmul() -> dict:
    """The machine's own limit: GFLOP/s of a plain matmul of the model's MLP shapes (576 x 1536).

    Per dtype, thread count and batch (rows); a generation step at batch b is mostly such
    matmuls, so this is the roofline that tokens/s is compared with.
    """
    out: dict = {}
    before = torch.get_num_threads()
    for dtype in (torch.float32, torch.bfloat16):
        for threads in (1, 2):
            torch.set_num_threads(threads)
            for batch in (1, 16, 64, 256):
                x, w = torch.randn(batch, 576, dtype=dtype), torch.randn(576, 1536, dtype=dtype)
                reps = max(20, 20000 // batch)
                t = timed(lambda x=x, w=w, reps=reps: [x @ w for _ in range(reps)], repeats=3)
                name = str(dtype).removeprefix("torch.")
                out.setdefault(name, {}).setdefault(f"threads_{threads}", {})[f"batch_{batch}"] = (
                    2 * batch * 576 * 1536 * reps / t / 1e9
                )
    torch.set_num_threads(before)
    return {"perf.matmul_gflops": out}


def bench_roofline(model, tokens_per_s_64: float, gflops: dict) -> dict:
    """tokens/s x 2 x parameters over the matmul GFLOP/s, both at batch 64 and one thread (float32)."""
    params = sum(p.numel() for p in model._module.parameters())
    limit = gflops["float32"]["threads_1"]["batch_64"] * 1e9
    return {"perf.generate_roofline_fraction": tokens_per_s_64 * 2 * params / limit, "perf.model_parameters": params}


def bench_bf16(model, n: int = 64, tokens: int = 32) -> dict:
    """Generation in float32, in bfloat16 autocast (the default where the CPU has bfloat16) and
    with bfloat16 weights (batch 64, one thread): speed, how often the answers agree, and
    whether the judged trait of graded-prompt answers changes with the precision."""
    from personalab import traits
    from personalab.judges import EmbeddingJudge
    from personalab.stats import pearson_r

    prompts = [chat_prompt(model.tokenizer, q) for q in QUESTIONS[:n]]
    answers, speed = {}, {}
    for name, flag, dtype in (
        ("float32", "0", torch.float32),
        ("autocast", "1", torch.float32),
        ("bfloat16", "0", torch.bfloat16),
    ):
        os.environ["PERSONALAB_BF16_GENERATION"] = flag
        model._module.to(dtype)
        start = time.perf_counter()
        answers[name] = generate(model, prompts, max_new_tokens=tokens, batch_size=64, cache=False, progress=False)
        speed[name] = n * tokens / (time.perf_counter() - start)
    model._module.to(torch.float32)
    a = answers["float32"]
    out: dict = {"perf.bf16.tokens_per_s": speed}
    for name in ("autocast", "bfloat16"):
        b = answers[name]
        out[f"perf.bf16.{name}"] = {
            "speedup": speed[name] / speed["float32"],
            "same_answer": sum(x == y for x, y in zip(a, b, strict=True)) / n,
            "same_first_5_words": sum(x.split()[:5] == y.split()[:5] for x, y in zip(a, b, strict=True)) / n,
        }
    # Does the precision change what the book measures? pirate's 8 graded prompts x 5 questions, judged.
    pirate, judge = traits.load("pirate"), EmbeddingJudge(model)
    graded = [
        chat_prompt(model.tokenizer, q, pirate.graded_prompts[lev])
        for lev in range(len(pirate.graded_prompts))
        for q in pirate.evaluation_questions[:5]
    ]
    scores = {}
    for name, flag in (("float32", "0"), ("autocast", "1")):
        os.environ["PERSONALAB_BF16_GENERATION"] = flag
        ans = generate(model, graded, max_new_tokens=48, cache=False, progress=False)
        scores[name] = [float(x) for x in judge.trait_scores(pirate, ans)]
    os.environ["PERSONALAB_BF16_GENERATION"] = "0"
    per_level = {k: [sum(v[i : i + 5]) / 5 for i in range(0, len(v), 5)] for k, v in scores.items()}
    out["perf.bf16.autocast_pirate_graded"] = {
        "mean_trait": {k: sum(v) / len(v) for k, v in scores.items()},
        "per_level_mean_trait": per_level,
        "r_per_sample": pearson_r(scores["float32"], scores["autocast"]),
        "r_per_level": pearson_r(per_level["float32"], per_level["autocast"]),
        "n": len(graded),
    }
    return out


def bench_bf16_vectors(model, names: tuple[str, ...] = ("pirate", "sad")) -> dict:
    """Persona vectors extracted from float32 answers vs from bf16-autocast answers: cosine per layer.

    The issue's bar for adopting bf16 generation is a cosine of at least 0.99. Both vectors
    go through the same cached pipeline (the bf16 one is usually cached by the chapters).
    """
    from personalab.extraction import persona_vector

    out = {}
    for name in names:
        vecs = {}
        for label, flag in (("float32", "0"), ("autocast", "1")):
            os.environ["PERSONALAB_BF16_GENERATION"] = flag
            os.environ["PERSONALAB_BF16_ACTIVATIONS"] = flag
            vecs[label] = persona_vector(model, name)
        a, b = vecs["float32"].vectors.float(), vecs["autocast"].vectors.float()
        cos = torch.nn.functional.cosine_similarity(a[1:], b[1:], dim=-1).tolist()  # layers 1..L
        out[name] = {
            "default_layer": {k: v.default_layer for k, v in vecs.items()},
            "cosine_at_default_layer": cos[vecs["float32"].default_layer - 1],
            "cosine_min_layers_5_to_25": min(cos[4:25]),
            "cosine_per_layer": cos,
        }
    os.environ["PERSONALAB_BF16_GENERATION"] = "0"
    os.environ.pop("PERSONALAB_BF16_ACTIVATIONS")
    return {"perf.bf16.vectors": out}


def bench_bf16_activations(model, names: tuple[str, ...] = ("humorous", "sad"), n_pairs: int = 30) -> dict:
    """The bulk activation pass (``answer_activations``) in float32 vs bf16 autocast on the same
    answers: seconds, and the cosine of the two mean-difference vectors at every layer.

    The answers are each trait's first ``n_pairs`` pairs of the 100-pair setting (p+ and
    p- answers, greedy); only the precision of the activation pass differs.
    """
    from personalab import traits
    from personalab.extraction import contrastive_prompts

    out: dict = {}
    for name in names:
        t = traits.load(name)
        pairs = contrastive_prompts(model.tokenizer, t, t.extraction_questions, 5)[:n_pairs]
        pos, neg = [p[2] for p in pairs], [p[3] for p in pairs]
        answers = generate(model, pos + neg, progress=False)
        acts, secs = {}, {}
        for label, flag in (("float32", "0"), ("autocast", "1")):
            os.environ["PERSONALAB_BF16_ACTIVATIONS"] = flag
            start = time.perf_counter()
            a = answer_activations(model, pos, answers[:n_pairs], desc=f"{name} h+ ({label})")
            b = answer_activations(model, neg, answers[n_pairs:], desc=f"{name} h- ({label})")
            secs[label] = time.perf_counter() - start
            acts[label] = a["response"].mean(0) - b["response"].mean(0)
        cos = torch.nn.functional.cosine_similarity(acts["float32"][1:], acts["autocast"][1:], dim=-1)
        out[name] = {
            "seconds": secs,
            "speedup": secs["float32"] / secs["autocast"],
            "cosine_min_over_layers": cos.min().item(),
            "n_pairs": n_pairs,
        }
    os.environ.pop("PERSONALAB_BF16_ACTIVATIONS")
    return {"perf.bf16.activations": out}


def bench_bf16_scoring(model) -> dict:
    """Scoring passes (capability check, judge fluency log-prob) in float32 vs bf16 autocast: speed and drift."""
    from personalab import capability
    from personalab.judges import answer_logprob

    qs = QUESTIONS[:64]
    ans = [f"Topic {i} matters because it shapes how people live, work and learn every day." for i in range(64)]
    out: dict = {}
    for flag, name in (("0", "float32"), ("1", "bfloat16")):
        os.environ["PERSONALAB_BF16_SCORING"] = flag
        capability._UNSTEERED.clear()
        t = time.perf_counter()
        acc = capability.capability_score(model)
        t_cap = time.perf_counter() - t
        t = time.perf_counter()
        lp = answer_logprob(model, qs, ans)
        out[name] = {"capability": acc, "capability_s": t_cap, "logprob_64_s": time.perf_counter() - t, "lp": lp}
    os.environ.pop("PERSONALAB_BF16_SCORING")
    drift = max(abs(a - b) for a, b in zip(out["float32"].pop("lp"), out["bfloat16"].pop("lp"), strict=True))
    return {
        "perf.bf16_scoring": {
            **out,
            "max_logprob_difference": drift,
            "capability_speedup": out["float32"]["capability_s"] / out["bfloat16"]["capability_s"],
        }
    }


def merged_science() -> dict:
    flat = {}
    for path in sorted((ROOT / "build" / "results").glob("*.json")):
        flat.update(json.loads(path.read_text()))
    secs = ROOT / "build" / "chapter_seconds.json"
    if secs.is_file():
        flat["perf.chapter_seconds"] = json.loads(secs.read_text())
    total = ROOT / "build" / "make_test_seconds.txt"  # written by .ci/run
    if total.is_file():
        flat["perf.make_test_seconds"] = float(total.read_text())
    return flat


def main() -> None:
    os.environ.setdefault("PERSONALAB_THREADS", "1")
    os.environ["PERSONALAB_BF16_GENERATION"] = "0"  # float32 speeds; bench_bf16 compares the bfloat16 paths
    pl.set_threads()
    flat: dict = {}
    flat.update(bench_load())
    model = pl.load_model()
    flat.update(bench_extract_vs_hook(model))
    flat.update(bench_generate(model))
    flat.update(bench_matmul())
    flat.update(bench_roofline(model, flat["perf.generate_tokens_per_s"]["batch_64"], flat["perf.matmul_gflops"]))
    flat.update(bench_bf16(model))
    # the default path where the CPU has bfloat16 (autocast) against the bfloat16 matmul limit
    bf16_limit = flat["perf.matmul_gflops"]["bfloat16"]["threads_1"]["batch_64"] * 1e9
    flat["perf.generate_roofline_fraction_autocast"] = (
        flat["perf.bf16.tokens_per_s"]["autocast"] * 2 * flat["perf.model_parameters"] / bf16_limit
    )
    flat.update(bench_bf16_scoring(model))
    flat.update(bench_bf16_activations(model))
    flat.update(bench_bf16_vectors(model))
    flat.update(bench_extract_100(model))
    flat.update(bench_steer_and_monitor(model))
    science = merged_science()
    if not science:
        print("note: no chapter results found in build/results: run `make test` or `make book` first", file=sys.stderr)
    flat.update(science)
    flat["meta.threads"] = torch.get_num_threads()
    flat["meta.cpu"] = cpu_name()  # timings and bfloat16 answers compare only on the same CPU
    flat["meta.measured_at"] = time.strftime("%Y-%m-%d %H:%M:%S")
    out = ROOT / "benchmarks" / "results.json"
    out.write_text(json.dumps(nest(flat), indent=2, sort_keys=True) + "\n")
    print(json.dumps({k: v for k, v in flat.items() if k.startswith("perf.")}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
