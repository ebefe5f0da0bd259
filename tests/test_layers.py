import keras
import numpy as np
from conftest import to_numpy

import kvae

N = 20_000


def test_sampling_shapes_weights_and_seed_generator():
    layer = kvae.Sampling(seed=1)
    z = layer(np.zeros((5, 3), "float32"), np.zeros((5, 3), "float32"))
    assert tuple(z.shape) == (5, 3)
    assert layer.trainable_weights == []
    # The seed generator's state is the layer's only variable, and it is non-trainable.
    assert [v.path for v in layer.non_trainable_variables] == [layer.seed_generator.state.path]


def test_sampling_draws_from_the_requested_gaussian():
    z_mean = np.tile(np.array([[1.0, -2.0]], "float32"), (N, 1))
    z_log_var = np.tile(np.log(np.array([[0.25, 4.0]], "float32")), (N, 1))
    (z,) = to_numpy(kvae.Sampling(seed=7)(z_mean, z_log_var))
    sigma = np.array([0.5, 2.0])
    # Sample mean within 4 standard errors; sample std within 4 of its own (sigma / sqrt(2N)).
    assert np.all(np.abs(z.mean(0) - [1.0, -2.0]) < 4 * sigma / np.sqrt(N))
    assert np.all(np.abs(z.std(0) - sigma) < 4 * sigma / np.sqrt(2 * N))


def test_sampling_is_reproducible_per_seed_and_fresh_per_call():
    zeros = np.zeros((4, 2), "float32")
    first, second = kvae.Sampling(seed=3), kvae.Sampling(seed=3)
    a, b = to_numpy(first(zeros, zeros), second(zeros, zeros))
    np.testing.assert_array_equal(a, b)
    (c,) = to_numpy(first(zeros, zeros))
    assert not np.allclose(a, c)


def test_sampling_config_round_trip():
    layer = kvae.Sampling(seed=11, name="s")
    clone = kvae.Sampling.from_config(layer.get_config())
    assert clone.seed == 11 and clone.name == "s"
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert isinstance(restored, kvae.Sampling)
