"""Where to draw latent codes from, other than the prior N(0, I).

A VAE's decoder draws recognisable digits where the training codes are and
blobs in the prior's "holes", the regions N(0, I) covers and the codes do
not. Two samplers draw from where the codes are:

- ``GaussianMixtureSampler``: ex-post density estimation (Ghosh et al.,
  2020, "From Variational to Deterministic Autoencoders"): fit a Gaussian
  mixture to the training codes ``z_mean``, sample from it.
- ``AggregatePosteriorSampler``: the aggregate posterior
  ``q(z) = (1/N) sum_i q(z|x_i)``: pick a training image uniformly, then draw
  ``z ~ q(z|x_i)``.

Both encode the training images once, in ``fit``; after that, sampling is
NumPy only (no backend), and seeded: ``sample_latents(n, seed=s)`` gives the
same codes for the same ``s`` on every backend. ``VAE.sample(n, sampler=...)``
decodes them; by hand, ``vae.decode(sampler.sample_latents(n))``.

A ``kvae.ConditionalVAE`` encodes each image with its label, so its samplers
are fitted with ``fit(x, labels)``. Its prior N(0, I) is shared by every
digit, but each digit's codes need not fill it: ``PerClassSampler`` fits one
sampler per class and draws each code from the class asked for.
"""

import numpy as np

from kvae.config import DIGITS
from kvae.data import check_labels

ENCODE_BATCH = 500
# sample_latents holds a few float64 (n, latent_dim) arrays at once (noise,
# offsets, codes); past this many bytes of each, a call would exhaust a laptop's
# memory instead of answering, so it is refused: draw in several calls.
MAX_DRAW_BYTES = 2**30


class LatentSampler:
    """What both samplers share: encoding the training images, seeds, checks.

    ``seed`` fixes everything random about the sampler. ``sample_latents(n)``
    with ``seed=None`` draws from the sampler's own generator (started from
    ``seed`` at ``fit``), so successive calls differ yet the sequence repeats;
    ``sample_latents(n, seed=s)`` draws from a fresh generator seeded with
    ``s`` and always gives the same codes.
    """

    def __init__(self, vae, seed=0):
        if not (hasattr(vae, "encoder") and hasattr(vae, "decoder")):
            raise TypeError(
                f"expected a kvae.VAE (with .encoder and .decoder), got {type(vae).__name__}"
            )
        if seed is not None and not isinstance(seed, int | np.integer):
            raise TypeError(f"seed must be an int or None, got {seed!r}")
        self.vae = vae
        self.seed = seed
        self._rng = None

    @property
    def fitted(self):
        return self._rng is not None

    def fit(self, x, labels=None):
        """Encode the training images ``x`` and fit the sampler; returns ``self``.

        ``labels``: the images' classes, which a ``kvae.ConditionalVAE``
        encodes them with (required there); a VAE's encoder does not read them.
        """
        from kvae.data import check_images  # Keras is needed here, never when sampling

        shape = getattr(self.vae, "image_shape", None) or self.vae.encoder.input_shape[1:]
        check_images(x, getattr(self.vae, "likelihood", "bernoulli"), shape)
        inputs = np.asarray(x, dtype=np.float32)
        if getattr(self.vae, "num_classes", None) is not None:
            if labels is None:
                raise ValueError(
                    "a conditional model encodes each image with its label: call "
                    f"{type(self).__name__}.fit(x, labels)"
                )
            inputs = [inputs, self.vae.condition(labels, len(inputs))]
        z_mean, z_log_var = self.vae.encoder.predict(inputs, batch_size=ENCODE_BATCH, verbose=0)
        self.latent_dim = int(np.shape(z_mean)[1])
        self._fit_codes(np.asarray(z_mean, np.float64), np.asarray(z_log_var, np.float64))
        self._rng = np.random.default_rng(self.seed)
        return self

    def sample_latents(self, n, seed=None):
        """Draw ``n`` latent codes.

        Args:
            n: how many codes, a positive int.
            seed: None to continue the sampler's own stream, or an int for a
                fresh, reproducible draw.

        Returns:
            float32 array (n, latent_dim).

        Raises:
            RuntimeError: before ``fit``.
            ValueError: ``n`` not a positive int, or more codes than fit in
                ``MAX_DRAW_BYTES`` (1 GiB) per array.
        """
        if not self.fitted:
            raise RuntimeError(
                f"{type(self).__name__} is not fitted yet: call .fit(x_train) first, "
                "which encodes the training images"
            )
        if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
            raise ValueError(f"n must be a positive int, got {n!r}")
        code_bytes = 8 * self.latent_dim  # float64 while drawing
        if n * code_bytes > MAX_DRAW_BYTES:
            raise ValueError(
                f"n={n:,} codes of {self.latent_dim} dimensions would take "
                f"{n * code_bytes / 1e9:,.1f} GB per array; one call draws at most "
                f"{MAX_DRAW_BYTES // code_bytes:,} (1 GiB): draw them in several calls"
            )
        rng = self._rng if seed is None else np.random.default_rng(seed)
        return self._draw(int(n), rng).astype(np.float32)

    def _fit_codes(self, z_mean, z_log_var):
        raise NotImplementedError

    def _draw(self, n, rng):
        raise NotImplementedError


