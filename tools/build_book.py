"""Builds the bilingual kvae book: static HTML from the committed, executed chapter notebooks.

Usage:
    python tools/build_book.py            # -> build/book/index.html, build/book/{en,ko}/
    python tools/build_book.py --out DIR

Each language is one Sphinx build (myst-nb, no execution) of `chapters/<lang>/*.ipynb`, with
`chapters/README.md` as its front page, `chapters/<lang>/references.md` and
`chapters/GLOSSARY.md`; the configuration is
`book/conf.py`. Pages link to their twin in the other language. Nothing is fetched from the
network, at build time or when a page is read.
"""

import argparse
import json
import os
import pathlib
import shutil
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
LANGUAGES = ("en", "ko")
CAPTION = {"en": "Chapters", "ko": "장 목록"}
WIDGET = "application/vnd.jupyter.widget-view+json"
# A static page cannot move a slider (no kernel), and the widget embedder would come from a CDN.
WIDGET_NOTE = {
    "en": "An interactive slider stands here: open this chapter in JupyterLab to move it.",
    "ko": "여기에는 직접 움직여 보는 슬라이더가 있습니다. JupyterLab에서 이 장을 열어 보세요.",
}
LANDING = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>kvae book</title></head>
<body>
<h1>kvae</h1>
<p><a href="en/index.html" hreflang="en">English</a> ·
<a href="ko/index.html" hreflang="ko" lang="ko">한국어</a></p>
</body></html>
"""


def stage(language, source):
    """Writes the Sphinx source folder of one language: notebooks, front page, references,
    glossary."""
    if source.exists():
        shutil.rmtree(source)
    source.mkdir(parents=True)
    notebooks = sorted((ROOT / "chapters" / language).glob("*.ipynb"))
    if not notebooks:
        raise FileNotFoundError(f"Expected notebooks in chapters/{language}/, received none.")
    for notebook in notebooks:
        static = without_widgets(json.loads(notebook.read_text(encoding="utf-8")), language)
        (source / notebook.name).write_text(json.dumps(static, ensure_ascii=False), "utf-8")
    shutil.copy2(ROOT / "chapters" / "GLOSSARY.md", source / "GLOSSARY.md")
    shutil.copy2(ROOT / "chapters" / language / "references.md", source / "references.md")
    toctree = "\n".join([n.stem for n in notebooks] + ["references", "GLOSSARY"])
    front = (ROOT / "chapters" / "README.md").read_text(encoding="utf-8")
    front += f"\n\n```{{toctree}}\n:maxdepth: 1\n:caption: {CAPTION[language]}\n\n{toctree}\n```\n"
    (source / "index.md").write_text(front, encoding="utf-8")
    return notebooks


def without_widgets(notebook, language):
    """The notebook with each widget output replaced by a note and its saved widget state gone."""
    notebook["metadata"].pop("widgets", None)
    note = {"text/html": f'<p class="kvae-widget-note"><em>{WIDGET_NOTE[language]}</em></p>'}
    for cell in notebook["cells"]:
        for output in cell.get("outputs", []):
            if WIDGET in output.get("data", {}):
                output["data"] = dict(note)
    return notebook


def build(language, out, work):
    """Runs Sphinx for one language into `out / language`; raises if Sphinx fails."""
    source = work / language
    stage(language, source)
    command = [
        sys.executable, "-m", "sphinx", "-b", "html", "-q", "-c", str(ROOT / "book"),
        "-d", str(work / f"doctrees-{language}"), str(source), str(out / language),
    ]  # fmt: skip
    env = {**os.environ, "KVAE_BOOK_LANG": language}
    subprocess.run(command, env=env, check=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=pathlib.Path, default=ROOT / "build" / "book")
    args = parser.parse_args(argv)
    work = ROOT / "build" / "book-src"
    for language in LANGUAGES:
        build(language, args.out, work)
    (args.out / "index.html").write_text(LANDING, encoding="utf-8")
    print(f"book: open {args.out / 'index.html'} (or serve {args.out} with python -m http.server)")


if __name__ == "__main__":
    main()
