"""Keras callbacks for VAEs: KL schedules for ``VAE.beta``, and the NaN stop.

Early in training the KL term can win before the decoder has learnt anything,
and the posterior collapses onto the prior. Annealing starts ``beta`` small and
raises it. Both schedules set ``model.beta`` at the start of each batch call
(with ``steps_per_execution=k``, once per group of ``k`` batches) from the
optimizer's own step count, so they follow the steps that ran; the model reads
it from the next step on, on every backend (``kvae.VAE.beta``).

``StopOnNaN`` is the callback ``VAE.fit`` adds itself; ``FirstNonFiniteBatch``
is the internal state it reads (never logged).

Example:

>>> vae.fit(x_train, epochs=10, callbacks=[kvae.callbacks.KLWarmup(steps=2000)])
"""

import math
import numbers

import keras
from keras import ops

# A beta this large multiplies the KL's gradient enough to need a smaller step.
LARGE_BETA = 10.0


def _count(value, name):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _weight(value, name):
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not math.isfinite(value)
        or value < 0
    ):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)


class _BetaSchedule(keras.callbacks.Callback):
    """Sets ``model.beta = self.beta_at(step)`` before each call of the train step.

    ``step`` is the optimizer's ``iterations``: the optimizer steps taken so
    far, over all epochs and fits (and restored with a checkpoint). Counting
    Keras's batch indices instead would count batches that did not run: with
    ``steps_per_execution=k``, Keras reports a short last call of an epoch as
    ``k`` batches.
    """

    def on_train_batch_begin(self, batch, logs=None):
        self.model.beta = self.beta_at(self.optimizer_steps())

    def optimizer_steps(self):
        getattr(self.model, "jax_state_sync", lambda: None)()  # JAX mid-fit: the live count
        return int(ops.convert_to_numpy(self.model.optimizer.iterations))

    def beta_at(self, step):
        raise NotImplementedError


class KLWarmup(_BetaSchedule):
    """Linear KL warm-up (Bowman et al. 2016): ``beta`` from 0 to ``beta_max``.

    ``beta = beta_max * min(1, step / steps)``, ``step`` counting optimizer steps.

    Args:
        steps: optimizer steps (batches) over which ``beta`` rises; a positive integer.
        beta_max: the final ``beta`` (1 for the ELBO).
    """

    def __init__(self, steps, beta_max=1.0):
        super().__init__()
        self.steps = _count(steps, "steps")
        self.beta_max = _weight(beta_max, "beta_max")

    def beta_at(self, step):
        return self.beta_max * min(1.0, step / self.steps)


class CyclicalBeta(_BetaSchedule):
    """Cyclical annealing (Fu et al. 2019): repeat a linear rise, then hold.

    Each cycle of ``period`` optimizer steps raises ``beta`` linearly from 0 to
    ``beta_max`` during its first ``ratio`` fraction, then holds ``beta_max``.

    Args:
        period: optimizer steps per cycle; a positive integer.
        ratio: fraction of a cycle spent rising, in (0, 1] (Fu et al. use 0.5).
        beta_max: ``beta`` at the top of each cycle.
    """

    def __init__(self, period, ratio=0.5, beta_max=1.0):
        super().__init__()
        self.period = _count(period, "period")
        if isinstance(ratio, bool) or not isinstance(ratio, numbers.Real) or not 0 < ratio <= 1:
            raise ValueError(f"ratio must be a number in (0, 1], got {ratio!r}")
        self.ratio = float(ratio)
        self.beta_max = _weight(beta_max, "beta_max")

    def beta_at(self, step):
        phase = (step % self.period) / self.period
        return self.beta_max * min(1.0, phase / self.ratio)


