"""Plain-text tables for the chapters: columns padded by display width, so Hangul lines up.

``str.ljust`` counts characters, but a terminal or a notebook draws a Hangul
syllable (an East Asian "wide" character) two cells wide, so a Korean label
padded with ``f"{name:>12}"`` pushes its row out of line.
"""

import unicodedata


def display_width(text):
    """Cells ``text`` takes in a monospaced font: 2 for wide (e.g. Hangul) characters, else 1."""
    return sum(2 if unicodedata.east_asian_width(c) in ("W", "F") else 1 for c in str(text))


def pad(text, width, align="<"):
    """``text`` padded with spaces to ``width`` display cells; ``align`` is "<", ">" or "^".

    Text already wider than ``width`` is returned unchanged, as ``format`` does.
    """
    if align not in ("<", ">", "^"):
        raise ValueError(f'expected align "<", ">" or "^", got {align!r}')
    text = str(text)
    gap = max(0, width - display_width(text))
    if align == "<":
        return text + " " * gap
    if align == ">":
        return " " * gap + text
    return " " * (gap // 2) + text + " " * (gap - gap // 2)
