import pytest
import torch

from personalab.vectors import PersonaVector, VectorMismatchError, choose_layer, layer_diagnostics


def _vec(n_layers=4, d=64, model_id="tiny-llama-4x64-seed0"):
    return PersonaVector(torch.randn(n_layers + 1, d),
                         dict(model_id=model_id, n_layers=n_layers, d_model=d, trait="toy", method="mean_diff",
                              residual_norm=[1.0] * (n_layers + 1)))


def test_save_load_roundtrip(tmp_path, tiny):
    v = _vec()
    v.save(tmp_path / "toy")
    w = PersonaVector.load(tmp_path / "toy", model=tiny)
    assert torch.equal(v.vectors, w.vectors) and w.meta == v.meta


def test_other_model_is_rejected(tiny):
    with pytest.raises(VectorMismatchError, match="30 layers x 576 dims"):
        _vec(30, 576, "SmolLM2-135M-Instruct").check_model(tiny)
    with pytest.raises(VectorMismatchError, match="directions do not transfer"):
        _vec(model_id="some-other-model").check_model(tiny)


def test_corrupt_and_truncated_files(tmp_path):
    v = _vec()
    v.save(tmp_path / "toy")
    st = tmp_path / "toy.safetensors"
    st.write_bytes(st.read_bytes()[:50])
    with pytest.raises(ValueError, match="corrupt or truncated"):
        PersonaVector.load(tmp_path / "toy")
    v.save(tmp_path / "toy")
    (tmp_path / "toy.json").write_text('{"model_id": ')
    with pytest.raises(ValueError, match="corrupt or truncated"):
        PersonaVector.load(tmp_path / "toy")


def test_nan_vector_refused():
    with pytest.raises(ValueError, match="NaN"):
        PersonaVector(torch.full((3, 4), float("nan")))


def test_layer_out_of_range():
    with pytest.raises(IndexError, match="layers 0-4"):
        _vec().at(5)


def test_diagnostics_find_the_planted_layer():
    torch.manual_seed(0)
    n, L, d = 40, 8, 16
    pos, neg = torch.randn(n, L + 1, d), torch.randn(n, L + 1, d)
    pos[:, 5, 0] += 3.0  # the trait lives at layer 5
    diag = layer_diagnostics(pos, neg)
    assert choose_layer(diag) == 5
    assert diag["separation"][5] > 2 and torch.isnan(diag["neighbour_cos"][0])
