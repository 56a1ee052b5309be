"""llama.cpp control-vector export: names, dtypes, shapes, values, metadata and refusals."""

import math

import gguf
import numpy as np
import pytest
import torch

from personalab.export import llama_cpp_tensor_name, read_gguf, to_gguf
from personalab.vectors import PersonaVector


def _vec(n_layers=4, d=64, model_id="tiny"):
    torch.manual_seed(0)
    # distinct norms per layer, so a value written under the wrong layer would not match
    return PersonaVector(
        torch.randn(n_layers + 1, d),
        dict(
            model_id=model_id,
            n_layers=n_layers,
            d_model=d,
            trait="toy",
            method="test",
            residual_norm=[2.0 + i for i in range(n_layers + 1)],
        ),
    )


def _field(reader, key):
    f = reader.get_field(key)
    assert f is not None, f"{key} missing"
    return f.contents()


def test_round_trip_read_with_gguf_directly(tmp_path):
    vec = _vec()
    out = to_gguf(vec, tmp_path / "toy.gguf", [2, 4], 0.5)
    assert out == tmp_path / "toy.gguf" and out.is_file()
    reader = gguf.GGUFReader(out)
    tensors = {t.name: t for t in reader.tensors}
    assert set(tensors) == {"direction.1", "direction.3"}
    for layer, name in [(2, "direction.1"), (4, "direction.3")]:
        t = tensors[name]
        assert t.tensor_type == gguf.GGMLQuantizationType.F32
        assert tuple(int(s) for s in t.shape) == (64,)
        got = np.asarray(t.data, dtype=np.float32).reshape(-1)
        want = vec.shift(layer, 0.5).numpy()
        np.testing.assert_array_equal(got, want)
        # the shift is coef x residual_norm x unit: its length says which layer it came from
        assert math.isclose(float(np.linalg.norm(got)), 0.5 * (2.0 + layer), rel_tol=1e-5)
    assert _field(reader, "general.architecture") == "controlvector"
    assert _field(reader, "controlvector.model_hint") == "tiny"
    assert _field(reader, "controlvector.layer_count") == 4
    assert reader.get_field("controlvector.layer_count").types == [gguf.GGUFValueType.UINT32]
    assert _field(reader, "personalab.trait") == "toy"
    assert _field(reader, "personalab.coef_mode") == "norm"
    assert math.isclose(_field(reader, "personalab.coef"), 0.5)


def test_read_gguf_returns_personalab_layers(tmp_path):
    vec = _vec()
    path = to_gguf(vec, tmp_path / "toy.gguf", [4, 2], 0.5)  # order of layers does not matter
    back = read_gguf(path)
    assert list(back) == [2, 4]
    for layer, t in back.items():
        assert t.dtype == torch.float32 and t.shape == (64,)
        torch.testing.assert_close(t, vec.shift(layer, 0.5), rtol=0, atol=0)


def test_options_single_layer_raw_mode_hint_and_integer_types(tmp_path):
    vec = _vec()
    path = to_gguf(
        vec,
        tmp_path / "sub" / "dir" / "raw.gguf",
        np.int64(3),
        np.float32(-1.5),
        coef_mode="raw",
        model_hint="SmolLM2-135M-Instruct",
    )
    reader = gguf.GGUFReader(path)
    assert [t.name for t in reader.tensors] == ["direction.2"]
    assert _field(reader, "controlvector.model_hint") == "SmolLM2-135M-Instruct"
    torch.testing.assert_close(read_gguf(path)[3], -1.5 * vec.at(3))
    again = to_gguf(vec, path, torch.tensor([2, 3]), 1.0)  # overwrites, torch integers accepted
    assert sorted(read_gguf(again)) == [2, 3]
    assert not [p.name for p in path.parent.iterdir() if p.name.startswith(".tmp-")]  # no temp file left


def test_tensor_name_mapping():
    assert llama_cpp_tensor_name(2) == "direction.1"
    assert llama_cpp_tensor_name(np.int32(30)) == "direction.29"
    with pytest.raises(ValueError, match="direction.0"):
        llama_cpp_tensor_name(1)
    with pytest.raises(TypeError, match="integer"):
        llama_cpp_tensor_name(2.0)


@pytest.mark.parametrize(
    "layers, error, match",
    [
        (1, ValueError, r"layer 1 .*cannot be exported.*direction\.0.*layer 2 or later"),
        ([2, 1], ValueError, r"layer 1 .*cannot be exported"),
        (0, ValueError, r"layer 0 is the embedding output.*layer 2 or later"),
        (5, ValueError, r"layer 5 is out of range.*exportable are 2-4"),
        (-1, ValueError, r"negative"),
        ([2, 3, 2], ValueError, r"layers \[2\] appear more than once"),
        ([], ValueError, r"layers is empty"),
        ([2.0], TypeError, r"must be an integer"),
        (True, TypeError, r"boolean"),
        ("2", TypeError, r"string"),
    ],
)
def test_bad_layers_are_refused(tmp_path, layers, error, match):
    path = tmp_path / "bad.gguf"
    with pytest.raises(error, match=match):
        to_gguf(_vec(), path, layers, 0.5)
    assert not path.exists() and not list(tmp_path.iterdir())  # nothing written


@pytest.mark.parametrize(
    "coef, error, match",
    [
        (math.nan, ValueError, "finite"),
        (math.inf, ValueError, "finite"),
        ("0.5", TypeError, "real number"),
        (None, TypeError, "real number"),
        (1 + 2j, TypeError, "real number"),
    ],
)
def test_bad_coef_is_refused(tmp_path, coef, error, match):
    with pytest.raises(error, match=match):
        to_gguf(_vec(), tmp_path / "bad.gguf", 2, coef)
    assert not list(tmp_path.iterdir())


