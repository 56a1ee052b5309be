"""Recording measured results so the book, the benchmarks and the closing notes agree.

A chapter that measures something calls ``record("judge.sad.spearman", 0.81)``; the
value goes to ``build/results/<chapter>.json`` (or ``$PERSONALAB_RESULTS``), and
``make bench`` merges those files into ``benchmarks/results.json``. Nothing is typed in
by hand: every number there was computed by a run.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from personalab._io import atomic_write_json
from personalab.config import settings
from personalab.validate import safe_name


def _clean(value):
    if hasattr(value, "tolist") and callable(value.tolist):  # numpy / torch scalars and arrays
        value = value.tolist()
    if isinstance(value, float):
        return None if math.isnan(value) else round(value, 4)
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if value is None or isinstance(value, (bool, int, str)):
        return value
    raise TypeError(f"record() stores numbers, strings, lists and dicts of them; got {type(value).__name__}")


def record(key: str, value, *, source: str = "notebook") -> None:
    """Store ``value`` under the dotted ``key`` in ``$PERSONALAB_RESULTS/<source>.json`` (``build/results``)."""
    if not isinstance(key, str) or not all(part.strip() for part in key.split(".")):
        raise ValueError(f"key must be a dotted name such as 'judge.sad.spearman', got {key!r}")
    clean = _clean(value)
    path = _results_dir() / f"{safe_name(source, 'source')}.json"
    data = json.loads(path.read_text()) if path.is_file() else {}
    data[key] = clean
    atomic_write_json(path, data)


def _results_dir() -> Path:
    """The results folder: walks up from the notebook's folder to the repo's ``build/``."""
    results = settings().results
    if results.is_absolute():
        return results
    here = Path.cwd()
    for parent in (here, *here.parents):
        if (parent / "pyproject.toml").is_file():
            return parent / results
    return here / results


def nest(flat: dict) -> dict:
    """``{"a.b": 1}`` -> ``{"a": {"b": 1}}``."""
    out: dict = {}
    for key, value in flat.items():
        node = out
        *parents, last = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ValueError(f"results key {key!r} nests under {p!r}, which already holds a value")
        if isinstance(node.get(last), dict):
            raise ValueError(f"results key {key!r} would replace the group of keys under it")
        node[last] = value
    return out