class FirstNonFiniteBatch(keras.metrics.Metric):
    """The index, within the epoch, of the first batch whose loss was not finite (-1: none).

    With ``steps_per_execution > 1`` several batches run in one compiled call and
    only running means come back, which cannot say which batch went wrong; this
    state, updated inside the step, can. ``StopOnNaN`` reads it. The model keeps
    it beside its metrics, not among them: it never shows in ``metrics_names``,
    ``get_metrics_result()``, ``evaluate()``'s list or the logs.
    """

    def __init__(self, name="first_nonfinite_batch", **kwargs):
        super().__init__(name=name, **kwargs)
        self.batches = self.add_variable(shape=(), initializer="zeros", name="batches")
        self.first = self.add_variable(
            shape=(), initializer=keras.initializers.Constant(-1.0), name="first"
        )

    def update_state(self, loss_per_example, sample_weight=None):
        # sample_weight is ignored: padding rows repeat real ones (backends/tensorflow.py).
        went_bad = ops.logical_not(ops.all(ops.isfinite(loss_per_example)))
        batches, first = ops.convert_to_tensor(self.batches), ops.convert_to_tensor(self.first)
        is_first = ops.logical_and(went_bad, ops.less(first, 0.0))
        self.first.assign(ops.where(is_first, batches, first))
        self.batches.assign(batches + 1.0)

    def result(self):
        return ops.convert_to_tensor(self.first)

    def reset_state(self):  # Metric's own reset would set ``first`` to 0, a real batch
        self.batches.assign(0.0)
        self.first.assign(-1.0)


class StopOnNaN(keras.callbacks.Callback):
    """Stop training at the first call whose loss is not finite, saying why.

    The message names the first bad batch of the epoch (exact even when
    ``steps_per_execution`` fuses batches: the model's ``FirstNonFiniteBatch``
    records it inside the step) and which term (``reconstruction_loss``,
    ``kl_loss``) went non-finite; its advice follows the likely cause.
    """

    def on_train_batch_end(self, batch, logs=None):
        logs = logs or {}
        if "loss" not in logs or math.isfinite(float(logs["loss"])):
            return
        getattr(self.model, "jax_state_sync", lambda: None)()  # JAX: read the live values
        where = f"batch {self._first_bad_batch(batch)}"
        bad = [k for k, v in logs.items() if not math.isfinite(float(v)) and k != "loss"]
        terms = ", ".join(f"{k}={float(v):g}" for k, v in logs.items())
        raise FloatingPointError(
            f"training stopped: the loss is not finite at {where}: "
            f"{' and '.join(bad) or 'loss'} went non-finite ({terms}). {self._advice(bad)}"
        )

    def _first_bad_batch(self, batch):
        tracker = getattr(self.model, "nonfinite", None)
        first = int(ops.convert_to_numpy(tracker.first)) if tracker is not None else -1
        return first if first >= 0 else batch

    def _advice(self, bad):
        model = self.model
        rate = float(ops.convert_to_numpy(model.optimizer.learning_rate))
        beta = getattr(model, "beta", 0.0)
        if beta >= LARGE_BETA:
            return (
                f"beta={beta:g} multiplies the KL term's gradient: lower the learning rate "
                f"(now {rate:g}) by about that factor, or raise beta gradually "
                "(kvae.callbacks.KLWarmup)."
            )
        if bad == ["kl_loss"]:
            return f"z_log_var grew until exp() overflowed: lower the learning rate (now {rate:g})."
        return f"Lower the learning rate (now {rate:g}), or check the inputs for extreme values."


class CheckAfterEachBatch(keras.callbacks.Callback):
    """Call ``check()`` after every training and test batch (once per call into the step).

    ``kvae train`` passes ``kvae.rundir.raise_if_stopped``: the command's signal
    handler raises a stop (Ctrl-C, SIGTERM) where the signal lands, and under JAX
    that can be inside XLA's garbage-collection callback, whose exceptions Python
    only prints. The handler has noted the signal, and the check raises it here.
    """

    def __init__(self, check):
        super().__init__()
        self.check = check

    def on_train_batch_end(self, batch, logs=None):
        self.check()

    def on_test_batch_end(self, batch, logs=None):
        self.check()