class GaussianMixtureSampler(LatentSampler):
    """Draw codes from a Gaussian mixture fitted to the training codes ``z_mean``.

    Example:

    >>> x, _ = kvae.load_mnist("train")
    >>> sampler = kvae.GaussianMixtureSampler(vae, n_components=10).fit(x)
    >>> z = sampler.sample_latents(16, seed=0)        # (16, latent_dim) float32
    >>> images = keras.ops.convert_to_numpy(vae.decode(z))

    Args:
        vae: a trained ``kvae.VAE``.
        n_components: mixture components.
        covariance_type: ``"full"``, ``"tied"``, ``"diag"`` or ``"spherical"``
            (scikit-learn's ``GaussianMixture``).
        seed: seeds the mixture's fit (``random_state``) and the draws.

    Attributes (after ``fit``):
        mixture: the fitted ``sklearn.mixture.GaussianMixture``.
    """

    COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")

    def __init__(self, vae, n_components=10, covariance_type="full", seed=0):
        super().__init__(vae, seed=seed)
        if isinstance(n_components, bool) or not isinstance(n_components, int | np.integer):
            raise ValueError(f"n_components must be a positive int, got {n_components!r}")
        if n_components < 1:
            raise ValueError(f"n_components must be a positive int, got {n_components!r}")
        if covariance_type not in self.COVARIANCE_TYPES:
            raise ValueError(
                f"covariance_type must be one of {self.COVARIANCE_TYPES}, got {covariance_type!r}"
            )
        self.n_components = int(n_components)
        self.covariance_type = covariance_type
        self.mixture = None

    def _fit_codes(self, z_mean, z_log_var):
        from sklearn.mixture import GaussianMixture

        if len(z_mean) < self.n_components:
            raise ValueError(
                f"a mixture of {self.n_components} components needs at least as many "
                f"training images, got {len(z_mean)}"
            )
        self.mixture = GaussianMixture(
            self.n_components, covariance_type=self.covariance_type, random_state=self.seed
        ).fit(z_mean)
        self._cholesky = np.linalg.cholesky(_full_covariances(self.mixture, z_mean.shape[1]))

    def _draw(self, n, rng):
        # By hand rather than mixture.sample(): that one ignores a per-call
        # seed and returns the draws sorted by component.
        component = rng.choice(self.n_components, size=n, p=self.mixture.weights_)
        eps = rng.standard_normal((n, self.mixture.means_.shape[1]))
        offsets = np.empty_like(eps)
        for k, cholesky in enumerate(self._cholesky):  # one component at a time: memory (n, d)
            mine = component == k
            offsets[mine] = eps[mine] @ cholesky.T  # L eps ~ N(0, LL^T)
        return self.mixture.means_[component] + offsets


class AggregatePosteriorSampler(LatentSampler):
    """Draw codes from the aggregate posterior: ``i ~ U{1..N}``, then ``z ~ q(z|x_i)``.

    Example:

    >>> sampler = kvae.AggregatePosteriorSampler(vae).fit(x_train)
    >>> z = sampler.sample_latents(16, seed=0)

    Args:
        vae: a trained ``kvae.VAE``.
        seed: seeds the draws.

    Attributes (after ``fit``):
        z_mean, z_log_var: the training posteriors, float64 (N, latent_dim).
    """

    def __init__(self, vae, seed=0):
        super().__init__(vae, seed=seed)
        self.z_mean = self.z_log_var = None

    def _fit_codes(self, z_mean, z_log_var):
        self.z_mean, self.z_log_var = z_mean, z_log_var

    def _draw(self, n, rng):
        i = rng.integers(len(self.z_mean), size=n)
        eps = rng.standard_normal((n, self.z_mean.shape[1]))
        return self.z_mean[i] + np.exp(0.5 * self.z_log_var[i]) * eps


