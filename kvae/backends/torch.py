"""PyTorch: build the graph eagerly, ``backward()`` fills ``.grad``, then apply."""

import keras
import torch


class TrainStep:
    def train_step(self, data):
        x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        self.zero_grad()
        loss, terms = self.compute_terms(x, training=True)
        loss.backward()
        weights = self.trainable_weights
        gradients = [w.value.grad for w in weights]
        with torch.no_grad():
            self.optimizer.apply(gradients, weights)
        return self.update_metrics(terms)

    def test_step(self, data):
        x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        with torch.no_grad():
            _, terms = self.compute_terms(x, training=False)
        return self.update_metrics(terms)
