"""A latent-variable model where everything the VAE cannot compute is exact.

    p(z)   = N(0, I_d)
    p(x|z) = N(W z + b, noise_std^2 I_D)

Because everything is Gaussian and linear, the integral over ``z`` has a
closed form: ``p(x) = N(b, W W^T + noise_std^2 I)`` and the true posterior
``p(z|x)`` is Gaussian too (Bishop 2006, Section 2.3.3; this is probabilistic
PCA, Tipping & Bishop 1999). So for any diagonal Gaussian ``q(z|x)`` all
three terms of

    log p(x) = E_q[log p(x|z)] - KL(q || p(z)) + KL(q || p(z|x))

can be computed exactly, and the identity checked to float64 precision.
NumPy only, float64 throughout; it does not need Keras.
"""

import numpy as np

LOG_2PI = np.log(2.0 * np.pi)


class LinearGaussian:
    """The linear-Gaussian model ``p(z) p(x|z)`` with exact inference.

    Example:

    >>> model = LinearGaussian.random(latent_dim=2, data_dim=5, seed=0)
    >>> x = model.sample(3, seed=1)
    >>> mean, cov = model.posterior(x)
    >>> parts = model.decompose(x, mean, np.log(np.diagonal(cov, axis1=1, axis2=2)))

    Args:
        W: (D, d) loading matrix.
        b: (D,) offset.
        noise_std: the observation noise's standard deviation, > 0.
    """

    def __init__(self, W, b, noise_std):
        self.W = np.asarray(W, dtype=np.float64)
        self.b = np.asarray(b, dtype=np.float64)
        if self.W.ndim != 2 or self.b.shape != (self.W.shape[0],):
            raise ValueError(f"expected W (D, d) and b (D,), got {self.W.shape} and {self.b.shape}")
        if not noise_std > 0:
            raise ValueError(f"noise_std must be > 0, got {noise_std!r}")
        self.noise_std = float(noise_std)
        self.data_dim, self.latent_dim = self.W.shape

    @classmethod
    def random(cls, latent_dim=2, data_dim=5, noise_std=0.5, seed=0, orthogonal=False):
        """A model with ``W`` and ``b`` drawn from N(0, 1).

        With ``orthogonal=True`` the columns of ``W`` are made orthogonal
        (lengths kept), so ``W^T W`` is diagonal and so is the true posterior's
        covariance: a diagonal ``q`` can then match ``p(z|x)`` exactly and term 3
        reaches 0. Otherwise the posterior is correlated and the best diagonal
        ``q`` leaves a positive term 3 (the mean-field gap).
        """
        rng = np.random.default_rng(seed)
        W = rng.normal(size=(data_dim, latent_dim))
        if orthogonal:
            q, _ = np.linalg.qr(W)
            W = q * np.linalg.norm(W, axis=0)
        return cls(W, rng.normal(size=data_dim), noise_std)

    def sample(self, n, seed=None):
        """Draw ``n`` points ``x ~ p(x)``, (n, D)."""
        rng = np.random.default_rng(seed)
        z = rng.normal(size=(n, self.latent_dim))
        return z @ self.W.T + self.b + self.noise_std * rng.normal(size=(n, self.data_dim))

    def marginal_cov(self):
        """Covariance of ``p(x)``: ``W W^T + noise_std^2 I``, (D, D)."""
        return self.W @ self.W.T + self.noise_std**2 * np.eye(self.data_dim)

    def log_evidence(self, x):
        """Exact ``log p(x)`` for each row of ``x`` (N, D), returns (N,)."""
        x = np.atleast_2d(x)
        cov = self.marginal_cov()
        diff = x - self.b
        _, logdet = np.linalg.slogdet(cov)
        maha = np.einsum("ni,ni->n", diff, np.linalg.solve(cov, diff.T).T)
        return -0.5 * (self.data_dim * LOG_2PI + logdet + maha)

    def posterior(self, x):
        """The true posterior ``p(z|x) = N(mean, cov)``, in closed form.

        Completing the square in ``log p(x|z) + log p(z)`` (Bishop 2006,
        eq. 2.116-2.117) gives::

            precision = I + W^T W / s^2           (the same for every x)
            cov       = precision^{-1}
            mean      = cov W^T (x - b) / s^2     (linear in x)

        with ``s = noise_std``. ``cov`` is diagonal exactly when ``W^T W`` is,
        that is when the columns of ``W`` are orthogonal.

        Args:
            x: data, (N, D) or (D,).

        Returns:
            ``(mean, cov)``: (N, d) and (N, d, d).
        """
        x = np.atleast_2d(x)
        precision = np.eye(self.latent_dim) + self.W.T @ self.W / self.noise_std**2
        cov = np.linalg.inv(precision)
        mean = (x - self.b) @ self.W @ cov / self.noise_std**2
        return mean, np.broadcast_to(cov, (len(x), *cov.shape)).copy()

    def expected_log_likelihood(self, x, q_mean, q_log_var):
        """Term 1, exact: ``E_{z~q}[log p(x|z)]``, (N,).

        With ``q = N(m, diag(v))``:
        ``-D/2 log(2 pi s^2) - (||x - W m - b||^2 + sum_j v_j ||W_j||^2) / (2 s^2)``.
        """
        x, q_mean, q_var = np.atleast_2d(x), np.atleast_2d(q_mean), np.exp(np.atleast_2d(q_log_var))
        residual = x - q_mean @ self.W.T - self.b
        spread = q_var @ np.sum(self.W**2, axis=0)
        squared = np.sum(residual**2, axis=-1) + spread
        return self._log_likelihood_from_squared_error(squared)

    def _log_likelihood_from_squared_error(self, squared):
        """``log N(x; mean, s^2 I)`` given ``||x - mean||^2`` (or its expectation)."""
        normaliser = 0.5 * self.data_dim * (LOG_2PI + 2 * np.log(self.noise_std))
        return -normaliser - 0.5 * squared / self.noise_std**2

    def monte_carlo_log_likelihood(self, x, q_mean, q_log_var, samples=1000, seed=None):
        """Term 1 by Monte Carlo with ``z = m + sigma * eps``.

        Returns:
            ``(estimate, standard_error)``, each (N,).
        """
        x, q_mean = np.atleast_2d(x), np.atleast_2d(q_mean)
        rng = np.random.default_rng(seed)
        eps = rng.normal(size=(samples, *q_mean.shape))
        z = q_mean + np.exp(0.5 * np.atleast_2d(q_log_var)) * eps  # (S, N, d)
        diff = x - (z @ self.W.T + self.b)  # (S, N, D)
        log_lik = self._log_likelihood_from_squared_error(np.sum(diff**2, axis=-1))
        return log_lik.mean(axis=0), log_lik.std(axis=0, ddof=1) / np.sqrt(samples)

    def prior_kl(self, q_mean, q_log_var):
        """Term 2: ``KL(N(m, diag v) || N(0, I))``, (N,)."""
        m, log_v = np.atleast_2d(q_mean), np.atleast_2d(q_log_var)
        return 0.5 * np.sum(m**2 + np.exp(log_v) - 1.0 - log_v, axis=-1)

    def posterior_kl(self, x, q_mean, q_log_var):
        """Term 3: ``KL(N(m, diag v) || p(z|x))``, (N,). Zero only when q is the posterior."""
        m, v = np.atleast_2d(q_mean), np.exp(np.atleast_2d(q_log_var))
        post_mean, post_cov = self.posterior(x)
        post_precision = np.linalg.inv(post_cov[0])
        _, post_logdet = np.linalg.slogdet(post_cov[0])
        diff = post_mean - m
        trace = v @ np.diagonal(post_precision)
        maha = np.einsum("ni,ij,nj->n", diff, post_precision, diff)
        return 0.5 * (trace + maha - self.latent_dim + post_logdet - np.sum(np.log(v), axis=-1))

    def decompose(self, x, q_mean, q_log_var):
        """All the parts of ``log p(x) = term1 - term2 + term3``, each (N,).

        Every part is a log-density or a KL, with the sign it has in that
        identity. Term 1 is ``+E_q[log p(x|z)]`` (usually negative); the loss
        ``kvae.elbo.reconstruction`` is its negative, ``-log p(x|z)``.

        Args:
            x: data, (N, D).
            q_mean: means of the diagonal Gaussian ``q(z|x)``, (N, d).
            q_log_var: its log-variances, (N, d).

        Returns:
            dict with ``expected_log_likelihood`` (term 1,
            ``E_q[log p(x|z)]``), ``prior_kl`` (term 2), ``posterior_kl``
            (term 3), ``elbo`` (term 1 - term 2) and ``log_evidence`` (exact
            ``log p(x)``).
        """
        expected_log_likelihood = self.expected_log_likelihood(x, q_mean, q_log_var)
        prior_kl = self.prior_kl(q_mean, q_log_var)
        return {
            "expected_log_likelihood": expected_log_likelihood,
            "prior_kl": prior_kl,
            "posterior_kl": self.posterior_kl(x, q_mean, q_log_var),
            "elbo": expected_log_likelihood - prior_kl,
            "log_evidence": self.log_evidence(x),
        }