class PerClassSampler:
    """One sampler per class: each code is drawn where the asked class's training codes are.

    A conditional VAE's prior N(0, I) is the same for every digit, but the
    codes its encoder gives one digit's images, ``q(z|y)``, the average of
    ``q(z|x_i, y)`` over them, need not fill it: in a wide code the prior
    falls into holes no training code of that digit is near, where the
    decoder writes blends. Fitted with ``fit(x, labels)``, this keeps one
    sampler per class, each fitted to that class's images only, and
    ``sample_latents(n, labels=...)`` draws each code from the sampler of its
    label. ``ConditionalVAE.sample`` passes the labels (``per_class`` is true).

    Example:

    >>> sampler = kvae.PerClassSampler(cvae).fit(x_train, y_train)
    >>> sevens = cvae.sample(16, labels=7, sampler=sampler, seed=0)

    Args:
        vae: a trained ``kvae.ConditionalVAE`` (its ``num_classes`` classes),
            or a ``kvae.VAE`` (10 classes; draw codes and ``vae.decode`` them).
        make: builds each class's sampler from ``(vae, seed=...)``:
            ``AggregatePosteriorSampler`` (default, ``q(z|y)`` itself), or for
            example ``lambda vae, seed: GaussianMixtureSampler(vae, 2, seed=seed)``.
        seed: seeds every class's sampler (each its own stream) and the draws.

    Attributes (after ``fit``):
        samplers: the fitted sampler of each class, a list indexed by class.
    """

    per_class = True  # sample_latents takes the labels the codes are drawn for

    def __init__(self, vae, make=None, seed=0):
        if seed is not None and not isinstance(seed, int | np.integer):
            raise TypeError(f"seed must be an int or None, got {seed!r}")
        self.vae = vae
        self.make = make or AggregatePosteriorSampler
        self.seed = seed
        self.num_classes = getattr(vae, "num_classes", None) or DIGITS
        self.samplers = None

    def fit(self, x, labels):
        """Fit one sampler to each class's images; returns ``self``.

        Raises:
            ValueError: bad labels (``kvae.data.check_labels``), or a class
                with no image to fit its sampler to.
        """
        labels = check_labels(labels, len(x), self.num_classes)
        missing = sorted(set(range(self.num_classes)) - set(labels.tolist()))
        if missing:
            raise ValueError(f"every class needs training images; none of class {missing}")
        self.samplers = [
            self.make(self.vae, seed=_class_seed(self.seed, c)).fit(
                x[labels == c], labels[labels == c]
            )
            for c in range(self.num_classes)
        ]
        self.latent_dim = self.samplers[0].latent_dim
        return self

    def sample_latents(self, n, seed=None, labels=None):
        """Draw ``n`` codes, each from the sampler of its label.

        The codes of one class depend on ``seed`` and on how many of that
        class are asked for, not on the other labels.

        Args:
            n: how many codes, a positive int.
            seed: None to continue each class's own stream, or an int.
            labels: one class for all ``n`` (an int), or one per code.

        Returns:
            float32 array (n, latent_dim).

        Raises:
            RuntimeError: before ``fit``.
            ValueError: no labels, or labels that are not one int or n ints
                in 0..num_classes - 1.
        """
        if self.samplers is None:
            raise RuntimeError("PerClassSampler is not fitted yet: call .fit(x_train, y_train)")
        if labels is None:
            raise ValueError("a per-class sampler draws codes for labels: pass labels=...")
        if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
            raise ValueError(f"n must be a positive int, got {n!r}")
        labels = check_labels(
            np.full(n, labels) if np.ndim(labels) == 0 else labels, n, self.num_classes
        )
        z = np.empty((n, self.latent_dim), np.float32)
        for c in np.unique(labels):
            mine = labels == c
            z[mine] = self.samplers[c].sample_latents(int(mine.sum()), seed=_class_seed(seed, c))
        return z


def _class_seed(seed, c):
    """A seed of class ``c``'s own, from ``seed`` (None stays None)."""
    if seed is None:
        return None
    return int(np.random.default_rng([int(seed), int(c)]).integers(2**32))


def _full_covariances(mixture, dim):
    """(K, d, d) covariances whatever scikit-learn's covariance_type."""
    k, cov = mixture.n_components, mixture.covariances_
    kind = mixture.covariance_type
    if kind == "full":
        return cov
    if kind == "tied":
        return np.broadcast_to(cov, (k, dim, dim))
    if kind == "diag":
        return cov[:, :, None] * np.eye(dim)
    return cov[:, None, None] * np.eye(dim)  # spherical
