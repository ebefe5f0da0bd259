"""ConditionalVAE: the VAE's objective for digits whose labels are known, a bound on log p(x|y).

A conditional VAE (Sohn, Lee and Yan 2015, "Learning Structured Output
Representation using Deep Conditional Generative Models") gives both networks
the label y as a one-hot vector: the encoder models ``q(z|x, y)``, the decoder
``p(x|z, y)``, and the prior stays ``N(0, I)``. Its ELBO bounds ``log p(x|y)``::

    log p(x|y) >= E_q(z|x,y)[log p(x|z, y)] - KL(q(z|x, y) || N(0, I))

The label already says which digit, so the code is left the rest (slant,
width, stroke): the style. ``sample(n, labels)`` draws the digits asked for,
and one code decoded with each of the ten labels writes one style in every digit.

Everything else is the VAE's: the KL term, beta as state, free bits
(``VAE.objective``), the backends' steps, the checks, saving.
"""

import keras
import numpy as np
from keras import ops

from kvae import elbo
from kvae.backends.batches import unpack_images_and_labels
from kvae.config import DIGITS
from kvae.data import check_images, check_labels, checked_data, images_and_labels
from kvae.models import VAE, _bernoulli_draw

NUM_CLASSES = DIGITS  # the default: MNIST's ten digits


