"""AE and VAE: one loss, written once in ``keras.ops``; the backend's step plugged in.

``compute_terms`` is the whole objective. ``train_step`` and ``test_step``
come from ``kvae.backends.<backend>.TrainStep`` and only differentiate it.
"""

import math

import keras
import numpy as np
from keras import ops

from kvae import elbo
from kvae.backends import train_step_mixin
from kvae.data import check_images
from kvae.layers import Sampling

LIKELIHOODS = ("bernoulli", "gaussian")
# Training steps run per call into the compiled function. On TensorFlow they are
# fused into one graph loop, and on every backend the per-step Python work
# (callbacks, reading metrics back) happens once per group: on a 2-core CPU this
# took fit from 0.77 to 0.92 of a hand-written jax.jit loop's speed, and from
# 0.75 to 1.19 of a tf.function loop's (benchmarks/README.md). The price is a
# progress bar and NaN check that move 16 batches at a time. Keras's PyTorch
# trainer runs one step per call only.
STEPS_PER_EXECUTION = 1 if keras.backend.backend() == "torch" else 16


class StopOnNaN(keras.callbacks.Callback):
    """Stop training with a message at the first batch whose loss is not finite."""

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            terms = ", ".join(f"{k}={float(v):g}" for k, v in logs.items())
            raise FloatingPointError(
                f"training stopped: the loss is not finite at batch {batch} ({terms}). "
                "Lower the learning rate, or check the inputs for extreme values."
            )


