"""Execute the book's chapter notebooks with nbmake, several at a time, in dependency order.

    python scripts/execute_chapters.py --workers 2 build/book/chapters/*.ipynb

Each chapter runs in its own ``pytest --nbmake --overwrite`` process (so its outputs
land in the notebook) with ``PERSONALAB_THREADS`` threads (default 1; the BLAS and OpenMP
thread counts of numpy, scipy and scikit-learn are set to the same) and
``PERSONALAB_CHAPTER`` set, so the library's stage profiler (``personalab.profiling``)
records where the chapter's time goes. A chapter starts only when the chapters it reads
from have passed (``NEEDS``: later chapters load chapter 2's cached persona vectors and
chapter 6 re-uses chapter 5's fine-tuned adapters). Chapter 5 needs only two vectors and
extracts them itself when chapter 2 has not yet (the vector cache is locked per entry, so
the two never build the same vector twice), which lets it start at once. Among the ready
chapters, the one with the longest chain of work behind it goes first (its own last
recorded duration, ``perf.chapter_seconds`` in ``benchmarks/results.json``, plus the
longest chain of chapters that wait for it). Why several at
once: on two cores, two chapters at one thread each finish sooner than one chapter at
two threads (README, "How long it takes").

Before the first chapter it de-quantises the embedded model into the cache once
(``prepare_model``, printed as its own line). Prints each chapter's seconds and the total, writes ``build/chapter_seconds.json`` and
each chapter's log to ``build/logs/``; exits 1 if any chapter failed (its log's tail is
printed, and the chapters that need it are not run).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NEEDS = {
    "03": {"02"},
    "04": {"02"},
    "06": {"05"},
    "07": {"02"},
    "08": {"02"},
}  # chapter number -> chapters whose caches it reads


def number(nb: Path) -> str:
    """``"03"`` for ``03_steering.ipynb``."""
    return nb.stem.split("_", 1)[0]


def expected_seconds() -> dict[str, float]:
    """The last recorded duration of each chapter (for longest-first ordering)."""
    path = ROOT / "benchmarks" / "results.json"
    try:
        return json.loads(path.read_text())["perf"]["chapter_seconds"]
    except (OSError, KeyError, ValueError):
        return {}


def chain_seconds(notebooks: list[Path], est: dict[str, float]) -> dict[Path, float]:
    """Each chapter's own expected seconds plus the longest chain of chapters waiting on it."""
    own = {nb: est.get(nb.stem, 60.0) for nb in notebooks}
    memo: dict[Path, float] = {}

    def chain(nb: Path) -> float:
        if nb not in memo:
            waiting = [o for o in notebooks if number(nb) in NEEDS.get(number(o), set())]
            memo[nb] = own[nb] + max((chain(o) for o in waiting), default=0.0)
        return memo[nb]

    return {nb: chain(nb) for nb in notebooks}


# The numpy/scipy/scikit-learn maths of a chapter (OpenBLAS, OpenMP) would otherwise start a thread
# per core beside the other chapter's: with another process busy on one of the two cores, 651
# logistic-regression fits (chapter 8's probe shape: 80 x 576) took 4.45 s at two BLAS threads
# and 1.42 s at one (1.58 and 1.56 s with the cores idle), measured on this 2-core machine.
BLAS_THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def thread_env(threads: int, **extra: str) -> dict[str, str]:
    """This process's environment with ``threads`` for torch and for every BLAS library, plus ``extra``."""
    env = dict(os.environ, PERSONALAB_THREADS=str(threads), **extra)
    env.update({name: str(threads) for name in BLAS_THREAD_VARIABLES})
    return env


def launch(nb: Path, threads: int, timeout: int, logs: Path) -> subprocess.Popen:
    env = thread_env(threads, PERSONALAB_CHAPTER=nb.stem)
    log = (logs / f"{nb.stem}.log").open("w")
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "--nbmake",
        f"--nbmake-timeout={timeout}",
        "--overwrite",
        str(nb),
    ]
    return subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)


