"""Is an observation inside the simulator's world? Distances in the trained network's
summary space: the raw output the network computes from a series (its learned
summary statistics), where simulated data and real data can be compared."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from ._custom_types import Key
from ._estimator import Estimator, _prepare
from ._task import AbstractTask
from ._train import simulate_batch


@eqx.filter_jit
def _embed(estimator: Estimator, x, mask):
    return jax.vmap(estimator)(x, mask)


def embed(estimator: Estimator, x, mask=None, *, chunk: int = 4096) -> np.ndarray:
    """The network's summary of each series: its raw output `(n, m)` before the head
    turns it into a posterior (e.g. standardised posterior means and quantiles).
    Trained to be sufficient for the target, it is the space in which to compare
    observed with simulated data."""
    x, mask = _prepare(estimator, x, mask)
    parts = [np.asarray(_embed(estimator, x[i : i + chunk], mask[i : i + chunk])) for i in range(0, x.shape[0], chunk)]
    return np.concatenate(parts)


def _sq_dists(a, b):
    return jnp.maximum(jnp.sum(a**2, 1)[:, None] + jnp.sum(b**2, 1)[None] - 2 * a @ b.T, 0.0)


def mmd(a: Float[Array, "n m"], b: Float[Array, "k m"], bandwidth: float | None = None) -> float:
    """The unbiased squared maximum mean discrepancy between two samples with a
    Gaussian kernel; `bandwidth` defaults to the median distance of the pooled sample.
    Near 0 (it can dip below) when both come from one distribution."""
    a, b = jnp.asarray(a, float), jnp.asarray(b, float)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or min(len(a), len(b)) < 2:
        raise ValueError(f"mmd needs two samples (n, m) and (k, m) with n, k ≥ 2; got {a.shape} and {b.shape}.")
    if bandwidth is None:
        pooled = jnp.concatenate([a, b])[:1000]
        d = _sq_dists(pooled, pooled)
        bandwidth = float(jnp.sqrt(jnp.median(d[d > 0]) / 2))
    k = lambda u, v: jnp.exp(-_sq_dists(u, v) / (2 * bandwidth**2))  # noqa: E731
    n, m = len(a), len(b)
    kaa, kbb = k(a, a), k(b, b)
    term_a = (jnp.sum(kaa) - jnp.trace(kaa)) / (n * (n - 1))
    term_b = (jnp.sum(kbb) - jnp.trace(kbb)) / (m * (m - 1))
    return float(term_a + term_b - 2 * jnp.mean(k(a, b)))


class MismatchScore(eqx.Module):
    """A per-observation misspecification score with a calibrated threshold.

    The score of a series is its mean distance to its `k` nearest simulated series in
    the network's summary space (standardised per dimension). The threshold is
    calibrated on fresh simulations: under the simulator, a series scores above the
    `level` quantile with probability `1 − level`; `p_value` is the fraction of
    simulated series that score at least as high.

    Build it with [`sgjax.MismatchScore.fit`][]; score data with `score(x, mask)`.
    """

    reference: Float[Array, "n m"]
    scale: Float[Array, " m"]
    calibration: np.ndarray
    k: int = eqx.field(static=True)
    estimator: Estimator

    @classmethod
    def fit(cls, estimator: Estimator, task: AbstractTask, key: Key, n_reference: int = 4096, n_calibration: int = 1024, k: int = 10):
        """Simulate `n_reference` series to compare against and `n_calibration` more
        to calibrate the scores."""
        if not 1 <= k < n_reference:
            raise ValueError(f"`k` must be between 1 and n_reference - 1, got k={k}, n_reference={n_reference}.")
        k_ref, k_cal = jax.random.split(key)
        ref = simulate_batch(task, k_ref, n_reference)
        ok = np.asarray(ref.weight) > 0
        z = embed(estimator, np.asarray(ref.x)[ok], np.asarray(ref.mask)[ok])
        scale = np.maximum(z.std(0), 1e-8)
        self = cls(jnp.asarray(z / scale), jnp.asarray(scale), np.zeros(0), k, estimator)
        cal = simulate_batch(task, k_cal, n_calibration)
        ok = np.asarray(cal.weight) > 0
        scores = self._raw(np.asarray(cal.x)[ok], np.asarray(cal.mask)[ok])
        return eqx.tree_at(lambda s: s.calibration, self, np.sort(scores))

    def _raw(self, x, mask) -> np.ndarray:
        z = jnp.asarray(embed(self.estimator, x, mask)) / self.scale
        d = jax.lax.top_k(-_sq_dists(z, self.reference), self.k)[0]
        return np.asarray(jnp.mean(jnp.sqrt(-d), axis=1))

    def threshold(self, level: float = 0.95) -> float:
        """The score that a fraction `level` of simulated series stay below."""
        return float(np.quantile(self.calibration, level))

    def score(self, x, mask=None) -> dict:
        """**Returns:** a dict of `(n,)` arrays: `score`, `p_value` (the fraction of
        simulated series scoring at least as high; small means outside the simulator's
        world) and `flagged` (score above the 95% threshold)."""
        s = self._raw(x, mask)
        cal = self.calibration
        p = (len(cal) - np.searchsorted(cal, s, side="left") + 1) / (len(cal) + 1)
        return {"score": s, "p_value": p, "flagged": s > self.threshold(0.95)}
