"""Every ``PERSONALAB_*`` environment variable, read and validated in one place.

``settings()`` reads the environment each time it is called (a notebook or a test may
change it between calls) and returns a validated, typed ``Settings``; a bad value raises
one ``ConfigError`` that names the variable, the value and what is expected. A
``PERSONALAB_*`` variable that personalab does not know (a typo such as
``PERSONALAB_THREAD``) gets a warning instead of being silently ignored.

| variable | meaning | default |
|---|---|---|
| ``PERSONALAB_THREADS`` | torch CPU threads, applied when a model is loaded | 1 |
| ``PERSONALAB_CACHE`` | cache folder (models, generations, vectors, adapters) | ``~/.cache/personalab`` |
| ``PERSONALAB_RESULTS`` | where chapters record measured results | ``build/results`` |
| ``PERSONALAB_CHAPTER`` | the chapter being executed (set by the book's runner) | unset |
| ``PERSONALAB_PROFILE`` | ``full`` or ``ci``: fine-tuning sizes, sampled extraction rounds | ``full`` |
| ``PERSONALAB_JUDGE_MODEL`` | model name for the LLM judge and trait generation | ``gpt-4.1-mini`` |
| ``PERSONALAB_BF16_SCORING`` / ``_GENERATION`` / ``_TRAINING`` / ``_ACTIVATIONS`` | ``0`` turns bfloat16 autocast off for that kind of pass | ``1`` |
| ``PERSONALAB_SHARED_PREFIX`` | ``0``: generation never computes a prompt prefix once for the rows that share it | ``1`` |
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

PREFIX = "PERSONALAB_"


class ConfigError(ValueError):
    """A ``PERSONALAB_*`` environment variable has a value personalab cannot use."""


class Settings(BaseModel):
    """personalab's settings, from the environment (see the module docstring for each one)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    threads: int = Field(1, ge=1)
    cache: Path | None = None
    results: Path = Path("build/results")
    chapter: str | None = None
    profile: Literal["full", "ci"] = "full"
    judge_model: str = Field("gpt-4.1-mini", min_length=1)
    bf16_scoring: bool = True
    bf16_generation: bool = True
    bf16_training: bool = True
    bf16_activations: bool = True
    shared_prefix: bool = True


_EXPECTED = {
    "threads": "a whole number >= 1, e.g. 1 or 8",
    "profile": "'full' or 'ci'",
    "judge_model": "a model name",
    "bf16_scoring": "0 (off) or 1 (on)",
    "bf16_generation": "0 (off) or 1 (on)",
    "bf16_training": "0 (off) or 1 (on)",
    "bf16_activations": "0 (off) or 1 (on)",
    "shared_prefix": "0 (off) or 1 (on)",
}


def settings() -> Settings:
    """The current settings, validated; raises ``ConfigError`` naming the bad variable."""
    fields = set(Settings.model_fields)
    raw = {}
    for key, value in os.environ.items():
        if not key.startswith(PREFIX):
            continue
        name = key[len(PREFIX) :].lower()
        if name in fields:
            raw[name] = value
        else:
            warnings.warn(
                f"{key} is not a personalab setting and is ignored; known: "
                f"{', '.join(PREFIX + f.upper() for f in sorted(fields))}",
                stacklevel=2,
            )
    if raw.get("cache") == "":
        raw.pop("cache")
    try:
        return Settings(**raw)  # type: ignore[arg-type]  # pydantic converts and validates the strings
    except ValidationError as err:
        bad = err.errors()[0]
        name = str(bad["loc"][0])
        raise ConfigError(
            f"{PREFIX}{name.upper()}={raw.get(name)!r} is not valid: expected {_EXPECTED.get(name, bad['msg'])}"
        ) from None
