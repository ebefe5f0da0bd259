"""PyTorch: build the graph eagerly, ``backward()`` fills ``.grad``, then apply."""

import torch


class TorchTrainStep:
    """``train_step``/``test_step`` for PyTorch.

    Contract: the model defines ``unpack(batch)``, what ``compute_terms``
    reads of a batch, ``compute_terms(x, training) -> (loss, terms)``
    (``loss`` a scalar, ``terms`` a dict of per-example (B,) values keyed by
    metric name), ``with_losses``, which adds the regularisation losses, and
    ``update_metrics(terms) -> logs``; ``trainable_variables`` are what the
    loss reaches. Steps run eagerly, so a variable assigned between steps
    (``beta``) is simply read.
    """

    def train_step(self, data):
        x = self.unpack(data)
        self.zero_grad()
        loss, terms = self.with_losses(self.compute_terms(x, training=True))
        variables = self.trainable_variables
        if variables:  # a frozen model has nothing to differentiate: backward() would refuse
            self.optimizer.scale_loss(loss).backward()
            gradients = [v.value.grad for v in variables]
            with torch.no_grad():
                self.optimizer.apply(gradients, variables)
        return self.update_metrics(terms)

    def test_step(self, data):
        x = self.unpack(data)
        with torch.no_grad():
            _, terms = self.with_losses(self.compute_terms(x, training=False))
        return self.update_metrics(terms)
