"""The chapters' structure: every chapter in both languages, pairs in sync, one code.

Executing the notebooks is nbval's job (``pytest --nbval chapters``); these
tests check what nbval cannot: that a .md and its .ipynb say the same thing,
that the Korean and English chapters run the same code, that the
committed notebooks carry outputs, and that the Korean chapters keep to the
one vocabulary chapters/GLOSSARY.md fixes (its "Ruled out" and "English on
first use" tables).
"""

import io
import pathlib
import re
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
    "08_conditional",
    "09_inference_gaps",  # an appendix to 01: where the ELBO falls short of log p(x)
    "10_backends",  # an appendix to 04: one train step on three backends
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
    references = [CHAPTERS / lang / "references.md" for lang in LANGS]
    assert all(p.exists() for p in references), "each language has its references.md"
    extra = {p.stem for lang in LANGS for p in (CHAPTERS / lang).glob("*.md")} - set(SERIES)
    extra -= {"references"}  # the papers and books the chapters cite, not a chapter
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


# One Korean term per concept: GLOSSARY.md's "Ruled out" table, checked in the
# Korean chapters' prose and in the comments and Korean strings of their code.

HANGUL = re.compile("[가-힣]")
FENCE = re.compile(r"^(`{3,})(.*)$")
INLINE_CODE = re.compile(r"`[^`\n]*`")


def glossary_table(heading):
    """Rows (lists of cells) of the table under the GLOSSARY.md heading that
    starts with `heading`; `\\|` inside a cell is a literal bar."""
    lines = (CHAPTERS / "GLOSSARY.md").read_text(encoding="utf-8").splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"## {heading}"))
    rows = []
    for line in lines[start + 1 :]:
        if line.startswith("## "):
            break
        if line.startswith("|") and not set(line) <= set("|- "):
            cells = re.split(r"(?<!\\)\|", line.strip())[1:-1]
            rows.append([c.strip().replace("\\|", "|") for c in cells])
    return rows[1:]  # drop the header row


def ruled_out_terms():
    """(compiled pattern, variant, use instead) for each row of "Ruled out"."""
    terms = []
    for variant, pattern, instead, _why in glossary_table("Ruled out"):
        terms.append((re.compile(pattern.strip("`")), variant, instead))
    return terms


def code_texts(source):
    """(line offset, text) of every comment and every string literal of a
    Python cell (an f-string counts as one text, replacement fields included)."""
    lines = source.splitlines(keepends=True)
    starts = [0]
    for line in lines:
        starts.append(starts[-1] + len(line))
    texts, fstring = [], []
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        kind = tokenize.tok_name[token.type]
        if kind == "FSTRING_START":
            fstring.append(token.start)
        elif kind == "FSTRING_END":
            begin = fstring.pop()
            if not fstring:
                first = starts[begin[0] - 1] + begin[1]
                last = starts[token.end[0] - 1] + token.end[1]
                texts.append((begin[0] - 1, source[first:last]))
        elif kind in ("COMMENT", "STRING") and not fstring:
            texts.append((token.start[0] - 1, token.string))
    return texts


def korean_texts(path):
    """(line number, text, where) for each piece of a Korean chapter a reader
    reads as Korean: prose lines (inline code removed), and the comments and
    strings of code blocks that contain Hangul."""
    lines = path.read_text(encoding="utf-8").splitlines()
    front = 0
    if lines and lines[0] == "---":  # jupytext's YAML header
        front = lines.index("---", 1) + 1
    pieces, i = [], front
    while i < len(lines):
        fence = FENCE.match(lines[i])
        if not fence:
            pieces.append((i + 1, INLINE_CODE.sub("", lines[i]), "prose"))
            i += 1
            continue
        end = next(j for j in range(i + 1, len(lines)) if lines[j] == fence.group(1))
        body = lines[i + 1 : end]
        skip = 0
        while skip < len(body) and (body[skip].startswith(":") or not body[skip].strip()):
            skip += 1  # cell options such as ":tags: [...]"
        first = i + 2 + skip
        source = "\n".join(body[skip:]) + "\n"
        if "python" in fence.group(2) or "code-cell" in fence.group(2):
            texts = code_texts(source)
        else:  # shell and other blocks: every line
            texts = list(enumerate(body[skip:]))
        for row, text in texts:
            for k, part in enumerate(text.split("\n")):
                if HANGUL.search(text):
                    pieces.append((first + row + k, part, "code"))
        i = end + 1
    return pieces


