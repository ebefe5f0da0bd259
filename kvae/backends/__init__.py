"""Per-backend gradient plumbing for ``kvae.models``.

Each module defines ``TrainStep``, a mixin with ``train_step`` and
``test_step`` for one backend. The three compute the loss with the same call,
``loss, terms = self.compute_terms(x, training=...)``, and differ only in how
they take its gradient and carry state. ``KERAS_BACKEND`` is read once, when
Keras is first imported, so the module is picked once, here.
"""

import importlib

import keras

BACKENDS = ("tensorflow", "jax", "torch")


def train_step_mixin():
    """Return the ``TrainStep`` mixin for the backend Keras is running on."""
    name = keras.backend.backend()
    if name not in BACKENDS:
        raise RuntimeError(f"kvae supports the backends {BACKENDS}, Keras is running on {name!r}")
    return importlib.import_module(f"kvae.backends.{name}").TrainStep
