"""Turn executed chapters into learner notebooks (``make assignments``).

A chapter is the single source for both versions. A code cell tagged ``solution``
holds the reference answer to an exercise; in the learner notebook each function
in it keeps its signature and docstring and its body becomes
``raise NotImplementedError``. The ``check_...()`` cell that follows it in the
chapter stays as it is, so the learner runs the same check the book ran.
Outputs are stripped.

    python -m personalab.assignments build/book/chapters build/assignments
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import nbformat

SOLUTION_TAG = "solution"
STUB_LINE = 'raise NotImplementedError("Exercise: write this function, then run the check below.")'


def stub_source(source: str) -> str:
    """Replace every top-level function body in ``source`` by a NotImplementedError stub.

    Keeps imports, the ``def`` line(s) and the docstring; drops everything else,
    so the solution never leaks into the learner's notebook.
    """
    tree = ast.parse(source)
    lines = source.splitlines()
    out: list[str] = []
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            out.extend(lines[node.lineno - 1 : node.end_lineno])
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            start = (node.decorator_list[0].lineno if node.decorator_list else node.lineno) - 1
            first = node.body[0]
            has_doc = (
                isinstance(first, ast.Expr)
                and isinstance(first.value, ast.Constant)
                and isinstance(first.value.value, str)
            )
            head_end = first.end_lineno if has_doc else first.lineno - 1
            out.extend(lines[start:head_end])
            indent = " " * first.col_offset
            out.append(f"{indent}# YOUR CODE HERE")
            out.append(f"{indent}{STUB_LINE}")
            out.append("")
    if not any(isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) for n in tree.body):
        raise ValueError("a cell tagged 'solution' must define at least one function")
    return "\n".join(out).rstrip() + "\n"


def learner_notebook(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """A copy of ``nb`` with solutions stubbed, hide-tags removed and outputs cleared."""
    nb = nbformat.from_dict(nb)
    for cell in nb.cells:
        tags = cell.get("metadata", {}).get("tags", [])
        if cell.cell_type != "code":
            continue
        cell.outputs, cell.execution_count = [], None
        if SOLUTION_TAG in tags:
            cell.source = stub_source(cell.source)
            cell.metadata["tags"] = [t for t in tags if t not in (SOLUTION_TAG, "hide-input", "hide-cell")]
    return nb


def build_assignments(src_dir: str | Path, dst_dir: str | Path) -> list[Path]:
    """Write one learner notebook per chapter notebook in ``src_dir``."""
    src_dir, dst_dir = Path(src_dir), Path(dst_dir)
    dst_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for path in sorted(src_dir.glob("*.ipynb")):
        nb = learner_notebook(nbformat.read(path, as_version=4))
        target = dst_dir / path.name
        nbformat.write(nb, target)
        written.append(target)
    if not written:
        raise FileNotFoundError(f"no notebooks in {src_dir}: run `make notebooks` first")
    return written


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python -m personalab.assignments SRC_DIR DST_DIR")
    for p in build_assignments(sys.argv[1], sys.argv[2]):
        print(p)
