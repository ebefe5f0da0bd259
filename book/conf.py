"""Sphinx configuration of the kvae book, one build per language (see tools/build_book.py).

The pages come from the committed, executed notebooks; nothing is re-run (`nb_execution_mode =
"off"`). MathJax 3 is served from the build itself (sphinx-mathjax-offline), so the book typesets
its mathematics with no network. Every page links to its twin in the other language.
"""

import os

language = os.environ.get("KVAE_BOOK_LANG", "en")
TWIN = {"en": ("ko", "한국어"), "ko": ("en", "English")}[language]

project = "kvae"
author = "kvae developers"
html_title = {"en": "kvae: Variational Autoencoders", "ko": "kvae: 변분 오토인코더"}[language]
extensions = ["myst_nb", "sphinx-mathjax-offline"]
nb_execution_mode = "off"
nb_ipywidgets_js = {}  # widget outputs become a note (tools/build_book.py): no CDN script
# Every hidden cell in the chapters is an exercise's solution (tag hide-cell: code and output
# behind one toggle, a plain <details> element that needs no script). The prompt says so.
nb_code_prompt_show = {"en": "Show solution", "ko": "풀이 보기"}[language]
nb_code_prompt_hide = {"en": "Hide solution", "ko": "풀이 접기"}[language]
myst_enable_extensions = ["dollarmath", "amsmath"]
myst_heading_anchors = 3
html_theme = "furo"
html_static_path = []
html_copy_source = False
html_show_sourcelink = False
suppress_warnings = ["myst.header", "mystnb.unknown_mime_type"]


def add_twin_link(app, pagename, templatename, context, doctree):
    """Puts a link to the same page in the other language at the top of the page body."""
    if "body" not in context:
        return
    other, label = TWIN
    href = "../" * (pagename.count("/") + 1) + f"{other}/{pagename}.html"
    link = (
        f'<p class="kvae-twin"><a class="kvae-twin-link" href="{href}" hreflang="{other}" '
        f'lang="{other}">{label}</a></p>\n'
    )
    context["body"] = link + context["body"]


def setup(app):
    app.connect("html-page-context", add_twin_link)
