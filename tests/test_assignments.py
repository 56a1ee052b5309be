"""`make assignments`: every chapter becomes an nbgrader source and a learner version that compiles.

The end-to-end round trip through nbgrader's own commands (generate, autograde a right and a
wrong answer) runs on an executed chapter in tests/test_nbgrader_roundtrip.py (`make test`).
"""

import sys
from pathlib import Path

import jupytext
import nbformat
import pytest

from personalab.assignments import BEGIN, END, STUB, AssignmentError, instructor_notebook, learner_notebook

CHAPTERS = sorted((Path(__file__).resolve().parents[1] / "book" / "chapters").glob("*.md"))


def _nb(*cells: tuple[str, str, list[str]]) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "language": "python", "display_name": "Python 3"}
    for kind, src, tags in cells:
        cell = nbformat.v4.new_code_cell(src) if kind == "code" else nbformat.v4.new_markdown_cell(src)
        cell.metadata["tags"] = tags
        nb.cells.append(cell)
    return nb


SOLUTION = f'def f(x):\n    """Doc."""\n    {BEGIN}\n    y = x + 1\n    return y\n    {END}\n'


def test_learner_version_keeps_signature_and_docstring_and_locks_the_check():
    nb = _nb(("markdown", "# Ex", []), ("code", SOLUTION, ["solution", "hide-input"]), ("code", "check_f(f)", []))
    learner = learner_notebook(nb, "toy")
    sol, check = learner.cells[1], learner.cells[2]
    assert "def f(x):" in sol.source and '"""Doc."""' in sol.source and STUB in sol.source
    assert "y = x + 1" not in sol.source and BEGIN not in sol.source
    assert sol.metadata["nbgrader"]["solution"] and sol.metadata["tags"] == []
    assert check.metadata["nbgrader"]["grade"] and check.metadata["nbgrader"]["locked"]
    assert check.metadata["nbgrader"]["points"] == 1 and "checksum" in check.metadata["nbgrader"]
    compile(sol.source, "sol", "exec")


@pytest.mark.parametrize(
    "cells, message",
    [
        ([("code", "def f(x):\n    return x\n", ["solution"]), ("code", "check_f(f)", [])], "BEGIN SOLUTION"),
        ([("code", SOLUTION, ["solution"]), ("code", "print(f(1))", [])], "must call its check_"),
        ([("code", SOLUTION, ["solution"])], "must call its check_"),
        ([("code", SOLUTION + "\n" + SOLUTION.replace("f(", "g("), ["solution"])], "exactly one function"),
    ],
)
def test_a_malformed_exercise_is_named(cells, message):
    with pytest.raises(AssignmentError, match=message):
        instructor_notebook(_nb(*cells), "toy")


@pytest.mark.parametrize("path", CHAPTERS, ids=[p.stem for p in CHAPTERS])
def test_learner_notebook_compiles(path):
    nb = jupytext.read(path)
    n_solutions = sum("solution" in c.metadata.get("tags", []) for c in nb.cells)
    learner = learner_notebook(nb, path.stem)
    stubs = graded = 0
    for cell in learner.cells:
        if cell.cell_type != "code":
            continue
        code = "\n".join(line for line in cell.source.splitlines() if not line.lstrip().startswith(("%", "!")))
        compile(code, f"{path.name}", "exec")
        stubs += STUB in cell.source
        graded += cell.metadata.get("nbgrader", {}).get("grade", False)
        assert BEGIN not in cell.source and "solution" not in cell.metadata.get("tags", [])
    assert stubs == n_solutions == graded
    assert n_solutions >= 1, f"{path.name} has no exercise"


def test_without_nbgrader_the_error_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "nbgrader.preprocessors", None)  # makes the import fail
    with pytest.raises(ImportError, match="pip install nbgrader"):
        learner_notebook(_nb(("code", SOLUTION, ["solution"]), ("code", "check_f(f)", [])), "toy")
