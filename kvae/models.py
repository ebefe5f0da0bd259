"""AE and VAE: one loss, written once in ``keras.ops``; the backend's step plugged in.

``compute_terms`` is the whole objective. ``train_step`` and ``test_step``
come from the backend's mixin in ``kvae.backends`` and only differentiate it.
"""

import contextlib
import math
import numbers
import warnings

import keras
import numpy as np
from keras import ops

from kvae import elbo
from kvae.backends.batches import unpack_images
from kvae.callbacks import FirstNonFiniteBatch, StopOnNaN  # noqa: F401  (kvae.models.StopOnNaN)
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
# VAE.sample returns its images as one float32 array: 10**9 MNIST-sized images
# would take 3.1 TB and the kernel kills the process on the way. One call
# returns at most this many bytes (1 GiB: 342,392 images of 28x28x1); ask for
# more in several calls.
MAX_SAMPLE_BYTES = 2**30
# Latent codes decoded per call of the decoder: the decoder's activations then
# take memory in proportion to this, not to n.
DECODE_BATCH = 1024


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


def _static_shape(tensor):
    return tuple(None if d is None else int(d) for d in tensor.shape)


def _concrete(image_shape):
    """The shape with unknown sides (``Input((None, None, 1))``) set to MNIST's, every axis kept."""
    known = (*IMAGE_SHAPE, *(1,) * max(0, len(image_shape) - len(IMAGE_SHAPE)))
    return tuple(m if s is None else s for s, m in zip(image_shape, known, strict=False))


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


def _probe(encoder, decoder, num_classes=None):
    """Run both networks on two blank images; return ``(latent_dim, image_shape)``.

    Checks, with the expected and received shapes, what the model relies on:
    the encoder returns ``[z_mean, z_log_var]`` of equal shape (B, D), and the
    decoder returns image-shaped logits (the encoder's input shape). Unknown
    sides (``Input((None, None, 1))``) are probed at MNIST's 28x28. With
    ``num_classes`` (a conditional model) each network also takes the one-hot
    label, (B, num_classes), as its second input.
    """
    image_shape = _image_shape(encoder, decoder)
    concrete = _concrete(image_shape)
    label = [] if num_classes is None else [np.zeros((2, num_classes), "float32")]
    _check_inputs(encoder, "encoder", "images", num_classes)
    images = np.zeros((2, *concrete), "float32")
    outputs = encoder([images, *label] if label else images)
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
    _check_inputs(decoder, "decoder", "z", num_classes)
    z = np.zeros(mean_shape, "float32")
    logits = decoder([z, *label] if label else z)
    received = _static_shape(logits)
    if received != (2, *concrete):
        raise ValueError(
            "expected the decoder to return logits shaped like the encoder's input, "
            f"(batch, {', '.join(map(str, concrete))}); received {received}. "
            f"End a dense decoder with keras.layers.Reshape({concrete})."
        )
    _refuse_probabilities(decoder)
    return mean_shape[1], image_shape