def vocabulary_violations(pieces, terms):
    """Messages "line N (where): 'found' -> use instead" for every match."""
    found = []
    for line, text, where in pieces:
        for pattern, variant, instead in terms:
            for match in pattern.finditer(text):
                found.append(
                    f"line {line} ({where}): {match.group(0)!r} ({variant}) -> use {instead}"
                )
    return found


KOREAN_SOURCES = [CHAPTERS / "ko" / f"{name}.md" for name in SERIES]


@pytest.mark.parametrize("where", ("prose", "code"))
@pytest.mark.parametrize("source", KOREAN_SOURCES, ids=lambda p: f"ko/{p.stem}")
def test_korean_chapter_uses_the_glossary_vocabulary(source, where):
    pieces = [p for p in korean_texts(source) if p[2] == where]
    found = vocabulary_violations(pieces, ruled_out_terms())
    assert not found, f"chapters/ko/{source.name}, ruled out by GLOSSARY.md:\n" + "\n".join(found)


@pytest.mark.parametrize(
    ("sentence", "expected"),
    [
        ("재구성 오차와 KL의 그래디언트를 구합니다.", ["그래디언트"]),
        ("KL은 레이트(rate)이고, 율이 0이면 코드는 정보가 없습니다.", ["율"]),
        ("율-왜곡 곡선", ["율"]),
        ("비율, 확률, 효율, 규율은 모두 제대로 된 낱말입니다.", []),
        ("단위는 이미지 한 장당 3.2 nats입니다.", ["nats"]),
        ("단위는 이미지 한 장당 3.2 nat입니다.", []),
        ("단위는 예제당 nat입니다.", ["예제당"]),
        ("이 추정량은 불편입니다.", ["불편"]),
        ("편향이 없는(불편) 추정량이고, 그 뒤로는 편향이 없는 추정량입니다.", []),
        ("훈련 데이터와 테스트 세트", ["훈련", "테스트 세트"]),
        ("학습 데이터와 테스트 데이터, 잡음, 기울기", []),
    ],
    ids=[
        "gradient",
        "bare-yul",
        "yul-before-hyphen",
        "yul-inside-words",
        "nats",
        "nat",
        "per-example",
        "bulpyeon-alone",
        "bulpyeon-in-parentheses",
        "training-and-test-set",
        "the-fixed-terms",
    ],
)
def test_vocabulary_matcher_on_sentences(sentence, expected):
    found = vocabulary_violations([(1, sentence, "prose")], ruled_out_terms())
    assert [f.split("'")[1] for f in found] == expected, found


def test_vocabulary_matcher_reads_code_cells_and_lines(tmp_path):
    chapter = tmp_path / "99_sample.md"
    chapter.write_text(
        "---\nkernelspec:\n  name: python3\n---\n\n"  # lines 1-5
        "# 제목\n\n잡음의 기울기는 3.2 nat입니다.\n\n"  # lines 6-9
        "```{code-cell} ipython3\n:tags: [nbval-ignore-output]\n\n"  # lines 10-12
        'ax.set_ylabel("KL (nats)")  # English-only string: fine\n'  # line 13
        'print(f"KL: {kl:.2f} nats")  # 노이즈를 줄입니다\n'  # line 14
        "nats_total = 0\n```\n\n"  # lines 15-17
        "오차는 예제당 5 nats입니다.\n",  # line 18
        encoding="utf-8",
    )
    found = vocabulary_violations(korean_texts(chapter), ruled_out_terms())
    where = [f.split(":")[0] for f in found]
    assert where == ["line 14 (code)", "line 18 (prose)", "line 18 (prose)"]
    assert "'노이즈' (노이즈) -> use 잡음" in found[0]
    assert "'예제당'" in found[1] and "'nats'" in found[2]


