"""kvae.seeding: one call seeds Python, NumPy, Keras and the backend, without importing others."""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from kvae.seeding import set_seed


def _draws():
    layer = keras.layers.Dense(3)  # initial weights come from Keras's default seeds
    layer.build((None, 2))
    weights = keras.ops.convert_to_numpy(layer.kernel)
    unseeded = keras.ops.convert_to_numpy(keras.random.normal((3,)))  # global seed generator
    return weights, unseeded, np.random.random(3)


def test_the_same_seed_gives_the_same_draws_and_another_seed_others():
    set_seed(3)
    first = _draws()
    set_seed(3)
    again = _draws()
    set_seed(4)
    other = _draws()
    for a, b, c in zip(first, again, other, strict=True):
        np.testing.assert_array_equal(a, b)
        assert not np.array_equal(a, c)


@pytest.mark.parametrize("seed", [-1, 1.5, "3", True])
def test_a_seed_that_is_not_a_non_negative_integer_is_refused(seed):
    with pytest.raises(ValueError, match="integer >= 0"):
        set_seed(seed)


def test_under_jax_seeding_imports_no_tensorflow():
    code = (
        "import sys; from kvae.seeding import set_seed; set_seed(1); "
        "print('tensorflow' in sys.modules)"
    )
    env = {**os.environ, "KERAS_BACKEND": "jax"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
