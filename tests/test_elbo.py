"""kvae.elbo against independent computations: numpy formulas and Monte Carlo."""

import numpy as np
import pytest
from conftest import to_numpy
from keras import ops

import kvae
from kvae import elbo

SAMPLES = 200_000
STANDARD_ERRORS = 4  # a correct formula fails this about once in 16,000 runs


def gaussian_posteriors():
    z_mean = np.array([[0.0, 0.0], [1.5, -0.5], [-2.0, 0.3]], dtype=np.float32)
    z_log_var = np.array([[0.0, 0.0], [-1.0, 0.7], [0.5, -2.0]], dtype=np.float32)
    return z_mean, z_log_var


def monte_carlo_kl(z_mean, z_log_var, seed=0):
    """Per-example mean and standard error of log q(z) - log p(z), z ~ q (float64 numpy)."""
    rng = np.random.default_rng(seed)
    eps = rng.standard_normal((SAMPLES, *z_mean.shape))
    z = z_mean + np.exp(0.5 * z_log_var) * eps
    log_q = np.sum(-0.5 * (np.log(2 * np.pi) + z_log_var + eps**2), axis=-1)
    log_p = np.sum(-0.5 * (np.log(2 * np.pi) + z**2), axis=-1)
    ratio = log_q - log_p
    return ratio.mean(axis=0), ratio.std(axis=0, ddof=1) / np.sqrt(SAMPLES)


def test_closed_form_kl_matches_monte_carlo():
    z_mean, z_log_var = gaussian_posteriors()
    (closed,) = to_numpy(elbo.prior_kl(ops.array(z_mean), ops.array(z_log_var)))
    estimate, standard_error = monte_carlo_kl(
        z_mean.astype(np.float64), z_log_var.astype(np.float64)
    )
    assert np.all(np.abs(closed - estimate) <= STANDARD_ERRORS * standard_error)
    # (At the prior itself every sample gives exactly 0, so both sides are 0.)
    # The check is sharp enough to catch a classic slip: forgetting the "- 1" per dimension.
    assert np.all(np.abs(closed + 1.0 - estimate) > STANDARD_ERRORS * standard_error)


def test_package_monte_carlo_kl_agrees_with_closed_form():
    z_mean, z_log_var = gaussian_posteriors()
    eps = np.random.default_rng(1).standard_normal((50_000, *z_mean.shape)).astype(np.float32)
    z = z_mean + np.exp(0.5 * z_log_var) * eps
    (estimate,) = to_numpy(elbo.monte_carlo_prior_kl(ops.array(z), z_mean, z_log_var))
    (closed,) = to_numpy(elbo.prior_kl(z_mean, z_log_var))
    _, standard_error = monte_carlo_kl(z_mean.astype(np.float64), z_log_var.astype(np.float64))
    # 50,000 samples: the standard error is sqrt(200,000 / 50,000) = 2 times the reference one.
    assert np.all(np.abs(closed - estimate) <= STANDARD_ERRORS * 2 * standard_error)


def test_kl_is_zero_only_at_the_prior_and_per_dimension_sums():
    z_mean, z_log_var = gaussian_posteriors()
    per_dim, total = to_numpy(
        elbo.prior_kl_per_dim(z_mean, z_log_var), elbo.prior_kl(z_mean, z_log_var)
    )
    np.testing.assert_allclose(per_dim.sum(axis=-1), total, rtol=1e-6)
    assert total[0] == 0.0 and np.all(total[1:] > 0)


def test_general_gaussian_kl_reduces_to_prior_kl():
    z_mean, z_log_var = gaussian_posteriors()
    zeros = np.zeros_like(z_mean)
    general, prior = to_numpy(
        elbo.gaussian_kl(z_mean, z_log_var, zeros, zeros), elbo.prior_kl(z_mean, z_log_var)
    )
    np.testing.assert_allclose(general, prior, rtol=1e-6)
    # Against a second Gaussian: univariate formula written out in numpy.
    mean_p, log_var_p = np.full_like(z_mean, 0.5), np.full_like(z_mean, -0.3)
    (kl,) = to_numpy(elbo.gaussian_kl(z_mean, z_log_var, mean_p, log_var_p))
    var_q, var_p = np.exp(z_log_var), np.exp(log_var_p)
    expected = np.sum(
        np.log(np.sqrt(var_p / var_q)) + (var_q + (z_mean - mean_p) ** 2) / (2 * var_p) - 0.5, -1
    )
    np.testing.assert_allclose(kl, expected, rtol=1e-5)


def test_bernoulli_log_likelihood_matches_the_textbook_formula():
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(4, 28, 28, 1)).astype(np.float32)
    logits = rng.normal(scale=3.0, size=x.shape).astype(np.float32)
    (log_lik,) = to_numpy(elbo.bernoulli_log_likelihood(x, logits))
    p = 1 / (1 + np.exp(-logits.astype(np.float64)))
    expected = np.sum(x * np.log(p) + (1 - x) * np.log(1 - p), axis=(1, 2, 3))
    assert log_lik.shape == (4,)
    np.testing.assert_allclose(log_lik, expected, rtol=1e-5)


def test_bernoulli_log_likelihood_is_finite_where_probabilities_saturate():
    x = np.array([[1.0, 0.0, 1.0, 0.0]], dtype=np.float32)
    logits = np.array([[200.0, -200.0, -200.0, 200.0]], dtype=np.float32)
    (log_lik,) = to_numpy(elbo.bernoulli_log_likelihood(x, logits))
    # Two pixels certain and right (0 nats), two certain and wrong (-200 nats each).
    np.testing.assert_allclose(log_lik, [-400.0], rtol=1e-6)