def prepare_model(threads: int) -> float:
    """De-quantise the embedded model into the cache once, before any chapter starts; seconds.

    The first ``load_model()`` on a machine turns the GGUF into cached safetensors (about
    15 s here), every later one reads that cache (about 2 s). Without this step the first
    chapters to start (2 and 5, side by side) each paid for it inside their own time, which a
    learner pays once, in whichever chapter comes first; it is printed as its own line."""
    t0 = time.time()
    code = "import personalab as pl; pl.load_model()"
    subprocess.run([sys.executable, "-c", code], env=thread_env(threads), cwd=ROOT, check=True)
    return round(time.time() - t0, 1)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("notebooks", nargs="+", type=Path)
    ap.add_argument("--workers", type=int, default=2, help="chapters executed at once (default 2)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per chapter (default 1)")
    ap.add_argument("--timeout", type=int, default=1500, help="seconds per cell (nbmake)")
    args = ap.parse_args()
    if args.workers < 1 or args.threads < 1:
        ap.error("--workers and --threads must be >= 1")
    logs = ROOT / "build" / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    priority = chain_seconds(args.notebooks, expected_seconds())
    pending = sorted(args.notebooks, key=lambda nb: -priority[nb])
    known = {number(nb) for nb in args.notebooks}
    running: dict[Path, tuple[subprocess.Popen, float]] = {}
    done: dict[str, float] = {}
    failed: list[Path] = []
    start = time.time()
    prepared = prepare_model(args.workers * args.threads)  # nothing else runs yet: every core
    print(f"[{time.time() - start:6.0f} s] embedded model de-quantised into the cache: {prepared} s", flush=True)

    def ready(nb: Path) -> bool:
        return all(n in {number(Path(d)) for d in done} or n not in known for n in NEEDS.get(number(nb), ()))

    while pending or running:
        blocked = {number(f) for f in failed}
        for nb in [nb for nb in pending if NEEDS.get(number(nb), set()) & blocked]:
            pending.remove(nb)
            failed.append(nb)
            print(f"[{time.time() - start:6.0f} s] skip  {nb.stem}: a chapter it needs failed", flush=True)
        while len(running) < args.workers and (nxt := next((nb for nb in pending if ready(nb)), None)):
            pending.remove(nxt)
            running[nxt] = (launch(nxt, args.threads, args.timeout, logs), time.time())
            print(f"[{time.time() - start:6.0f} s] start {nxt.stem}", flush=True)
        time.sleep(2)
        for nb, (proc, t0) in list(running.items()):
            if proc.poll() is None:
                continue
            del running[nb]
            secs = round(time.time() - t0, 1)
            ok = proc.returncode == 0
            print(f"[{time.time() - start:6.0f} s] {'done ' if ok else 'FAIL '} {nb.stem}: {secs} s", flush=True)
            if ok:
                done[nb.stem] = secs
            else:
                failed.append(nb)
                tail = (logs / f"{nb.stem}.log").read_text(errors="replace")[-6000:]
                print(f"----- {nb.stem} failed; the end of build/logs/{nb.stem}.log -----\n{tail}", flush=True)
    total = round(time.time() - start, 1)
    out = ROOT / "build" / "chapter_seconds.json"
    out.write_text(json.dumps(dict(sorted(done.items())), indent=2) + "\n")
    from personalab.models import cpu_name  # timings compare only on the same CPU

    print(
        "----- chapter durations (each at", args.threads, "thread(s),", args.workers, f"at a time, {cpu_name()}) -----"
    )
    print(f"{prepared:8.1f} s  embedded model into the cache (before the chapters)")
    for name, secs in sorted(done.items()):
        print(f"{secs:8.1f} s  {name}")
    print(f"{total:8.1f} s  all chapters (wall clock)")
    if failed:
        print("failed or skipped:", ", ".join(nb.stem for nb in failed))
    print(f"{len(done)} passed, {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
