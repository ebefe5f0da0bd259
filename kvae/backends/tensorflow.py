"""TensorFlow: record the forward pass on a ``GradientTape``, then apply."""

import tensorflow as tf

from kvae.backends import unpack_images


class TensorFlowTrainStep:
    """``train_step``/``test_step`` for TensorFlow.

    Contract: the model defines ``compute_terms(x, training) -> (loss, terms)``
    (``loss`` a scalar, ``terms`` a dict of per-example (B,) values keyed by
    metric name) and ``update_metrics(terms) -> logs``;
    ``trainable_variables`` are what the loss reaches. Variables read inside
    ``compute_terms`` (``beta``) are read afresh at every step of the graph.
    """

    def train_step(self, data):
        x = unpack_images(data)
        with tf.GradientTape() as tape:
            loss, terms = self.compute_terms(x, training=True)
            scaled = self.optimizer.scale_loss(loss)
        variables = self.trainable_variables
        gradients = tape.gradient(scaled, variables)
        self.optimizer.apply(gradients, variables)
        return self.update_metrics(terms)

    def test_step(self, data):
        _, terms = self.compute_terms(unpack_images(data), training=False)
        return self.update_metrics(terms)
