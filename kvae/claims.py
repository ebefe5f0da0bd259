"""Claims as checks: a chapter's sentence about a result, asserted where it stands.

A chapter that says "the estimator is unbiased" follows the sentence with a cell
that checks it, so the notebook fails the day the sentence stops being true::

    claim("the Monte-Carlo estimate is within 3 standard errors of the exact value",
          abs(estimate - exact) <= 3 * standard_error,
          estimate=estimate, exact=exact, standard_error=standard_error)

On success it prints the sentence after a check mark and the numbers it compared,
so the reader sees what was checked; on failure it raises ``AssertionError``
quoting the sentence and the numbers, in the sentence's language (Korean when it
holds Hangul). A claim is about the method, not about one draw: each chapter takes
its seed from ``chapter_seed()`` and its claims hold for every seed and backend.
"""

import math
import os

import numpy as np

SEED_VARIABLE = "KVAE_SEED"  # the environment variable that picks a chapter's seed
NUMBERS_OPEN, NUMBERS_CLOSE = "  [", "]"  # chapters/nbval_sanitize.cfg matches this pair


def chapter_seed():
    """The chapter's one seed (``$KVAE_SEED``, default 0), with every generator seeded from it.

    Each chapter calls this once and derives every other seed from the value it
    returns (``seed=SEED``, ``seed=SEED + 1``), so running a chapter under another
    seed is one environment variable: ``KVAE_SEED=7 jupyter lab``.

    Raises:
        ValueError: ``$KVAE_SEED`` is set but is not an integer >= 0.
    """
    from kvae.seeding import set_seed  # imports Keras: the chapter has chosen its backend

    text = os.environ.get(SEED_VARIABLE, "0").strip()
    if not text.isdigit():
        raise ValueError(f"expected {SEED_VARIABLE} to be an integer >= 0, got {text!r}")
    return set_seed(int(text))


def claim(statement, holds, **numbers):
    """Check that ``statement`` holds; print it with its numbers, or raise quoting both.

    Args:
        statement: the sentence being checked, in the chapter's language.
        holds: the condition (a bool, or anything NumPy can reduce with ``all``).
        **numbers: the values the condition compares, printed either way (at
            least one: a claim shows what it checked).

    Raises:
        TypeError: no numbers were given.
        AssertionError: the condition is false; the message names the claim and
            the numbers.
    """
    if not numbers:
        raise TypeError(f"claim() needs the numbers it compares, as keywords: {statement!r}")
    shown = NUMBERS_OPEN + ", ".join(f"{k}={_format(v)}" for k, v in numbers.items())
    shown += NUMBERS_CLOSE
    if not bool(np.all(holds)):
        raise AssertionError(_failure_prefix(statement) + statement + shown)
    print(f"✓ {statement}{shown}")


def claim_close(statement, value, expected, tolerance):
    """``claim`` that ``|value - expected| <= tolerance``, showing all three."""
    value, expected = float(value), float(expected)
    holds = math.isfinite(value) and abs(value - expected) <= tolerance
    claim(statement, holds, value=value, expected=expected, tolerance=tolerance)


def _failure_prefix(statement):
    if any("\uac00" <= character <= "\ud7a3" for character in statement):  # Hangul syllables
        return "주장이 성립하지 않습니다: "
    return "claim does not hold: "


def _format(value):
    array = np.asarray(value)
    if array.ndim == 0 and np.issubdtype(array.dtype, np.number):
        return f"{float(array):.4g}"
    return np.array2string(array, precision=4, threshold=8)
