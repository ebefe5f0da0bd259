"""Latent samplers: a Gaussian mixture on the codes, and the aggregate posterior.

Their draws are checked against moments computed here, independently, from
the encoder's outputs, with tolerances of a few standard errors of the
sample (fixed seeds, so each check is deterministic but could fail).
"""

import keras
import numpy as np
import pytest
from conftest import to_numpy

import kvae
from kvae.samplers import AggregatePosteriorSampler, GaussianMixtureSampler

LATENT_DIM = 4
N_DRAWS = 20_000
SE = 5.0  # allowed distance in standard errors: a false alarm is below 1e-5 per check


@pytest.fixture(scope="module")
def trained(mnist_train):
    """A small VAE after 2 epochs on 2,048 digits, and those digits' posteriors."""
    x = mnist_train[0][:2048]
    keras.utils.set_random_seed(0)
    vae = kvae.VAE(
        kvae.build_encoder(LATENT_DIM, hidden=(64,)),
        kvae.build_decoder(LATENT_DIM, hidden=(64,)),
        seed=0,
    )
    vae.compile(optimizer=keras.optimizers.Adam(1e-3))
    vae.fit(x, epochs=2, batch_size=64, verbose=0)
    z_mean, z_log_var = to_numpy(*vae.encode(x))
    return vae, x, z_mean, z_log_var


@pytest.fixture(scope="module")
def mixture(trained):
    vae, x, _, _ = trained
    return GaussianMixtureSampler(vae, n_components=10, seed=0).fit(x)


@pytest.fixture(scope="module")
def aggregate(trained):
    vae, x, _, _ = trained
    return AggregatePosteriorSampler(vae, seed=0).fit(x)


def assert_moments_match(z, mean, cov, entries=None):
    """Sample mean and covariance of ``z`` within SE standard errors of ``mean``, ``cov``.

    Each standard error comes from the draws themselves: the spread of
    ``z_i`` for a mean, of ``(z_i - m_i)(z_j - m_j)`` for a covariance entry,
    so a mixture's heavier tails widen it as they should.
    """
    n = len(z)
    m = z.mean(axis=0)
    np.testing.assert_array_less(np.abs(m - mean), SE * z.std(axis=0) / np.sqrt(n))
    centred = z - m
    products = centred[:, :, None] * centred[:, None, :]  # (n, d, d)
    sample_cov, se = products.mean(axis=0), products.std(axis=0) / np.sqrt(n)
    entries = np.ones(cov.shape, bool) if entries is None else entries
    np.testing.assert_array_less(np.abs(sample_cov - cov)[entries], SE * se[entries])


@pytest.mark.parametrize("make", [GaussianMixtureSampler, AggregatePosteriorSampler])
def test_shapes_dtype_and_seeds(trained, make):
    vae, x, _, _ = trained
    sampler = make(vae, seed=3).fit(x)
    z = sampler.sample_latents(7, seed=1)
    assert z.shape == (7, LATENT_DIM) and z.dtype == np.float32
    np.testing.assert_array_equal(z, sampler.sample_latents(7, seed=1))
    assert not np.allclose(z, sampler.sample_latents(7, seed=2))
    # seed=None continues the sampler's own stream: calls differ, the stream repeats.
    first, second = sampler.sample_latents(5), sampler.sample_latents(5)
    assert not np.allclose(first, second)
    again = make(vae, seed=3).fit(x)
    np.testing.assert_array_equal(first, again.sample_latents(5))
    np.testing.assert_array_equal(second, again.sample_latents(5))


@pytest.mark.parametrize("make", [GaussianMixtureSampler, AggregatePosteriorSampler])
def test_draws_decode_to_images(trained, make):
    vae, x, _, _ = trained
    z = make(vae).fit(x).sample_latents(6, seed=0)
    (images,) = to_numpy(vae.decode(z))
    assert images.shape == (6, 28, 28, 1) and images.min() >= 0 and images.max() <= 1


