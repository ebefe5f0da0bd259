"""AE and VAE: one loss, written once in ``keras.ops``; the backend's step plugged in.

``compute_terms`` is the whole objective. ``train_step`` and ``test_step``
come from the backend's mixin in ``kvae.backends`` and only differentiate it.
"""

import math
import numbers

import keras
import numpy as np
from keras import ops

from kvae import elbo
from kvae.data import IMAGE_SHAPE, check_images, checked_data
from kvae.layers import Sampling

if keras.backend.backend() == "tensorflow":
    from kvae.backends.tensorflow import TensorFlowTrainStep as TrainStep
elif keras.backend.backend() == "jax":
    from kvae.backends.jax import JaxTrainStep as TrainStep
elif keras.backend.backend() == "torch":
    from kvae.backends.torch import TorchTrainStep as TrainStep
else:
    raise RuntimeError(
        f"kvae runs on tensorflow, jax or torch; Keras is on {keras.backend.backend()!r}"
    )

LIKELIHOODS = ("bernoulli", "gaussian")
# Steps per call into the compiled function: per-step Python work (callbacks,
# reading metrics back) then happens once per group, which makes fit markedly
# faster on CPU (benchmarks/README.md). Keras's PyTorch trainer allows only 1.
STEPS_PER_EXECUTION = 1 if keras.backend.backend() == "torch" else 16
# A beta this large multiplies the KL's gradient enough to need a smaller step.
LARGE_BETA = 10.0


def _finite_number(value, name, minimum=0.0):
    """A Python float from a Python or NumPy real >= minimum; bools and NaN refused."""
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not math.isfinite(value)
        or value < minimum
    ):
        raise ValueError(f"{name} must be a finite number >= {minimum:g}, got {value!r}")
    return float(value)


class FirstNonFiniteBatch(keras.metrics.Metric):
    """The index, within the epoch, of the first batch whose loss was not finite (-1: none).

    With ``steps_per_execution > 1`` several batches run in one compiled call and
    only running means come back, which cannot say which batch went wrong; this
    state, updated inside the step, can. ``StopOnNaN`` reads it; it is not logged.
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


def _static_shape(tensor):
    return tuple(None if d is None else int(d) for d in tensor.shape)


def _image_shape(encoder, decoder):
    """The image shape the encoder takes: from its Input, else the decoder's output."""
    for network, attribute in ((encoder, "input_shape"), (decoder, "output_shape")):
        try:
            shape = getattr(network, attribute)
        except (AttributeError, ValueError):
            continue
        if isinstance(shape, tuple) and len(shape) > 1 and not isinstance(shape[0], tuple):
            return tuple(shape[1:])
    return IMAGE_SHAPE


def _probe(encoder, decoder):
    """Run both networks on two blank images; return ``(latent_dim, image_shape)``.

    Checks, with the expected and received shapes, what the model relies on:
    the encoder returns ``[z_mean, z_log_var]`` of equal shape (B, D), and the
    decoder returns image-shaped logits (the encoder's input shape). Unknown
    sides (``Input((None, None, 1))``) are probed at MNIST's 28x28.
    """
    image_shape = _image_shape(encoder, decoder)
    pairs = zip(image_shape, IMAGE_SHAPE, strict=False)
    concrete = tuple(s if s is not None else m for s, m in pairs)
    outputs = encoder(np.zeros((2, *concrete), "float32"))
    if not isinstance(outputs, (list, tuple)) or len(outputs) != 2:
        shapes = (
            [_static_shape(t) for t in outputs]
            if isinstance(outputs, (list, tuple))
            else (_static_shape(outputs))
        )
        raise ValueError(
            "expected the encoder to return two tensors [z_mean, z_log_var], each "
            f"(batch, latent_dim); received {shapes}. kvae samples z itself (kvae.Sampling): "
            "return z_mean and z_log_var only."
        )
    mean_shape, log_var_shape = (_static_shape(t) for t in outputs)
    if len(mean_shape) != 2 or mean_shape != log_var_shape:
        raise ValueError(
            "expected the encoder's z_mean and z_log_var to have the same shape "
            f"(batch, latent_dim); received {mean_shape} and {log_var_shape}"
        )
    logits = decoder(np.zeros(mean_shape, "float32"))
    received = _static_shape(logits)
    if received != (2, *concrete):
        raise ValueError(
            "expected the decoder to return logits shaped like the encoder's input, "
            f"(batch, {', '.join(map(str, concrete))}); received {received}. "
            f"End a dense decoder with keras.layers.Reshape({concrete})."
        )
    _refuse_probabilities(decoder)
    return mean_shape[1], image_shape


