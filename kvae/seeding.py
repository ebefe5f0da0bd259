"""One call that seeds every random generator a chapter or a script draws from.

``keras.utils.set_random_seed`` seeds Python, NumPy, Keras's global seed
generator, TensorFlow (whenever it is installed, so under JAX it imports
TensorFlow just to seed it) and PyTorch. ``set_seed`` seeds the same
generators but touches a framework only when it is the Keras backend.
"""

import random

import numpy as np


def set_seed(seed):
    """Seed Python, NumPy, Keras's global seed generator and the backend; return ``seed``.

    Keras draws its default seeds (initial weights, unseeded layers) from
    Python's generator, ``fit`` shuffles with NumPy's, and the backend's own
    generator serves TensorFlow's and PyTorch's ops.

    Raises:
        ValueError: ``seed`` is not a non-negative integer.
    """
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"expected a seed that is an integer >= 0, got {seed!r}")
    seed = int(seed)
    random.seed(seed)
    np.random.seed(seed)

    import keras  # after KERAS_BACKEND is set by the caller
    from keras.src.backend.common import global_state
    from keras.src.random import seed_generator
    from keras.src.utils import rng_utils

    # What keras.utils.set_random_seed does to Keras's own state: the global
    # generator (used by keras.random without a seed) is re-made from this seed.
    global_state.set_global_attribute(rng_utils.GLOBAL_RANDOM_SEED, seed)
    global_state.set_global_attribute(seed_generator.GLOBAL_SEED_GENERATOR, None)
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        tf.random.set_seed(seed)
    elif backend == "torch":
        import torch

        torch.manual_seed(seed)
    return seed
