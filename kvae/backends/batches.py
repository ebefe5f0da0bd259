"""The batch as each backend's step receives it."""

import keras


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


def masked_mean(values, mask):
    """The mean of per-example ``values`` over the real rows of a padded batch (``mask`` 1)."""
    return keras.ops.sum(mask * values) / keras.ops.sum(mask)