def test_mixture_draws_have_the_codes_mean_and_covariance(trained, mixture):
    """EM's fixed point keeps the codes' mean and covariance; the draws must show both."""
    _, _, z_mean, _ = trained
    z = mixture.sample_latents(N_DRAWS, seed=0).astype(np.float64)
    assert_moments_match(z, z_mean.mean(axis=0), np.cov(z_mean.T, bias=True))


def test_mixture_draws_match_scikit_learns_own_sampler(mixture):
    """Our NumPy draws and ``GaussianMixture.sample`` fall in the same components as often.

    Each draw is assigned its most likely component (``predict``); the shares
    of two independent samples of one law differ by sqrt(2) standard errors.
    """
    ours = mixture.sample_latents(N_DRAWS, seed=1)
    theirs, _ = mixture.mixture.sample(N_DRAWS)
    shares = [
        np.bincount(mixture.mixture.predict(z), minlength=10) / N_DRAWS for z in (ours, theirs)
    ]
    se = np.sqrt(shares[1] * (1 - shares[1]) / N_DRAWS)
    np.testing.assert_array_less(np.abs(shares[0] - shares[1]), SE * np.sqrt(2) * se + 1e-12)


@pytest.mark.parametrize(
    "covariance_type, kept",
    [("full", "cov"), ("tied", "cov"), ("diag", "diagonal"), ("spherical", "trace")],
)
def test_each_covariance_type_keeps_what_its_em_keeps(trained, covariance_type, kept):
    """full / tied keep the whole covariance, diag its diagonal, spherical its trace."""
    vae, x, z_mean, _ = trained
    sampler = GaussianMixtureSampler(vae, n_components=5, covariance_type=covariance_type)
    z = sampler.fit(x).sample_latents(N_DRAWS, seed=0).astype(np.float64)
    cov = np.cov(z_mean.T, bias=True)
    if kept == "cov":
        assert_moments_match(z, z_mean.mean(axis=0), cov)
    elif kept == "diagonal":
        assert_moments_match(z, z_mean.mean(axis=0), cov, entries=np.eye(LATENT_DIM, dtype=bool))
    else:
        squares = np.sum((z - z.mean(axis=0)) ** 2, axis=1)
        se = squares.std() / np.sqrt(N_DRAWS)
        assert abs(squares.mean() - np.trace(cov)) < SE * se


def test_aggregate_draws_have_the_total_mean_and_covariance(trained, aggregate):
    """Law of total covariance: Cov z = Cov(z_mean) + E[diag(exp(z_log_var))]."""
    _, _, z_mean, z_log_var = trained
    z = aggregate.sample_latents(N_DRAWS, seed=0).astype(np.float64)
    cov = np.cov(z_mean.T, bias=True) + np.diag(np.exp(z_log_var).mean(axis=0))
    assert_moments_match(z, z_mean.mean(axis=0), cov)


def responsibilities(z, z_mean, z_log_var):
    """r_i(z) = q(z|x_i) / sum_j q(z|x_j), (n, N), from diagonal Gaussian densities."""
    var = np.exp(z_log_var)
    log_q = -0.5 * np.sum(
        (z[:, None, :] - z_mean[None]) ** 2 / var[None] + np.log(2 * np.pi * var[None]), axis=-1
    )
    log_q -= log_q.max(axis=1, keepdims=True)
    q = np.exp(log_q)
    return q / q.sum(axis=1, keepdims=True)


def test_aggregate_draws_come_from_each_posterior_equally(trained):
    """For z ~ (1/N) sum_j q(z|x_j), E[r_i(z)] = 1/N for every training image i.

    The identity holds for the aggregate posterior and fails for other laws
    with the same support: N(0, I) draws, the control here, break it.
    """
    vae, x, _, _ = trained
    few = x[:8]  # eight training images: eight posteriors, each must get 1/8 of the mass
    z_mean, z_log_var = to_numpy(*vae.encode(few))
    sampler = AggregatePosteriorSampler(vae).fit(few)

    def deviation(z):
        r = responsibilities(np.asarray(z, np.float64), z_mean, z_log_var)
        return np.abs(r.mean(axis=0) - 1 / len(few)) / (r.std(axis=0) / np.sqrt(len(z)))

    assert deviation(sampler.sample_latents(N_DRAWS, seed=0)).max() < SE
    prior = np.random.default_rng(0).standard_normal((N_DRAWS, LATENT_DIM))
    assert deviation(prior).max() > 4 * SE


