"""TensorFlow: record the forward pass on a ``GradientTape``, then apply."""

import keras
import tensorflow as tf


class TrainStep:
    def train_step(self, data):
        x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        with tf.GradientTape() as tape:
            loss, terms = self.compute_terms(x, training=True)
        gradients = tape.gradient(loss, self.trainable_weights)
        self.optimizer.apply(gradients, self.trainable_weights)
        return self.update_metrics(terms)

    def test_step(self, data):
        x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        _, terms = self.compute_terms(x, training=False)
        return self.update_metrics(terms)