class LatentModel(train_step_mixin(), keras.Model):
    """What AE and VAE share: the networks, metrics, input checks, saving.

    Subclasses define ``compute_terms(x, training) -> (loss, terms)``, where
    ``loss`` is the batch-mean scalar to minimise and ``terms`` maps each
    metric name to its per-example values (B,).
    """

    metric_names = ("loss", "reconstruction_loss")

    def __init__(self, encoder, decoder, likelihood="bernoulli", **kwargs):
        super().__init__(**kwargs)
        if likelihood not in LIKELIHOODS:
            raise ValueError(f"likelihood must be one of {LIKELIHOODS}, got {likelihood!r}")
        self.encoder = encoder
        self.decoder = decoder
        self.likelihood = likelihood
        self.trackers = [keras.metrics.Mean(name=name) for name in self.metric_names]

    def build(self, input_shape=None):
        # The networks arrive built, so there is nothing to create. Subclasses
        # call this at the end of __init__: a fresh model can then be saved at
        # once instead of failing with "model has not yet been built".
        self.built = True

    @property
    def metrics(self):
        return self.trackers

    def encode(self, x):
        """``(z_mean, z_log_var)`` of ``q(z|x)``, each (B, latent_dim)."""
        return self.encoder(x)

    def decode(self, z):
        """Pixel probabilities (the Bernoulli means) for latent codes ``z``."""
        return ops.sigmoid(self.decoder(z))

    def call(self, x, training=False):
        """Reconstruct ``x`` through the posterior mean: deterministic, for predict."""
        z_mean, _ = self.encoder(x, training=training)
        return self.decode(z_mean)

    def reconstruction(self, x, z, training):
        """``-log p(x|z)`` per example, (B,)."""
        logits = self.decoder(z, training=training)
        decoded = logits if self.likelihood == "bernoulli" else ops.sigmoid(logits)
        return elbo.reconstruction(x, decoded, self.likelihood)

    def update_metrics(self, terms):
        for tracker in self.trackers:
            tracker.update_state(terms[tracker.name])
        return {tracker.name: tracker.result() for tracker in self.trackers}

    def compile(self, *args, steps_per_execution=STEPS_PER_EXECUTION, **kwargs):
        """``keras.Model.compile``; ``steps_per_execution`` defaults to 16 (1 on PyTorch)."""
        super().compile(*args, steps_per_execution=steps_per_execution, **kwargs)

    def compile_from_config(self, config):
        # Keras skips this for models that override compile(); ours only adds a
        # default, so a loaded model is compiled (with its optimizer) as saved.
        self.compile(**keras.saving.deserialize_keras_object(config))
        if self.built:
            self.optimizer.build(self.trainable_variables)

    def fit(self, x=None, y=None, callbacks=None, **kwargs):
        """``keras.Model.fit`` after checking array inputs, stopping on a NaN loss."""
        self._check(x)
        callbacks = [*(callbacks or []), StopOnNaN()]
        return super().fit(x, y, callbacks=callbacks, **kwargs)

    def evaluate(self, x=None, y=None, **kwargs):
        self._check(x)
        return super().evaluate(x, y, **kwargs)

    def _check(self, x):
        if isinstance(x, np.ndarray) or (hasattr(x, "shape") and hasattr(x, "dtype")):
            check_images(ops.convert_to_numpy(x), self.likelihood, self.encoder.input_shape[1:])

    def get_config(self):
        return {
            **super().get_config(),
            "encoder": keras.saving.serialize_keras_object(self.encoder),
            "decoder": keras.saving.serialize_keras_object(self.decoder),
            "likelihood": self.likelihood,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for name in ("encoder", "decoder"):
            config[name] = keras.saving.deserialize_keras_object(config[name])
        return cls(**config)


@keras.saving.register_keras_serializable(package="kvae")
class VAE(LatentModel):
    """A variational autoencoder with its own ``train_step`` on every backend.

    The loss per example is ``reconstruction + beta * kl``: the negative ELBO
    when ``beta == 1``, with one Monte-Carlo sample of ``z`` for term 1 and the
    closed-form KL for term 2 (``kvae.elbo``). Metrics, in nats per example:
    ``loss``, ``reconstruction_loss`` (``-log p(x|z)`` summed over pixels) and
    ``kl_loss`` (``KL(q(z|x) || N(0, I))`` summed over latent dimensions).

    Example:

    >>> vae = VAE(build_encoder(2), build_decoder(2))
    >>> vae.compile(optimizer=keras.optimizers.Adam(1e-3))
    >>> history = vae.fit(x_train, epochs=2, batch_size=128)

    Args:
        encoder: images -> ``[z_mean, z_log_var]`` (``kvae.build_encoder``).
        decoder: ``z`` -> logits, image-shaped (``kvae.build_decoder``).
        beta: weight of the KL term, >= 0. ``beta=0`` turns it off.
        likelihood: ``"bernoulli"`` (from logits; pixels must be in [0, 1]) or
            ``"gaussian"`` (unit-variance Gaussian around ``sigmoid(logits)``:
            half the summed squared error, plus a constant).
        seed: seed for the ``Sampling`` layer's noise, or None.

    Raises:
        ValueError: for ``beta < 0`` or an unknown ``likelihood``; from
            ``fit``/``evaluate``, for images of the wrong shape, NaN or
            infinite values, or values outside [0, 1] with the Bernoulli.
    """

    metric_names = ("loss", "reconstruction_loss", "kl_loss")

    def __init__(self, encoder, decoder, beta=1.0, likelihood="bernoulli", seed=None, **kwargs):
        if not (isinstance(beta, (int, float)) and math.isfinite(beta) and beta >= 0):
            raise ValueError(f"beta must be a finite number >= 0, got {beta!r}")
        super().__init__(encoder, decoder, likelihood=likelihood, **kwargs)
        self.beta = float(beta)
        self.seed = seed
        self.sampling = Sampling(seed=seed, name="sampling")
        self.build()

    def compute_terms(self, x, training=False):
        """The loss and its per-example terms; the one place the objective is written."""
        z_mean, z_log_var = self.encoder(x, training=training)  # (B, D) each
        z = self.sampling(z_mean, z_log_var)  # one sample per example
        reconstruction = self.reconstruction(x, z, training)  # (B,)
        kl = elbo.prior_kl(z_mean, z_log_var)  # (B,)
        per_example = reconstruction + self.beta * kl
        terms = {"loss": per_example, "reconstruction_loss": reconstruction, "kl_loss": kl}
        return ops.mean(per_example), terms

    def get_config(self):
        return {**super().get_config(), "beta": self.beta, "seed": self.seed}


@keras.saving.register_keras_serializable(package="kvae")
class AE(LatentModel):
    """The plain autoencoder baseline: ``z = z_mean``, a point, no sampling, no KL.

    Uses the same kind of encoder and decoder as ``VAE``, so the two can be
    trained side by side. The encoder's ``z_log_var`` head has no role here, so
    the AE freezes it (no gradient reaches it). Metrics: ``loss`` and
    ``reconstruction_loss``, which are equal.
    """

    def __init__(self, encoder, decoder, **kwargs):
        super().__init__(encoder, decoder, **kwargs)
        if any(layer.name == "z_log_var" for layer in encoder.layers):
            encoder.get_layer("z_log_var").trainable = False
        self.build()

    def compute_terms(self, x, training=False):
        z_mean, _ = self.encoder(x, training=training)
        reconstruction = self.reconstruction(x, z_mean, training)
        terms = {"loss": reconstruction, "reconstruction_loss": reconstruction}
        return ops.mean(reconstruction), terms
