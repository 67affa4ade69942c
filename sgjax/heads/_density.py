import math

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.scipy.linalg as jsl

from .base import AbstractHead


#: Smallest standard deviation a component may have in the standardised space.
_MIN_SCALE = 1e-4


class AbstractDensityHead(AbstractHead):
    """A mixture of full-covariance Gaussians in the standardised learning space,
    trained by negative log-likelihood (a mixture density network). The fitted
    density approximates the posterior of the target; transformed back to natural
    units its samples respect the target's support."""

    components: eqx.AbstractVar[int]

    @property
    def is_density(self):
        return True

    def n_outputs(self, k, n_classes):
        return self.components * (1 + k + k * (k + 1) // 2)

    def _unpack(self, out, k):
        c = self.components
        logits, rest = out[:c], out[c:]
        means = rest[: c * k].reshape(c, k)
        raw = rest[c * k :].reshape(c, k * (k + 1) // 2)
        rows, cols = jnp.tril_indices(k)
        chol = jnp.zeros((c, k, k), out.dtype).at[:, rows, cols].set(raw)
        diag = jax.nn.softplus(jnp.diagonal(chol, axis1=1, axis2=2)) + _MIN_SCALE
        eye = jnp.eye(k, dtype=bool)
        chol = jnp.where(eye, diag[:, :, None] * jnp.eye(k, dtype=out.dtype), chol)
        return jax.nn.log_softmax(logits), means, chol

    def log_prob(self, out, y):
        """The log density of `y` (standardised space) under the fitted mixture."""
        k = y.shape[0]
        logw, means, chol = self._unpack(out, k)
        z = jax.vmap(lambda m, L: jsl.solve_triangular(L, y - m, lower=True))(means, chol)
        logdet = jnp.sum(jnp.log(jnp.diagonal(chol, axis1=1, axis2=2)), axis=1)
        comp = -0.5 * jnp.sum(z**2, axis=1) - logdet - 0.5 * k * math.log(2 * math.pi)
        return jax.nn.logsumexp(logw + comp)

    def loss(self, out, y):
        return -self.log_prob(out, y)

    def sample(self, key, out, k, n):
        logw, means, chol = self._unpack(out, k)
        kc, kz = jax.random.split(key)
        c = jax.random.categorical(kc, logw, shape=(n,))
        eps = jax.random.normal(kz, (n, k), out.dtype)
        return means[c] + jnp.einsum("nij,nj->ni", chol[c], eps)

    def summarise(self, out, k, key, n_samples):
        logw, means, _ = self._unpack(out, k)
        summary = {"mean": jnp.exp(logw) @ means}
        if key is not None:
            summary["samples"] = self.sample(key, out, k, n_samples)
        return summary


class Gaussian(AbstractDensityHead):
    """One full-covariance Gaussian over the (standardised, transformed) target:
    an approximate posterior with correlations between components."""

    components: int = eqx.field(static=True, default=1, init=False)


class MixtureDensity(AbstractDensityHead):
    """A mixture of `components` full-covariance Gaussians: a flexible approximate
    posterior (skewed, heavy-tailed or multimodal).

    **Arguments:**

    - `components`: how many Gaussians.
    """

    components: int = eqx.field(static=True, default=5)

    def __check_init__(self):
        if not isinstance(self.components, int) or self.components < 1:
            raise ValueError(f"`components` must be a positive integer, got {self.components!r}.")

    def config(self):
        return {"kind": "MixtureDensity", "components": self.components}
