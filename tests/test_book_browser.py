"""The built HTML book, opened in a real browser (``make check-browser``).

Headless Chromium (Debian's ``chromium`` and ``chromium-driver``, driven by selenium;
nothing is downloaded at run time) opens every page of ``book/_build/html`` from a local
HTTP server and fails on a JavaScript console error, a link inside the book that points
at a missing page or anchor, an image that does not decode, a chapter whose figures are
missing, math that MathJax did not typeset, or a search for "steering" that finds no
chapter. It saves a screenshot of every page under ``build/screenshots/``.

Not part of ``make unit``: it needs the built book and the two Debian packages
(``.ci/run`` installs them). Without root, skip it: ``make test`` does not run it.
"""

from __future__ import annotations

import functools
import http.server
import os
import re
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urldefrag, urljoin, urlparse

import pytest
import yaml

from tests.helpers import PLOT_CALL

ROOT = Path(__file__).resolve().parents[1]
HTML = ROOT / "book" / "_build" / "html"
SHOTS = ROOT / "build" / "screenshots"
CHROMIUM = os.environ.get("PERSONALAB_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = os.environ.get("PERSONALAB_CHROMEDRIVER") or shutil.which("chromedriver") or "/usr/bin/chromedriver"
# Console messages that are not the book's fault, each with its reason. CI has no network, so a
# resource from outside the book (the Colab badge image) cannot load there; the book's own
# resources are served from localhost and must all load.
ALLOWED_CONSOLE: list[str] = [r"^https://\S+ - Failed to load resource: net::ERR_"]

webdriver = pytest.importorskip("selenium.webdriver", reason="pip install selenium (the 'browser' extra)")


def _pages() -> list[str]:
    """The book's pages in table-of-contents order, as paths relative to the HTML root."""
    toc = yaml.safe_load((ROOT / "book" / "_toc.yml").read_text(encoding="utf-8"))
    return [f"{toc['root']}.html"] + [f"{c['file']}.html" for c in toc["chapters"]]


def _chapters_with_plots() -> set[str]:
    out = set()
    for path in (ROOT / "book" / "chapters").glob("*.md"):
        if re.search(PLOT_CALL, path.read_text(encoding="utf-8")):
            out.add(f"chapters/{path.stem}.html")
    return out


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
        pass


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    if not (HTML / "index.html").is_file():
        pytest.fail(f"no {HTML}/index.html: run `make html` (or `make test`) first")
    handler = functools.partial(_QuietHandler, directory=str(HTML))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()


@pytest.fixture(scope="module")
def driver() -> Iterator[object]:
    for exe in (CHROMIUM, CHROMEDRIVER):
        if not Path(exe).is_file():
            pytest.fail(
                f"{exe} not found: install Debian's chromium and chromium-driver "
                "(`apt-get install chromium chromium-driver`, as .ci/run does), or set "
                "PERSONALAB_CHROMIUM / PERSONALAB_CHROMEDRIVER"
            )
    os.environ.setdefault("SE_OFFLINE", "true")  # selenium must not try to download a driver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,2000"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    drv = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    drv.set_page_load_timeout(60)
    yield drv
    drv.quit()


def _wait(drv, script: str, timeout: float = 20.0) -> object:
    """Poll a JavaScript expression until it is truthy; return its value (or the last falsy one)."""
    end = time.monotonic() + timeout
    value = None
    while time.monotonic() < end:
        value = drv.execute_script(f"return {script};")
        if value:
            return value
        time.sleep(0.2)
    return value


def _open(drv, url: str) -> list[str]:
    """Load ``url``, wait for it and for MathJax, return its severe console messages."""
    drv.get_log("browser")  # drop what earlier pages left
    drv.get(url)
    _wait(drv, "document.readyState === 'complete'")
    # MathJax typesets after the load event: wait for its startup promise where the page has it
    drv.set_script_timeout(30)
    drv.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "const p = window.MathJax && MathJax.startup && MathJax.startup.promise;"
        "if (p) { p.then(() => done(true), () => done(false)); } else { done(null); }"
    )
    errors = [m["message"] for m in drv.get_log("browser") if m["level"] == "SEVERE"]
    return [e for e in errors if not any(re.search(p, e) for p in ALLOWED_CONSOLE)]


