"""Shared fixtures. The suite runs once per backend: ``KERAS_BACKEND`` picks it."""

import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import kvae  # noqa: E402

BACKEND = keras.backend.backend()


@pytest.fixture(scope="session")
def mnist_train():
    return kvae.load_mnist("train")


@pytest.fixture(scope="session")
def mnist_test():
    return kvae.load_mnist("test")


@pytest.fixture
def small_vae():
    """A fresh, seeded 2-D VAE with small MLPs."""
    keras.utils.set_random_seed(0)
    vae = kvae.VAE(kvae.build_encoder(2, hidden=(64,)), kvae.build_decoder(2, hidden=(64,)), seed=0)
    vae.compile(optimizer=keras.optimizers.Adam(1e-3))
    return vae


def to_numpy(*tensors):
    return [np.asarray(keras.ops.convert_to_numpy(t), dtype=np.float64) for t in tensors]
