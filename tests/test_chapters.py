"""The chapters' structure: every chapter in both languages, pairs in sync, one code.

Executing the notebooks is nbval's job (``pytest --nbval chapters``); these
tests check what nbval cannot: that a .md and its .ipynb say the same thing,
that the Korean and English chapters run the same code, and that the
committed notebooks carry outputs.
"""

import io
import pathlib
import tokenize

import jupytext
import nbformat
import pytest

CHAPTERS = pathlib.Path(__file__).resolve().parents[1] / "chapters"
SERIES = (
    "00_setup",
    "01_elbo",
    "02_reparameterization",
    "03_kl_divergence",
    "04_vae_in_keras",
    "05_point_vs_region",
    "06_tug_of_war",
    "07_latent_manifold",
)
LANGS = ("en", "ko")
SOURCES = [CHAPTERS / lang / f"{name}.md" for name in SERIES for lang in LANGS]


def cells(notebook, cell_type=None):
    return [c for c in notebook.cells if cell_type is None or c.cell_type == cell_type]


def code_shape(source):
    """Python tokens of a cell with comments dropped and every string literal
    replaced by one placeholder, so translated text does not count as code."""
    shape, depth = [], 0
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        kind = tokenize.tok_name[token.type]
        if kind == "FSTRING_START":  # Python 3.12+ splits f-strings into parts
            depth += 1
            if depth == 1:
                shape.append("STRING")
        elif kind == "FSTRING_END":
            depth -= 1
        elif depth or kind in ("COMMENT", "NL", "ENCODING"):
            continue
        elif kind == "STRING":
            shape.append("STRING")
        else:
            shape.append(token.string)
    return shape


def test_every_chapter_exists_in_both_languages():
    missing = [str(p.relative_to(CHAPTERS)) for p in SOURCES if not p.exists()]
    assert not missing, f"missing chapters: {missing}"
    extra = {p.stem for lang in LANGS for p in (CHAPTERS / lang).glob("*.md")} - set(SERIES)
    assert not extra, f"chapters outside the series (add them to SERIES): {extra}"


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_notebook_is_in_sync_with_its_source(source):
    text = jupytext.read(source)
    notebook = nbformat.read(source.with_suffix(".ipynb"), as_version=4)
    expected = [(c.cell_type, c.source.strip()) for c in text.cells]
    actual = [(c.cell_type, c.source.strip()) for c in notebook.cells]
    assert actual == expected, f"{source.name} and its .ipynb differ: run tools/build_chapters.py"


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_committed_notebook_has_outputs(source):
    notebook = nbformat.read(source.with_suffix(".ipynb"), as_version=4)
    unrun = [i for i, c in enumerate(cells(notebook, "code")) if c.execution_count is None]
    assert not unrun, f"code cells {unrun} were never executed: run tools/build_chapters.py"


@pytest.mark.parametrize("name", SERIES)
def test_korean_and_english_run_the_same_code(name):
    en, ko = (jupytext.read(CHAPTERS / lang / f"{name}.md") for lang in LANGS)
    en_code, ko_code = cells(en, "code"), cells(ko, "code")
    counts = f"{len(en_code)} code cells in en, {len(ko_code)} in ko"
    assert len(en_code) == len(ko_code), f"{name}: {counts}"
    for i, (a, b) in enumerate(zip(en_code, ko_code, strict=True)):
        assert code_shape(a.source) == code_shape(b.source), f"{name}: code cell {i} differs"
        assert a.metadata.get("tags", []) == b.metadata.get("tags", []), f"{name}: cell {i} tags"


def test_code_shape_ignores_only_comments_and_strings():
    english = 'print(f"loss {x:.2f}")  # show it\nplt.title("latent space")\n'
    korean = 'print(f"손실 {x:.2f}")  # 보여 주기\nplt.title("잠재 공간")\n'
    assert code_shape(english) == code_shape(korean)
    assert code_shape("plt.title('a')") != code_shape("plt.xlabel('a')")
    assert code_shape("x = 1") != code_shape("x = 2")


def test_glossary_has_both_languages():
    glossary = (CHAPTERS / "GLOSSARY.md").read_text(encoding="utf-8")
    for term in ("ELBO", "증거 하한", "재매개변수화", "Reparameterization", "사후 붕괴"):
        assert term in glossary