@pytest.mark.parametrize("page", _pages())
def test_page_in_a_browser(page: str, base_url: str, driver) -> None:
    url = urljoin(base_url, page)
    errors = _open(driver, url)
    SHOTS.mkdir(parents=True, exist_ok=True)
    height = driver.execute_script("return document.documentElement.scrollHeight;")
    driver.set_window_size(1280, min(int(height), 16000))  # the whole page (capped), figures included
    driver.save_screenshot(str(SHOTS / (page.replace("/", "__").removesuffix(".html") + ".png")))
    driver.set_window_size(1280, 2000)
    assert not errors, f"{page}: JavaScript console errors: {errors}"

    heading = driver.execute_script("const h = document.querySelector('article h1'); return h ? h.textContent : '';")
    source = ROOT / "book" / page.replace(".html", ".md")
    want = re.search(r"^# (.+)$", source.read_text(encoding="utf-8"), flags=re.M).group(1).split(":")[0].strip()
    assert want in heading, f"{page}: the page's heading {heading!r} is not the source's {want!r}"

    images = driver.execute_script(
        "return Array.from(document.images).map(i => [i.currentSrc || i.src, i.complete, i.naturalWidth]);"
    )
    ours = [(src, complete, width) for src, complete, width in images if src.startswith(base_url)]
    broken = [src for src, complete, width in ours if not complete or width == 0]
    assert not broken, f"{page}: images that did not decode: {broken}"
    if page in _chapters_with_plots():
        figures = [src for src, _, width in ours if "/_images/" in src and width > 0]
        assert figures, f"{page}: the chapter makes plots but no figure image is shown"

    n_math = driver.execute_script("return document.querySelectorAll('.math').length;")
    if n_math:
        typeset = driver.execute_script("return document.querySelectorAll('mjx-container').length;")
        assert typeset >= n_math, f"{page}: {n_math} math elements, {typeset} typeset by MathJax"

    links = driver.execute_script("return Array.from(document.querySelectorAll('a[href]')).map(a => a.href);")
    base = urlparse(base_url)
    for link in set(links):
        target, fragment = urldefrag(link)
        parsed = urlparse(target)
        if (parsed.scheme, parsed.netloc) != (base.scheme, base.netloc):
            continue  # outside the book: not checked (no network in CI)
        rel = parsed.path.removeprefix("/")
        path = HTML / (rel or "index.html")
        if path.is_dir():
            path = path / "index.html"
        assert path.is_file(), f"{page}: broken link to {rel}"
        if fragment and path.suffix == ".html":
            html = path.read_text(encoding="utf-8", errors="replace")
            assert f'id="{fragment}"' in html, f"{page}: link to {rel}#{fragment}: no such anchor"


def test_the_book_has_math(base_url: str, driver) -> None:
    """At least one page shows typeset math (the persona vector's definition in chapter 2)."""
    _open(driver, urljoin(base_url, "chapters/02_activation_extraction.html"))
    typeset = driver.execute_script("return document.querySelectorAll('mjx-container').length;")
    assert typeset > 0, "chapter 2 shows no typeset math: did MathJax load (mathjax_path in book/_config.yml)?"


def test_search_finds_a_chapter(base_url: str, driver) -> None:
    _open(driver, urljoin(base_url, "search.html?q=steering"))
    hits = _wait(
        driver,
        "Array.from(document.querySelectorAll('#search-results li a, ul.search li a')).map(a => a.href)",
        timeout=30,
    )
    assert hits, "searching the book for 'steering' returned nothing"
    assert any("/chapters/" in h for h in hits), f"searching for 'steering' found no chapter: {hits}"


def test_widgets_have_a_static_fallback(base_url: str, driver) -> None:
    """A reader without a kernel still sees the playground's answers (a table computed at build time)
    and the live monitor's coloured tokens (static HTML) in the published pages."""
    _open(driver, urljoin(base_url, "chapters/03_steering.html"))
    tables = driver.execute_script(
        "const s = document.querySelector('section#playground, section#id7-playground, section[id*=playground]');"
        "return s ? s.querySelectorAll('table').length : -1;"
    )
    assert tables and tables > 0, f"chapter 3's playground section shows no static table ({tables})"
    _open(driver, urljoin(base_url, "chapters/04_monitoring.html"))
    spans = driver.execute_script("return document.querySelectorAll('span[style*=background]').length;")
    assert spans > 20, f"chapter 4's live monitor shows {spans} coloured tokens in the page"
