"""The ELBO's terms as pure ``keras.ops`` functions, one value per example.

For an image ``x`` and a diagonal Gaussian posterior
``q(z|x) = N(z_mean, exp(z_log_var))`` the evidence splits into three terms
(see ``chapters/*/01_elbo``)::

    log p(x) = E_q[log p(x|z)] - KL(q(z|x) || p(z)) + KL(q(z|x) || p(z|x))
               `---- term 1 --'   `--- term 2 ----'   `---- term 3 ----'

The VAE maximises term 1 - term 2 (the ELBO); its loss is the negative:
``reconstruction + beta * prior_kl``, both in nats per example.

Shapes: ``x`` and ``logits`` are (B, 28, 28, 1) or any (B, ...);
``z_mean``, ``z_log_var`` and ``z`` are (B, latent_dim). Every function here
returns (B,) unless it says otherwise: averaging over the batch happens once,
in the model. Inputs may be NumPy arrays or tensors of the running backend;
they are computed in Keras's float type (float32 unless configured), like the
model's own loss, also under a mixed-precision policy. Shapes are checked: a
mismatch raises the same ``ValueError`` on every backend instead of
broadcasting ``(4, 784)`` against ``(1, 784)``.
"""

import math

import keras
from keras import ops

LOG_2PI = math.log(2.0 * math.pi)


def _tensors(*values):
    """Backend tensors of Keras's float type, so NumPy inputs work on every backend."""
    return [ops.convert_to_tensor(v, dtype=keras.config.floatx()) for v in values]


def _shape(value):
    """The static shape as a tuple of ints, None where unknown (traced batch axes)."""
    return tuple(None if d is None else int(d) for d in value.shape)


def _check_shapes(names, *values, trailing=None):
    """Raise ValueError unless the values' shapes agree (unknown axes match anything).

    ``trailing=k`` compares only the last ``k`` axes (a (S, B, D) sample
    against its (B, D) posterior).
    """
    shapes = [_shape(v) for v in values]
    cut = [s if trailing is None else s[-trailing:] for s in shapes]
    first = cut[0]
    for other in cut[1:]:
        if len(other) != len(first) or any(
            a is not None and b is not None and a != b for a, b in zip(first, other, strict=True)
        ):
            received = ", ".join(f"{n} {s}" for n, s in zip(names, shapes, strict=True))
            agree = "shapes" if trailing is None else f"last {trailing} axes"
            raise ValueError(f"expected {' and '.join(names)} with equal {agree}, got {received}")


def _sum_over_example(values):
    """Sum every axis but the first: (B, ...) -> (B,)."""
    return ops.sum(ops.reshape(values, (ops.shape(values)[0], -1)), axis=-1)


def bernoulli_log_likelihood(x, logits):
    """``log p(x|z)`` for pixels ``x`` in [0, 1] under Bernoulli(sigmoid(logits)).

    Written on logits, which is exact and stable where probabilities are not:
    ``log p = x * logits - softplus(logits)``, summed over pixels. For grey
    ``x`` this is the negative binary cross-entropy, the usual continuous
    relaxation of the Bernoulli likelihood.

    Args:
        x: images, (B, ...), values in [0, 1].
        logits: decoder outputs, same shape as ``x``.

    Returns:
        (B,) log-likelihood in nats.
    """
    x, logits = _tensors(x, logits)
    _check_shapes(("x", "logits"), x, logits)
    return _sum_over_example(x * logits - ops.softplus(logits))


def gaussian_log_likelihood(x, mean, noise_std=1.0):
    """``log N(x; mean, noise_std**2 I)`` summed over pixels, (B,).

    With a fixed ``noise_std`` this is the MSE likelihood:
    ``-0.5 * ||x - mean||^2 / noise_std**2`` plus a constant.
    """
    x, mean = _tensors(x, mean)
    _check_shapes(("x", "mean"), x, mean)
    squared = ops.square((x - mean) / noise_std)
    per_pixel = -0.5 * (squared + LOG_2PI) - math.log(noise_std)
    return _sum_over_example(per_pixel)


def reconstruction(x, logits, likelihood="bernoulli", noise_std=1.0):
    """Term 1's integrand, negated: ``-log p(x|z)`` for one decoded ``z``, (B,).

    The one place that decides the likelihood. The decoder always gives
    logits; the Bernoulli reads them directly (exact and stable), the Gaussian
    uses ``sigmoid(logits)`` as its mean. With one ``z ~ q(z|x)`` per example
    this is the single-sample Monte-Carlo estimate of ``-E_q[log p(x|z)]``.

    Args:
        x: images (B, ...), values in [0, 1].
        logits: the decoder's output for ``z``, same shape as ``x``.
        likelihood: ``"bernoulli"`` or ``"gaussian"`` (mean ``sigmoid(logits)``,
            fixed standard deviation ``noise_std``).
        noise_std: the Gaussian likelihood's fixed standard deviation.

    Returns:
        (B,) ``-log p(x|z)`` in nats.

    Raises:
        ValueError: for an unknown ``likelihood`` or shapes that differ.
    """
    if likelihood == "bernoulli":
        return -bernoulli_log_likelihood(x, logits)
    if likelihood == "gaussian":
        (logits,) = _tensors(logits)
        return -gaussian_log_likelihood(x, ops.sigmoid(logits), noise_std)
    raise ValueError(f"likelihood must be 'bernoulli' or 'gaussian', got {likelihood!r}")


