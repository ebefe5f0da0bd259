"""The identity log p(x) = term1 - term2 + term3, checked where all three are exact."""

import numpy as np
import pytest

from kvae.linear_gaussian import LinearGaussian


@pytest.fixture(params=[False, True], ids=["correlated_posterior", "diagonal_posterior"])
def model(request):
    return LinearGaussian.random(
        latent_dim=2, data_dim=5, noise_std=0.5, seed=3, orthogonal=request.param
    )


def some_q(model, x, seed=0):
    """A deliberately poor diagonal Gaussian q(z|x)."""
    rng = np.random.default_rng(seed)
    return rng.normal(size=(len(x), model.latent_dim)), rng.normal(size=(len(x), model.latent_dim))


def test_identity_holds_for_any_q(model):
    x = model.sample(16, seed=1)
    parts = model.decompose(x, *some_q(model, x))
    rebuilt = parts["expected_log_likelihood"] - parts["prior_kl"] + parts["posterior_kl"]
    np.testing.assert_allclose(rebuilt, parts["log_evidence"], rtol=1e-6, atol=0)
    assert np.max(np.abs(rebuilt - parts["log_evidence"])) < 1e-10  # float64 round-off only


def test_term1_exact_matches_monte_carlo(model):
    x = model.sample(4, seed=2)
    q_mean, q_log_var = some_q(model, x)
    exact = model.expected_log_likelihood(x, q_mean, q_log_var)
    estimate, standard_error = model.monte_carlo_log_likelihood(
        x, q_mean, q_log_var, 20_000, seed=4
    )
    assert np.all(np.abs(exact - estimate) < 4 * standard_error)


def test_log_evidence_matches_numerical_integration():
    """An independent route to p(x): integrate p(x|z) p(z) over a fine grid of z (1-D latent)."""
    model = LinearGaussian.random(latent_dim=1, data_dim=3, noise_std=0.7, seed=5)
    x = model.sample(3, seed=6)
    z = np.linspace(-10, 10, 40_001)
    means = z[:, None] * model.W[:, 0] + model.b  # (G, D)
    log_lik = -0.5 * np.sum((x[:, None, :] - means) ** 2, -1) / model.noise_std**2
    log_lik -= 0.5 * model.data_dim * np.log(2 * np.pi * model.noise_std**2)
    log_prior = -0.5 * (z**2 + np.log(2 * np.pi))
    joint = np.exp(log_lik + log_prior)  # (N, G)
    evidence = np.trapezoid(joint, z, axis=-1)
    np.testing.assert_allclose(model.log_evidence(x), np.log(evidence), rtol=1e-8)
    posterior_mean = np.trapezoid(joint * z, z, axis=-1) / evidence
    np.testing.assert_allclose(model.posterior(x)[0][:, 0], posterior_mean, rtol=1e-6)


def test_term3_vanishes_only_at_the_true_posterior():
    model = LinearGaussian.random(latent_dim=2, data_dim=5, noise_std=0.5, seed=3, orthogonal=True)
    x = model.sample(8, seed=1)
    mean, cov = model.posterior(x)
    log_var = np.log(np.diagonal(cov, axis1=1, axis2=2))
    assert np.max(np.abs(model.posterior_kl(x, mean, log_var))) < 1e-12
    for shift in (1e-3, 0.1, 1.0):
        assert np.all(model.posterior_kl(x, mean + shift, log_var) > 0)
        assert np.all(model.posterior_kl(x, mean, log_var + shift) > 0)


def test_diagonal_q_cannot_close_the_gap_for_a_correlated_posterior():
    model = LinearGaussian.random(latent_dim=2, data_dim=5, noise_std=0.5, seed=3)
    x = model.sample(1, seed=1)
    mean, cov = model.posterior(x)
    assert abs(cov[0, 0, 1]) > 1e-3  # the posterior really is correlated
    # The best diagonal q has the posterior mean and variances 1 / precision_jj (mean-field).
    best_log_var = -np.log(np.diagonal(np.linalg.inv(cov[0])))[None]
    gap = model.posterior_kl(x, mean, best_log_var)
    assert gap[0] > 1e-3
    for shift in (-0.05, 0.05):
        assert model.posterior_kl(x, mean, best_log_var + shift)[0] > gap[0]


def test_raising_the_elbo_over_q_shrinks_term3_while_log_px_stays():
    model = LinearGaussian.random(latent_dim=2, data_dim=5, noise_std=0.5, seed=3, orthogonal=True)
    x = model.sample(1, seed=1)
    target_mean, cov = model.posterior(x)
    target_log_var = np.log(np.diagonal(cov, axis1=1, axis2=2))
    start_mean, start_log_var = target_mean + 2.0, target_log_var + 1.5
    path = [
        model.decompose(
            x, (1 - t) * start_mean + t * target_mean, (1 - t) * start_log_var + t * target_log_var
        )
        for t in np.linspace(0, 1, 11)
    ]
    elbos = np.array([p["elbo"][0] for p in path])
    gaps = np.array([p["posterior_kl"][0] for p in path])
    evidence = np.array([p["log_evidence"][0] for p in path])
    assert np.all(np.diff(elbos) > 0) and np.all(np.diff(gaps) < 0)
    np.testing.assert_allclose(elbos + gaps, evidence, rtol=1e-12)
    assert np.ptp(evidence) == 0.0


def test_term1_is_a_log_likelihood_not_a_loss(model):
    """decompose() keeps term 1's sign: + E_q[log p(x|z)], the negative of kvae.elbo's loss."""
    x = model.sample(8, seed=1)
    parts = model.decompose(x, *some_q(model, x))
    assert "reconstruction" not in parts
    np.testing.assert_array_equal(
        parts["expected_log_likelihood"], model.expected_log_likelihood(x, *some_q(model, x))
    )
    assert np.all(parts["expected_log_likelihood"] < 0)  # s = 0.5 and D = 5: density well below 1


def test_posterior_covariance_is_diagonal_exactly_for_orthogonal_columns():
    for orthogonal, seed in ((True, 3), (False, 3), (True, 7), (False, 7)):
        model = LinearGaussian.random(latent_dim=3, data_dim=6, seed=seed, orthogonal=orthogonal)
        _, cov = model.posterior(np.zeros((1, 6)))
        off_diagonal = cov[0] - np.diag(np.diagonal(cov[0]))
        assert (np.max(np.abs(off_diagonal)) < 1e-12) == orthogonal


def test_bad_parameters_are_refused():
    with pytest.raises(ValueError, match="noise_std"):
        LinearGaussian(np.ones((3, 2)), np.zeros(3), 0.0)
    with pytest.raises(ValueError, match="expected W"):
        LinearGaussian(np.ones((3, 2)), np.zeros(2), 1.0)
