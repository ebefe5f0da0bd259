"""Encoder and decoder networks: images -> (z_mean, z_log_var), z -> logits.

With ``num_classes`` they are a conditional VAE's: each also takes the
one-hot label y, (B, num_classes), as a second input, and models
``q(z|x, y)`` and ``p(x|z, y)``.
"""

import math
import numbers

import keras
from keras import layers

from kvae.config import KINDS
from kvae.data import IMAGE_SHAPE

CONV_FILTERS = (32, 64)  # each conv layer halves the image side: 28 -> 14 -> 7


def _is_count(value):
    """A positive integer: Python or NumPy, never a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= 1


def _check(latent_dim, kind, hidden):
    if not _is_count(latent_dim):
        raise ValueError(f"latent_dim must be an integer >= 1, got {latent_dim!r}")
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if any(not _is_count(w) for w in hidden):
        raise ValueError(f"hidden must be a tuple of positive widths, got {hidden!r}")
    return int(latent_dim), tuple(int(w) for w in hidden)


def _check_classes(num_classes):
    if num_classes is not None and (not _is_count(num_classes) or num_classes < 2):
        raise ValueError(f"num_classes must be None or an integer >= 2, got {num_classes!r}")
    return None if num_classes is None else int(num_classes)


def _label_input(num_classes):
    """The one-hot label y, (B, num_classes): ``kvae.ConditionalVAE`` encodes the integers."""
    return keras.Input(shape=(num_classes,), name="label")


def _check_image_shape(kind, shape, name):
    """``kind="conv"`` convolves over height and width: it needs (height, width, channels)."""
    shape = tuple(shape)
    if kind == "conv" and len(shape) != 3:
        raise ValueError(
            f"kind='conv' takes images of shape (height, width, channels), got {name}={shape}; "
            "use kind='mlp' for flat vectors, volumes or other shapes (it flattens them)"
        )


def build_encoder(
    latent_dim=2, kind="mlp", hidden=(512,), input_shape=IMAGE_SHAPE, num_classes=None
):
    """Build ``q(z|x)``'s network: images to the pair ``(z_mean, z_log_var)``.

    The encoder outputs ``log sigma^2`` rather than ``sigma``: it can take any
    real value, so no constraint is needed to keep the variance positive.

    With ``num_classes`` it is ``q(z|x, y)``'s, for ``kvae.ConditionalVAE``:
    its inputs are ``[images, y]``, y the one-hot label (B, num_classes),
    concatenated to the flattened image features before the dense layers.

    Example:

    >>> encoder = build_encoder(latent_dim=2)
    >>> z_mean, z_log_var = encoder(ops.zeros((5, 28, 28, 1)))
    >>> tuple(z_mean.shape), tuple(z_log_var.shape)
    ((5, 2), (5, 2))

    Args:
        latent_dim: size of ``z``.
        kind: ``"mlp"`` (flatten, dense layers) or ``"conv"`` (two strided
            convolutions, then the dense layers).
        hidden: widths of the hidden dense layers.
        input_shape: image shape, channels last.
        num_classes: None for a VAE's encoder; the number of classes for a
            conditional one (a second input, the one-hot label).

    Returns:
        A ``keras.Model`` named ``"encoder"`` with outputs ``[z_mean, z_log_var]``,
        each (B, latent_dim).

    Raises:
        ValueError: for ``latent_dim < 1``, an unknown ``kind``, bad ``hidden``,
            ``kind="conv"`` with an ``input_shape`` that is not (height, width,
            channels), or ``num_classes`` not None or an integer >= 2.
    """
    latent_dim, hidden = _check(latent_dim, kind, tuple(hidden))
    num_classes = _check_classes(num_classes)
    _check_image_shape(kind, input_shape, "input_shape")
    images = keras.Input(shape=input_shape, name="images")
    h = images
    if kind == "conv":
        for filters in CONV_FILTERS:
            h = layers.Conv2D(filters, 3, strides=2, padding="same", activation="relu")(h)
    h = layers.Flatten()(h)
    if num_classes is None:
        return _encoder_head(images, h, latent_dim, hidden)
    # The label joins after the convolutions, not as ten constant image channels: a
    # constant channel only adds a per-class bias to the first convolution's output, and
    # the label says which digit, not where its strokes are. So the convolutions stay
    # the VAE's, and every dense layer sees the strokes and the label together.
    label = _label_input(num_classes)
    h = layers.Concatenate()([h, label])  # (B, features + num_classes)
    return _encoder_head([images, label], h, latent_dim, hidden)


def _encoder_head(inputs, h, latent_dim, hidden):
    for width in hidden:
        h = layers.Dense(width, activation="relu")(h)
    z_mean = layers.Dense(latent_dim, name="z_mean")(h)
    z_log_var = layers.Dense(latent_dim, name="z_log_var")(h)
    return keras.Model(inputs, [z_mean, z_log_var], name="encoder")


def build_decoder(
    latent_dim=2, kind="mlp", hidden=(512,), output_shape=IMAGE_SHAPE, num_classes=None
):
    """Build ``p(x|z)``'s network: ``z`` to Bernoulli **logits**, image-shaped.

    Logits, not probabilities: the likelihood is computed from them exactly
    (``kvae.elbo.bernoulli_log_likelihood``); ``keras.ops.sigmoid`` gives the
    probabilities when a picture is wanted.

    With ``num_classes`` it is ``p(x|z, y)``'s, for ``kvae.ConditionalVAE``:
    its inputs are ``[z, y]``, y the one-hot label (B, num_classes),
    concatenated to ``z`` before the first layer.

    Args:
        latent_dim: size of ``z``.
        kind: ``"mlp"`` or ``"conv"`` (dense layers, then two transposed
            convolutions that double the side twice; needs a side divisible by 4).
        hidden: widths of the hidden dense layers, applied in reverse order so
            that ``hidden`` mirrors the encoder's.
        output_shape: image shape, channels last.
        num_classes: None for a VAE's decoder; the number of classes for a
            conditional one (a second input, the one-hot label).

    Returns:
        A ``keras.Model`` named ``"decoder"`` from (B, latent_dim) (and, if
        conditional, (B, num_classes)) to (B, *output_shape) logits.

    Raises:
        ValueError: for ``latent_dim < 1``, an unknown ``kind``, bad ``hidden``,
            ``kind="conv"`` with an ``output_shape`` that is not (height, width,
            channels) with sides divisible by 4, or ``num_classes`` not None or
            an integer >= 2.
    """
    latent_dim, hidden = _check(latent_dim, kind, tuple(hidden))
    num_classes = _check_classes(num_classes)
    _check_image_shape(kind, output_shape, "output_shape")
    z = keras.Input(shape=(latent_dim,), name="z")
    inputs, h = z, z
    if num_classes is not None:
        label = _label_input(num_classes)
        inputs, h = [z, label], layers.Concatenate()([z, label])  # (B, latent_dim + num_classes)
    for width in reversed(hidden):
        h = layers.Dense(width, activation="relu")(h)
    if kind == "mlp":
        h = layers.Dense(math.prod(output_shape))(h)
        logits = layers.Reshape(output_shape, name="logits")(h)
    else:
        side_h, side_w, channels = output_shape
        if side_h % 4 or side_w % 4:
            raise ValueError(f"kind='conv' needs image sides divisible by 4, got {output_shape}")
        start = (side_h // 4, side_w // 4, CONV_FILTERS[-1])
        h = layers.Dense(math.prod(start), activation="relu")(h)
        h = layers.Reshape(start)(h)
        for filters in reversed(CONV_FILTERS):
            h = layers.Conv2DTranspose(filters, 3, strides=2, padding="same", activation="relu")(h)
        logits = layers.Conv2D(channels, 3, padding="same", name="logits")(h)
    return keras.Model(inputs, logits, name="decoder")