def prior_kl_per_dim(z_mean, z_log_var):
    """Term 2 per latent dimension: ``KL(N(mu, sigma^2) || N(0, 1))``, (B, D).

    Closed form (Kingma & Welling 2014, Appendix B):
    ``0.5 * (mu^2 + sigma^2 - 1 - log sigma^2)``. No sampling needed.
    """
    z_mean, z_log_var = _tensors(z_mean, z_log_var)
    _check_shapes(("z_mean", "z_log_var"), z_mean, z_log_var)
    return 0.5 * (ops.square(z_mean) + ops.exp(z_log_var) - 1.0 - z_log_var)


def prior_kl(z_mean, z_log_var):
    """Term 2: ``KL(q(z|x) || N(0, I))`` summed over latent dimensions, (B,)."""
    return ops.sum(prior_kl_per_dim(z_mean, z_log_var), axis=-1)


def gaussian_kl(mean_q, log_var_q, mean_p, log_var_p):
    """``KL(N(mean_q, var_q) || N(mean_p, var_p))`` for diagonal Gaussians, (B,).

    ``0.5 * sum(log var_p - log var_q + (var_q + (mean_q - mean_p)^2) / var_p - 1)``.
    ``prior_kl`` is the case ``mean_p = 0, log_var_p = 0``.
    """
    mean_q, log_var_q, mean_p, log_var_p = _tensors(mean_q, log_var_q, mean_p, log_var_p)
    _check_shapes(("mean_q", "log_var_q"), mean_q, log_var_q)
    _check_shapes(("mean_p", "log_var_p"), mean_p, log_var_p)
    _check_shapes(("mean_q", "mean_p"), mean_q, mean_p, trailing=1)
    var_ratio = ops.exp(log_var_q - log_var_p)
    mean_term = ops.square(mean_q - mean_p) / ops.exp(log_var_p)
    return 0.5 * ops.sum(var_ratio + mean_term - 1.0 - (log_var_q - log_var_p), axis=-1)


def diagonal_gaussian_log_density(z, mean, log_var):
    """``log N(z; mean, diag(exp(log_var)))`` summed over the last axis."""
    z, mean, log_var = _tensors(z, mean, log_var)
    _check_shapes(("mean", "log_var"), mean, log_var)
    _check_shapes(("z", "mean"), z, mean, trailing=len(mean.shape))
    per_dim = -0.5 * (LOG_2PI + log_var + ops.square(z - mean) / ops.exp(log_var))
    return ops.sum(per_dim, axis=-1)


def standard_normal_log_density(z):
    """``log N(z; 0, I)`` summed over the last axis."""
    (z,) = _tensors(z)
    return ops.sum(-0.5 * (LOG_2PI + ops.square(z)), axis=-1)


def monte_carlo_prior_kl(z, z_mean, z_log_var):
    """Term 2 estimated from samples: ``mean_s [log q(z_s|x) - log p(z_s)]``.

    Args:
        z: samples from q, (S, B, D).
        z_mean, z_log_var: (B, D).

    Returns:
        (B,) estimate; its error shrinks like 1 / sqrt(S). Compare with
        ``prior_kl`` to see that the closed form needs no sampling.
    """
    log_ratio = diagonal_gaussian_log_density(z, z_mean, z_log_var)
    return ops.mean(log_ratio - standard_normal_log_density(z), axis=0)


def log_mean_exp(values, axis=0):
    """``log(mean(exp(values)))`` without overflow: shift by the maximum first."""
    (values,) = _tensors(values)
    peak = ops.max(values, axis=axis, keepdims=True)
    shifted = ops.log(ops.mean(ops.exp(values - peak), axis=axis))
    return shifted + ops.squeeze(peak, axis=axis)


def importance_log_weights(x, z, z_mean, z_log_var, decoder_logits):
    """``log p(x|z_s) + log p(z_s) - log q(z_s|x)`` for S samples, (S, B).

    Args:
        x: images (B, ...).
        z: samples from q, (S, B, D).
        z_mean, z_log_var: (B, D).
        decoder_logits: Bernoulli logits for each sample, (S, B, ...).
    """
    x, z, decoder_logits = _tensors(x, z, decoder_logits)
    _check_shapes(("x", "decoder_logits"), x, decoder_logits, trailing=len(x.shape))
    _check_shapes(("z", "z_mean"), z, _tensors(z_mean)[0], trailing=2)
    samples = ops.shape(z)[0]
    flat_logits = ops.reshape(decoder_logits, (samples * ops.shape(x)[0], -1))
    flat_x = ops.tile(ops.reshape(x, (1, ops.shape(x)[0], -1)), (samples, 1, 1))
    flat_x = ops.reshape(flat_x, (samples * ops.shape(x)[0], -1))
    log_lik = ops.reshape(bernoulli_log_likelihood(flat_x, flat_logits), (samples, -1))
    log_prior = standard_normal_log_density(z)
    log_q = diagonal_gaussian_log_density(z, z_mean, z_log_var)
    return log_lik + log_prior - log_q


def importance_weighted_bound(log_weights):
    """The k-sample bound on ``log p(x)``: ``log mean_s exp(log_weight_s)``, (B,).

    With k = 1 its expectation is the ELBO; it rises towards ``log p(x)`` as k
    grows (Burda, Grosse & Salakhutdinov 2016, Theorem 1).
    """
    return log_mean_exp(log_weights, axis=0)
