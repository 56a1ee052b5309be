"""The built HTML book has every chapter page and every chapter's figures.

Runs after `make html` (part of `make test`); a green build that produced no HTML, or
a chapter whose plots did not render, fails here.
"""

import re
from pathlib import Path

import pytest
import yaml

from tests.helpers import PLOT_CALL

ROOT = Path(__file__).resolve().parents[1]
HTML = ROOT / "book" / "_build" / "html"


def _chapters():
    toc = yaml.safe_load((ROOT / "book" / "_toc.yml").read_text())
    return [c["file"] for c in toc["chapters"]]


def test_index_exists():
    assert (HTML / "index.html").is_file(), f"no {HTML}/index.html: did `make html` run?"


@pytest.mark.parametrize("chapter", _chapters())
def test_chapter_page_and_figures(chapter):
    page = HTML / f"{chapter}.html"
    assert page.is_file(), f"chapter page missing: {page}"
    text = page.read_text(encoding="utf-8")
    src = (ROOT / "book" / f"{chapter}.md").read_text(encoding="utf-8")
    title = re.search(r"^# (.+)$", src, flags=re.M).group(1).strip()
    assert title.split(":")[0] in text
    n_plots = len(re.findall(PLOT_CALL, src))
    imgs = re.findall(r'<img [^>]*src="([^"]*_images/[^"]+\.png)"', text)
    if n_plots:
        assert imgs, f"{chapter}: the source makes plots but the page shows no images"
    for img in imgs:
        assert (page.parent / img).resolve().is_file(), f"{chapter}: image {img} is missing"
    assert "Traceback (most recent call last)" not in text, f"{chapter}: an error traceback was rendered"
