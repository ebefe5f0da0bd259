"""kvae.tables: Hangul counts two cells wide, so padded columns line up."""

import pytest

from kvae.tables import display_width, pad


def test_hangul_is_two_cells_wide_and_latin_one():
    assert display_width("beta") == 4
    assert display_width("재구성") == 6
    assert display_width("KL 항") == 5


@pytest.mark.parametrize("align", ["<", ">", "^"])
def test_padded_korean_and_english_labels_take_the_same_width(align):
    labels = ["재구성", "reconstruction", "KL 항"]
    widths = {display_width(pad(label, 16, align)) for label in labels}
    assert widths == {16}


def test_right_alignment_puts_the_spaces_first_and_long_text_is_kept():
    assert pad("항", 4, ">") == "  항"
    assert pad("항목이 길다", 4) == "항목이 길다"
    with pytest.raises(ValueError, match="align"):
        pad("x", 4, "=")
