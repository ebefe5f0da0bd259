"""Headless Debian Chromium for the browser checks, and what they measure in a page.

The browser is the system's `/usr/bin/chromium` (Debian packages `chromium`, `chromium-driver`),
driven by Playwright's Python package: nothing downloads a browser at run time.
"""

import contextlib
import os
import pathlib
import shutil
import tempfile

ROOT = pathlib.Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("KVAE_CHROMIUM", "/usr/bin/chromium")
# Failing runs leave their screenshots here (gitignored via build/).
SCREENSHOTS = ROOT / "build" / "browser-screenshots"

# As root Chromium needs --no-sandbox; without the background-networking flags its start-up
# connections are refused on a closed network and slow every page down.
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@contextlib.contextmanager
def launch(playwright):
    """Runs headless Chromium with a fresh profile (its --user-data-dir) for one `with` block.

    Args:
        playwright: the object `sync_playwright()` yields.

    Yields:
        A `BrowserContext`; leaving the block closes the browser and deletes its profile.

    Raises:
        FileNotFoundError: if the system Chromium is missing.
    """
    if not os.path.exists(CHROMIUM):
        raise FileNotFoundError(
            f"Expected Chromium at {CHROMIUM} (Debian packages chromium and chromium-driver; "
            "`.ci/run` installs them), received no such file."
        )
    profile = tempfile.mkdtemp(prefix="kvae-chromium-")
    context = playwright.chromium.launch_persistent_context(
        profile,  # Playwright passes it as --user-data-dir
        executable_path=CHROMIUM,
        headless=True,
        args=FLAGS,
        viewport={"width": 1280, "height": 900},
    )
    try:
        yield context
    finally:
        context.close()
        shutil.rmtree(profile, ignore_errors=True)


def screenshot(page, name):
    """Saves a screenshot of `page` under SCREENSHOTS; returns its path."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


# Draws Hangul in the font a page really uses for its Korean text and compares the pixels.
# Without a Hangul font every syllable falls back to the same empty box (tofu), so two
# different syllables draw identical pixels, equal to those of an unassigned code point.
HANGUL_JS = """
(node) => {
  const family = getComputedStyle(node).fontFamily;
  const size = 32;
  const draw = (text) => {
    const canvas = document.createElement('canvas');
    canvas.width = 48; canvas.height = 48;
    const ctx = canvas.getContext('2d');
    ctx.font = `${size}px ${family}`;
    ctx.fillStyle = '#000';
    ctx.fillText(text, 4, 38);
    return Array.from(ctx.getImageData(0, 0, 48, 48).data).join(',');
  };
  const han = draw('\\uD55C'), geul = draw('\\uAE00'), missing = draw('\\u0378');
  return {family, distinct: han !== geul, notTofu: han !== missing && geul !== missing,
          inked: han.split(',').some((v, i) => i % 4 === 3 && v !== '0')};
}
"""


def hangul_report(page, selector):
    """Checks that Korean text in `page` renders as Hangul glyphs, not boxes.

    Finds the first element matching `selector` whose text contains Hangul, then draws two
    syllables in that element's font on a canvas and asks the browser which platform fonts
    rendered the element's own text.

    Args:
        page: a Playwright page.
        selector: CSS selector of elements that hold Korean prose.

    Returns:
        A dict: `ok` (bool), `family` (CSS font-family), `fonts` (platform fonts used), and
        `text` (the start of the Korean text checked).
    """
    node = page.evaluate_handle(
        """(sel) => Array.from(document.querySelectorAll(sel))
             .find(e => /[\\uAC00-\\uD7A3]/.test(e.textContent)) || null""",
        selector,
    ).as_element()
    if node is None:
        return {"ok": False, "family": None, "fonts": [], "text": f"no Hangul in {selector!r}"}
    drawn = page.evaluate(HANGUL_JS, node)
    fonts = _platform_fonts(page, node)
    ok = drawn["distinct"] and drawn["notTofu"] and drawn["inked"]
    return {"ok": ok, "family": drawn["family"], "fonts": fonts, "text": node.text_content()[:40]}


def _platform_fonts(page, node):
    """The fonts Chromium really used for `node`'s text, from the DevTools protocol."""
    session = page.context.new_cdp_session(page)
    try:
        session.send("DOM.enable")
        session.send("CSS.enable")
        session.send("DOM.getDocument", {"depth": 0})  # node ids exist only after this
        node.evaluate("(e) => { window.__kvae_font_node = e; }")
        remote = session.send("Runtime.evaluate", {"expression": "window.__kvae_font_node"})
        found = session.send("DOM.requestNode", {"objectId": remote["result"]["objectId"]})
        used = session.send("CSS.getPlatformFontsForNode", {"nodeId": found["nodeId"]})
        return [f"{f['familyName']} ({f['glyphCount']} glyphs)" for f in used["fonts"]]
    finally:
        session.detach()
