"""The chapters as readers open them: JupyterLab in headless Chromium, every cell run.

For each chapter that uses ipywidgets (once, the languages taking turns) and the first chapter
without one (per language), the test opens the notebook in JupyterLab, runs all cells and checks
that no cell raised, every figure shows as a loaded image, every widget renders, moving each
slider redraws its figure, and (Korean chapters) Hangul renders as glyphs rather than boxes.
Screenshots: build/browser-screenshots/lab-*.png.
"""

import json

import pytest
from playwright.sync_api import sync_playwright

from browser_tests.chromium import ROOT, SCREENSHOTS, hangul_report, launch
from browser_tests.jupyterlab import jupyterlab

WIDGET = "application/vnd.jupyter.widget-view+json"


def _uses_widgets(path):
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    return any(c["cell_type"] == "code" and "ipywidgets" in "".join(c["source"]) for c in cells)


def chapters_to_open():
    """Every widget chapter once, the languages taking turns, plus the first chapter without
    widgets in each language. The two languages run the same code (tests/test_chapters.py), so
    a widget chapter opened in one language stands for both; each language still renders."""
    english = sorted((ROOT / "chapters" / "en").glob("*.ipynb"))
    widgets = [n for n in english if _uses_widgets(n)]
    chosen = [n if i % 2 == 0 else n.parents[1] / "ko" / n.name for i, n in enumerate(widgets)]
    for language in ("en", "ko"):
        notebooks = sorted((ROOT / "chapters" / language).glob("*.ipynb"))
        chosen += [n for n in notebooks if not _uses_widgets(n)][:1]
    return [f"{n.parent.name}/{n.name}" for n in chosen]


@pytest.fixture(scope="module")
def lab_page():
    with jupyterlab(ROOT / "chapters") as (base, token, _), sync_playwright() as p, launch(p) as c:
        page = c.pages[0]  # a second tab never finishes loading JupyterLab headless
        page.goto(f"{base}/lab?token={token}", wait_until="commit", timeout=120_000)
        page.wait_for_function("() => window.jupyterapp", timeout=180_000)
        page.evaluate("() => window.jupyterapp.started")  # a promise: resolves once Lab is up
        yield page


OPEN_AND_RUN = """
async (path) => {
  const app = window.jupyterapp;
  const panel = await app.commands.execute('docmanager:open', {path, factory: 'Notebook'});
  await panel.context.ready;
  await panel.sessionContext.ready;
  window.__kvae = {panel, done: null};
  app.commands.execute('notebook:run-all-cells').then(
    ok => { window.__kvae.done = {ok}; },
    err => { window.__kvae.done = {ok: false, error: String(err)}; });
}
"""

# Done when run-all has settled, the kernel is idle and every image has loaded.
SETTLED = """
() => {
  const k = window.__kvae;
  if (!k.done) return false;
  const kernel = k.panel.sessionContext.session && k.panel.sessionContext.session.kernel;
  if (!kernel || kernel.status !== 'idle') return false;
  const images = k.panel.node.querySelectorAll('.jp-OutputArea-output img');
  return Array.from(images).every(i => i.complete);
}
"""

REPORT = (
    """
() => {
  const k = window.__kvae, cells = [];
  k.panel.content.widgets.forEach((cell, index) => {
    if (cell.model.type !== 'code') return;
    const outputs = cell.model.toJSON().outputs || [];
    const data = outputs.map(o => o.data || {});
    const shown = Array.from(cell.node.querySelectorAll('.jp-OutputArea-output'));
    const widgetNodes = shown.filter(n => n.querySelector('.jupyter-widgets, .widget-box'));
    cells.push({
      index,
      executed: cell.model.executionCount !== null,
      errors: outputs.filter(o => o.output_type === 'error').map(o => `${o.ename}: ${o.evalue}`),
      images: data.filter(d => d['image/png'] || d['image/jpeg'] || d['image/svg+xml']).length,
      widgets: data.filter(d => d['"""
    + WIDGET
    + """']).length,
      imgs: Array.from(cell.node.querySelectorAll('.jp-OutputArea-output img')).map(i => ({
        complete: i.complete, width: i.naturalWidth, height: i.naturalHeight,
        inWidget: !!i.closest('.jupyter-widgets, .widget-box')})),
      widgetViews: widgetNodes.length,
      widgetErrors: shown.filter(
        n => /Error displaying widget|Loading widget/.test(n.textContent)).length,
      sliders: cell.node.querySelectorAll('.widget-slider .noUi-handle').length,
    });
  });
  return {done: k.done, cells};
}
"""
)