def first_use_problems(chapters, terms):
    """For each (term, English): the term appears in none of `chapters`, or
    in some chapter its first appearance lacks "(...English...)" right after
    it. `chapters` holds (name, [(line number, prose line), ...]); each
    chapter stands alone, so every chapter that uses a term introduces it."""
    problems = []
    for term, english in terms:
        used = False
        for name, lines in chapters:
            text = "\n".join(line for _, line in lines)
            at = text.find(term)
            if at < 0:
                continue
            used = True
            after = re.match(r"\s*\(([^)]*)\)", text[at + len(term) :])
            inside = " ".join(after.group(1).split()).lower() if after else ""
            if english.lower() not in inside:
                line = lines[text.count("\n", 0, at)][0]
                snippet = " ".join(text[at : at + len(term) + 20].split())
                problems.append(
                    f"{name}:{line}: first {term} is {snippet!r}, not {term}({english})"
                )
        if not used:
            problems.append(f"{term}: never used in the Korean chapters")
    return problems


def korean_running_text(source):
    """Prose lines without headings: a heading stays short, and the running
    text below it introduces the term."""
    running, in_display_math = [], False
    for n, text, where in korean_texts(source):
        if where != "prose":
            continue
        if text.strip() == "$$":  # a formula's labels are not where a term is introduced
            in_display_math = not in_display_math
        elif not in_display_math and not text.startswith("#"):
            running.append((n, text))
    return running


def test_korean_terms_carry_their_english_on_first_use():
    terms = glossary_table("English on first use")
    assert len(terms) >= 5, "GLOSSARY.md lost its 'English on first use' table"
    chapters = [(f"ko/{source.name}", korean_running_text(source)) for source in KOREAN_SOURCES]
    problems = first_use_problems(chapters, terms)
    assert not problems, "\n".join(problems)


def test_first_use_check_on_sentences():
    terms = [("역전파", "backpropagation")]
    good = [
        ("a", [(1, "기울기는 역전파(Backpropagation)로"), (2, "구합니다. 역전파는 빠릅니다.")]),
        ("b", [(1, "기울기만 나오는 장")]),
    ]
    assert first_use_problems(good, terms) == []
    wrapped = [("a", [(7, "x의 주변 분산(marginal"), (8, "variance)은")])]
    assert first_use_problems(wrapped, [("주변 분산", "marginal variance")]) == []
    bad = [("a", [(3, "역전파(backpropagation)")]), ("b", [(4, "잡음"), (5, "역전파로 구합니다.")])]
    assert first_use_problems(bad, terms) == [
        "b:5: first 역전파 is '역전파로 구합니다.', not 역전파(backpropagation)"
    ]
    assert first_use_problems([("a", [(1, "기울기")])], terms) == [
        "역전파: never used in the Korean chapters"
    ]


# A claim is about the method: every chapter takes one seed from kvae.claims.chapter_seed()
# and derives every generator from it, so KVAE_SEED=7 runs the whole chapter on other draws.

SEED_LITERAL = re.compile(
    r"\b(seed|random_state)\s*=\s*-?\d"  # seed=0, random_state=1
    r"|\b(seed|default_rng|SeedGenerator|RandomState|manual_seed|set_seed)\s*\(\s*-?\d"
    r"|\bset_random_seed\b|\brandom\s*\.\s*seed\s*\("  # seeding that bypasses chapter_seed
)
CHAPTER_SEED_CALL = re.compile(r"\bchapter_seed\s*\(\s*\)")


def code_without_texts(source):
    """A code cell's tokens, comments dropped and strings blanked, joined by spaces."""
    return " ".join(code_shape(source))


def seed_problems(notebook):
    problems, calls = [], 0
    for number, cell in enumerate(cells(notebook, "code"), start=1):
        code = code_without_texts(cell.source)
        calls += len(CHAPTER_SEED_CALL.findall(code))
        problems += [f"code cell {number}: {m.group(0)!r}" for m in SEED_LITERAL.finditer(code)]
    if calls != 1:
        problems.append(f"chapter_seed() is called {calls} times, expected once")
    return problems


