"""The command line: each subcommand on the tiny model, and bad input as one line and exit 2."""

import json
import math

import pytest
import torch

from personalab.cli import main
from personalab.vectors import PersonaVector


@pytest.fixture()
def saved_vector(tmp_path):
    torch.manual_seed(0)
    vec = PersonaVector(
        torch.randn(5, 64),
        dict(
            model_id="tiny-llama-4x64-seed0",
            n_layers=4,
            d_model=64,
            trait="toy",
            method="test",
            residual_norm=[2.0] * 5,
            default_layer=2,
        ),
    )
    return vec, vec.save(tmp_path / "toy")


def test_traits_lists_the_built_in_traits(capsys):
    from personalab import traits

    assert main(["traits"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in traits.list_traits())
    assert main(["traits", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    pirate = next(r for r in rows if r["name"] == "pirate")
    assert pirate["graded_prompts"] == len(traits.load("pirate").graded_prompts) == 8


def test_monitor_prints_the_projections_the_library_computes(saved_vector, capsys, tmp_cache, monkeypatch):
    from personalab.models import tiny_model
    from personalab.monitoring import Monitor
    from personalab.prompting import chat_prompt

    vec, path = saved_vector
    assert main(["monitor", str(path), "Hi?", "--model", "tiny", "--layer", "3", "--max-new-tokens", "4"]) == 0
    out = capsys.readouterr().out
    printed = [float(cell.rsplit(":", 1)[1]) for cell in out.splitlines()[1].split()]
    model = tiny_model()
    want = Monitor(model, vec, 3).generate([chat_prompt(model.tokenizer, "Hi?")], max_new_tokens=4).projections[0][:, 0]
    assert len(printed) == len(want) and all(math.isfinite(p) for p in printed)
    assert printed == pytest.approx(want.tolist(), abs=0.06)  # printed with one decimal


def test_steer_and_export_run_on_a_saved_vector(saved_vector, capsys, tmp_cache, tmp_path):
    vec, path = saved_vector
    assert main(["steer", str(path), "Hi?", "--coef", "2", "--model", "tiny", "--max-new-tokens", "4"]) == 0
    out = capsys.readouterr().out
    assert "unsteered:" in out and "steered (toy, layer 2, coef 2.0)" in out
    gguf = tmp_path / "toy.gguf"
    assert (
        main(
            [
                "export",
                str(path),
                "--coef",
                "0.5",
                "--layer",
                "2",
                "--layer",
                "3",
                "--out",
                str(gguf),
                "--model",
                "tiny",
            ]
        )
        == 0
    )
    assert gguf.read_bytes()[:4] == b"GGUF" and "layers [2, 3]" in capsys.readouterr().out


def test_bad_input_is_one_line_on_stderr_and_exit_2(saved_vector, capsys, tmp_cache):
    _, path = saved_vector
    assert main(["extract", "no_such_trait", "--model", "tiny"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("personalab: error:") and "no_such_trait" in err
    assert main(["steer", str(path), "Hi?", "--coef", "1", "--layer", "99", "--model", "tiny"]) == 2
    assert "out of range" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stop:  # argparse: a missing required option
        main(["steer", str(path), "Hi?", "--model", "tiny"])
    assert stop.value.code == 2
