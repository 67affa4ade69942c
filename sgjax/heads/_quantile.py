import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .base import AbstractHead


DEFAULT_LEVELS = (0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.975)


class Quantile(AbstractHead):
    """Posterior quantiles under the pinball (quantile) loss, one set per target
    component. Quantiles never cross: the lowest is free and each next one adds a
    positive increment.

    **Arguments:**

    - `levels`: increasing probabilities in (0, 1). The default covers central 50%,
        80%, 90% and 95% credible intervals and the median.
    """

    levels: tuple[float, ...] = eqx.field(static=True)

    def __init__(self, levels=DEFAULT_LEVELS):
        levels = tuple(float(v) for v in levels)
        if not levels or any(not 0 < v < 1 for v in levels) or any(np.diff(levels) <= 0):
            raise ValueError(f"`levels` must be strictly increasing probabilities in (0, 1), got {levels}.")
        self.levels = levels

    def n_outputs(self, k, n_classes):
        return k * len(self.levels)

    def _quantiles(self, out):
        a = out.reshape(-1, len(self.levels))  # (k, levels)
        steps = jnp.concatenate([a[:, :1], jax.nn.softplus(a[:, 1:])], axis=1)
        return jnp.cumsum(steps, axis=1)

    def loss(self, out, y):
        q = self._quantiles(out)
        tau = jnp.asarray(self.levels, q.dtype)
        d = y[:, None] - q
        return jnp.sum(jnp.maximum(tau * d, (tau - 1) * d))

    def summarise(self, out, k, key, n_samples):
        return {"quantiles": self._quantiles(out).T}

    def config(self):
        return {"kind": "Quantile", "levels": list(self.levels)}