@pytest.mark.parametrize(
    "source",
    [s for s in SOURCES if s.stem != "00_setup"],
    ids=lambda p: f"{p.parent.name}/{p.stem}",
)
def test_every_seed_comes_from_chapter_seed(source):
    problems = seed_problems(jupytext.read(source))
    assert not problems, f"{source.relative_to(CHAPTERS)}:\n" + "\n".join(problems)


def test_seed_check_on_cells():
    def notebook(*sources):
        return nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in sources])

    good = notebook("SEED = chapter_seed()", "x = f(seed=SEED + 1)  # seed=0 in a comment is fine")
    assert seed_problems(good) == []
    bad = notebook(
        "SEED = chapter_seed()",
        "rng = np.random.default_rng(3)\nlayer = kvae.Sampling(seed = 0)",
        "keras.utils.set_random_seed(SEED)",
    )
    assert seed_problems(bad) == [
        "code cell 2: 'default_rng ( 3'",
        "code cell 2: 'seed = 0'",
        "code cell 3: 'set_random_seed'",
    ]
    assert seed_problems(notebook("x = 1")) == ["chapter_seed() is called 0 times, expected once"]


# One speech level each: the Korean chapters' prose is 합니다체, and their check-mark lines
# (the sentences given to claim and claim_close) are 한다체, as a list of findings is written.

HAEYO_ENDING = re.compile(r"[가-힣]*(?<!세)요[.!?]")  # 해요체; "...해 보세요" asks the reader
TRAILING_NOTE = re.compile(r"\s*\([^()]*\)\s*$")  # "... 같다 (3 SE 안쪽)": the note after the verb


def claim_statements(source):
    """(line, sentence) for the first argument of every claim/claim_close call in a code cell;
    adjacent literals are joined, an f-string's fields kept as written."""
    tokens = list(tokenize.generate_tokens(io.StringIO(source).readline))
    found = []
    for i, token in enumerate(tokens):
        if token.string not in ("claim", "claim_close") or tokens[i + 1].string != "(":
            continue
        parts, j = [], i + 2
        while tokens[j].type in (tokenize.NL, tokenize.NEWLINE, tokenize.COMMENT):
            j += 1
        line = tokens[j].start[0]
        while True:
            kind = tokenize.tok_name[tokens[j].type]
            if kind == "STRING":
                parts.append(_literal_text(tokens[j].string))
            elif kind == "FSTRING_START":
                depth, text = 0, ""
                while True:
                    kind = tokenize.tok_name[tokens[j].type]
                    depth += kind == "FSTRING_START"
                    depth -= kind == "FSTRING_END"
                    text += tokens[j].string
                    if depth == 0:
                        break
                    j += 1
                parts.append(_literal_text(text))
            elif kind not in ("NL", "COMMENT"):
                break
            j += 1
        if parts:
            found.append((line, "".join(parts)))
    return found


def _literal_text(literal):
    """The text between a string literal's quotes (prefixes such as f or r dropped)."""
    return re.sub(r"^[a-zA-Z]*(['\"]{1,3})(.*)\1$", r"\2", literal, flags=re.S)


def speech_level_problems(path):
    problems = []
    for line, text, where in korean_texts(path):
        if where == "prose":
            problems += [
                f"line {line} (prose, 해요체): {m.group(0)!r}" for m in HAEYO_ENDING.finditer(text)
            ]
    for number, cell in enumerate(cells(jupytext.read(path), "code"), start=1):
        for _line, sentence in claim_statements(cell.source):
            core = sentence.strip()
            while TRAILING_NOTE.search(core):
                core = TRAILING_NOTE.sub("", core).strip()
            if not core.endswith("다") or core.endswith("니다"):
                problems.append(f"code cell {number} (claim, not 한다체): {sentence!r}")
    return problems


@pytest.mark.parametrize("source", KOREAN_SOURCES, ids=lambda p: f"ko/{p.stem}")
def test_korean_chapter_keeps_one_speech_level_for_prose_and_one_for_checks(source):
    problems = speech_level_problems(source)
    assert not problems, f"chapters/ko/{source.name}:\n" + "\n".join(problems)


