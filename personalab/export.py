"""Take a persona vector out of the book: llama.cpp control-vector GGUF files.

llama.cpp steers generation with *control vectors*: a GGUF file of architecture
``controlvector`` holding one F32 tensor ``direction.<N>`` of length ``d_model`` per
steered block, added to the residual stream at every position and multiplied by the
scale given on the command line (``--control-vector-scaled FILE SCALE``). repeng and
llama.cpp's own ``llama-cvector-generator`` write the same format.

``to_gguf`` writes ``vector.shift(layer, coef)`` -- the exact vector ``steer()`` adds --
under llama.cpp's name for that layer (``llama_cpp_tensor_name``), so loading the file
at scale 1 adds what ``steer(model, vector, layer, coef)`` adds. ``read_gguf`` reads
such a file back as ``{personalab layer: tensor}`` so an exported file can be inspected.
"""

from __future__ import annotations

import math
import numbers
import operator
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from personalab.options import CoefMode


class SteeringShifts(Protocol):
    """What the exporter needs from a vector (``PersonaVector`` has it): the writer sits below
    the vector maths and imports nothing from personalab, so ``PersonaVector.to_gguf`` can use it."""

    meta: dict

    @property
    def n_layers(self) -> int: ...

    @property
    def trait(self) -> str: ...

    def shift(self, layer: int, coef: float, coef_mode: CoefMode = "norm") -> torch.Tensor: ...


__all__ = ["CONTROL_VECTOR_ARCH", "llama_cpp_tensor_name", "read_gguf", "to_gguf"]

CONTROL_VECTOR_ARCH = "controlvector"
_PREFIX = "direction."
_FIRST_EXPORTABLE = 2  # personalab layer 1 would be llama.cpp's direction.0, which llama.cpp rejects


def llama_cpp_tensor_name(layer: int) -> str:
    """The control-vector tensor name that llama.cpp adds after personalab layer ``layer``.

    personalab counts residual-stream rows from the embeddings: layer ``i`` is the output
    of decoder block ``i`` counting from 1. llama.cpp counts blocks from 0: its graph adds
    ``tensors[il]`` to the output of block ``il`` (``llama_adapter_cvec::apply_to`` in
    src/llama-adapter.cpp, called as each block finishes), and ``llama_adapter_cvec::apply``
    fills ``tensors[il]`` from row ``il - 1`` of the loaded buffer, which
    ``common_control_vector_load_one`` (common/common.cpp) fills from the file's
    ``direction.{il}``; that loader rejects ``direction.0`` as an invalid layer index. So
    personalab layer ``i`` is ``direction.{i-1}``, and layers 0 (embeddings) and 1 cannot
    be exported. Established from the llama.cpp source in the llama-cpp-python 0.3.36 sdist.
    """
    layer = _as_int(layer, "layer")
    if layer < _FIRST_EXPORTABLE:
        raise ValueError(_unexportable_message(layer))
    return f"{_PREFIX}{layer - 1}"


def to_gguf(
    vector: SteeringShifts,
    path: str | os.PathLike,
    layers: int | Sequence[int],
    coef: float,
    *,
    coef_mode: CoefMode = "norm",
    model_hint: str | None = None,
) -> Path:
    """Write ``vector`` as a llama.cpp control vector steering ``layers`` with ``coef``; returns the path.

    Each steered layer gets one F32 tensor holding ``vector.shift(layer, coef, coef_mode)``,
    so ``llama-cli --control-vector FILE`` (scale 1) adds exactly what
    ``steer(model, vector, layers, coef, coef_mode=coef_mode)`` adds, and
    ``--control-vector-scaled FILE s`` adds ``s`` times that. ``model_hint`` (default: the
    vector's ``model_id``) is stored for the reader; llama.cpp does not check it, so use the
    file only with the model the vector was extracted on. The file is written to a
    temporary name and renamed, so a failed export leaves no half-written file.
    """
    steered = _check_layers(layers, vector.n_layers)
    coef = _check_coef(coef)
    hint = _model_hint(vector, model_hint)
    shifts = {layer: _shift_array(vector, layer, coef, coef_mode) for layer in steered}
    path = _prepare_path(path)
    provenance: dict[str, str | float] = {
        "personalab.trait": vector.trait,
        "personalab.coef": coef,
        "personalab.coef_mode": coef_mode,
    }
    _write_control_vector(path, shifts, hint, vector.n_layers, provenance)
    return path


