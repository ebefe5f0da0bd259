"""Per-backend gradient plumbing for ``kvae.models``.

Each module defines one mixin (``TensorFlowTrainStep``, ``JaxTrainStep``,
``TorchTrainStep``) with ``train_step`` and
``test_step`` for one backend; ``kvae.models`` imports the one Keras runs on.
All three compute the loss with the same call,
``loss, terms = self.compute_terms(x, training=...)``, and differ only in how
they take its gradient and carry state. Like Keras's own trainers they scale
the loss with ``self.optimizer.scale_loss`` before differentiating (mixed
precision's ``LossScaleOptimizer`` unscales the gradients in ``apply``).
"""

import keras

BACKENDS = ("tensorflow", "jax", "torch")


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
