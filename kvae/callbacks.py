"""KL annealing as Keras callbacks: schedules for ``VAE.beta``.

Early in training the KL term can win before the decoder has learnt anything,
and the posterior collapses onto the prior. Annealing starts ``beta`` small and
raises it. Both callbacks set ``model.beta`` at the start of each batch call
(with ``steps_per_execution=k``, once per group of ``k`` batches); the model
reads it from the next step on, on every backend (``kvae.VAE.beta``).

Example:

>>> vae.fit(x_train, epochs=10, callbacks=[kvae.callbacks.KLWarmup(steps=2000)])
"""

import math
import numbers

import keras


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
    """Sets ``model.beta = self.beta_at(step)`` before each call of the train step."""

    def __init__(self):
        super().__init__()
        self.step = 0  # batches seen, over all epochs (and fits)

    def on_train_batch_begin(self, batch, logs=None):
        self.model.beta = self.beta_at(self.step)

    def on_train_batch_end(self, batch, logs=None):
        # ``batch`` is the last batch of the call: with steps_per_execution=k, k steps ran.
        self.step += batch - getattr(self, "_last_batch", -1)
        self._last_batch = batch

    def on_epoch_begin(self, epoch, logs=None):
        self._last_batch = -1

    def beta_at(self, step):
        raise NotImplementedError


class KLWarmup(_BetaSchedule):
    """Linear KL warm-up (Bowman et al. 2016): ``beta`` from 0 to ``beta_max``.

    ``beta = beta_max * min(1, step / steps)``, ``step`` counting batches.

    Args:
        steps: batches over which ``beta`` rises; a positive integer.
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

    Each cycle of ``period`` batches raises ``beta`` linearly from 0 to
    ``beta_max`` during its first ``ratio`` fraction, then holds ``beta_max``.

    Args:
        period: batches per cycle; a positive integer.
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