def _check_inputs(network, role, first, num_classes):
    """A functional network takes ``first`` alone (a VAE's) or ``[first, y]`` (a conditional's).

    A subclassed network declares no inputs: calling it will say what is wrong.
    """
    inputs = getattr(network, "inputs", None)
    if not isinstance(inputs, (list, tuple)):
        return
    if num_classes is None and len(inputs) != 1:
        raise ValueError(
            f"expected the {role} to take one input, {first}; it takes {len(inputs)}. "
            f"A conditional {role} (num_classes=...) belongs in a kvae.ConditionalVAE."
        )
    if num_classes is not None and (len(inputs) != 2 or inputs[1].shape[-1] != num_classes):
        received = [_static_shape(t) for t in inputs]
        raise ValueError(
            f"expected the {role} of a conditional model to take two inputs, [{first}, y] with "
            f"y the one-hot label (batch, {num_classes}); received inputs {received}. Build it "
            f"with kvae.build_{role}(..., num_classes={num_classes})."
        )


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
    metric name to its per-example values (B,). Each backend's step passes
    that pair through ``with_losses``, the one place the networks'
    regularisation losses (``self.losses``) join the objective.

    A subclass may own state: weights and layers created in its ``__init__``
    after ``super().__init__(...)`` (a learned likelihood scale, say) are
    tracked, trained and saved like the networks'.

    ``compute_terms`` receives what ``unpack(batch)`` returns: the images here;
    ``(images, labels)`` for ``kvae.ConditionalVAE``, whose ``num_classes``
    (None here) also makes the networks take the one-hot label.
    """

    metric_names = ("loss", "reconstruction_loss")
    num_classes = None  # unconditional: the networks see images and codes only

    def __init__(self, encoder, decoder, likelihood="bernoulli", **kwargs):
        super().__init__(**kwargs)
        if likelihood not in LIKELIHOODS:
            raise ValueError(f"likelihood must be one of {LIKELIHOODS}, got {likelihood!r}")
        self.latent_dim, self.image_shape = _probe(encoder, decoder, self.num_classes)
        self.encoder = encoder
        self.decoder = decoder
        self.likelihood = likelihood
        self.trackers = [keras.metrics.Mean(name=name) for name in self.metric_names]
        self.nonfinite = FirstNonFiniteBatch()  # StopOnNaN's; beside the metrics, never logged
        # The networks arrive built, so the model is built now: a fresh model
        # saves at once instead of failing with "model has not yet been built".
        # Set directly, not through build(): Keras's build() also locks the
        # model's state, and a subclass could then add no weight of its own.
        self.built = True

    def build(self, input_shape=None):
        self.built = True  # nothing to create: see __init__

    @property
    def metrics(self):
        """The logged metrics: one ``Mean`` per name in ``metric_names``, in that order."""
        return list(self.trackers)

    @property
    def metrics_variables(self):
        # The NaN tracker's state travels with the metrics' (JAX's fit carries
        # it in its state) without being a metric: it never reaches the logs.
        return [*super().metrics_variables, *self.nonfinite.variables]

    def reset_metrics(self):
        super().reset_metrics()
        self.nonfinite.reset_state()

    def unpack(self, data):
        """What ``compute_terms`` reads of a batch: its images (labels are ignored)."""
        return unpack_images(data)

    def metric_inputs(self, terms):
        """What each metric, and the NaN tracker, is updated with: its term, by name."""
        return {**terms, self.nonfinite.name: terms["loss"]}

    def with_losses(self, loss_and_terms):
        """``compute_terms``'s pair with the networks' regularisation losses added.

        ``self.losses`` holds the weight penalties (``kernel_regularizer=``)
        and what layers ``add_loss`` in this forward pass; Keras's own
        trainers minimise them, and so does every kvae backend, through this
        one function. Like Keras's ``loss``, the logged ``loss`` includes them
        (each example carries the batch's penalty), so it is what the
        optimizer minimises; ``reconstruction_loss`` and ``kl_loss`` do not.
        With no regulariser (kvae's own networks) nothing changes.
        """
        loss, terms = loss_and_terms
        if not self.losses:
            return loss, terms
        penalty = sum(ops.cast(ops.sum(value), loss.dtype) for value in self.losses)
        terms = {**terms, "loss": terms["loss"] + ops.cast(penalty, terms["loss"].dtype)}
        return loss + penalty, terms

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
        for metric in [*self.metrics, self.nonfinite]:
            metric.update_state(inputs[metric.name], sample_weight=mask)
        return {tracker.name: tracker.result() for tracker in self.trackers}

    def compile(self, optimizer="rmsprop", steps_per_execution=STEPS_PER_EXECUTION, **kwargs):
        """``keras.Model.compile`` with the model's own loss and metrics.

        ``steps_per_execution`` defaults to 16 (1 on PyTorch, which allows no
        other): 16 batches run per call into the compiled step, so per-batch
        callbacks (``on_train_batch_end``, the progress bar, the NaN check)
        fire once every 16 batches, with the metrics' running means.
        ``steps_per_execution=1`` makes them fire every batch, at some speed.
        ``fit`` runs fewer per call when an epoch is shorter, or when
        ``steps_per_epoch`` is not a multiple of it, so that every epoch runs
        exactly its steps (see ``fit``).

        ``jit_compile`` is Keras's (``"auto"``: XLA on a GPU, not on a CPU,
        under TensorFlow; JAX always compiles). With XLA on, TensorFlow's step
        sees one batch shape: a short last batch is padded with its own
        examples and masked out of the loss and metrics rather than compiled
        again (``kvae/backends/tensorflow.py``).

        Raises:
            ValueError: for a ``loss``, ``loss_weights``, ``metrics`` or
                ``weighted_metrics`` that asks for something (an empty list
                asks for nothing): the model computes its own.
        """
        given = ("loss", "loss_weights", "metrics", "weighted_metrics")
        given = [name for name in given if _asks_for_something(kwargs.get(name))]
        if given:
            raise ValueError(
                f"{type(self).__name__} computes its own loss and metrics "
                f"({', '.join(self.metric_names)}); compile() takes no {', '.join(given)}. "
                f"Received {', '.join(f'{n}={kwargs[n]!r}' for n in given)}."
            )
        super().compile(optimizer=optimizer, steps_per_execution=steps_per_execution, **kwargs)

    def get_compile_config(self):
        # The backend is saved too, so that another backend knows what to adapt.
        config = super().get_compile_config()
        return None if config is None else {**config, "backend": keras.backend.backend()}

    def compile_from_config(self, config):
        # Keras skips this for models that override compile(); ours only adds a
        # default, so a loaded model is compiled (with its optimizer) as saved,
        # adapted to this backend where it allows only some settings.
        config = keras.saving.deserialize_keras_object(_portable(config))
        self.compile(**_adapted(config))
        if self.built:
            self.optimizer.build(self.trainable_variables)

    def fit(
        self,
        x=None,
        y=None,
        batch_size=None,
        epochs=1,
        verbose="auto",
        callbacks=None,
        validation_split=0.0,
        validation_data=None,
        steps_per_epoch=None,
        **kwargs,
    ):
        """``keras.Model.fit`` after checking the inputs, stopping on a NaN loss.

        The first batch of every data source (arrays, ``tf.data``, a
        ``PyDataset``, a generator, a torch ``DataLoader``), validation data
        included, is checked before training starts; a generator keeps it.

        ``callbacks`` is a list, one callback or a ``keras.callbacks.CallbackList``;
        kvae adds ``StopOnNaN``, which raises ``FloatingPointError`` naming the
        first non-finite batch, unless a ``keras.callbacks.TerminateOnNaN`` is
        among them: then Keras's contract holds (training stops, ``fit``
        returns its ``History``).

        Every epoch runs exactly its steps: with ``steps_per_execution=k``
        Keras runs whole calls of ``k`` batches, so an epoch of 3 steps would
        run 16. This fit then runs fewer batches per call: as many as the epoch
        has when it is shorter than ``k``, and the largest divisor of
        ``steps_per_epoch`` up to ``k`` when that is given.

        Raises:
            ValueError: before ``compile``; for sample or class weights; for
                images a VAE cannot learn from (``kvae.data.check_images``).
        """
        if not self.compiled:
            raise ValueError(
                "You must call `compile()` before using the model: "
                f"{type(self).__name__}.compile(optimizer=...) first, then fit()."
            )
        _refuse_weights(kwargs)
        x = self._checked(x, labels=y)
        validation_data = self._checked(validation_data, "validation_data")
        callbacks = _with_nan_stop(callbacks, self)
        if not self.trainable_variables:
            warnings.warn(
                "The model does not have any trainable weights: fit() updates nothing "
                "(set trainable=True on the networks to train them).",
                stacklevel=2,
            )
        grouping = self._grouping(x, batch_size, validation_split, steps_per_epoch)
        with self._steps_per_call(grouping):
            return super().fit(
                x,
                y,
                batch_size=batch_size,
                epochs=epochs,
                verbose=verbose,
                callbacks=callbacks,
                validation_split=validation_split,
                validation_data=validation_data,
                steps_per_epoch=steps_per_epoch,
                **kwargs,
            )

    def _grouping(self, x, batch_size, validation_split, steps_per_epoch):
        """Batches per call for this fit: ``steps_per_execution``, cut to fit the epoch."""
        grouping = self.steps_per_execution
        if steps_per_epoch is not None:
            steps = int(steps_per_epoch)
            return max(d for d in range(1, min(grouping, steps) + 1) if steps % d == 0)
        steps = _batches_per_epoch(x, batch_size, validation_split)
        return steps if steps is not None and steps < grouping else grouping

    @contextlib.contextmanager
    def _steps_per_call(self, grouping):
        """Run with ``grouping`` batches per call, then restore the compiled setting."""
        compiled = self.steps_per_execution
        if grouping != compiled:
            self._set_steps_per_execution(grouping)
        try:
            yield
        finally:
            if grouping != compiled:
                self._set_steps_per_execution(compiled)

    def _set_steps_per_execution(self, grouping):
        self.steps_per_execution = grouping
        # Keras's compiled loops read it when they are traced: trace them again.
        self.train_function = self.test_function = None

    def evaluate(self, x=None, y=None, **kwargs):
        _refuse_weights(kwargs)
        return super().evaluate(self._checked(x, labels=y), y, **kwargs)

    def train_on_batch(self, x, y=None, sample_weight=None, class_weight=None, **kwargs):
        """``keras.Model.train_on_batch`` after the same checks as ``fit``."""
        _refuse_weights({"sample_weight": sample_weight, "class_weight": class_weight})
        return super().train_on_batch(self._checked(x, labels=y), y, **kwargs)

    def test_on_batch(self, x, y=None, sample_weight=None, **kwargs):
        """``keras.Model.test_on_batch`` after the same checks as ``evaluate``."""
        _refuse_weights({"sample_weight": sample_weight})
        return super().test_on_batch(self._checked(x, labels=y), y, **kwargs)

    def export(self, filepath, format="tf_saved_model", verbose=None, input_signature=None, **kw):
        """``keras.Model.export``, serving ``call``: images -> reconstructions.

        The input signature defaults to the model's images, (None, *image_shape)
        float32, so no call is needed first. To serve the codes instead, export
        the encoder: ``vae.encoder.export(path)`` (images -> [z_mean, z_log_var]).
        """
        if input_signature is None:
            shape = (None, *self.image_shape)
            input_signature = [keras.InputSpec(shape=shape, dtype=keras.config.floatx())]
        return super().export(
            filepath, format=format, verbose=verbose, input_signature=input_signature, **kw
        )

    def _checked(self, data, name="x", labels=None):
        """``data`` after checking its images; ``labels`` (``fit``'s ``y``) are not read."""
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


def _bernoulli_draw(means, rng):
    """One {0, 1} image per Bernoulli mean image, from ``rng``."""
    return (rng.random(means.shape) < means).astype("float32")


def _asks_for_something(value):
    """A compile argument that asks for a loss or metric: not None, not an empty collection."""
    return value is not None and not (isinstance(value, (list, tuple, dict)) and not value)


def _with_nan_stop(callbacks, model):
    """The user's callbacks (a list, one callback, a ``CallbackList``) and ``StopOnNaN``.

    A ``keras.callbacks.TerminateOnNaN`` among them takes over: training stops
    and ``fit`` returns, as Keras promises, instead of raising.
    """
    if isinstance(callbacks, keras.callbacks.CallbackList):
        given = list(callbacks.callbacks)
    elif isinstance(callbacks, keras.callbacks.Callback):
        given = [callbacks]
    else:
        given = list(callbacks or [])
    if not any(isinstance(c, (StopOnNaN, keras.callbacks.TerminateOnNaN)) for c in given):
        given.append(StopOnNaN())
    if isinstance(callbacks, keras.callbacks.CallbackList):
        # Keras uses a CallbackList as given (no History or progress bar added).
        return keras.callbacks.CallbackList(given, model=model)
    return given


def _batches_per_epoch(x, batch_size, validation_split):
    """Training batches per epoch of ``x``, when it can be known before fit; else None."""
    images = x[0] if isinstance(x, (tuple, list)) and x else x
    if hasattr(images, "shape") and hasattr(images, "dtype"):  # arrays: Keras's own split
        examples = int(math.floor(images.shape[0] * (1.0 - validation_split)))
        return max(1, math.ceil(examples / (batch_size or 32)))
    cardinality = getattr(x, "cardinality", None)  # tf.data: negative when unknown or infinite
    if callable(cardinality):
        count = int(cardinality())
        return count if count > 0 else None
    if hasattr(x, "__len__") and not isinstance(x, (tuple, list)):  # PyDataset, DataLoader
        return len(x) or None
    return None


def _portable(config):
    """A compile config whose optimizer any backend can build.

    PyTorch saves its own optimizer classes (module
    ``keras.src.backend.torch.optimizers``), which would run torch operations
    on another backend's tensors; the same class named from ``keras.optimizers``
    builds the loading backend's own.
    """
    optimizer = config.get("optimizer")
    if isinstance(optimizer, dict) and optimizer.get("module", "").startswith("keras.src.backend"):
        optimizer = {**optimizer, "module": "keras.optimizers", "registered_name": None}
        config = {**config, "optimizer": optimizer}
    return config


def _adapted(config):
    """The saved compile settings, adapted to this backend (with one warning saying how)."""
    config = dict(config)
    saved_on = config.pop("backend", None)
    backend = keras.backend.backend()
    changes = {}
    if backend == "torch" and config.get("steps_per_execution", 1) != 1:
        changes["steps_per_execution"] = 1  # Keras's PyTorch trainer runs one step per call
    jit_compile = config.get("jit_compile", "auto")
    elsewhere = saved_on is not None and saved_on != backend
    # "auto" resolved there (JAX: True) means another thing here (PyTorch: torch.compile).
    if jit_compile != "auto" and (elsewhere or (saved_on is None and backend == "torch")):
        changes["jit_compile"] = "auto"
    if changes:
        was = ", ".join(f"{name}={config[name]!r} -> {value!r}" for name, value in changes.items())
        warnings.warn(
            f"a model saved under {saved_on or 'another backend'} is compiled for {backend}: {was}",
            stacklevel=3,
        )
    return {**config, **changes}


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
    always the true KL, also with ``free_bits``). Regularisation losses of the
    networks (``kernel_regularizer=``, ``add_loss``) are trained and, as in
    Keras, included in ``loss`` (``LatentModel.with_losses``); without them
    ``loss == reconstruction_loss + beta * kl_loss``.

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
        return self.objective(reconstruction, z_mean, z_log_var)

    def objective(self, reconstruction, z_mean, z_log_var):
        """``(loss, terms)`` from term 1 and q(z|x): ``reconstruction + beta * KL``.

        The KL is the closed form against the prior N(0, I) (``kvae.elbo``),
        floored per dimension by ``free_bits`` in the loss only; ``terms``
        holds the per-example (B,) ``loss``, ``reconstruction_loss`` and the
        true ``kl_loss``.
        """
        kl_per_dim = elbo.prior_kl_per_dim(z_mean, z_log_var)  # (B, D) float32
        kl = ops.sum(kl_per_dim, axis=-1)
        penalised = kl
        if self.free_bits > 0:  # a batch statistic, the same for every example
            floored = ops.maximum(ops.mean(kl_per_dim, axis=0), self.free_bits)
            penalised = ops.ones_like(kl) * ops.sum(floored)
        beta = ops.cast(self.beta_variable.value, penalised.dtype)  # float32 state; floatx terms
        per_example = reconstruction + beta * penalised
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
            ValueError: ``n`` not a positive integer, more images than fit in
                ``MAX_SAMPLE_BYTES`` (1 GiB) per call, or the sampler's
                output not of shape (n, latent_dim).
        """
        n = self._sample_count(n)
        rng = np.random.default_rng(seed)
        means = self._decoded(self._latents(n, sampler, seed, rng))
        return _bernoulli_draw(means, rng) if binary else means

    def _sample_count(self, n):
        """``n`` as an int, if it is a positive integer whose images fit in one call."""
        if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
            raise ValueError(f"n must be a positive integer, got {n!r}")
        image_bytes = 4 * math.prod(_concrete(self.image_shape))  # float32
        if n * image_bytes > MAX_SAMPLE_BYTES:
            raise ValueError(
                f"n={n:,} images of shape {_concrete(self.image_shape)} would take "
                f"{n * image_bytes / 1e9:,.1f} GB; one call returns at most "
                f"{MAX_SAMPLE_BYTES // image_bytes:,} (1 GiB): draw them in several calls"
            )
        return int(n)

    def _latents(self, n, sampler, seed, rng, labels=None):
        """(n, latent_dim) float32 codes: N(0, I) from ``rng``, or the sampler's.

        A sampler whose ``per_class`` is true draws each code for its label:
        ``sample_latents(n, seed=seed, labels=labels)``.
        """
        if sampler is None:
            return rng.standard_normal((n, self.latent_dim)).astype("float32")
        asked = {"labels": labels} if getattr(sampler, "per_class", False) else {}
        z = np.asarray(sampler.sample_latents(n, seed=seed, **asked))
        if z.shape != (n, self.latent_dim):
            raise ValueError(
                f"expected sampler.sample_latents({n}) to return shape "
                f"({n}, {self.latent_dim}), got {z.shape}"
            )
        return z.astype("float32")

    def _decoded(self, z, *labels):
        """``decode(z, *labels)`` as float32 NumPy, ``DECODE_BATCH`` codes per call."""
        parts = []
        for start in range(0, len(z), DECODE_BATCH):
            batch = (values[start : start + DECODE_BATCH] for values in (z, *labels))
            parts.append(np.asarray(ops.convert_to_numpy(self.decode(*batch))))
        return np.concatenate(parts).astype("float32")

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