@keras.saving.register_keras_serializable(package="kvae")
class ConditionalVAE(VAE):
    """A VAE whose encoder and decoder both see the label: ``q(z|x, y)``, ``p(x|z, y)``.

    Trains on ``(images, labels)``, the labels integer classes (one-hot encoded
    inside the step): ``fit(x, y)``, ``fit((x, y))`` or batches ``(x, y)``;
    ``evaluate`` and ``validation_data`` alike. The labels are checked with the
    images before training (integers, one per image, in 0..num_classes - 1).
    The loss per example is ``reconstruction + beta * kl`` with
    ``reconstruction = -log p(x|z, y)``, the metrics and options are the
    VAE's, and the networks come from ``kvae.build_encoder`` /
    ``kvae.build_decoder`` with ``num_classes``: each takes the one-hot
    label as its second input.

    Example:

    >>> networks = {"latent_dim": 2, "num_classes": 10}
    >>> cvae = ConditionalVAE(build_encoder(**networks), build_decoder(**networks))
    >>> cvae.compile(optimizer=keras.optimizers.Adam(1e-3))
    >>> cvae.fit(x_train, y_train, epochs=60, batch_size=128)
    >>> sevens = cvae.sample(16, labels=7, seed=0)       # (16, 28, 28, 1)
    >>> row = cvae.sample(10, labels=range(10), seed=0)  # one of each digit

    Args:
        encoder: ``[images, y]`` -> ``[z_mean, z_log_var]``, each (B, D).
        decoder: ``[z, y]`` -> logits shaped like the images.
        num_classes: how many classes the labels name (10 digits).
        **kwargs: ``VAE``'s: ``beta``, ``likelihood``, ``seed``, ``free_bits``.

    Raises:
        ValueError: ``VAE``'s; networks that do not take the one-hot label
            (batch, num_classes) as their second input; from ``fit``,
            ``evaluate``, ``predict``, ``encode``, ``decode`` and ``sample``,
            labels that are not integers, not one per image, or out of range.
    """

    def __init__(self, encoder, decoder, num_classes=NUM_CLASSES, **kwargs):
        counts = not isinstance(num_classes, bool) and isinstance(num_classes, int | np.integer)
        if not counts or num_classes < 2:
            raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
        self.num_classes = int(num_classes)  # set first: the networks are probed with the label
        super().__init__(encoder, decoder, **kwargs)
        # While a layer is unbuilt, Keras's fit first calls the model on the batch's x alone,
        # the images of fit(x, y); call() needs the labels too. Sampling has nothing to build.
        self.sampling.build((None, self.latent_dim), (None, self.latent_dim))

    def unpack(self, data):
        """What ``compute_terms`` reads of a batch: ``(images, labels)``."""
        return unpack_images_and_labels(data)

    def compute_terms(self, inputs, training=False):
        """The loss and its per-example terms for ``inputs = (x, labels)``."""
        x, y = self.with_one_hot(inputs)  # images, one-hot labels (B, num_classes)
        z_mean, z_log_var = self.encoder([x, y], training=training)  # q(z|x, y): (B, D) each
        z = self.sampling(z_mean, z_log_var)  # one sample per example
        logits = self.decoder([z, y], training=training)  # p(x|z, y)
        reconstruction = elbo.reconstruction(x, logits, self.likelihood)  # (B,) float32
        return self.objective(reconstruction, z_mean, z_log_var)

    def one_hot(self, labels):
        """The one-hot y of integer ``labels`` (B,), as a tensor (B, num_classes); not checked."""
        return ops.one_hot(ops.cast(labels, "int32"), self.num_classes)

    def with_one_hot(self, inputs):
        """``(x, y)`` of ``inputs = (images, labels)``: tensors, the labels one-hot.

        Tensors both: Keras refuses a network input that mixes NumPy and tensors.
        """
        x, labels = inputs
        return ops.convert_to_tensor(x), self.one_hot(labels)

    def labels_for(self, labels, n):
        """``labels`` checked as ``n`` classes, int64 NumPy (n,); one int is given to all n."""
        if np.ndim(labels) == 0:
            labels = np.full(n, labels)  # an int stays an int; a float or bool is refused below
        return check_labels(labels, n, self.num_classes)

    def condition(self, labels, n):
        """The checked one-hot labels y for ``n`` examples, float32 NumPy (n, num_classes)."""
        return np.eye(self.num_classes, dtype="float32")[self.labels_for(labels, n)]

    def encode(self, x, labels):
        """``(z_mean, z_log_var)`` of ``q(z|x, y)``, each (B, latent_dim).

        ``labels``: one int for every image, or one per image.
        """
        return self.encoder(_tensors(x, self.condition(labels, len(x))))

    def decode(self, z, labels):
        """Pixel probabilities of ``p(x|z, y)``; ``labels``: one int, or one per code."""
        return ops.sigmoid(self.decoder(_tensors(z, self.condition(labels, len(z)))))

    def call(self, inputs, training=False):
        """Reconstruct ``inputs = (x, labels)`` through the posterior mean, for ``predict``."""
        x, y = self.with_one_hot(inputs)
        z_mean, _ = self.encoder([x, y], training=training)
        return ops.sigmoid(self.decoder([z_mean, y], training=training))

    def predict(self, x, *args, **kwargs):
        """``keras.Model.predict`` on ``(images, labels)``, checked first as ``fit`` checks them."""
        return super().predict(self._checked(x), *args, **kwargs)

    def export(self, filepath, format="tf_saved_model", verbose=None, input_signature=None, **kw):
        """``keras.Model.export``, serving ``call``: ``(images, labels)`` -> reconstructions.

        The input signature defaults to images (None, *image_shape) float32 and
        int32 labels (None,). To serve the codes, export the encoder
        (``[images, one-hot y]`` -> ``[z_mean, z_log_var]``).
        """
        if input_signature is None:
            images = keras.InputSpec(shape=(None, *self.image_shape), dtype=keras.config.floatx())
            labels = keras.InputSpec(shape=(None,), dtype="int32")
            input_signature = [(images, labels)]
        return super().export(filepath, format, verbose, input_signature, **kw)

    def sample(self, n, labels, sampler=None, seed=None, binary=False):
        """Draw ``n`` images of the digits ``labels``: decode codes with their labels.

        ``sampler=None`` draws ``z ~ N(0, I)`` with NumPy's
        ``default_rng(seed)``, as ``VAE.sample`` does: the codes depend on the
        seed, not on the labels, so ``sample(8, 3, seed=s)`` and
        ``sample(8, 5, seed=s)`` write the same eight styles as 3s and as 5s.
        A sampler is asked for ``sample_latents(n, seed=seed)``, or, if its
        ``per_class`` is true (``kvae.PerClassSampler``), for
        ``sample_latents(n, seed=seed, labels=labels)``: each code from where
        that digit's training codes are.

        Args:
            n: number of images, a positive integer.
            labels: the digit of every image (an int), or of each (n ints).
            sampler: None for N(0, I), or an object with ``sample_latents``.
            seed: int seed for the codes and the binary draw, or None.
            binary: False for the Bernoulli means; True for a draw from them.

        Returns:
            float32 NumPy array (n, *image_shape) in [0, 1] ({0, 1} if ``binary``).

        Raises:
            ValueError: as ``VAE.sample``; labels that are not one int or n
                ints in 0..num_classes - 1.
        """
        n = self._sample_count(n)
        labels = self.labels_for(labels, n)
        rng = np.random.default_rng(seed)
        means = self._decoded(self._latents(n, sampler, seed, rng, labels), labels)
        return _bernoulli_draw(means, rng) if binary else means

    def _checked(self, data, name="x", labels=None):
        """``data`` after checking its images and labels (``labels``: ``fit``'s ``y``)."""
        if labels is not None:
            checked_data((data, labels), self._check_pair, f"{name} and y", images_and_labels)
            return data
        return checked_data(data, self._check_pair, name, images_and_labels)

    def _check_pair(self, pair):
        images, labels = pair
        check_images(images, self.likelihood, self.image_shape)
        check_labels(labels, len(images), self.num_classes)

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes}


def _tensors(*values):
    """Backend tensors of NumPy arrays or tensors: Keras refuses a list that mixes them."""
    return [ops.convert_to_tensor(value) for value in values]
