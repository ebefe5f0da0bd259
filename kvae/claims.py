"""Claims as checks: a chapter's sentence about a result, asserted where it stands.

A chapter that says "the estimator is unbiased" follows the sentence with a cell
that checks it, so the notebook fails the day the sentence stops being true::

    claim("the Monte-Carlo estimate is within 3 standard errors of the exact value",
          abs(estimate - exact) <= 3 * standard_error,
          estimate=estimate, exact=exact, standard_error=standard_error)

On success it prints the sentence after a check mark, so the reader sees which
claims were checked; on failure it raises ``AssertionError`` quoting the sentence
and the numbers behind it. Nothing here imports Keras.
"""

import math

import numpy as np


def claim(statement, holds, **numbers):
    """Check that ``statement`` holds; print it, or raise ``AssertionError`` quoting it.

    Args:
        statement: the sentence being checked, in the chapter's language.
        holds: the condition (a bool, or anything NumPy can reduce with ``all``).
        **numbers: the values the condition is about, quoted if it fails.

    Raises:
        AssertionError: the condition is false; the message names the claim and
            the numbers.
    """
    if not bool(np.all(holds)):
        shown = ", ".join(f"{name}={_format(value)}" for name, value in numbers.items())
        raise AssertionError(f"claim does not hold: {statement}" + (f" ({shown})" if shown else ""))
    print(f"✓ {statement}")


def claim_close(statement, value, expected, tolerance):
    """``claim`` that ``|value - expected| <= tolerance``, quoting all three if not."""
    value, expected = float(value), float(expected)
    holds = math.isfinite(value) and abs(value - expected) <= tolerance
    claim(statement, holds, value=value, expected=expected, tolerance=tolerance)


def _format(value):
    array = np.asarray(value)
    if array.ndim == 0 and np.issubdtype(array.dtype, np.number):
        return f"{float(array):.6g}"
    return np.array2string(array, precision=4, threshold=8)
