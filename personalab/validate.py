"""Checks for the inputs the public API takes, one function per kind, so every entry point
rejects the same bad input with the same clear message (what was wrong, what was expected).

numpy and torch scalars are accepted wherever a Python number is (a layer picked with
``np.argmax`` or ``tensor.argmax()`` works); ``bool`` is refused where a number is meant,
since ``True`` would silently mean 1.
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
KNOWN_SUFFIXES = (".safetensors", ".json")


def _scalar(x: object) -> object:
    """A 0-d numpy/torch value as a Python number; anything else unchanged."""
    item = getattr(x, "item", None)
    shape = getattr(x, "shape", None)
    if callable(item) and shape is not None and tuple(shape) == ():
        return item()
    return x


def integer(x: object, what: str) -> int:
    """``x`` as an ``int`` (any integral type, not ``bool``), else a TypeError naming ``what``."""
    v = _scalar(x)
    if isinstance(v, bool) or not isinstance(v, numbers.Integral):
        raise TypeError(f"{what} must be a whole number, got {x!r} ({type(x).__name__})")
    return int(v)


def layer_index(x: object, n_layers: int, *, allow_embeddings: bool = True) -> int:
    """A layer in personalab's convention: 0 = embeddings (when allowed), i = output of block i."""
    layer = integer(x, "layer")
    lo = 0 if allow_embeddings else 1
    if not lo <= layer <= n_layers:
        raise IndexError(
            f"layer {layer} is out of range: this model has {n_layers} blocks, so layers run "
            f"{lo}-{n_layers} (0 = embeddings, i = output of block i)"
        )
    return layer


def positive_int(x: object, what: str) -> int:
    """A whole number >= 1 (batch sizes, steps, counts)."""
    v = integer(x, what)
    if v < 1:
        raise ValueError(f"{what} must be >= 1, got {v}")
    return v


def _real(x: object, what: str) -> float:
    v = _scalar(x)
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        raise TypeError(f"{what} must be a real number, got {x!r:.60} ({type(x).__name__})")
    return float(v)


def real_number(x: object, what: str) -> float:
    """A real number (any numeric type, not ``bool``), as a float; +-inf allowed, NaN refused."""
    f = _real(x, what)
    if math.isnan(f):
        raise ValueError(f"{what} is NaN: give a number")
    return f


def finite_real(x: object, what: str) -> float:
    """A finite real number (any numeric type, not ``bool``), as a float."""
    f = _real(x, what)
    if not math.isfinite(f):
        raise ValueError(f"{what} must be finite, got {f}")
    return f


def random_seed(x: object, what: str = "seed") -> int:
    """A random seed: a whole number >= 0."""
    v = integer(x, what)
    if v < 0:
        raise ValueError(f"{what} must be >= 0, got {v}")
    return v


def text(x: object, what: str) -> str:
    """One non-empty string (a prompt, a question)."""
    if not isinstance(x, str):
        raise TypeError(f"{what} must be a string, got {x!r:.60} ({type(x).__name__})")
    if not x.strip():
        raise ValueError(f"{what} is empty: give some text")
    return x


def text_list(xs: object, what: str, *, allow_blank: bool = False, allow_empty: bool = False) -> list[str]:
    """A non-empty list of non-empty strings; a bare string is refused (it would be read per character).

    ``allow_blank``: items may be ``""`` (answers can be empty); ``allow_empty``: the list may be.
    """
    if isinstance(xs, str):
        raise TypeError(f"{what} must be a list of strings, got one string {xs[:40]!r}: wrap it as [{xs[:20]!r}]")
    if not isinstance(xs, Sequence):
        raise TypeError(f"{what} must be a list of strings, got {type(xs).__name__}")
    out = list(xs)
    if not out and not allow_empty:
        raise ValueError(f"{what} is empty: give at least one")
    for i, x in enumerate(out):
        if not isinstance(x, str):
            raise TypeError(f"{what}[{i}] must be a string, got {x!r:.60} ({type(x).__name__})")
        if not allow_blank and not x.strip():
            raise ValueError(f"{what}[{i}] is empty")
    return out


def same_length(a: Sequence, b: Sequence, what_a: str, what_b: str) -> None:
    """Two lists that pair up one to one (questions and their answers)."""
    if len(a) != len(b):
        raise ValueError(f"{len(a)} {what_a} but {len(b)} {what_b}: they must pair up one to one")


def finite_reals(xs: object, n: int, what: str) -> list[float]:
    """A list of ``n`` finite real numbers (per-layer metadata such as residual norms)."""
    if isinstance(xs, (str, bytes)) or not isinstance(xs, Sequence):
        raise TypeError(f"{what} must be a list of {n} numbers, got {type(xs).__name__}")
    if len(xs) != n:
        raise ValueError(f"{what} has {len(xs)} values, expected {n} (one per layer, 0 = embeddings)")
    return [finite_real(x, f"{what}[{i}]") for i, x in enumerate(xs)]


def vectors_of_one_width(
    xs: Mapping, what: str, *, width: int | None = None, nonzero: bool = False
) -> dict[object, torch.Tensor]:
    """``{key: 1-D finite vector}``, all of one width (``width`` if given), as float64;
    ``nonzero`` refuses all-zero vectors (a direction must have one)."""
    out: dict[object, torch.Tensor] = {}
    for key, x in xs.items():
        v = torch.as_tensor(x, dtype=torch.float64) if not torch.is_tensor(x) else x.detach().double()
        if v.dim() != 1:
            raise ValueError(f"{what}[{key!r}] must be one vector [d], got shape {tuple(v.shape)}")
        width = v.shape[0] if width is None else width
        if v.shape[0] != width:
            raise ValueError(
                f"{what}[{key!r}] has {v.shape[0]} entries, expected {width}: all vectors must "
                "come from the same model and layer width"
            )
        if not bool(torch.isfinite(v).all()):
            raise ValueError(f"{what}[{key!r}] holds NaN or infinite values")
        if nonzero and float(v.norm()) == 0.0:
            raise ValueError(f"{what}[{key!r}] is all zeros: it has no direction")
        out[key] = v
    return out


def safe_name(name: object, what: str = "name") -> str:
    """A name that is safe as a file name inside a cache folder: letters, digits, ``_ . -``, no ``..``."""
    if not isinstance(name, str) or not _NAME.match(name) or ".." in name:
        raise ValueError(
            f"{what} {name!r} is not a safe name: use letters, digits, '_', '.' and '-' "
            "(starting with a letter or digit, no '..', no '/')"
        )
    return name


def file_stem(path: str | Path) -> Path:
    """``path`` without a ``.safetensors``/``.json`` ending; other dots are part of the name
    (``sad_coef0.5`` stays ``sad_coef0.5``, where ``Path.with_suffix("")`` would cut it)."""
    path = Path(path)
    for suffix in KNOWN_SUFFIXES:
        if path.name.endswith(suffix):
            return path.with_name(path.name[: -len(suffix)])
    return path