def test_other_refusals(tmp_path):
    vec = _vec()
    with pytest.raises(ValueError, match="coef_mode"):
        to_gguf(vec, tmp_path / "a.gguf", 2, 0.5, coef_mode="unit")
    with pytest.raises(IsADirectoryError, match="is a folder"):
        to_gguf(vec, tmp_path, 2, 0.5)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OSError, match="cannot create the folder"):
        to_gguf(vec, blocker / "a.gguf", 2, 0.5)
    no_id = PersonaVector(vec.vectors, {k: v for k, v in vec.meta.items() if k != "model_id"})
    with pytest.raises(ValueError, match="model_hint="):
        to_gguf(no_id, tmp_path / "b.gguf", 2, 0.5)
    assert to_gguf(no_id, tmp_path / "b.gguf", 2, 0.5, model_hint="m").is_file()
    no_norm = PersonaVector(vec.vectors, {k: v for k, v in vec.meta.items() if k != "residual_norm"})
    with pytest.raises(ValueError, match="residual_norm"):
        to_gguf(no_norm, tmp_path / "c.gguf", 2, 0.5)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.gguf", "file"]


def _write_gguf(path, arch, tensors):
    w = gguf.GGUFWriter(path, arch=arch)
    for name, array in tensors.items():
        w.add_tensor(name, array)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def test_read_gguf_refuses_other_files(tmp_path):
    ones = np.ones(8, dtype=np.float32)
    model = _write_gguf(tmp_path / "model.gguf", "llama", {"blk.0.attn_norm.weight": ones})
    with pytest.raises(ValueError, match=r"architecture 'llama', not a llama.cpp control vector"):
        read_gguf(model)
    zero = _write_gguf(tmp_path / "zero.gguf", "controlvector", {"direction.0": ones})
    with pytest.raises(ValueError, match="direction.0 is invalid"):
        read_gguf(zero)
    odd = _write_gguf(tmp_path / "odd.gguf", "controlvector", {"bias.3": ones})
    with pytest.raises(ValueError, match="not a control-vector direction"):
        read_gguf(odd)
    half = _write_gguf(tmp_path / "half.gguf", "controlvector", {"direction.2": ones.astype(np.float16)})
    with pytest.raises(ValueError, match="F16, but control vectors are F32"):
        read_gguf(half)
    text = tmp_path / "notes.gguf"
    text.write_bytes(b"not a gguf file at all")
    with pytest.raises(ValueError, match="not a readable GGUF"):
        read_gguf(text)
    with pytest.raises(FileNotFoundError, match="not found"):
        read_gguf(tmp_path / "missing.gguf")


def _llama_cpp_style_generate(tiny, prompts, control, n=6):
    """Greedy tokens with ``control`` applied as llama.cpp's graph applies a control vector:
    ``direction.{il}`` added to the output of block ``il`` counting from 0
    (``hf.model.layers[il]``), at every position and every step."""
    hf, tok = tiny._module, tiny.tokenizer
    handles = []
    for name, t in control.items():
        il = int(name.split(".")[1])

        def hook(module, inputs, output, t=t):
            (output[0] if isinstance(output, tuple) else output).add_(t)
            return output

        handles.append(hf.model.layers[il].register_forward_hook(hook))
    try:
        enc = tok(prompts, return_tensors="pt", padding=True)
        with torch.no_grad():
            ids = hf.generate(**enc, max_new_tokens=n, do_sample=False, pad_token_id=tok.pad_token_id)
    finally:
        for h in handles:
            h.remove()
    return tok.batch_decode(ids[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)


def test_llama_cpp_placement_reproduces_steer(tiny, tmp_cache, tmp_path):
    """The exported file, applied where llama.cpp applies it, generates what ``steer`` generates;
    the same tensors one block off (the easy mistake) and no vector at all generate something else."""
    from personalab.models import model_id
    from personalab.prompting import chat_prompt, generate
    from personalab.steering import steer

    torch.manual_seed(1)
    vec = PersonaVector(
        torch.randn(5, 64),
        dict(model_id=model_id(tiny), n_layers=4, d_model=64, trait="toy", method="test", residual_norm=[1.0] * 5),
    )
    path = to_gguf(vec, tmp_path / "toy.gguf", [2, 3], 0.5)
    reader = gguf.GGUFReader(path)
    control = {t.name: torch.from_numpy(np.array(t.data, dtype=np.float32)) for t in reader.tensors}
    prompts = [chat_prompt(tiny.tokenizer, q) for q in ("Hello there?", "Why is the sky blue?")]
    with steer(tiny, vec, [2, 3], 0.5):
        want = generate(tiny, prompts, max_new_tokens=6, progress=False)
    assert _llama_cpp_style_generate(tiny, prompts, control) == want
    assert generate(tiny, prompts, max_new_tokens=6, progress=False) != want
    off_by_one = {f"direction.{int(name.split('.')[1]) + 1}": t for name, t in control.items()}
    assert _llama_cpp_style_generate(tiny, prompts, off_by_one) != want


def test_persona_vector_method_writes_the_same_file(tmp_path):
    from personalab.export import read_gguf

    vec = PersonaVector(
        torch.randn(5, 64),
        dict(model_id="tiny", n_layers=4, d_model=64, trait="toy", method="test", residual_norm=[2.0] * 5),
    )
    vec.to_gguf(tmp_path / "toy.gguf", [3], 0.25)
    torch.testing.assert_close(read_gguf(tmp_path / "toy.gguf")[3], vec.shift(3, 0.25))
