"""Toy tasks with exact posteriors, written as users would write their own
`sgjax.AbstractTask`: a jittable `sample(key, n)` and a few properties."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import scipy.special

import sgjax
from sgjax._internal._random import gamma, poisson


class _OneSeries(sgjax.AbstractTask):
    """A single series of `T` times."""

    T: eqx.AbstractVar[int]
    in_channels = 1

    @property
    def in_time(self):
        return self.T


class LinearGaussian(_OneSeries):
    """θ ~ N(0, 1); x_t = θ + σ ε_t for t = 1..T. The posterior is Gaussian with
    precision 1 + T/σ² and mean (Σx/σ²) / precision."""

    T: int = eqx.field(static=True, default=10)
    sigma: float = eqx.field(static=True, default=1.0)

    labels = ("theta",)
    spaces = (sgjax.Space("identity"),)

    def sample(self, key, n):
        k1, k2 = jax.random.split(key)
        theta = jax.random.normal(k1, (n,))
        x = theta[:, None, None] + self.sigma * jax.random.normal(k2, (n, self.T, 1))
        return sgjax.Batch(x, jnp.ones(x.shape, bool), theta[:, None], jnp.ones(n))

    def posterior(self, x):
        """Exact posterior mean and standard deviation for observations `(n, T, 1)`."""
        precision = 1 + self.T / self.sigma**2
        return np.asarray(x).sum((1, 2)) / self.sigma**2 / precision, 1 / np.sqrt(precision)


class PoissonGamma(_OneSeries):
    """λ ~ Gamma(a, b); x_t ~ Poisson(λ) for t = 1..T; learned in log space. The
    posterior is Gamma(a + Σx, b + T), so E[log λ | x] = ψ(a + Σx) − log(b + T) and
    Var[log λ | x] = ψ'(a + Σx)."""

    a: float = eqx.field(static=True, default=2.0)
    b: float = eqx.field(static=True, default=1.0)
    T: int = eqx.field(static=True, default=10)

    labels = ("lam",)
    spaces = (sgjax.Space("log"),)

    def sample(self, key, n):
        k1, k2 = jax.random.split(key)
        # sgjax's exact samplers: tested in test_random.py, and far faster than
        # jax.random's inside a training step.
        lam = gamma(k1, jnp.full((n,), self.a), 1.0 / self.b)
        x = poisson(k2, jnp.broadcast_to(lam[:, None, None], (n, self.T, 1)))
        return sgjax.Batch(x, jnp.ones(x.shape, bool), jnp.log(lam)[:, None], jnp.ones(n))

    def posterior_log_moments(self, x):
        shape = self.a + np.asarray(x).sum((1, 2))
        return scipy.special.digamma(shape) - np.log(self.b + self.T), scipy.special.polygamma(1, shape)


class TwoGaussians(_OneSeries):
    """Model selection between x_t ~ N(0, 1) and x_t ~ N(δ, 1), prior probabilities
    (1 − p, p). P(model 1 | x) = sigmoid(log-likelihood ratio + log-prior ratio)."""

    delta: float = eqx.field(static=True, default=0.5)
    p: float = eqx.field(static=True, default=0.3)
    T: int = eqx.field(static=True, default=5)

    labels = ("zero", "shifted")
    spaces = ()
    n_classes = 2

    def sample(self, key, n):
        k1, k2 = jax.random.split(key)
        m = jax.random.bernoulli(k1, self.p, (n,)).astype(jnp.float32)
        x = self.delta * m[:, None, None] + jax.random.normal(k2, (n, self.T, 1))
        return sgjax.Batch(x, jnp.ones(x.shape, bool), m[:, None], jnp.ones(n))

    def posterior(self, x):
        s = np.asarray(x).sum((1, 2))
        llr = self.delta * s - 0.5 * self.T * self.delta**2
        return scipy.special.expit(llr + np.log(self.p / (1 - self.p)))


def coverage(lo, hi, truth):
    return np.mean((truth >= lo) & (truth <= hi))


def binomial_tolerance(p, n, sds=4):
    return sds * np.sqrt(p * (1 - p) / n)


class CorrelatedGaussian(_OneSeries):
    """θ ~ N(0, I₂); x_t = a_t·θ + σ ε_t with a_t = (1, t/T) for t = 1..T: a linear
    model whose Gaussian posterior has strongly correlated components. Precision
    I + AᵀA/σ², mean Σ Aᵀx/σ²."""

    T: int = eqx.field(static=True, default=8)
    sigma: float = eqx.field(static=True, default=1.0)

    labels = ("a", "b")
    spaces = (sgjax.Space("identity"), sgjax.Space("identity"))

    def design(self):
        t = jnp.arange(1.0, self.T + 1) / self.T
        return jnp.stack([jnp.ones(self.T), t], axis=1)  # (T, 2)

    def sample(self, key, n):
        k1, k2 = jax.random.split(key)
        theta = jax.random.normal(k1, (n, 2))
        x = (theta @ self.design().T)[:, :, None] + self.sigma * jax.random.normal(k2, (n, self.T, 1))
        return sgjax.Batch(x, jnp.ones(x.shape, bool), theta, jnp.ones(n))

    def posterior(self, x):
        """Exact posterior means `(n, 2)` and the covariance `(2, 2)` (the same for every
        observation)."""
        a = np.asarray(self.design(), np.float64)
        cov = np.linalg.inv(np.eye(2) + a.T @ a / self.sigma**2)
        mean = np.asarray(x, np.float64)[:, :, 0] @ a / self.sigma**2 @ cov
        return mean, cov
