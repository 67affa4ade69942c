"""Is an observation inside the simulator's world? Distances in the trained network's
summary space: the raw output the network computes from a series (its learned
summary statistics), where simulated data and real data can be compared."""

from collections.abc import Mapping

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from .._custom_types import check_key, Key
from .._inference import Estimator, known_inputs, prepare_observations
from .._learning import AbstractTask, Batch
from .._training import simulate_batch
from ._evaluate import not_a_key


@eqx.filter_jit
def _embed(estimator: Estimator, x, mask, inputs):
    return jax.vmap(estimator)(x, mask, inputs)


def embed(
    estimator: Estimator,
    x,
    mask=None,
    *,
    inputs: Mapping[str, ArrayLike] | None = None,
    chunk: int = 4096,
) -> np.ndarray:
    """The network's summary of each series: its raw output `(n, m)` before the head
    turns it into a posterior (e.g. standardised posterior means and quantiles).
    Trained to be sufficient for the target, it is the space in which to compare
    observed with simulated data.

    **Arguments:**

    - `estimator`: a trained [`sgjax.Estimator`][].
    - `x`, `mask`: the series, as for [`sgjax.infer`][].
    - `inputs`: the known per-dataset inputs of an estimator trained with them
        (`estimator.inputs`): name → a scalar or `(n,)`, as for [`sgjax.infer`][];
        `None` for an estimator without inputs.
    - `chunk`: how many series to summarise per call.

    **Returns:** the summaries `(n, m)`.
    """
    x, mask = prepare_observations(estimator, x, mask)
    u = known_inputs(estimator, inputs, x.shape[0])
    cut = lambda a, i: None if a is None else a[i : i + chunk]  # noqa: E731
    parts = [np.asarray(_embed(estimator, cut(x, i), cut(mask, i), cut(u, i))) for i in range(0, x.shape[0], chunk)]
    return np.concatenate(parts)


def _simulated(estimator: Estimator, task: AbstractTask, batch: Batch, who: str):
    """A batch's successful simulations as NumPy `(x, mask, y, inputs)`: `inputs`
    `(n, k_in)` (natural units) or `None`, after checking that the task's known inputs
    are the estimator's."""
    if tuple(task.inputs) != tuple(estimator.inputs):
        raise ValueError(
            f"{who}: the task's known inputs {tuple(task.inputs)} are not the estimator's {estimator.inputs}; "
            "simulate from the task the estimator was trained on."
        )
    ok = np.asarray(batch.weight) > 0
    x, mask, y = (np.asarray(a)[ok] for a in (batch.x, batch.mask, batch.y))
    inputs = None if batch.inputs is None else np.asarray(batch.inputs)[ok]
    return x, mask, y, inputs


def _by_name(estimator: Estimator, inputs: np.ndarray | None) -> dict[str, np.ndarray] | None:
    """Inputs `(n, k_in)` as name → `(n,)`, the form `embed` takes."""
    return None if inputs is None else {k: inputs[:, j] for j, k in enumerate(estimator.inputs)}


def _sq_dists(a, b):
    return jnp.maximum(jnp.sum(a**2, 1)[:, None] + jnp.sum(b**2, 1)[None] - 2 * a @ b.T, 0.0)


def mmd(a: Float[ArrayLike, "n m"], b: Float[ArrayLike, "k m"], bandwidth: float | None = None) -> float:
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


