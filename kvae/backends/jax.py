"""JAX: a pure function of the state in, the new state out.

``jax.jit`` compiles the step once per batch shape. Most epochs end with a
short batch (8,000 digits in batches of 128 leave 64), which would compile the
whole step a second time; so ``fit`` pads a short batch up to the largest batch
of the current ``fit``, repeating its own examples, and the step gives the
repeats zero weight in the loss and the metrics (``mask``). Layers or terms
that use statistics of the whole batch (``BatchNormalization``, ``free_bits``)
see the repeats in that one batch per epoch. Under a ``keras.distribution``
the batches arrive already split across devices and are left as they are.

JAX cannot mutate variables inside a jitted step, so Keras hands
``train_step`` every variable's value as ``state`` and expects the new values
back. The seed generator behind ``Sampling`` keeps its state in a
non-trainable variable: if the step returned the old non-trainable values,
every step would reuse the same noise ``eps``. ``beta`` is a non-trainable
variable too, so the step reads it from ``state`` (see ``LatentModel.beta``
for how a callback's assignment reaches that state during ``fit``).
"""

import jax
import keras
import numpy as np

from kvae.backends.batches import PaddedBatch, images_and_mask, masked_mean, unpack_images


class JaxTrainStep:
    """``train_step``/``test_step`` for JAX, stateless.

    Contract: the model defines ``compute_terms(x, training) -> (loss, terms)``
    (``loss`` a scalar, the batch mean of ``terms["loss"]``; ``terms`` a dict
    of per-example (B,) values keyed by metric name), ``metrics`` (one
    ``Mean`` per logged term, named like it, in ``metric_names``, and the
    unlogged ``FirstNonFiniteBatch``) and
    ``metric_inputs(terms)``, what each metric is updated with;
    ``trainable_variables`` are what the loss reaches.
    """

    largest_batch = 0  # the batch size short batches are padded to

    def fit(self, *args, **kwargs):
        self.largest_batch = 0  # each fit pads to its own batch size
        return super().fit(*args, **kwargs)

    def make_train_function(self, force=False):
        if self.train_function is not None and not force:
            return
        super().make_train_function(force)
        steps = self.train_function
        self.train_function = lambda state, batches: steps(state, map(self.padded, batches))

    def padded(self, data):
        """A ``PaddedBatch``: the images padded with their own rows to the largest batch so far."""
        x = unpack_images(data)
        n = x.shape[0]
        if keras.distribution.distribution() is not None or n >= self.largest_batch:
            self.largest_batch = max(self.largest_batch, n)
            return PaddedBatch(x, np.ones(n, "float32"))
        rows = np.arange(self.largest_batch)
        take = np.take if isinstance(x, np.ndarray) else jax.numpy.take
        return PaddedBatch(take(x, rows % n, axis=0), (rows < n).astype("float32"))

    def stateless_terms(
        self, trainable_variables, non_trainable_variables, optimizer_variables, x, mask, training
    ):
        """``compute_terms`` run on explicit values; returns the updated non-trainables too.

        The loss is the mean of ``terms["loss"]`` over the real rows (``mask``, or all if None),
        scaled by the optimizer's loss scale (mixed precision), read from
        ``optimizer_variables`` as Keras's trainer does.
        """
        mapping = list(zip(self.trainable_variables, trainable_variables, strict=True))
        mapping += list(zip(self.non_trainable_variables, non_trainable_variables, strict=True))
        with keras.StatelessScope(state_mapping=mapping) as scope:
            _, terms = self.compute_terms(x, training=training)
            loss = masked_mean(terms["loss"], mask)
        # Read back what the step assigned (the seed generator's new state).
        non_trainable_variables = [
            scope.get_current_value(v) if scope.get_current_value(v) is not None else old
            for v, old in zip(self.non_trainable_variables, non_trainable_variables, strict=True)
        ]
        if optimizer_variables is not None:
            mapping = list(zip(self.optimizer.variables, optimizer_variables, strict=True))
            with keras.StatelessScope(state_mapping=mapping):
                loss = self.optimizer.scale_loss(loss)
        return loss, (terms, non_trainable_variables)

    def stateless_update_metrics(self, metrics_variables, terms, mask=None):
        logs, new_metrics_variables = {}, []
        inputs = self.metric_inputs(terms)
        for metric in self.metrics:
            start = len(new_metrics_variables)
            values = metrics_variables[start : start + len(metric.variables)]
            values = metric.stateless_update_state(values, inputs[metric.name], sample_weight=mask)
            if metric.name in self.metric_names:  # the logged ones
                logs[metric.name] = metric.stateless_result(values)
            new_metrics_variables += values
        return logs, new_metrics_variables

    def train_step(self, state, data):
        trainable, non_trainable, optimizer_variables, metrics_variables = state
        x, mask = images_and_mask(data)  # fit's batches come padded (make_train_function)
        loss_and_gradients = jax.value_and_grad(self.stateless_terms, has_aux=True)
        (_, (terms, non_trainable)), gradients = loss_and_gradients(
            trainable, non_trainable, optimizer_variables, x, mask, True
        )
        trainable, optimizer_variables = self.optimizer.stateless_apply(
            optimizer_variables, gradients, trainable
        )
        logs, metrics_variables = self.stateless_update_metrics(metrics_variables, terms, mask)
        return logs, (trainable, non_trainable, optimizer_variables, metrics_variables)

    def test_step(self, state, data):
        trainable, non_trainable, metrics_variables = state
        x, mask = images_and_mask(data)  # evaluation is not padded: mask is None
        _, (terms, non_trainable) = self.stateless_terms(
            trainable, non_trainable, None, x, mask, False
        )
        logs, metrics_variables = self.stateless_update_metrics(metrics_variables, terms)
        return logs, (trainable, non_trainable, metrics_variables)
