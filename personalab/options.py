"""The string options of the public API, as ``Literal`` types (one place, so an editor or
mypy catches ``coef_mode="nrom"``; each function still checks the value at run time)."""

from __future__ import annotations

from typing import Literal

CoefMode = Literal["norm", "raw"]  # steering strength relative to the residual norm, or times the raw vector
Positions = Literal["all", "prompt", "response"]  # where steering adds its vector during generation
QuestionSplit = Literal["extraction", "evaluation"]  # a trait's question sets
Pooling = Literal["response", "prompt", "last_prompt"]  # how answer activations are averaged
DatasetSplit = Literal["train", "heldout"]  # a fine-tuning dataset's parts
TrainingMode = Literal["add", "ablate"]  # preventative steering: add the direction, or project it out
PrecisionKind = Literal["scoring", "generation", "training", "activations"]  # passes that may run in bf16 autocast
Profile = Literal["full", "ci"]  # run sizes: the book's full build, or CI's lighter one
