"""The command line: each subcommand on the tiny model, and bad input as one line and exit 2."""

import json
import math

import pytest
import torch

from personalab.cli import main
from personalab.vectors import PersonaVector


@pytest.fixture(autouse=True)
def shared_tiny(tiny, monkeypatch):
    """``--model tiny`` gets the session's tiny model: building one re-reads the tokenizer (seconds)."""
    import personalab

    monkeypatch.setattr(personalab, "tiny_model", lambda: tiny)
    return tiny


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


def test_monitor_prints_the_projections_the_library_computes(saved_vector, capsys, tmp_cache, tiny):
    from personalab.monitoring import Monitor
    from personalab.prompting import chat_prompt

    vec, path = saved_vector
    assert main(["monitor", str(path), "Hi?", "--model", "tiny", "--layer", "3", "--max-new-tokens", "4"]) == 0
    out = capsys.readouterr().out
    printed = [float(cell.rsplit(":", 1)[1]) for cell in out.splitlines()[1].split()]
    model = tiny
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


def test_monitor_prompt_only_prints_the_last_prompt_projection(saved_vector, capsys, tmp_cache, tiny):
    from personalab.monitoring import last_prompt_projection
    from personalab.prompting import chat_prompt

    vec, path = saved_vector
    questions = ["Hi?", "How was your day?"]
    assert main(["monitor", str(path), *questions, "--model", "tiny", "--layer", "3", "--prompt-only"]) == 0
    lines = capsys.readouterr().out.splitlines()
    printed = [float(line.split("\t", 1)[0]) for line in lines]
    model = tiny
    want = last_prompt_projection(model, [chat_prompt(model.tokenizer, q) for q in questions], vec, 3)
    assert len(printed) == 2 and all(math.isfinite(p) for p in printed)
    assert printed == pytest.approx(want.tolist(), abs=1e-4)  # printed with four decimals
    assert all(q in line for q, line in zip(questions, lines))


def test_export_files_load_back_equal(saved_vector, capsys, tmp_cache, tmp_path, tiny):
    from personalab.export import read_gguf

    vec, path = saved_vector
    gguf = tmp_path / "toy.gguf"
    assert main(["export", str(path), "--coef", "0.5", "--layer", "2", "--out", str(gguf), "--model", "tiny"]) == 0
    shifts = read_gguf(gguf)
    assert list(shifts) == [2] and torch.allclose(shifts[2], vec.shift(2, 0.5).float())
    stem = tmp_path / "copy"
    assert main(["export", str(path), "--format", "safetensors", "--out", str(stem), "--model", "tiny"]) == 0
    back = PersonaVector.load(stem, tiny)
    assert torch.equal(back.vectors, vec.vectors) and back.meta["trait"] == "toy"
    pt = tmp_path / "toy.pt"
    assert main(["export", str(path), "--format", "pt", "--out", str(pt), "--model", "tiny"]) == 0
    data = torch.load(pt)
    assert torch.equal(data["vectors"], vec.vectors) and data["meta"]["default_layer"] == 2
    capsys.readouterr()
    assert main(["export", str(path), "--out", str(gguf), "--model", "tiny"]) == 2  # gguf without --coef
    assert "--coef" in capsys.readouterr().err


def test_missing_file_and_help(capsys, tmp_cache, tmp_path):
    missing = tmp_path / "nowhere.safetensors"
    assert main(["monitor", str(missing), "Hi?", "--model", "tiny"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("personalab: error:") and "Traceback" not in err
    for command in ("traits", "extract", "steer", "monitor", "export"):
        with pytest.raises(SystemExit) as stop:
            main([command, "--help"])
        assert stop.value.code == 0 and "usage: personalab " + command in capsys.readouterr().out
