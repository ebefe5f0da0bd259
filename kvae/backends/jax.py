"""JAX: a pure function of the state in, the new state out.

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


class JaxTrainStep:
    """``train_step``/``test_step`` for JAX, stateless.

    Contract: the model defines ``unpack(batch)``, what ``compute_terms``
    reads of a batch, ``compute_terms(x, training) -> (loss, terms)``
    (``loss`` a scalar, ``terms`` a dict of per-example (B,) values keyed by
    metric name), ``metrics`` (one ``Mean`` per logged term, named like it, in
    ``metric_names``), ``nonfinite`` (the unlogged ``FirstNonFiniteBatch``,
    whose variables follow the metrics' in ``metrics_variables``),
    ``metric_inputs(terms)``, what each is updated with, and
    ``with_losses``, which adds the regularisation losses;
    ``trainable_variables`` are what the loss reaches.
    """

    def stateless_terms(
        self, trainable_variables, non_trainable_variables, optimizer_variables, x, training
    ):
        """``compute_terms`` run on explicit values; returns the updated non-trainables too.

        The returned loss is scaled by the optimizer's loss scale (mixed
        precision), read from ``optimizer_variables`` as Keras's trainer does.
        The scope collects what layers ``add_loss`` in this pass, so that
        ``with_losses`` finds it in ``self.losses``.
        """
        mapping = list(zip(self.trainable_variables, trainable_variables, strict=True))
        mapping += list(zip(self.non_trainable_variables, non_trainable_variables, strict=True))
        with keras.StatelessScope(state_mapping=mapping, collect_losses=True) as scope:
            loss, terms = self.with_losses(self.compute_terms(x, training=training))
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

    def stateless_update_metrics(self, metrics_variables, terms):
        logs, new_metrics_variables = {}, []
        inputs = self.metric_inputs(terms)
        for metric in [*self.metrics, self.nonfinite]:  # the order of metrics_variables
            start = len(new_metrics_variables)
            values = metrics_variables[start : start + len(metric.variables)]
            values = metric.stateless_update_state(values, inputs[metric.name])
            if metric is not self.nonfinite:  # the logged ones
                logs[metric.name] = metric.stateless_result(values)
            new_metrics_variables += values
        return logs, new_metrics_variables

    def train_step(self, state, data):
        trainable, non_trainable, optimizer_variables, metrics_variables = state
        x = self.unpack(data)
        loss_and_gradients = jax.value_and_grad(self.stateless_terms, has_aux=True)
        (_, (terms, non_trainable)), gradients = loss_and_gradients(
            trainable, non_trainable, optimizer_variables, x, True
        )
        trainable, optimizer_variables = self.optimizer.stateless_apply(
            optimizer_variables, gradients, trainable
        )
        logs, metrics_variables = self.stateless_update_metrics(metrics_variables, terms)
        return logs, (trainable, non_trainable, optimizer_variables, metrics_variables)

    def test_step(self, state, data):
        trainable, non_trainable, metrics_variables = state
        x = self.unpack(data)
        _, (terms, non_trainable) = self.stateless_terms(trainable, non_trainable, None, x, False)
        logs, metrics_variables = self.stateless_update_metrics(metrics_variables, terms)
        return logs, (trainable, non_trainable, metrics_variables)