def test_speech_level_check_on_a_sample(tmp_path):
    chapter = tmp_path / "99_sample.md"
    chapter.write_text(
        "---\nkernelspec:\n  display_name: Python 3\n  name: python3\n---\n"  # lines 1-5
        "값이 작습니다. 직접 해 보세요. 왜 그럴까요?\n"  # line 6: only the question is 해요체
        "그래서 작으니까요.\n\n"  # line 7
        "```{code-cell} ipython3\n"
        'claim("추정값이 참값에 가깝다 (3 SE 안쪽)", ok, a=1)\n'
        'claim_close("두 값이 " f"{n}개에서 " "같습니다", a, b, 0.1)\n'
        "claim(\n    '분산이 줄어든다', ok, a=1)\n"
        'claim("이 비율", ok, a=1)\n```\n',
        encoding="utf-8",
    )
    assert speech_level_problems(chapter) == [
        "line 6 (prose, 해요체): '그럴까요?'",
        "line 7 (prose, 해요체): '작으니까요.'",
        "code cell 1 (claim, not 한다체): '두 값이 {n}개에서 같습니다'",
        "code cell 1 (claim, not 한다체): '이 비율'",
    ]


def broken_inline_math(text):
    """Lines that continue an open ``$...$`` but start like a Markdown list, quote or heading:
    Markdown reads them as a new block, and the formula is printed as raw dollars."""
    problems, inside = [], False
    for number, line in enumerate(text.splitlines(), 1):
        if inside and re.match(r"\s*([-+*>#]|\d+[.)])\s", line):
            problems.append(f"line {number}: {line.strip()[:60]!r}")
        inside ^= line.replace("\\$", "").replace("$$", "").count("$") % 2 == 1
    return problems


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_no_inline_formula_is_split_before_a_block_marker(source):
    text = "\n\n".join(c.source for c in cells(jupytext.read(source), "markdown"))
    assert not broken_inline_math(text), f"{source}: {broken_inline_math(text)}"


def test_split_formula_check_on_a_sample():
    sample = "costs $a + b\n+ c$ here, and $x\n- y$ too\n$$\n- z\n$$\n- a list item"
    assert broken_inline_math(sample) == ["line 2: '+ c$ here, and $x'", "line 3: '- y$ too'"]


# Exercises a learner works. In a converted chapter every exercise is two code cells in a row:
# - the attempt, tagged `exercise-attempt`: it runs as committed (None where the learner fills
#   in a value) and prints what to compare, not the answer; an open experiment's attempt is
#   also tagged `open-experiment`, and each converted chapter has at least one;
# - the solution right after it, tagged `hide-cell` (myst-nb: collapsed behind a toggle in the
#   book) with `jupyter: {source_hidden: true, outputs_hidden: true}` (JupyterLab: code and
#   output collapsed on open). Its first line is `# Solution` (`# 풀이`), since JupyterLab shows
#   a collapsed cell's first line. It executes and asserts its claims like any other cell.
# Every `hide-cell` cell is such a solution, and every code cell under the Exercises heading is an
# attempt or a solution. Every chapter in SERIES follows it.
ATTEMPT, OPEN, SOLUTION = "exercise-attempt", "open-experiment", "hide-cell"
EXERCISES_HEADING = re.compile(r"^## (Exercises|연습 문제)\s*$", re.M)
SOLUTION_FIRST_LINE = re.compile(r"# (Solution|풀이)")


