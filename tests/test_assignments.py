"""`make assignments`: every chapter's learner notebook stubs its solutions and compiles."""

import ast
from pathlib import Path

import jupytext
import pytest

from personalab.assignments import STUB_LINE, learner_notebook, stub_source

CHAPTERS = sorted((Path(__file__).resolve().parents[1] / "book" / "chapters").glob("*.md"))


def test_stub_keeps_signature_and_docstring_only():
    src = 'import torch\n\n\ndef f(x: int) -> int:\n    """Doc."""\n    y = x + 1\n    return y\n'
    out = stub_source(src)
    assert "def f(x: int) -> int:" in out and '"""Doc."""' in out and "import torch" in out
    assert "y = x + 1" not in out and STUB_LINE in out
    ast.parse(out)
    with pytest.raises(ValueError, match="at least one function"):
        stub_source("x = 1\n")


@pytest.mark.parametrize("path", CHAPTERS, ids=[p.stem for p in CHAPTERS])
def test_learner_notebook_compiles(path):
    nb = jupytext.read(path)
    n_solutions = sum("solution" in c.metadata.get("tags", []) for c in nb.cells)
    learner = learner_notebook(nb)
    stubs = 0
    for cell in learner.cells:
        if cell.cell_type != "code":
            continue
        code = "\n".join(line for line in cell.source.splitlines() if not line.lstrip().startswith(("%", "!")))
        compile(code, f"{path.name}", "exec")
        stubs += STUB_LINE in cell.source
        assert "solution" not in cell.metadata.get("tags", [])
    assert stubs >= n_solutions
    if path.stem != "00_inside_a_chat_model" or n_solutions:
        assert n_solutions >= 1, f"{path.name} has no exercise"