class SimulationBank(eqx.Module):
    """Simulations kept with their summaries, to find the ones nearest an observation
    in the network's summary space (standardised per dimension): attribution of a
    prediction back to the simulated mechanisms behind it.

    **Fields:** `z` `(n, m)` standardised summaries, `scale` `(m,)`, `x` and `mask`
    `(n, time, channels)` the simulated series, `y` `(n, k)` their targets in natural
    units (the model index for model selection), `labels` the targets' names,
    `inputs` `(n, k_in)` the simulations' known inputs in natural units (the columns
    in the order of `estimator.inputs`), or `None` for an estimator without them.

    Build with [`sgjax.diagnostics.SimulationBank.simulate`][].
    """

    estimator: Estimator
    z: Float[Array, "n m"]
    scale: Float[Array, " m"]
    x: np.ndarray
    mask: np.ndarray
    y: np.ndarray
    labels: tuple[str, ...] = eqx.field(static=True)
    inputs: np.ndarray | None = None

    @classmethod
    def simulate(cls, estimator: Estimator, task: AbstractTask, n: int = 4096, *, key: Key) -> "SimulationBank":
        """Simulate `n` series from `task` (failed ones dropped) and summarise them;
        `key` (keyword-only) draws them."""
        not_a_key(n, "n", "SimulationBank.simulate")
        check_key(key)
        x, mask, y, inputs = _simulated(estimator, task, simulate_batch(task, key=key, n=n), "SimulationBank.simulate")
        if not estimator.n_classes:
            y = np.stack([np.asarray(sp.inverse(y[:, j])) for j, sp in enumerate(estimator.spaces)], axis=1)
        z = embed(estimator, x, mask, inputs=_by_name(estimator, inputs))
        scale = np.maximum(z.std(0), 1e-8)
        return cls(estimator, jnp.asarray(z / scale), jnp.asarray(scale), x, mask, y, tuple(estimator.labels), inputs)

    def __len__(self) -> int:
        return self.z.shape[0]

    def nearest(
        self,
        x,
        mask=None,
        k: int = 10,
        *,
        first: int | None = None,
        inputs: Mapping[str, ArrayLike] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The `k` nearest simulations to each series: `(indices, distances)`, each
        `(n, k)`, nearest first. `first` restricts the search to the bank's first
        simulations (to study how attribution changes with the bank's size).
        `inputs`: the series' known inputs, as for [`sgjax.infer`][], for an
        estimator trained with them."""
        size = len(self) if first is None else first
        if not 1 <= k <= size <= len(self):
            raise ValueError(f"Need 1 <= k <= first <= {len(self)} simulations; got k={k}, first={size}.")
        q = jnp.asarray(embed(self.estimator, x, mask, inputs=inputs)) / self.scale
        neg, idx = _top_k(q, self.z[:size], k)
        return np.asarray(idx), np.asarray(jnp.sqrt(-neg))


@eqx.filter_jit
def _top_k(q, z, k):
    return jax.lax.top_k(-_sq_dists(q, z), k)


class MismatchScore(eqx.Module):
    """A per-observation misspecification score with a calibrated threshold.

    The score of a series is its mean distance to its `k` nearest simulated series in
    the network's summary space (a [`sgjax.SimulationBank`][]). The threshold is
    calibrated on fresh simulations: under the simulator, a series scores above the
    `level` quantile with probability `1 − level`; `p_value` is the fraction of
    simulated series that score at least as high.

    Build it with [`sgjax.diagnostics.MismatchScore.fit`][]; score data with
    `score(x, mask)` (and `inputs=` for an estimator trained with known inputs).
    """

    bank: SimulationBank
    calibration: np.ndarray
    k: int = eqx.field(static=True)

    @classmethod
    def fit(
        cls,
        estimator: Estimator,
        task: AbstractTask,
        *,
        key: Key,
        n_reference: int = 4096,
        n_calibration: int = 1024,
        k: int = 10,
    ):
        """Simulate `n_reference` series to compare against and `n_calibration` more
        to calibrate the scores; `key` (keyword-only) draws them."""
        check_key(key)
        if not 1 <= k < n_reference:
            raise ValueError(f"`k` must be between 1 and n_reference - 1, got k={k}, n_reference={n_reference}.")
        k_ref, k_cal = jax.random.split(key)
        self = cls(SimulationBank.simulate(estimator, task, n_reference, key=k_ref), np.zeros(0), k)
        x, mask, _, inputs = _simulated(
            estimator, task, simulate_batch(task, key=k_cal, n=n_calibration), "MismatchScore.fit"
        )
        scores = self._raw(x, mask, _by_name(estimator, inputs))
        return eqx.tree_at(lambda s: s.calibration, self, np.sort(scores))

    def _raw(self, x, mask, inputs) -> np.ndarray:
        return self.bank.nearest(x, mask, self.k, inputs=inputs)[1].mean(axis=1)

    def threshold(self, level: float = 0.95) -> float:
        """The score that a fraction `level` of simulated series stay below."""
        return float(np.quantile(self.calibration, level))

    def score(self, x, mask=None, *, inputs: Mapping[str, ArrayLike] | None = None) -> dict:
        """Score observed series; `inputs` their known inputs, as for
        [`sgjax.infer`][], for an estimator trained with them.

        **Returns:** a dict of `(n,)` arrays: `score`, `p_value` (the fraction of
        simulated series scoring at least as high; small means outside the simulator's
        world) and `flagged` (score above the 95% threshold)."""
        s = self._raw(x, mask, inputs)
        cal = self.calibration
        p = (len(cal) - np.searchsorted(cal, s, side="left") + 1) / (len(cal) + 1)
        return {"score": s, "p_value": p, "flagged": s > self.threshold(0.95)}