def exercise_problems(notebook):
    """What breaks the exercise convention above, one message per problem."""
    problems = []
    tags = [set(c.metadata.get("tags", [])) for c in notebook.cells]
    start = next(
        (i for i, c in enumerate(notebook.cells) if EXERCISES_HEADING.search(c.source)), None
    )
    if start is None:
        problems.append("no Exercises heading")
    for i, cell in enumerate(notebook.cells):
        where = f"cell {i}"
        if ATTEMPT in tags[i]:
            following = tags[i + 1] if i + 1 < len(tags) else set()
            if cell.cell_type != "code" or SOLUTION not in following:
                problems.append(f"{where}: an attempt not followed by a {SOLUTION} solution")
        if SOLUTION in tags[i]:
            hidden = cell.metadata.get("jupyter", {})
            if cell.cell_type != "code" or i == 0 or ATTEMPT not in tags[i - 1]:
                problems.append(f"{where}: a solution not preceded by an {ATTEMPT} cell")
            if hidden.get("source_hidden") is not True or hidden.get("outputs_hidden") is not True:
                problems.append(f"{where}: a solution whose code and output are not both collapsed")
            if not SOLUTION_FIRST_LINE.fullmatch(cell.source.split("\n", 1)[0]):
                problems.append(f"{where}: a solution whose first line is not '# Solution'")
        if OPEN in tags[i] and ATTEMPT not in tags[i]:
            problems.append(f"{where}: {OPEN} on a cell that is not an attempt")
        in_exercises = start is not None and i > start
        if in_exercises and cell.cell_type == "code" and not tags[i] & {ATTEMPT, SOLUTION}:
            problems.append(f"{where}: a code cell under Exercises, neither attempt nor solution")
    if not any(ATTEMPT in t for t in tags):
        problems.append("no exercise-attempt cell")
    if not any(OPEN in t for t in tags):
        problems.append("no open experiment")
    return problems


@pytest.mark.parametrize(
    "source",
    SOURCES,
    ids=lambda p: f"{p.parent.name}/{p.stem}",
)
def test_every_exercise_has_an_attempt_and_a_collapsed_solution(source):
    for path, notebook in (
        (source, jupytext.read(source)),  # the source a person edits
        (source.with_suffix(".ipynb"), nbformat.read(source.with_suffix(".ipynb"), as_version=4)),
    ):  # and the notebook JupyterLab opens: jupytext must have carried the metadata over
        problems = exercise_problems(notebook)
        assert not problems, f"{path.relative_to(CHAPTERS)}:\n" + "\n".join(problems)


def test_exercise_check_on_a_sample():
    def cell(source, tags=(), hidden=None, kind="code"):
        new = nbformat.v4.new_code_cell if kind == "code" else nbformat.v4.new_markdown_cell
        made = new(source)
        if tags:
            made.metadata["tags"] = list(tags)
        if hidden is not None:
            made.metadata["jupyter"] = hidden
        return made

    collapsed = {"source_hidden": True, "outputs_hidden": True}
    good = nbformat.v4.new_notebook(
        cells=[
            cell("x = 1"),
            cell("## Exercises", kind="markdown"),
            cell("guess = None", [ATTEMPT]),
            cell("# Solution\nprint(1)", [SOLUTION], collapsed),
            cell("**2.** An experiment.", kind="markdown"),
            cell("lean = None", [ATTEMPT, OPEN]),
            cell("# 풀이\nprint(2)", [SOLUTION, "nbval-ignore-output"], collapsed),
        ]
    )
    assert exercise_problems(good) == []
    bad = nbformat.v4.new_notebook(
        cells=[
            cell("# Solution\nprint(0)", [SOLUTION], collapsed),  # no attempt before it
            cell("## 연습 문제", kind="markdown"),
            cell("guess = None", [ATTEMPT]),
            cell("print(1)  # the answer", [SOLUTION], {"source_hidden": True}),  # output shows
            cell("guess = None", [ATTEMPT]),
            cell("print(2)", ["hide-input"], {"source_hidden": True}),  # the old convention
            cell("print(3)", [OPEN]),
        ]
    )
    assert exercise_problems(bad) == [
        "cell 0: a solution not preceded by an exercise-attempt cell",
        "cell 3: a solution whose code and output are not both collapsed",
        "cell 3: a solution whose first line is not '# Solution'",
        "cell 4: an attempt not followed by a hide-cell solution",
        "cell 5: a code cell under Exercises, neither attempt nor solution",
        "cell 6: open-experiment on a cell that is not an attempt",
        "cell 6: a code cell under Exercises, neither attempt nor solution",
    ]
    assert exercise_problems(nbformat.v4.new_notebook(cells=[cell("x = 1")])) == [
        "no Exercises heading",
        "no exercise-attempt cell",
        "no open experiment",
    ]