CLOSE = """
async () => {
  const k = window.__kvae;
  await k.panel.sessionContext.shutdown();
  k.panel.context.model.dirty = false;
  k.panel.dispose();
}
"""


def _img_sources(cell):
    return cell.locator(".jp-OutputArea-output img").evaluate_all("els => els.map(e => e.src)")


def _move_slider(page, cell, n, name):
    """Presses End (ArrowLeft if End did nothing) on slider n; checks that its figure redraws."""
    handle = cell.locator(".widget-slider .noUi-handle").nth(n)
    readout = cell.locator(".widget-slider .widget-readout").nth(n)
    before_value, before = readout.text_content(), _img_sources(cell)
    cell.screenshot(path=str(SCREENSHOTS / f"{name}-slider{n}-before.png"))
    handle.focus()
    handle.press("End")
    if readout.text_content() == before_value:
        handle.press("ArrowLeft")
    assert readout.text_content() != before_value, f"{name}: slider {n} did not move"
    changed = """([cell, before]) => { const now = Array.from(cell.querySelectorAll(
        '.jp-OutputArea-output img')).map(e => e.src);
        return now.length > 0 && now.every(i => i !== undefined) &&
               JSON.stringify(now) !== JSON.stringify(before) &&
               Array.from(cell.querySelectorAll('.jp-OutputArea-output img'))
                 .every(i => i.complete && i.naturalWidth > 0); }"""
    try:
        page.wait_for_function(changed, arg=[cell.element_handle(), before], timeout=90_000)
    finally:
        cell.screenshot(path=str(SCREENSHOTS / f"{name}-slider{n}-after.png"))


@pytest.mark.parametrize("notebook", chapters_to_open())
def test_chapter_runs_and_renders_in_jupyterlab(lab_page, notebook):
    page, name = lab_page, "lab-" + notebook.replace("/", "-").removesuffix(".ipynb")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.evaluate(OPEN_AND_RUN, notebook)
    try:
        page.wait_for_function(SETTLED, timeout=300_000, polling=1000)
        report = page.evaluate(REPORT)
        where = f"{notebook} (screenshots: {SCREENSHOTS.relative_to(ROOT)}/{name}*.png)"
        _check_cells(report, where)
        if notebook.startswith("ko/"):
            hangul = hangul_report(page, ".jp-RenderedMarkdown p, .jp-RenderedMarkdown li")
            assert hangul["ok"], f"{where}: Hangul renders as boxes: {hangul}"
        cells = page.locator(".jp-Notebook .jp-CodeCell")
        for position, c in enumerate(report["cells"]):
            for n in range(c["sliders"]):
                _move_slider(page, cells.nth(position), n, f"{name}-cell{c['index']}")
        if _uses_widgets(ROOT / "chapters" / notebook):
            assert sum(c["sliders"] for c in report["cells"]) > 0, f"{where}: no slider rendered"
    finally:
        page.screenshot(path=str(SCREENSHOTS / f"{name}.png"))
        page.evaluate(CLOSE)


def _check_cells(report, where):
    assert report["done"]["ok"], f"{where}: run-all did not finish: {report['done']}"
    cells = report["cells"]
    errors = [(c["index"], c["errors"]) for c in cells if c["errors"]]
    assert not errors, f"{where}: cells raised: {errors}"
    unrun = [c["index"] for c in cells if not c["executed"]]
    assert not unrun, f"{where}: cells never ran: {unrun}"
    for c in cells:
        blank = [i for i in c["imgs"] if not (i["complete"] and i["width"] and i["height"])]
        assert not blank, f"{where}: cell {c['index']} has figures that did not render: {blank}"
        outside = sum(not i["inWidget"] for i in c["imgs"])
        assert outside == c["images"], (
            f"{where}: cell {c['index']} has {c['images']} figure outputs, {outside} shown"
        )
        assert c["widgetErrors"] == 0, f"{where}: cell {c['index']} failed to display a widget"
        assert c["widgetViews"] >= c["widgets"], (
            f"{where}: cell {c['index']} has {c['widgets']} widgets, {c['widgetViews']} rendered"
        )
        if c["widgets"]:
            assert any(i["inWidget"] for i in c["imgs"]), f"{where}: widget without its figure"


