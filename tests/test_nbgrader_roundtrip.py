"""nbgrader round-trips a real chapter: generate, autograde a right and a wrong answer.

Runs nbgrader's own commands (``generate_assignment``, ``autograde``) in a throwaway course
folder on chapter 0, built by ``personalab.assignments`` from the chapter source. The learner
who writes the reference answers gets full marks; the one whose ``block_output`` reads the
block after the one asked for gets zero for that exercise and full marks for the others.
Executes the chapter twice (about a minute), so it is not part of ``make unit``: ``make test``
runs it as ``make check-assignments``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import jupytext
import nbformat

from personalab.assignments import instructor_notebook

ROOT = Path(__file__).resolve().parents[1]
CHAPTER = "00_inside_a_chat_model"
WRONG_ID = "block_output"  # the exercise the wrong learner gets wrong


def _nbgrader(course: Path, *args: str) -> None:
    # nbgrader runs `alembic` (its database migrations) from PATH: the venv's bin must be on it
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    run = subprocess.run(
        [sys.executable, "-m", "nbgrader", *args, "--force"],
        cwd=course,
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
    )
    assert run.returncode == 0, f"nbgrader {' '.join(args)} failed:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}"


def _answered(release: nbformat.NotebookNode, source: nbformat.NotebookNode, wrong: bool) -> nbformat.NotebookNode:
    """The learner's notebook with every solution cell written: the reference, or one off-by-one."""
    reference = {c.metadata["nbgrader"]["grade_id"]: c.source for c in source.cells if "nbgrader" in c.metadata}
    nb = nbformat.from_dict(release)
    for cell in nb.cells:
        meta = cell.metadata.get("nbgrader", {})
        if meta.get("solution"):
            cell.source = reference[meta["grade_id"]]
            if wrong and meta["grade_id"] == WRONG_ID:
                assert "layers[k]" in cell.source
                cell.source = cell.source.replace("layers[k]", "layers[k + 1]")
    return nb


def test_nbgrader_generates_and_autogrades_chapter_0(tmp_path: Path) -> None:
    course = tmp_path / "course"
    source_nb = instructor_notebook(jupytext.read(ROOT / "book" / "chapters" / f"{CHAPTER}.md"), CHAPTER)
    (course / "source" / CHAPTER).mkdir(parents=True)
    nbformat.write(source_nb, course / "source" / CHAPTER / f"{CHAPTER}.ipynb")
    (course / "nbgrader_config.py").write_text(
        f"c = get_config()\nc.CourseDirectory.root = {str(course)!r}\nc.CourseDirectory.course_id = 'personalab'\n"
        "c.ExecutePreprocessor.timeout = 600\nc.Execute.timeout = 600\n"
    )
    _nbgrader(course, "generate_assignment", CHAPTER)
    release = nbformat.read(course / "release" / CHAPTER / f"{CHAPTER}.ipynb", as_version=4)
    assert "raise NotImplementedError()" in "".join(c.source for c in release.cells)

    for student, wrong in (("right", False), ("wrong", True)):
        folder = course / "submitted" / student / CHAPTER
        folder.mkdir(parents=True)
        nbformat.write(_answered(release, source_nb, wrong), folder / f"{CHAPTER}.ipynb")
    _nbgrader(course, "autograde", CHAPTER)

    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        scores = {
            student: {
                g.name: (g.score, g.max_score)
                for g in gb.find_submission_notebook(CHAPTER, CHAPTER, student).grades
                if g.max_score
            }
            for student in ("right", "wrong")
        }
    graded = {
        f"check_{c.metadata['nbgrader']['grade_id']}"
        for c in source_nb.cells
        if c.metadata.get("nbgrader", {}).get("solution")
    }
    assert set(scores["right"]) == graded and len(graded) == 3
    assert all(score == top for score, top in scores["right"].values()), scores["right"]
    for name, (score, top) in scores["wrong"].items():
        assert score == (0 if name == f"check_{WRONG_ID}" else top), (name, scores["wrong"])