def _refuse_probabilities(decoder):
    """Refuse a decoder ending in sigmoid/softmax: the likelihood needs logits."""
    shape_only = (keras.layers.Reshape, keras.layers.Flatten, keras.layers.InputLayer)
    layers = getattr(decoder, "layers", [])
    layers = [layer for layer in layers if not isinstance(layer, shape_only)]
    activation = getattr(layers[-1], "activation", None) if layers else None
    name = getattr(activation, "__name__", "")
    if name in ("sigmoid", "softmax"):
        raise ValueError(
            f"expected the decoder to return logits, received a last layer "
            f"{layers[-1].name!r} with activation={name!r}. The likelihood applies the "
            "sigmoid itself (exactly, on logits): remove the activation."
        )


class LatentModel(TrainStep, keras.Model):
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
        self.latent_dim, self.image_shape = _probe(encoder, decoder)
        self.encoder = encoder
        self.decoder = decoder
        self.likelihood = likelihood
        self.trackers = [keras.metrics.Mean(name=name) for name in self.metric_names]
        self.nonfinite = FirstNonFiniteBatch()  # for StopOnNaN; not logged

    def build(self, input_shape=None):
        # The networks arrive built, so there is nothing to create. Subclasses
        # call this at the end of __init__: a fresh model can then be saved at
        # once instead of failing with "model has not yet been built".
        self.built = True

    @property
    def metrics(self):
        return [*self.trackers, self.nonfinite]

    def metric_inputs(self, terms):
        """What each metric in ``metrics`` is updated with: its term, by name."""
        return {**terms, self.nonfinite.name: terms["loss"]}

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
        """``-log p(x|z)`` per example, (B,), in float32 (``kvae.elbo`` decides the likelihood)."""
        return elbo.reconstruction(x, self.decoder(z, training=training), self.likelihood)

    def update_metrics(self, terms, mask=None):
        """Update every metric with its per-example term; ``mask`` weights the examples."""
        inputs = self.metric_inputs(terms)
        for metric in self.metrics:
            metric.update_state(inputs[metric.name], sample_weight=mask)
        return {tracker.name: tracker.result() for tracker in self.trackers}

    def compile(self, optimizer="rmsprop", steps_per_execution=STEPS_PER_EXECUTION, **kwargs):
        """``keras.Model.compile`` with the model's own loss and metrics.

        ``steps_per_execution`` defaults to 16 (1 on PyTorch, which allows no
        other): 16 batches run per call into the compiled step, so per-batch
        callbacks (``on_train_batch_end``, the progress bar, the NaN check)
        fire once every 16 batches, with the metrics' running means.
        ``steps_per_execution=1`` makes them fire every batch, at some speed.

        ``jit_compile`` is Keras's (``"auto"``: XLA on a GPU, not on a CPU,
        under TensorFlow; JAX always compiles). With XLA on, TensorFlow's step
        sees one batch shape: a short last batch is padded with its own
        examples and masked out of the loss and metrics rather than compiled
        again (``kvae/backends/tensorflow.py``).

        Raises:
            ValueError: for ``loss``, ``loss_weights``, ``metrics`` or
                ``weighted_metrics``: the model computes its own.
        """
        given = ("loss", "loss_weights", "metrics", "weighted_metrics")
        given = [name for name in given if kwargs.get(name) is not None]
        if given:
            raise ValueError(
                f"{type(self).__name__} computes its own loss and metrics "
                f"({', '.join(self.metric_names)}); compile() takes no {', '.join(given)}. "
                f"Received {', '.join(f'{n}={kwargs[n]!r}' for n in given)}."
            )
        super().compile(optimizer=optimizer, steps_per_execution=steps_per_execution, **kwargs)

    def compile_from_config(self, config):
        # Keras skips this for models that override compile(); ours only adds a
        # default, so a loaded model is compiled (with its optimizer) as saved.
        self.compile(**keras.saving.deserialize_keras_object(config))
        if self.built:
            self.optimizer.build(self.trainable_variables)

    def fit(self, x=None, y=None, callbacks=None, validation_data=None, **kwargs):
        """``keras.Model.fit`` after checking the inputs, stopping on a NaN loss.

        The first batch of every data source (arrays, ``tf.data``, a
        ``PyDataset``, a generator, a torch ``DataLoader``), validation data
        included, is checked before training starts; a generator keeps it.
        """
        _refuse_weights(kwargs)
        x = self._checked(x)
        validation_data = self._checked(validation_data, "validation_data")
        callbacks = [*(callbacks or []), StopOnNaN()]
        return super().fit(x, y, callbacks=callbacks, validation_data=validation_data, **kwargs)

    def evaluate(self, x=None, y=None, **kwargs):
        _refuse_weights(kwargs)
        return super().evaluate(self._checked(x), y, **kwargs)

    def _checked(self, data, name="x"):
        return checked_data(
            data, lambda images: check_images(images, self.likelihood, self.image_shape), name
        )

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


