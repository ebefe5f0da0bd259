"""kvae.claims: a claim that holds prints itself; one that does not raises, quoting it."""

import numpy as np
import pytest

from kvae.claims import claim, claim_close


def test_a_true_claim_prints_itself(capsys):
    claim("two is more than one", 2 > 1)
    assert capsys.readouterr().out == "✓ two is more than one\n"


def test_a_false_claim_raises_with_the_sentence_and_numbers():
    with pytest.raises(AssertionError, match=r"claim does not hold: small \(value=3\)"):
        claim("small", 3 < 1, value=3)


def test_array_conditions_must_hold_everywhere():
    claim("all positive", np.array([1.0, 2.0]) > 0)
    with pytest.raises(AssertionError, match="all positive"):
        claim("all positive", np.array([1.0, -2.0]) > 0)


def test_claim_close_uses_the_tolerance_and_refuses_nan():
    claim_close("near", 1.05, 1.0, tolerance=0.1)
    with pytest.raises(AssertionError, match="tolerance=0.01"):
        claim_close("near", 1.05, 1.0, tolerance=0.01)
    with pytest.raises(AssertionError):
        claim_close("near", float("nan"), 1.0, tolerance=1.0)
