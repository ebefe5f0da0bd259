import numpy as np
import pytest
from conftest import to_numpy

import kvae


@pytest.mark.parametrize("kind", ["mlp", "conv"])
def test_encoder_and_decoder_shapes(kind):
    encoder = kvae.build_encoder(latent_dim=3, kind=kind, hidden=(32,))
    decoder = kvae.build_decoder(latent_dim=3, kind=kind, hidden=(32,))
    z_mean, z_log_var = encoder(np.zeros((5, 28, 28, 1), "float32"))
    assert tuple(z_mean.shape) == tuple(z_log_var.shape) == (5, 3)
    logits = decoder(np.zeros((5, 3), "float32"))
    assert tuple(logits.shape) == (5, 28, 28, 1)


def test_decoder_returns_unbounded_logits_not_probabilities():
    decoder = kvae.build_decoder(latent_dim=2, hidden=(16,))
    (logits,) = to_numpy(
        decoder(np.random.default_rng(0).normal(size=(64, 2)).astype("float32") * 5)
    )
    assert logits.min() < 0.0  # a probability could never be negative


def test_hidden_widths_are_used_in_order():
    encoder = kvae.build_encoder(latent_dim=2, hidden=(128, 16))
    widths = [layer.units for layer in encoder.layers if hasattr(layer, "units")]
    assert widths == [128, 16, 2, 2]
    decoder = kvae.build_decoder(latent_dim=2, hidden=(128, 16))
    assert [layer.units for layer in decoder.layers if hasattr(layer, "units")] == [16, 128, 784]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"latent_dim": 0}, "latent_dim must be an integer >= 1, got 0"),
        ({"latent_dim": 2.5}, "latent_dim must be an integer"),
        ({"kind": "rnn"}, "kind must be one of"),
        ({"hidden": (64, 0)}, "hidden must be a tuple of positive widths"),
    ],
)
def test_bad_arguments_are_refused(kwargs, message):
    for build in (kvae.build_encoder, kvae.build_decoder):
        with pytest.raises(ValueError, match=message.replace("(", r"\(")):
            build(**kwargs)


def test_conv_decoder_needs_sides_divisible_by_four():
    with pytest.raises(ValueError, match="divisible by 4"):
        kvae.build_decoder(kind="conv", output_shape=(30, 30, 1))


@pytest.mark.parametrize("shape", [(20,), (16, 16, 16, 1)])
def test_conv_networks_name_the_shapes_they_take(shape):
    message = r"kind='conv' takes images of shape \(height, width, channels\), got {}="
    with pytest.raises(ValueError, match=message.format("input_shape") + r".*kind='mlp'"):
        kvae.build_encoder(2, kind="conv", input_shape=shape)
    with pytest.raises(ValueError, match=message.format("output_shape") + r".*kind='mlp'"):
        kvae.build_decoder(2, kind="conv", output_shape=shape)


@pytest.mark.parametrize("shape", [(20,), (16, 16, 16, 1)])
def test_mlp_networks_take_vectors_and_volumes(shape):
    encoder = kvae.build_encoder(2, hidden=(8,), input_shape=shape)
    decoder = kvae.build_decoder(2, hidden=(8,), output_shape=shape)
    z_mean, _ = encoder(np.zeros((3, *shape), "float32"))
    assert tuple(decoder(z_mean).shape) == (3, *shape)