def _refuse_weights(kwargs):
    given = [k for k in ("sample_weight", "class_weight") if kwargs.get(k) is not None]
    if given:
        raise ValueError(
            f"kvae models take no {' or '.join(given)}: the loss is the per-example "
            "-ELBO averaged over the batch, and weighting it would change the objective."
        )


@keras.saving.register_keras_serializable(package="kvae")
class VAE(LatentModel):
    """A variational autoencoder with its own ``train_step`` on every backend.

    The loss per example is ``reconstruction + beta * kl``: the negative ELBO
    when ``beta == 1``, with one Monte-Carlo sample of ``z`` for term 1 and the
    closed-form KL for term 2 (``kvae.elbo``). Metrics, in nats per example:
    ``loss``, ``reconstruction_loss`` (``-log p(x|z)`` summed over pixels) and
    ``kl_loss`` (``KL(q(z|x) || N(0, I))`` summed over latent dimensions,
    always the true KL, also with ``free_bits``).

    ``beta`` is state: ``vae.beta = 4.0`` (from a callback, between fits)
    takes effect at the next step, in training and validation, on every
    backend, and ``get_config`` saves the current value. ``kvae.callbacks``
    anneals it.

    Example:

    >>> vae = VAE(build_encoder(2), build_decoder(2))
    >>> vae.compile(optimizer=keras.optimizers.Adam(1e-3))
    >>> history = vae.fit(x_train, epochs=2, batch_size=128)

    Args:
        encoder: images -> ``[z_mean, z_log_var]``, each (B, D) (``kvae.build_encoder``).
        decoder: ``z`` -> logits shaped like the images (``kvae.build_decoder``).
        beta: weight of the KL term, >= 0. ``beta=0`` turns it off.
        likelihood: ``"bernoulli"`` (from logits) or ``"gaussian"``
            (unit-variance Gaussian around ``sigmoid(logits)``: half the summed
            squared error, plus a constant). Pixels must be in [0, 1].
        seed: seed for the ``Sampling`` layer's noise, or None.
        free_bits: a floor, in nats, on each latent dimension's KL averaged
            over the batch (Kingma et al. 2016, "free bits"): the loss uses
            ``sum_d max(mean_batch KL_d, free_bits)``, so a dimension below it
            is not pushed further to the prior. 0 (default) turns it off.

    Raises:
        ValueError: for ``beta`` or ``free_bits`` not a finite number >= 0 (or
            a bool), an unknown ``likelihood``, an encoder that does not
            return ``[z_mean, z_log_var]`` of equal (B, D) shape, a decoder
            whose output is not image-shaped or ends in sigmoid/softmax; from
            ``compile``, a ``loss`` or ``metrics``; from ``fit``/``evaluate``,
            bad images (dtype, shape, NaN, range) in any data source, or
            sample weights.
    """

    metric_names = ("loss", "reconstruction_loss", "kl_loss")

    def __init__(
        self,
        encoder,
        decoder,
        beta=1.0,
        likelihood="bernoulli",
        seed=None,
        free_bits=0.0,
        **kwargs,
    ):
        beta = _finite_number(beta, "beta")
        self.free_bits = _finite_number(free_bits, "free_bits")
        super().__init__(encoder, decoder, likelihood=likelihood, **kwargs)
        # float32 and never autocast: read as is under mixed precision.
        self.beta_variable = self.add_weight(
            shape=(),
            initializer=keras.initializers.Constant(beta),
            dtype="float32",
            trainable=False,
            autocast=False,
            name="beta",
        )
        self.seed = seed
        self.sampling = Sampling(seed=seed, name="sampling")
        self.build()

    @property
    def beta(self):
        """The KL weight, a Python float; assign to change it from the next step."""
        getattr(self, "jax_state_sync", lambda: None)()  # JAX mid-fit: see the setter
        return float(ops.convert_to_numpy(self.beta_variable.value))

    @beta.setter
    def beta(self, value):
        value = _finite_number(value, "beta")
        # The step reads beta_variable: TF's graph reads it at every step,
        # PyTorch runs eagerly. JAX's fit instead carries every variable's
        # value in its own `state` and copies it back only at the end of an
        # epoch, so a bare assign mid-epoch would be ignored and then
        # overwritten. jax_state_sync() first writes that state back into the
        # variables and marks it synced; Keras's fit loop then rebuilds
        # `state` from the variables, with the new beta, before its next call
        # of the train function (also with steps_per_execution > 1).
        getattr(self, "jax_state_sync", lambda: None)()
        self.beta_variable.assign(value)

    def compute_terms(self, x, training=False):
        """The loss and its per-example terms; the one place the objective is written."""
        z_mean, z_log_var = self.encoder(x, training=training)  # (B, D) each
        z = self.sampling(z_mean, z_log_var)  # one sample per example
        reconstruction = self.reconstruction(x, z, training)  # (B,) float32
        kl_per_dim = elbo.prior_kl_per_dim(z_mean, z_log_var)  # (B, D) float32
        kl = ops.sum(kl_per_dim, axis=-1)
        penalised = kl
        if self.free_bits > 0:  # a batch statistic, the same for every example
            floored = ops.maximum(ops.mean(kl_per_dim, axis=0), self.free_bits)
            penalised = ops.ones_like(kl) * ops.sum(floored)
        per_example = reconstruction + self.beta_variable.value * penalised
        terms = {"loss": per_example, "reconstruction_loss": reconstruction, "kl_loss": kl}
        return ops.mean(per_example), terms

    def sample(self, n, sampler=None, seed=None, binary=False):
        """Draw ``n`` images from the model: decode latent codes.

        ``sampler=None`` draws ``z ~ N(0, I)`` with NumPy's
        ``default_rng(seed)`` (the same images for a seed on every backend);
        otherwise ``z = sampler.sample_latents(n, seed=seed)``.

        Example:

        >>> images = vae.sample(16, seed=0)  # (16, 28, 28, 1), Bernoulli means

        Args:
            n: number of images, a positive integer.
            sampler: None, or an object with ``sample_latents(n, seed=None)``
                returning a NumPy (n, latent_dim) array.
            seed: int seed for the latent draw and the binary draw, or None.
            binary: False for the Bernoulli means; True for a draw from them.

        Returns:
            float32 NumPy array (n, *image_shape) in [0, 1] ({0, 1} if ``binary``).

        Raises:
            ValueError: ``n`` not a positive integer, or the sampler's output
                not of shape (n, latent_dim).
        """
        if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
            raise ValueError(f"n must be a positive integer, got {n!r}")
        rng = np.random.default_rng(seed)
        if sampler is None:
            z = rng.standard_normal((int(n), self.latent_dim))
        else:
            z = np.asarray(sampler.sample_latents(int(n), seed=seed))
            if z.shape != (n, self.latent_dim):
                raise ValueError(
                    f"expected sampler.sample_latents({n}) to return shape "
                    f"({n}, {self.latent_dim}), got {z.shape}"
                )
        means = np.asarray(ops.convert_to_numpy(self.decode(z.astype("float32"))), "float32")
        if binary:
            return (rng.random(means.shape) < means).astype("float32")
        return means

    def get_config(self):
        return {
            **super().get_config(),
            "beta": self.beta,
            "seed": self.seed,
            "free_bits": self.free_bits,
        }