# Exercises: each solution (tag hide-cell) opens with its code and its output collapsed, from the
# notebook's jupyter.source_hidden / outputs_hidden metadata. JupyterLab then shows the cell as one
# placeholder line (it hides an output wrapper whose input is hidden too); a click on it shows the
# code and the output's own placeholder, and a click on that shows the output. Opening is enough:
# nothing is run.
SOLUTION_CHAPTERS = ["en/01_elbo.ipynb", "ko/03_kl_divergence.ipynb"]

OPEN = """
async (path) => {
  const app = window.jupyterapp;
  const panel = await app.commands.execute('docmanager:open', {path, factory: 'Notebook'});
  await panel.context.ready;
  await panel.revealed;
  window.__kvae = {panel, done: null};
  const tagged = (tag) => panel.content.widgets.filter(
    cell => (cell.model.getMetadata('tags') || []).includes(tag));
  const solutions = tagged('hide-cell'), attempts = tagged('exercise-attempt');
  solutions.forEach((cell, i) => cell.node.setAttribute('data-kvae-solution', String(i)));
  attempts.forEach((cell, i) => cell.node.setAttribute('data-kvae-attempt', String(i)));
  return {solutions: solutions.map(c => ({inputHidden: c.inputHidden, outputHidden: c.outputHidden,
                                          outputs: c.model.outputs.length})),
          attempts: attempts.map(c => ({inputHidden: c.inputHidden}))};
}
"""


@pytest.mark.parametrize("notebook", SOLUTION_CHAPTERS)
def test_solutions_open_collapsed_and_expand_on_a_click(lab_page, notebook):
    page, name = lab_page, "lab-solutions-" + notebook.replace("/", "-").removesuffix(".ipynb")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    found = page.evaluate(OPEN, notebook)
    try:
        where = f"{notebook} (screenshots: {SCREENSHOTS.relative_to(ROOT)}/{name}*.png)"
        assert found["solutions"], f"{where}: no solution cell (tag hide-cell)"
        assert len(found["attempts"]) == len(found["solutions"]), f"{where}: {found}"
        assert all(s["inputHidden"] and s["outputHidden"] for s in found["solutions"]), found
        assert all(s["outputs"] > 0 for s in found["solutions"]), f"{where}: unexecuted solution"
        assert not any(a["inputHidden"] for a in found["attempts"]), f"{where}: attempt hidden"
        for n in range(len(found["solutions"])):
            cell = page.locator(f'[data-kvae-solution="{n}"]')
            attempt = page.locator(f'[data-kvae-attempt="{n}"] .jp-InputArea-editor')
            attempt.wait_for(state="visible", timeout=60_000)  # the attempt shows its code
            cell.locator(".jp-InputPlaceholder").wait_for(state="visible", timeout=60_000)
            assert not cell.locator(".jp-InputArea-editor").is_visible(), f"{where}: code shows"
            assert not cell.locator(".jp-OutputArea-output").first.is_visible(), f"{where}: output"
            assert not cell.locator(".jp-OutputPlaceholder").is_visible(), where  # one line only
        cell = page.locator('[data-kvae-solution="0"]')
        editor, output = cell.locator(".jp-InputArea-editor"), cell.locator(".jp-OutputArea-output")
        cell.scroll_into_view_if_needed()
        cell.screenshot(path=str(SCREENSHOTS / f"{name}-collapsed.png"))
        cell.locator(".jp-InputPlaceholder .jp-Placeholder-content").click()
        editor.wait_for(state="visible", timeout=10_000)
        assert "claim" in editor.inner_text(), f"{where}: the expanded code is not the solution"
        assert not output.first.is_visible(), f"{where}: the output opened with the code"
        cell.locator(".jp-OutputPlaceholder .jp-Placeholder-content").click()
        output.first.wait_for(state="visible", timeout=10_000)
        assert "✓" in output.first.inner_text(), f"{where}: the expanded output has no check mark"
        assert not cell.locator(".jp-Placeholder").first.is_visible(), f"{where}: still collapsed"
        cell.screenshot(path=str(SCREENSHOTS / f"{name}-expanded.png"))
    finally:
        page.screenshot(path=str(SCREENSHOTS / f"{name}.png"))
        page.evaluate(CLOSE)
