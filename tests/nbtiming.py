"""pytest plugin: print each notebook's duration and save them to build/chapter_seconds.json.

Used by ``make execute`` (``pytest -p tests.nbtiming --nbmake ...``); ``make bench``
reads the file into ``perf.chapter_seconds``.
"""

from __future__ import annotations

import json
from pathlib import Path

_durations: dict[str, float] = {}


def pytest_runtest_logreport(report):
    if report.when == "call" and ".ipynb" in report.nodeid:
        name = Path(report.nodeid.split("::")[0]).stem
        _durations[name] = round(report.duration, 1)


def pytest_terminal_summary(terminalreporter):
    if not _durations:
        return
    terminalreporter.write_sep("-", "chapter durations")
    for name, secs in _durations.items():
        terminalreporter.write_line(f"{secs:8.1f} s  {name}")
    out = Path("build/chapter_seconds.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(_durations, indent=2))