def test_aggregate_draws_lie_within_five_sigmas_of_a_posterior(trained, aggregate):
    """Every draw is within 5 posterior standard deviations, per coordinate, of some z_mean_i."""
    _, _, z_mean, z_log_var = trained
    sd = np.exp(0.5 * z_log_var)
    z = aggregate.sample_latents(1000, seed=0).astype(np.float64)
    sigmas = np.abs(z[:, None, :] - z_mean[None]) / sd[None]  # (draws, N, d)
    assert np.all(sigmas.max(axis=-1).min(axis=-1) < 5.0)
    # Moved by 6 posterior deviations along every axis, the same draws are not all there.
    moved = z + 6 * sd.mean(axis=0)
    sigmas = np.abs(moved[:, None, :] - z_mean[None]) / sd[None]
    assert np.mean(sigmas.max(axis=-1).min(axis=-1) < 5.0) < 0.9


@pytest.mark.parametrize("make", [GaussianMixtureSampler, AggregatePosteriorSampler])
def test_use_before_fit_is_refused(trained, make):
    with pytest.raises(RuntimeError, match=r"not fitted yet: call \.fit\(x_train\)"):
        make(trained[0]).sample_latents(3)


@pytest.mark.parametrize("n", [0, -1, 2.5, True, "3"])
def test_bad_counts_are_refused(aggregate, n):
    with pytest.raises(ValueError, match="n must be a positive int"):
        aggregate.sample_latents(n)


def test_bad_arguments_are_refused(trained):
    vae, x, _, _ = trained
    with pytest.raises(ValueError, match="n_components must be a positive int"):
        GaussianMixtureSampler(vae, n_components=0)
    with pytest.raises(ValueError, match="covariance_type must be one of"):
        GaussianMixtureSampler(vae, covariance_type="round")
    with pytest.raises(TypeError, match="expected a kvae.VAE"):
        AggregatePosteriorSampler(x)
    with pytest.raises(TypeError, match="seed must be an int or None"):
        AggregatePosteriorSampler(vae, seed=0.5)
    with pytest.raises(ValueError, match=r"at least as many training images, got 3"):
        GaussianMixtureSampler(vae, n_components=10).fit(x[:3])
    with pytest.raises(ValueError, match=r"expected images of shape"):
        AggregatePosteriorSampler(vae).fit(x[..., 0])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        AggregatePosteriorSampler(vae).fit(x * 255)


@pytest.mark.parametrize("sampler", ["mixture", "aggregate"])
def test_a_count_past_the_memory_bound_is_refused_before_drawing(request, sampler):
    sampler = request.getfixturevalue(sampler)
    most = 2**30 // (8 * LATENT_DIM)  # one float64 (n, 4) array within 1 GiB
    with pytest.raises(ValueError, match=rf"n={most + 1:,} codes .*at most {most:,} .*several"):
        sampler.sample_latents(most + 1)


def test_mixture_draws_one_component_at_a_time_as_the_formula_says(mixture):
    """Each code is its component's mean plus that component's Cholesky factor times eps."""
    z = mixture.sample_latents(500, seed=3)
    rng = np.random.default_rng(3)
    component = rng.choice(mixture.n_components, size=500, p=mixture.mixture.weights_)
    eps = rng.standard_normal((500, LATENT_DIM))
    cholesky = np.linalg.cholesky(mixture.mixture.covariances_)
    expected = mixture.mixture.means_[component] + np.einsum("nij,nj->ni", cholesky[component], eps)
    np.testing.assert_allclose(z, expected, rtol=1e-5, atol=1e-6)
