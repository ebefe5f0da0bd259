"""The rendered book, read offline in headless Chromium.

Serves the built book (tools/build_book.py) from a local http.server and blocks every other
request, so a page that needs a CDN fails here. Each page must load, show its figures, typeset
its mathematics with the MathJax shipped in the build, render Hangul, and link to its twin. An
exercise's solution (tag hide-cell) stays hidden, code and output, until its toggle is clicked.
Set KVAE_BOOK_DIR to check a book already built; otherwise the test builds one.
Screenshots: build/browser-screenshots/book-*.png.
"""

import contextlib
import functools
import http.server
import json
import os
import pathlib
import threading

import pytest
from playwright.sync_api import sync_playwright

from browser_tests.chromium import ROOT, SCREENSHOTS, hangul_report, launch
from tools import build_book

PAGES = ["index", "references", "GLOSSARY"] + [
    n.stem for n in sorted((ROOT / "chapters" / "en").glob("*.ipynb"))
]


@pytest.fixture(scope="module")
def book(tmp_path_factory):
    folder = os.environ.get("KVAE_BOOK_DIR")
    if folder:
        return pathlib.Path(folder)
    out = tmp_path_factory.mktemp("book")
    build_book.main(["--out", str(out)])
    return out


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@contextlib.contextmanager
def serve(folder):
    handler = functools.partial(QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def reader(book):
    """(page, base URL, list of blocked non-local requests) for one offline browser."""
    with serve(book) as base, sync_playwright() as p, launch(p) as context:
        blocked = []

        def only_local(route):
            if route.request.url.startswith(base):
                route.continue_()
            else:
                blocked.append(route.request.url)
                route.abort()

        context.route("**/*", only_local)
        yield context.pages[0], base, blocked


MATH = """
async () => {
  if (window.MathJax && MathJax.startup) await MathJax.startup.promise;
  const math = Array.from(document.querySelectorAll('.math'));
  const prose = document.querySelector('article').cloneNode(true);
  prose.querySelectorAll('pre, code, mjx-container, .math').forEach(e => e.remove());
  return {math: math.length, typeset: math.filter(m => m.querySelector('mjx-container')).length,
          mathjax: !!(window.MathJax && MathJax.version),
          rawDollars: (prose.textContent.match(/\\$\\$?[^$\\s][^$]*\\$/g) || []).slice(0, 3)};
}
"""

IMAGES = """
() => Array.from(document.querySelectorAll('article img')).map(i =>
  ({src: i.getAttribute('src'), ok: i.complete && i.naturalWidth > 0 && i.naturalHeight > 0}))
"""


def _notebook_cells(language, stem):
    path = ROOT / "chapters" / language / f"{stem}.ipynb"
    return json.loads(path.read_text(encoding="utf-8"))["cells"] if path.exists() else []


def _figures_in_notebook(language, stem):
    outputs = [o for c in _notebook_cells(language, stem) for o in c.get("outputs", [])]
    return sum(any(k.startswith("image/") for k in o.get("data", {})) for o in outputs)


@pytest.mark.parametrize("language", ["en", "ko"])
@pytest.mark.parametrize("stem", PAGES)
def test_book_page_reads_offline(reader, language, stem):
    page, base, blocked = reader
    name = f"book-{language}-{stem}"
    where = f"{language}/{stem}.html (screenshot: {SCREENSHOTS.relative_to(ROOT)}/{name}.png)"
    blocked.clear()
    response = page.goto(f"{base}/{language}/{stem}.html", wait_until="load")
    try:
        assert response.ok, f"{where}: HTTP {response.status}"
        math = page.evaluate(MATH)
        images = page.evaluate(IMAGES)
    finally:
        page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)
    assert not blocked, f"{where}: the page asked the network for {blocked[:3]}"
    assert math["mathjax"], f"{where}: MathJax did not load from the build"
    assert math["typeset"] == math["math"], f"{where}: untypeset formulas: {math}"
    assert not math["rawDollars"], f"{where}: raw $...$ left in the text: {math['rawDollars']}"
    if stem != "GLOSSARY":
        assert math["math"] > 0 or stem == "00_setup", f"{where}: no formulas found at all"
    broken = [i["src"] for i in images if not i["ok"]]
    assert not broken, f"{where}: figures that did not load: {broken}"
    expected = _figures_in_notebook(language, stem)
    shown = len(images)
    assert shown >= expected, f"{where}: {expected} figures in the notebook, {shown} shown"
    if language == "ko":
        hangul = hangul_report(page, "article p, article li, article td")
        assert hangul["ok"], f"{where}: Hangul renders as boxes: {hangul}"
    _check_twin(page, base, language, stem, where)


def _check_twin(page, base, language, stem, where):
    other = {"en": "ko", "ko": "en"}[language]
    link = page.locator("a.kvae-twin-link")
    found = link.count()
    assert found == 1, f"{where}: expected one link to the {other} page, found {found}"
    link.click()
    page.wait_for_load_state("load")
    assert page.url == f"{base}/{other}/{stem}.html", f"{where}: twin link went to {page.url}"
    assert page.evaluate("document.documentElement.lang") == other, f"{where}: twin is not {other}"


def _solutions_in_notebook(language, stem):
    cells = _notebook_cells(language, stem)
    return sum("hide-cell" in c.get("metadata", {}).get("tags", []) for c in cells)


SOLUTION_PAGES = [stem for stem in PAGES if _solutions_in_notebook("en", stem)]
PROMPT = {"en": "Show solution", "ko": "풀이 보기"}


@pytest.mark.parametrize("language", ["en", "ko"])
@pytest.mark.parametrize("stem", SOLUTION_PAGES)
def test_book_page_hides_solutions_until_clicked(reader, language, stem):
    page, base, blocked = reader
    name = f"book-solutions-{language}-{stem}"
    where = f"{language}/{stem}.html (screenshot: {SCREENSHOTS.relative_to(ROOT)}/{name}.png)"
    blocked.clear()
    response = page.goto(f"{base}/{language}/{stem}.html", wait_until="load")
    assert response.ok, f"{where}: HTTP {response.status}"
    solutions = page.locator("article div.cell.tag_hide-cell")
    expected = _solutions_in_notebook(language, stem)
    shown = solutions.count()
    assert shown == expected, f"{where}: {expected} solutions in the notebook, {shown} on the page"
    for n in range(expected):
        solution = solutions.nth(n)
        toggle = solution.locator("details.hide")
        assert toggle.count() == 1, f"{where}: solution {n} is not behind one toggle"
        assert not toggle.evaluate("d => d.open"), f"{where}: solution {n} is open"
        summary = toggle.locator("summary")
        assert summary.is_visible() and PROMPT[language] in summary.inner_text(), where
        code, output = toggle.locator("div.cell_input"), toggle.locator("div.cell_output")
        assert code.count() == 1 and output.count() == 1, f"{where}: solution {n} is incomplete"
        assert not code.is_visible() and not output.is_visible(), f"{where}: solution {n} shows"
    first = solutions.first
    first.locator("summary").click()
    code, output = first.locator("div.cell_input"), first.locator("div.cell_output")
    try:
        code.wait_for(state="visible", timeout=5_000)
        assert output.is_visible(), f"{where}: the output stayed hidden after a click"
        assert "claim" in code.inner_text(), f"{where}: the toggle did not open the solution"
        assert "✓" in output.inner_text(), f"{where}: the solution's output has no check mark"
    finally:
        page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)
    assert not blocked, f"{where}: the page asked the network for {blocked[:3]}"