def read_gguf(path: str | os.PathLike) -> dict[int, torch.Tensor]:
    """Read a llama.cpp control vector back as ``{personalab layer: shift [d_model]}``.

    The inverse of ``to_gguf``: ``direction.{N}`` becomes personalab layer ``N + 1``.
    Raises ValueError for a GGUF of another architecture (a model file, say) and for
    tensors llama.cpp itself would refuse (a bad name, ``direction.0``, not F32).
    """
    import gguf

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"control-vector file not found: {path}")
    try:
        reader = gguf.GGUFReader(path)
    except ValueError as err:
        raise ValueError(f"{path} is not a readable GGUF file ({err})") from None
    arch = _string_field(reader, "general.architecture")
    if arch != CONTROL_VECTOR_ARCH:
        raise ValueError(
            f"{path} is a GGUF file of architecture {arch!r}, not a llama.cpp control vector "
            f"({CONTROL_VECTOR_ARCH!r}); to_gguf writes control vectors, a model file is not one"
        )
    out: dict[int, torch.Tensor] = {}
    for t in reader.tensors:
        layer = _layer_from_tensor_name(t.name, path)
        if t.tensor_type != gguf.GGMLQuantizationType.F32:
            raise ValueError(f"{path}: tensor {t.name} is {t.tensor_type.name}, but control vectors are F32")
        out[layer] = torch.from_numpy(np.array(t.data, dtype=np.float32).reshape(-1))  # copy out of the memmap
    if len({v.shape for v in out.values()}) > 1:
        raise ValueError(
            f"{path}: its direction tensors have different lengths {sorted({v.shape[0] for v in out.values()})}"
        )
    del reader
    return dict(sorted(out.items()))


# -- validation ------------------------------------------------------------------------------


def _as_int(value, what: str) -> int:
    """``value`` as a Python int; accepts numpy and torch integers, rejects bools and floats."""
    if isinstance(value, (bool, np.bool_)) or (isinstance(value, torch.Tensor) and value.dtype == torch.bool):
        raise TypeError(f"{what} must be an integer, got the boolean {value!r}")
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(f"{what} must be an integer, got {value!r} ({type(value).__name__})") from None


def _unexportable_message(layer: int) -> str:
    """Why ``layer`` has no llama.cpp control-vector slot, and what to export instead."""
    if layer == 1:
        return (
            "layer 1 (the output of block 1) cannot be exported to llama.cpp: it would be the tensor "
            "direction.0, which llama.cpp rejects as an invalid layer index (it has no control-vector slot "
            "after its block 0, which is our block 1); steer and export at layer 2 or later instead"
        )
    if layer == 0:
        return (
            "layer 0 is the embedding output, which llama.cpp's control vectors cannot steer; "
            "export layer 2 or later instead"
        )
    return f"layer {layer} is negative: layers count from 0 (embeddings); export layer 2 or later"


def _check_layers(layers: int | Sequence[int], n_layers: int) -> list[int]:
    """The steered layers as sorted Python ints, each in 2..n_layers, at least one, no repeats."""
    if isinstance(layers, (str, bytes)):
        raise TypeError(f"layers must be an int or a sequence of ints, got the string {layers!r}")
    if isinstance(layers, (int, np.integer)) or (isinstance(layers, torch.Tensor) and layers.ndim == 0):
        items = [_as_int(layers, "layer")]
    else:
        try:
            raw = list(layers)
        except TypeError:
            raise TypeError(f"layers must be an int or a sequence of ints, got {type(layers).__name__}") from None
        items = [_as_int(x, "each layer") for x in raw]
    if not items:
        raise ValueError(f"layers is empty: name at least one layer to steer (2-{n_layers})")
    repeated = sorted({x for x in items if items.count(x) > 1})
    if repeated:
        raise ValueError(
            f"layers {repeated} appear more than once: llama.cpp takes one tensor per layer, "
            "so pass each layer once (raise coef for a stronger push)"
        )
    for layer in items:
        if layer < _FIRST_EXPORTABLE:
            raise ValueError(_unexportable_message(layer))
        if layer > n_layers:
            raise ValueError(
                f"layer {layer} is out of range: this vector has layers 0-{n_layers} "
                f"(0 = embeddings, i = output of block i); exportable are 2-{n_layers}"
            )
    return sorted(items)


