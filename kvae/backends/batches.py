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


def unpack_images_and_labels(data):
    """``(images, labels)`` of a conditional model's batch: ``(x, y)`` or ``((x, y),)``.

    ``fit(x, y)`` and streams of ``(x, y)`` give the first, ``fit((x, y))`` the
    second. Sample weights are refused as in ``unpack_images``.
    """
    x, y = unpack_images(data), keras.utils.unpack_x_y_sample_weight(data)[1]
    if y is None and isinstance(x, (tuple, list)) and len(x) == 2:
        x, y = x
    if y is None:
        raise ValueError(
            "a conditional model reads each image's label: pass fit(x, y), fit((x, y)) or "
            "batches (x, y); received images without labels"
        )
    return x, y


def masked_mean(values, mask):
    """The mean of per-example ``values`` over the real rows of a padded batch (``mask`` 1)."""
    return keras.ops.sum(mask * values) / keras.ops.sum(mask)