@keras.saving.register_keras_serializable(package="kvae")
class AE(LatentModel):
    """The plain autoencoder baseline: ``z = z_mean``, a point, no sampling, no KL.

    Uses the same kind of encoder and decoder as ``VAE``, so the two can be
    trained side by side. The encoder's ``z_log_var`` head has no role here: the
    AE trains only the weights its loss reaches (for a functional encoder,
    those on the path to ``z_mean``) and changes no flag of the networks it is
    given, so a VAE built later on the same encoder trains them all. Metrics:
    ``loss`` and ``reconstruction_loss``, which are equal.
    """

    def __init__(self, encoder, decoder, **kwargs):
        super().__init__(encoder, decoder, **kwargs)
        self._unreached = frozenset(id(v) for v in _unreached_by_z_mean(encoder))
        self.build()

    @property
    def trainable_weights(self):
        unreached = getattr(self, "_unreached", ())
        return [v for v in super().trainable_weights if id(v) not in unreached]

    @property
    def trainable_variables(self):
        return self.trainable_weights

    def compute_terms(self, x, training=False):
        z_mean, _ = self.encoder(x, training=training)
        reconstruction = self.reconstruction(x, z_mean, training)
        terms = {"loss": reconstruction, "reconstruction_loss": reconstruction}
        return ops.mean(reconstruction), terms


def _unreached_by_z_mean(encoder):
    """The encoder's weights that do not feed ``z_mean`` (none known if not functional)."""
    try:
        head = keras.Model(encoder.inputs, encoder.outputs[0])
    except (AttributeError, ValueError, TypeError):
        return []
    reached = {id(v) for v in head.trainable_weights}
    return [v for v in encoder.trainable_weights if id(v) not in reached]