def _check_coef(coef) -> float:
    """``coef`` as a finite Python float (numpy and one-element torch numbers accepted)."""
    if isinstance(coef, torch.Tensor) and coef.numel() == 1 and not coef.is_complex() and coef.dtype != torch.bool:
        coef = coef.item()
    if isinstance(coef, (bool, np.bool_)) or not isinstance(coef, numbers.Real):
        raise TypeError(f"coef must be a real number, got {coef!r} ({type(coef).__name__})")
    coef = float(coef)
    if not math.isfinite(coef):
        raise ValueError(f"coef must be finite, got {coef}")
    return coef


def _model_hint(vector: SteeringShifts, model_hint: str | None) -> str:
    """The model hint to store: the caller's, else the model the vector was extracted on."""
    hint = vector.meta.get("model_id") if model_hint is None else model_hint
    if not isinstance(hint, str) or not hint:
        raise ValueError("no model hint: the vector's metadata has no model_id; pass model_hint='<model name>'")
    return hint


def _prepare_path(path: str | os.PathLike) -> Path:
    """``path`` as a Path whose parent folder exists (created if needed); not a folder itself."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder: give a file name such as {path / 'vector.gguf'}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OSError(f"cannot create the folder {path.parent} for {path.name}: {err}") from None
    return path


# -- the file --------------------------------------------------------------------------------


def _shift_array(vector: SteeringShifts, layer: int, coef: float, coef_mode: CoefMode) -> np.ndarray:
    """``vector.shift(layer, coef, coef_mode)`` as a contiguous float32 array, checked finite."""
    shift = vector.shift(layer, coef, coef_mode).detach().to("cpu", torch.float32)
    if not torch.isfinite(shift).all():
        raise ValueError(f"the shift at layer {layer} is not finite (check the residual_norm metadata)")
    return np.ascontiguousarray(shift.numpy(), dtype=np.float32)


def _write_control_vector(
    path: Path, shifts: dict[int, np.ndarray], model_hint: str, n_layers: int, provenance: dict[str, str | float]
) -> None:
    """Write the GGUF atomically: arch, hint, layer count, provenance keys, one tensor per layer.

    llama.cpp ignores keys it does not know, so the ``personalab.*`` provenance (trait,
    coef, coef_mode) travels with the file for a reader without affecting loading.
    """
    import gguf

    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".gguf", dir=path.parent)
    os.close(fd)
    try:
        writer = gguf.GGUFWriter(tmp, arch=CONTROL_VECTOR_ARCH)
        writer.add_string(f"{CONTROL_VECTOR_ARCH}.model_hint", model_hint)
        writer.add_uint32(f"{CONTROL_VECTOR_ARCH}.layer_count", n_layers)
        for key, value in provenance.items():
            if isinstance(value, str):
                writer.add_string(key, value)
            else:
                writer.add_float32(key, float(value))
        for layer, array in shifts.items():
            writer.add_tensor(llama_cpp_tensor_name(layer), array)
        try:
            writer.write_header_to_file()
            writer.write_kv_data_to_file()
            writer.write_tensors_to_file()
        finally:
            writer.close()
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _string_field(reader, key: str) -> str | None:
    """A string key of a GGUF file, or None when absent (reads ``parts`` for older gguf versions)."""
    field = reader.get_field(key)
    if field is None or not field.data:
        return None
    return bytes(field.parts[field.data[0]]).decode("utf-8", errors="replace")


def _layer_from_tensor_name(name: str, path: Path) -> int:
    """personalab layer of a ``direction.{N}`` tensor (N + 1), refusing what llama.cpp refuses."""
    index = name[len(_PREFIX) :] if name.startswith(_PREFIX) else ""
    if not index.isdigit():
        raise ValueError(f"{path}: tensor {name!r} is not a control-vector direction ('direction.<N>')")
    if int(index) == 0:
        raise ValueError(f"{path}: tensor direction.0 is invalid in llama.cpp (its directions start at 1)")
    return int(index) + 1
