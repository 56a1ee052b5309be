"""The library's import floors follow the method, and no import points up a floor or closes a loop.

Every module of ``personalab`` is placed on a floor below; a module may import only from
its own floor or lower ones, and the import graph (module-level and function-level
imports alike) has no cycle. A new module must be placed here before its tests pass.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "personalab"

FLOORS = {
    # 1. plumbing that knows nothing about models: files and caches, statistics, recorded
    #    results, timing, the environment settings, an HTTP chat client, the GGUF control-vector format
    "_io": 1,
    "config": 1,
    "validate": 1,
    "options": 1,
    "stats": 1,
    "results": 1,
    "profiling": 1,
    "llm_client": 1,
    "export": 1,
    "versions": 1,
    # 2. model access and the layer convention
    "models": 2,
    "__init__": 2,
    # 3. reading activations, and vector maths
    "activations": 3,
    "vectors": 3,
    # 4. prompting, generation and the intervention hook; the logit lens
    "prompting": 4,
    "lens": 4,
    # 5. traits and judges
    "traits": 5,
    "judges": 5,
    # 6. extraction (the method's steps 1-4) and the capability check
    "extraction": 6,
    "capability": 6,
    # 7. steering and monitoring; watched or not (context framings, probes)
    "steering": 7,
    "monitoring": 7,
    # 8. datasets, fine-tuning, data filtering, critique -> revision data
    "finetune": 8,
    "datafilter": 8,
    "cai": 8,
    "watched": 7,
    # 9. the book's support
    "plotting": 9,
    "plotting_steering": 9,
    "plotting_monitoring": 9,
    "plotting_finetune": 9,
    "widgets": 9,
    "assignments": 9,
    "checks": 9,
    "cli": 9,
    "__main__": 9,
}


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = rel.parts
    if parts[0] == "checks":  # the exercise checks are one subpackage on the top floor
        return "checks"
    return parts[0]


def _imports(path: Path) -> set[str]:
    """personalab modules that ``path`` imports, at module level or inside functions."""
    known = {p.stem for p in ROOT.glob("*.py")} | {"checks"}
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "personalab":
            parts = node.module.split(".")
            if len(parts) > 1:
                out.add(parts[1])
            else:  # from personalab import traits  -> the traits module; from personalab import X -> the package
                out |= {a.name if a.name in known else "__init__" for a in node.names}
        elif isinstance(node, ast.Import):
            for a in node.names:
                parts = a.name.split(".")
                if parts[0] == "personalab":
                    out.add(parts[1] if len(parts) > 1 else "__init__")
    return out


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in ROOT.rglob("*.py"):
        name = _module_name(path)
        graph.setdefault(name, set()).update(d for d in _imports(path) if d != name)
    return graph


def test_every_module_has_a_floor():
    missing = sorted(set(_graph()) - set(FLOORS))
    assert not missing, f"place these modules on a floor in tests/test_architecture.py: {missing}"


def test_no_import_points_up_a_floor():
    upward = [
        f"{a} (floor {FLOORS[a]}) imports {b} (floor {FLOORS[b]})"
        for a, deps in _graph().items()
        for b in deps
        if FLOORS[b] > FLOORS[a]
    ]
    assert not upward, "imports against the method's order:\n" + "\n".join(sorted(upward))


def test_no_import_cycle():
    graph, state, cycles = _graph(), {}, []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = "open"
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == "open":
                cycles.append(
                    " -> ".join(stack[stack.index(dep) :] + [node, dep]) if dep in stack else f"{node} -> {dep}"
                )
            elif dep not in state:
                visit(dep, stack + [node])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_the_top_level_api_resolves_lazily_and_stays_light():
    """Every public name resolves to the object its module defines; importing the package
    pulls in none of the heavy floors (peft, sklearn, the judges)."""
    import importlib
    import subprocess
    import sys

    import personalab as pl

    for name in pl.__all__:
        assert getattr(pl, name) is not None, name
    assert pl.PersonaVector is importlib.import_module("personalab.vectors").PersonaVector
    assert pl.load_trait is importlib.import_module("personalab.traits").load
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        pl.nope  # noqa: B018
    code = (
        "import sys, personalab; print(sorted(m for m in ('peft', 'sklearn', 'personalab.judges') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]", out


def test_library_modules_use_only_ground_floor_names_from_the_package_root():
    """``pl.<name>`` inside the library must not reach a lazily exported (higher) module."""
    import re

    import personalab as pl

    lazy = set(pl._LAZY)
    for path in ROOT.rglob("*.py"):
        if path.name == "__init__.py" and path.parent == ROOT:
            continue
        used = set(re.findall(r"\bpl\.([A-Za-z_]+)", path.read_text()))
        assert not used & lazy, f"{path.relative_to(ROOT)} uses {sorted(used & lazy)} through the package root"