def test_reconstruction_sums_over_pixels_not_averages():
    x = np.ones((2, 28, 28, 1), dtype=np.float32)
    logits = np.zeros_like(x)  # p = 0.5 for every pixel: log 2 nats each
    (nll,) = to_numpy(elbo.reconstruction(x, logits))
    np.testing.assert_allclose(nll, [784 * np.log(2.0)] * 2, rtol=1e-6)


def test_gaussian_reconstruction_is_half_the_squared_error_plus_a_constant():
    """Both likelihoods take logits; the Gaussian's mean is sigmoid(logits)."""
    x = np.full((1, 4), 0.5, dtype=np.float32)
    logits = np.array([[0.0, -3.0, 2.0, -1.0]], dtype=np.float32)
    mean = 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))
    (nll,) = to_numpy(elbo.reconstruction(x, logits, likelihood="gaussian"))
    expected = 0.5 * np.sum((x - mean) ** 2) + 4 * 0.5 * np.log(2 * np.pi)
    np.testing.assert_allclose(nll, [expected], rtol=1e-6)
    with pytest.raises(ValueError, match="likelihood"):
        elbo.reconstruction(x, logits, likelihood="poisson")


# The same message on every backend: the suite runs this once per backend.
SHAPE_ERRORS = [
    (
        lambda: elbo.reconstruction(np.zeros((4, 784)), np.zeros((1, 784))),
        "expected x and logits with equal shapes, got x (4, 784), logits (1, 784)",
    ),
    (
        lambda: elbo.reconstruction(np.zeros((4, 784)), np.zeros((4, 28, 28)), "gaussian"),
        "expected x and mean with equal shapes, got x (4, 784), mean (4, 28, 28)",
    ),
    (
        lambda: elbo.prior_kl(np.zeros((4, 2)), np.zeros((4, 3))),
        "expected z_mean and z_log_var with equal shapes, got z_mean (4, 2), z_log_var (4, 3)",
    ),
    (
        lambda: elbo.prior_kl_per_dim(np.zeros((4, 2)), np.zeros((1, 2))),
        "expected z_mean and z_log_var with equal shapes, got z_mean (4, 2), z_log_var (1, 2)",
    ),
    (
        lambda: elbo.gaussian_kl(
            np.zeros((4, 2)), np.zeros((4, 2)), np.zeros((4, 3)), np.zeros((4, 3))
        ),
        "expected mean_q and mean_p with equal last 1 axes, got mean_q (4, 2), mean_p (4, 3)",
    ),
    (
        lambda: elbo.monte_carlo_prior_kl(np.zeros((5, 4, 3)), np.zeros((4, 2)), np.zeros((4, 2))),
        "expected z and mean with equal last 2 axes, got z (5, 4, 3), mean (4, 2)",
    ),
]


@pytest.mark.parametrize("call, message", SHAPE_ERRORS)
def test_shape_mismatches_raise_the_same_value_error_everywhere(call, message):
    with pytest.raises(ValueError) as error:
        call()
    assert type(error.value) is ValueError and str(error.value) == message


def test_log_mean_exp_is_exact_and_does_not_overflow():
    values = np.array([[1.0, -3.0], [2.0, 0.5], [-0.5, 4.0]], dtype=np.float32)
    (result,) = to_numpy(elbo.log_mean_exp(values, axis=0))
    np.testing.assert_allclose(result, np.log(np.mean(np.exp(values.astype(np.float64)), 0)), 1e-6)
    (shifted,) = to_numpy(elbo.log_mean_exp(values - 1000.0, axis=0))
    np.testing.assert_allclose(shifted, result - 1000.0, rtol=1e-6)


def test_importance_weighted_bound_rises_with_k_above_the_elbo(mnist_test):
    """Burda et al. (2016): E[bound_k] is non-decreasing in k, and bound_1 is the ELBO."""
    x = mnist_test[0][:200]
    encoder, decoder = kvae.build_encoder(2, hidden=(64,)), kvae.build_decoder(2, hidden=(64,))
    z_mean, z_log_var = (t.astype(np.float32) for t in to_numpy(*encoder(x)))
    samples = 64
    eps = np.random.default_rng(0).standard_normal((samples, *z_mean.shape))
    z = (z_mean + np.exp(0.5 * z_log_var) * eps).astype(np.float32)  # (S, B, 2)
    logits = ops.reshape(decoder(ops.reshape(z, (-1, 2))), (samples, len(x), 28, 28, 1))
    (log_w,) = to_numpy(elbo.importance_log_weights(x, z, z_mean, z_log_var, logits))
    assert log_w.shape == (samples, len(x))

    def mean_bound(k):  # average the k-sample bound over 64 / k disjoint groups
        groups = log_w.reshape(samples // k, k, len(x))
        return np.mean([to_numpy(elbo.importance_weighted_bound(g))[0] for g in groups])

    bounds = [mean_bound(k) for k in (1, 4, 16, 64)]
    assert all(a < b for a, b in zip(bounds, bounds[1:], strict=False)), bounds
    # k = 1 is the single-sample ELBO: reconstruction estimate minus the closed-form KL.
    flat_x = np.tile(x.reshape(1, len(x), -1), (samples, 1, 1)).reshape(samples * len(x), -1)
    (log_lik,) = to_numpy(
        elbo.bernoulli_log_likelihood(flat_x, ops.reshape(logits, (samples * len(x), -1)))
    )
    (kl,) = to_numpy(elbo.prior_kl(z_mean, z_log_var))
    elbo_estimate = log_lik.reshape(samples, len(x)).mean(axis=0) - kl
    standard_error = log_w.mean(axis=0).std() / np.sqrt(len(x))
    assert abs(bounds[0] - elbo_estimate.mean()) < STANDARD_ERRORS * standard_error
