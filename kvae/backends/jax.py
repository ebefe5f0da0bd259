"""JAX: a pure function of the state in, the new state out.

JAX cannot mutate variables inside a jitted step, so Keras hands
``train_step`` every variable's value as ``state`` and expects the new values
back. The seed generator behind ``Sampling`` keeps its state in a
non-trainable variable: if the step returned the old non-trainable values,
every step would reuse the same noise ``eps``.
"""

import jax
import keras


class TrainStep:
    def stateless_terms(self, trainable_variables, non_trainable_variables, x, training):
        """``compute_terms`` run on explicit values; returns the updated non-trainables too."""
        mapping = list(zip(self.trainable_variables, trainable_variables, strict=True))
        mapping += list(zip(self.non_trainable_variables, non_trainable_variables, strict=True))
        with keras.StatelessScope(state_mapping=mapping) as scope:
            loss, terms = self.compute_terms(x, training=training)
        # Read back what the step assigned (the seed generator's new state).
        non_trainable_variables = [
            scope.get_current_value(v) if scope.get_current_value(v) is not None else old
            for v, old in zip(self.non_trainable_variables, non_trainable_variables, strict=True)
        ]
        return loss, (terms, non_trainable_variables)

    def stateless_update_metrics(self, metrics_variables, terms):
        logs, new_metrics_variables = {}, []
        for metric in self.metrics:
            start = len(new_metrics_variables)
            values = metrics_variables[start : start + len(metric.variables)]
            values = metric.stateless_update_state(values, terms[metric.name])
            logs[metric.name] = metric.stateless_result(values)
            new_metrics_variables += values
        return logs, new_metrics_variables

    def train_step(self, state, data):
        trainable, non_trainable, optimizer_variables, metrics_variables = state
        x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        loss_and_gradients = jax.value_and_grad(self.stateless_terms, has_aux=True)
        (_, (terms, non_trainable)), gradients = loss_and_gradients(
            trainable, non_trainable, x, True
        )
        trainable, optimizer_variables = self.optimizer.stateless_apply(
            optimizer_variables, gradients, trainable
        )
        logs, metrics_variables = self.stateless_update_metrics(metrics_variables, terms)
        return logs, (trainable, non_trainable, optimizer_variables, metrics_variables)

    def test_step(self, state, data):
        trainable, non_trainable, metrics_variables = state
        x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        _, (terms, non_trainable) = self.stateless_terms(trainable, non_trainable, x, False)
        logs, metrics_variables = self.stateless_update_metrics(metrics_variables, terms)
        return logs, (trainable, non_trainable, metrics_variables)
