"""The batch as each backend's step receives it."""

from typing import Any, NamedTuple

import keras


class PaddedBatch(NamedTuple):
    """A batch padded to a fixed size: the images, and a mask of 1 (real row) or 0 (repeat).

    A NamedTuple, so ``jax.jit`` sees the same structure for every batch.
    """

    images: Any
    mask: Any


def unpack_images(data):
    """The images of a batch; refuse the sample weights the VAE cannot honour.

    The loss is an average over examples of ``-ELBO``; weighting examples would
    change the objective silently, so a batch ``(x, y, sample_weight)`` stops
    with a message instead of being ignored.
    """
    x, _, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    if sample_weight is not None:
        raise ValueError(
            "kvae models do not take sample_weight or class_weight: the loss is the "
            "per-example -ELBO averaged over the batch. Received a batch with sample "
            "weights; pass images only (or (images, labels): labels are ignored)."
        )
    return x


def images_and_mask(data):
    """``(images, mask)`` of a batch as Keras or ``PaddedBatch`` gives it; no padding: mask None."""
    if isinstance(data, PaddedBatch):
        return data
    return unpack_images(data), None


def masked_mean(values, mask):
    """The mean of per-example ``values`` over the real rows (all of them if ``mask`` is None)."""
    if mask is None:
        return keras.ops.mean(values)
    return keras.ops.sum(mask * values) / keras.ops.sum(mask)
