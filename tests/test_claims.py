"""kvae.claims: a claim that holds prints itself and its numbers; one that does not raises."""

import numpy as np
import pytest

from kvae.claims import chapter_seed, claim, claim_close


def test_a_true_claim_prints_itself_and_its_numbers(capsys):
    claim("two is more than one", 2 > 1, two=2, one=1)
    assert capsys.readouterr().out == "✓ two is more than one  [two=2, one=1]\n"


def test_a_claim_without_numbers_is_refused():
    with pytest.raises(TypeError, match="needs the numbers it compares"):
        claim("two is more than one", 2 > 1)


def test_a_false_claim_raises_with_the_sentence_and_numbers():
    with pytest.raises(AssertionError, match=r"claim does not hold: small  \[value=3\]"):
        claim("small", 3 < 1, value=3)


def test_a_false_korean_claim_says_so_in_korean():
    with pytest.raises(AssertionError, match=r"^주장이 성립하지 않습니다: 작다  \[value=3\]$"):
        claim("작다", 3 < 1, value=3)


def test_array_conditions_must_hold_everywhere():
    values = np.array([1.0, 2.0])
    claim("all positive", values > 0, values=values)
    with pytest.raises(AssertionError, match="all positive"):
        claim("all positive", -values > 0, values=-values)


def test_claim_close_uses_the_tolerance_and_refuses_nan(capsys):
    claim_close("near", 1.05, 1.0, tolerance=0.1)
    assert capsys.readouterr().out == "✓ near  [value=1.05, expected=1, tolerance=0.1]\n"
    with pytest.raises(AssertionError, match="tolerance=0.01"):
        claim_close("near", 1.05, 1.0, tolerance=0.01)
    with pytest.raises(AssertionError):
        claim_close("near", float("nan"), 1.0, tolerance=1.0)


def test_chapter_seed_reads_kvae_seed_and_seeds_numpy(monkeypatch):
    monkeypatch.setenv("KVAE_SEED", "7")
    assert chapter_seed() == 7
    first = np.random.random(3)
    chapter_seed()
    np.testing.assert_array_equal(np.random.random(3), first)  # the same seed, the same draws
    monkeypatch.setenv("KVAE_SEED", "8")
    chapter_seed()
    assert not np.array_equal(np.random.random(3), first)


def test_chapter_seed_defaults_to_zero_and_refuses_junk(monkeypatch):
    monkeypatch.delenv("KVAE_SEED", raising=False)
    assert chapter_seed() == 0
    for junk in ("-1", "seven", "1.5"):
        monkeypatch.setenv("KVAE_SEED", junk)
        with pytest.raises(ValueError, match="KVAE_SEED"):
            chapter_seed()
