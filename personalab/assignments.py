"""Turn executed chapters into nbgrader assignments (``make assignments``).

A chapter is the single source for the book, the instructor's version and the learner's.
A code cell tagged ``solution`` holds the reference answer to an exercise, its body between
nbgrader's ``### BEGIN SOLUTION`` and ``### END SOLUTION`` markers (the signature and the
docstring stay outside them); the cell right after it calls the exercise's ``check_...``
function and is its autograded test. This module gives those cells the nbgrader metadata
their tags imply and writes, per chapter, a course folder nbgrader reads as it is:

* ``source/<chapter>/<chapter>.ipynb``: the instructor's version (solutions, metadata);
  ``nbgrader generate_assignment <chapter>`` takes it from there;
* ``release/<chapter>/<chapter>.ipynb``: the learner's version, made by nbgrader's own
  preprocessors (solutions replaced by ``raise NotImplementedError()``, outputs cleared,
  test cells locked, checksums), the same ones ``generate_assignment`` runs.

    python -m personalab.assignments build/book/chapters build/assignments
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import nbformat

SOLUTION_TAG = "solution"
BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
STUB = "raise NotImplementedError()"  # nbgrader's default code stub, after "# YOUR CODE HERE"
POINTS = 1  # per exercise: its check passes or it does not
_HIDDEN_TAGS = (SOLUTION_TAG, "hide-input", "hide-cell")


class AssignmentError(ValueError):
    """A chapter's exercise cells do not follow the convention nbgrader needs."""


def _function_name(source: str, where: str) -> str:
    """The one function a solution cell defines (its name becomes the nbgrader grade id)."""
    try:
        tree = ast.parse(source)
    except SyntaxError as err:
        raise AssignmentError(f"{where}: the solution cell does not parse: {err}") from err
    names = [n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    if len(names) != 1:
        raise AssignmentError(f"{where}: a solution cell must define exactly one function, found {names}")
    return names[0]


def _calls_check(source: str) -> bool:
    return bool(re.match(r"\s*(#.*\n\s*)*check_\w+\(", source))


def instructor_notebook(nb: nbformat.NotebookNode, name: str = "chapter") -> nbformat.NotebookNode:
    """A copy of ``nb`` with nbgrader metadata: solution cells and their checks as graded tests.

    Raises ``AssignmentError`` (naming the chapter and cell) when a solution cell lacks the
    markers, defines other than one function, or is not followed by a ``check_...`` cell.
    """
    nb = nbformat.from_dict(nb)
    cells = nb.cells
    for i, cell in enumerate(cells):
        tags = cell.get("metadata", {}).get("tags", [])
        if cell.cell_type != "code" or SOLUTION_TAG not in tags:
            continue
        where = f"{name}, cell {i}"
        if BEGIN not in cell.source or END not in cell.source:
            raise AssignmentError(f"{where}: a solution cell needs '{BEGIN}' and '{END}' around its body")
        fn = _function_name(cell.source, where)
        nxt = next((c for c in cells[i + 1 :] if c.cell_type == "code"), None)
        if nxt is None or not _calls_check(nxt.source):
            raise AssignmentError(f"{where}: the code cell after solution {fn!r} must call its check_... function")
        cell.metadata["nbgrader"] = {
            "grade": False,
            "grade_id": fn,
            "locked": False,
            "schema_version": 3,
            "solution": True,
            "task": False,
        }
        nxt.metadata["nbgrader"] = {
            "grade": True,
            "grade_id": f"check_{fn}",
            "locked": True,
            "points": POINTS,
            "schema_version": 3,
            "solution": False,
            "task": False,
        }
    return nb


def learner_notebook(nb: nbformat.NotebookNode, name: str = "chapter") -> nbformat.NotebookNode:
    """The learner's version of ``nb``, made by nbgrader's generate_assignment preprocessors.

    (All of them but the three that need a course database or header files:
    IncludeHeaderFooter, InstantiateTests and SaveCells.)
    """
    try:
        from nbgrader.preprocessors import (
            CheckCellMetadata,
            ClearHiddenTests,
            ClearMarkScheme,
            ClearOutput,
            ClearSolutions,
            ComputeChecksums,
            LockCells,
        )
    except ImportError as err:
        raise ImportError(
            "learner versions are made by nbgrader: install it (`pip install nbgrader`, or the project's dev extra)"
        ) from err

    nb = instructor_notebook(nb, name)
    resources: dict = {}
    for pre in (
        LockCells(),
        ClearSolutions(),
        ClearOutput(),
        CheckCellMetadata(),
        ComputeChecksums(),
        ClearHiddenTests(),
        ClearMarkScheme(),
        ComputeChecksums(),
        CheckCellMetadata(),
    ):
        nb, resources = pre.preprocess(nb, resources)
    for cell in nb.cells:  # the book hides solutions; the learner must see where to write
        tags = cell.get("metadata", {}).get("tags")
        if tags:
            cell.metadata["tags"] = [t for t in tags if t not in _HIDDEN_TAGS]
    return nb


def build_assignments(src_dir: str | Path, dst_dir: str | Path) -> list[Path]:
    """Write ``source/`` and ``release/`` versions of every chapter notebook in ``src_dir``."""
    src_dir, dst_dir = Path(src_dir), Path(dst_dir)
    written = []
    for path in sorted(src_dir.glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        for kind, make in (("source", instructor_notebook), ("release", learner_notebook)):
            target = dst_dir / kind / path.stem / path.name
            target.parent.mkdir(parents=True, exist_ok=True)
            nbformat.write(make(nb, path.stem), target)
            written.append(target)
    if not written:
        raise FileNotFoundError(f"no .ipynb files in {src_dir}: run `make notebooks` first")
    return written


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python -m personalab.assignments SRC_DIR DST_DIR")
    for p in build_assignments(sys.argv[1], sys.argv[2]):
        print(p)
