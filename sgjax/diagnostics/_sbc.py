"""Simulation-based calibration (Talts et al. 2018) with the ECDF-difference test and
its simultaneous confidence band (Säilynoja, Bürkner & Vehtari 2022).

If θ ~ prior, x ~ p(x | θ) and the posterior draws for x are exact, the rank of θ
among S draws is uniform on 0..S. Ranks piled at the ends mean an overconfident
(too narrow) posterior, a hump in the middle an underconfident one, and a slope a
biased one.
"""

import functools
from collections.abc import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Int

from .._custom_types import check_key, Key
from . import _common


#: Bands already simulated, by key and configuration: a band costs ~1 s, and checking
#: several posteriors with one key (an SGNN's and NUTS's) should pay for it once.
_BANDS: dict = {}
_MAX_BANDS = 32


@functools.partial(jax.jit, static_argnames="frequencies")
def _ranks(samples, truth, key, frequencies=False):
    below = jnp.sum(samples < truth[:, None, :], axis=1)
    ties = jnp.sum(samples == truth[:, None, :], axis=1)
    if key is not None:
        # Uniform over the positions the truth could take among the tied draws.
        u = jax.random.uniform(key, below.shape)
        below = below + jnp.minimum(jnp.floor(u * (ties + 1)).astype(below.dtype), ties)
    # How often each rank value occurs, per parameter: (k, draws + 1).
    freq = jax.vmap(lambda r: jnp.bincount(r, length=samples.shape[1] + 1), in_axes=1)(below) if frequencies else None
    return below, jnp.sum(ties), freq


def sbc_ranks(samples, truth, *, key: Key | None = None) -> Int[np.ndarray, "n k"]:
    """The rank of each true parameter among its posterior draws.

    **Arguments:**

    - `samples`: posterior draws for `n` simulated observations, from any method (an
        SGNN head, a flow, NUTS, ABC, SMC): a posterior (anything with `.samples`, a
        mapping name → `(n, draws)`), such a mapping itself, or a stacked array
        `(n, draws, k)` (`sgjax.stack(posterior.samples)`; one parameter may be
        `(n, draws)`). Independent draws are best: for MCMC, thin to about the
        effective sample size, or the ranks are not uniform even when the posterior
        is right.
    - `truth`: the parameters each observation was simulated from: a mapping name →
        `(n,)` (e.g. `Simulation.theta`; extra entries are ignored), or an array
        `(n, k)` (`(n,)`) in the order of stacked samples.
    - `key`: a JAX PRNG key to break ties (draws exactly equal to the truth, as
        happens for discrete parameters or quantised samples) at random, as Talts et
        al. recommend. Needed only when there are ties: without one, they raise a
        `ValueError` (counting them above or below the truth would bias the ranks).

    **Returns:** integer ranks `(n, k)` in `0..draws`, columns in the samples' order:
    the number of draws below the truth, plus a uniform share of the ties.
    """
    samples, truth, _ = _common.check_samples(samples, truth, "sbc_ranks")
    if key is not None:
        check_key(key)
    ranks, _ = _checked_ranks(samples, truth, key, "sbc_ranks")
    return ranks


def _checked_ranks(samples, truth, key, fn, frequencies: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
    """The ranks `(n, k)`, and with `frequencies` each column's rank counts `(k, draws + 1)`."""
    ranks, n_ties, freq = _ranks(samples, truth, key, frequencies)
    if key is None and int(n_ties) > 0:
        raise ValueError(
            f"{int(n_ties)} posterior draws equal their true value exactly (discrete or quantised "
            f"draws), so their ranks must be broken at random: pass `key=` to `{fn}`."
        )
    return np.asarray(ranks), (np.asarray(freq) if frequencies else None)


class SBCResult(eqx.Module):
    """The outcome of [`sgjax.diagnostics.sbc`][]: ranks, a χ² test on a rank
    histogram and the ECDF-difference test with its simultaneous band. NumPy arrays,
    parameter first except `ranks`.

    **Fields:**

    - `ranks`: `(n, k)` ranks in `0..n_draws`.
    - `labels`: the parameters' names.
    - `n_draws`: the posterior draws per observation (ranks take `n_draws + 1`
        values).
    - `histogram`: `(k, bins)` counts of ranks per bin.
    - `bin_edges`: `(bins + 1,)` the first rank of each bin, then `n_draws + 1`.
    - `expected`: `(bins,)` the expected count per bin under uniformity.
    - `histogram_band`: `(2, bins)` the pointwise binomial 99% band on each bin's
        count.
    - `chi2`, `chi2_p_value`: `(k,)` Pearson's statistic of the histogram against
        uniformity and its p-value (χ² with `bins − 1` degrees of freedom).
    - `grid`: `(G,)` the fractional ranks `z` at which the ECDF is evaluated.
    - `ecdf_diff`: `(k, G)` the ECDF of the fractional ranks minus `z`.
    - `band`: `(2, G)` the lower and upper edge of the simultaneous `1 − alpha` band
        for `ecdf_diff`: under uniformity a whole ECDF-difference curve lies inside it
        with probability `1 − alpha`.
    - `alpha`: the band's level.
    - `inside_band`: `(k,)` whether each parameter's curve stays inside the band.
    - `ecdf_p_value`: `(k,)` the simultaneous test's p-value: the fraction of
        simulated uniform-rank curves that stray at least as far from uniformity
        (measured by their smallest pointwise binomial tail probability).
    - `max_abs_ecdf_diff`: `(k,)` the largest |ECDF − z| (a Kolmogorov–Smirnov
        distance).

    **Methods:** `summary()`, a JSON-friendly dict per parameter.
    """

    ranks: np.ndarray
    labels: tuple[str, ...] = eqx.field(static=True)
    n_draws: int = eqx.field(static=True)
    histogram: np.ndarray
    bin_edges: np.ndarray
    expected: np.ndarray
    histogram_band: np.ndarray
    chi2: np.ndarray
    chi2_p_value: np.ndarray
    grid: np.ndarray
    ecdf_diff: np.ndarray
    band: np.ndarray
    alpha: float = eqx.field(static=True)
    inside_band: np.ndarray
    ecdf_p_value: np.ndarray
    max_abs_ecdf_diff: np.ndarray

    def summary(self) -> dict:
        """Per parameter: the χ² and ECDF p-values, whether the ECDF stays inside the
        band, and the largest ECDF difference."""
        return {
            label: {
                "chi2_p_value": float(self.chi2_p_value[j]),
                "ecdf_p_value": float(self.ecdf_p_value[j]),
                "inside_band": bool(self.inside_band[j]),
                "max_abs_ecdf_diff": float(self.max_abs_ecdf_diff[j]),
            }
            for j, label in enumerate(self.labels)
        }


def _grid(n_draws: int, points: int) -> np.ndarray:
    """Rank cut points `m` in 1..n_draws: the ECDF at `z = m / (n_draws + 1)` counts
    ranks below `m`, so under uniformity its mean is exactly `z`."""
    m = np.round(np.arange(1, points) * (n_draws + 1) / points).astype(np.int64)
    return np.unique(np.clip(m, 1, n_draws))


#: Uniform ranks simulated per compiled call (bounds memory for large `n`).
_SIMULATION_CHUNK = 2**21


@functools.partial(jax.jit, static_argnames=("n", "n_draws", "replicates"))
def _simulate_counts(key, cuts, n, n_draws, replicates):
    """`(replicates, G)` ECDF counts at the cuts of `n` uniform ranks in `0..n_draws`."""
    ranks = jax.random.randint(key, (replicates, n), 0, n_draws + 1)
    freq = jax.vmap(lambda r: jnp.bincount(r, length=n_draws + 1))(ranks)
    return jnp.cumsum(freq, axis=1)[:, cuts - 1]


#: Grid points per curve whose exact tail probabilities are compared (the most extreme
#: by deviance); the smallest tail of a curve is all but always among them.
_CANDIDATES = 8


def _min_tail(counts: np.ndarray, n: int, z: np.ndarray) -> np.ndarray:
    """The smallest pointwise binomial tail probability of each ECDF curve (a row of
    `counts`): how far the curve strays from uniformity, on one scale along the grid."""
    m = min(_CANDIDATES, counts.shape[1])
    deviance = _common.binom_deviance(counts, n, z)
    idx = np.argpartition(-deviance, m - 1, axis=1)[:, :m]
    tails = _common.binom_tail(np.take_along_axis(counts, idx, axis=1), n, z[idx])
    return tails.min(axis=1)


def _cached_band(key, n, n_draws, points, alpha, n_simulations):
    """`_band`, computed once per key and configuration (read-only arrays)."""
    data = jax.random.key_data(key) if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) else key
    ident = (np.asarray(data).tobytes(), str(key.dtype), n, n_draws, points, alpha, n_simulations)
    if ident not in _BANDS:
        out = _band(key, n, n_draws, points, alpha, n_simulations)
        for a in out:
            a.setflags(write=False)  # shared by every result using this band
        if len(_BANDS) >= _MAX_BANDS:
            _BANDS.pop(next(iter(_BANDS)))
        _BANDS[ident] = out
    return _BANDS[ident]


def _band(key, n, n_draws, points, alpha, n_simulations):
    """The grid and the simultaneous band: `(cuts, z, lower, upper, tails)`, with
    the band as counts and the simulated curves' smallest tails, sorted."""
    cuts = _grid(n_draws, points)
    z = cuts / (n_draws + 1)
    per_call = max(1, min(n_simulations, _SIMULATION_CHUNK // n))
    cuts_j = jnp.asarray(cuts)
    counts = np.concatenate(
        [
            np.asarray(_simulate_counts(jax.random.fold_in(key, i), cuts_j, n, n_draws, per_call))
            for i in range(-(-n_simulations // per_call))
        ]
    )[:n_simulations]
    tails = np.sort(_min_tail(counts, n, z))
    # The pointwise tail level g: a curve is inside the band when all its tail
    # probabilities are ≥ g, which holds for ≥ 1 − alpha of the simulated curves.
    g = tails[int(np.floor(alpha * n_simulations))]
    lower = _common.binom_quantile(g, n, z)
    upper = _common.binom_quantile(1 - g, n, z, strict=True)
    return cuts, z, lower, upper, tails


def sbc(
    samples,
    truth,
    *,
    key: Key,
    labels: Sequence[str] | None = None,
    bins: int | None = None,
    alpha: float = 0.05,
    points: int | None = None,
    n_simulations: int = 1000,
) -> SBCResult:
    """Simulation-based calibration of posterior draws for simulated observations.

    Computes each true parameter's rank among its posterior draws, then tests the
    ranks for uniformity in two ways: Pearson's χ² on a rank histogram, and the
    ECDF-difference test of Säilynoja, Bürkner & Vehtari (2022), whose band is
    simultaneous over the whole curve. The band is found by simulating
    `n_simulations` ECDFs of uniform ranks (in JAX, vectorised) and lowering the
    pointwise level until a fraction `1 − alpha` of the simulated curves lie inside.

    **Arguments:**

    - `samples`: posterior draws for `n` observations simulated from the prior, from
        any inference method: a posterior (an [`sgjax.Posterior`][], NUTS's
        [`sgjax.baselines.ReferencePosterior`][], ...), a mapping name → `(n, draws)`,
        or a stacked array `(n, draws, k)` (see [`sgjax.diagnostics.sbc_ranks`][]).
    - `truth`: the parameters behind each observation: a mapping name → `(n,)`, or
        an array `(n, k)` in the order of stacked samples.
    - `key`: a JAX PRNG key, to break ties at random and to simulate the band. The
        band for one key and configuration is simulated once per session, so
        checking several posteriors with one key costs it once.
    - `labels`: the parameters' names, for summaries and plots, with stacked
        samples only (named samples carry their names).
    - `bins`: histogram bins for the χ² test; default `min(20, draws + 1)`. Keep the
        expected count per bin (`n / bins`) above ~5 for the χ² approximation.
    - `alpha`: 1 − the level of the simultaneous ECDF band (default 0.05, a 95% band).
    - `points`: how finely the ECDF is evaluated: at most `points − 1` cut points
        spread over the ranks; default `min(draws + 1, n, 1000)`.
    - `n_simulations`: simulated uniform-rank ECDFs behind the band.

    **Returns:** an [`sgjax.diagnostics.SBCResult`][].

    **Example:**

    ```python
    post = sgjax.infer(estimator, sims.observations, sims.mask, key=k_infer, n_samples=255)
    result = sgjax.diagnostics.sbc(post, sims.theta, key=k_sbc)
    result.summary()                          # p-values, inside the band or not
    sgjax.diagnostics.plot_sbc_ecdf(result, path="sbc_ecdf.png")
    ```
    """
    samples, truth, labels = _common.check_samples(samples, truth, "sbc", labels)
    check_key(key)
    n, n_draws, k = samples.shape
    bins = min(20, n_draws + 1) if bins is None else bins
    if not isinstance(bins, (int, np.integer)) or not 2 <= bins <= n_draws + 1:
        raise ValueError(f"`bins` must be an integer from 2 to draws + 1 = {n_draws + 1}, got {bins!r}.")
    points = min(n_draws + 1, n, 1000) if points is None else points
    if not isinstance(points, (int, np.integer)) or not 2 <= points <= n_draws + 1:
        raise ValueError(f"`points` must be an integer from 2 to draws + 1 = {n_draws + 1}, got {points!r}.")
    alpha = _common.check_level(alpha, "alpha")
    if not isinstance(n_simulations, (int, np.integer)) or n_simulations * alpha < 1:
        raise ValueError(
            f"`n_simulations` must be an integer with n_simulations × alpha ≥ 1 to set a "
            f"{1 - alpha:.0%} band, got {n_simulations!r}."
        )
    if n < 2:
        raise ValueError(f"SBC needs ranks from at least two observations, got n={n}; simulate more.")

    k_ties, k_band = jax.random.split(key)
    ranks, freq = _checked_ranks(samples, truth, k_ties, "sbc", frequencies=True)
    assert freq is not None
    cuts, z, lower, upper, sim_tails = _cached_band(k_band, n, n_draws, int(points), alpha, int(n_simulations))

    edges = -(-np.arange(bins + 1) * (n_draws + 1) // bins)  # first rank in each bin
    hist = np.add.reduceat(freq, edges[:-1], axis=1)
    expected = n * np.diff(edges) / (n_draws + 1)
    chi2 = np.sum((hist - expected) ** 2 / expected, axis=1)
    counts = np.cumsum(freq, axis=1)[:, cuts - 1]  # ECDF counts: ranks below each cut
    inside = np.all((counts >= lower) & (counts <= upper), axis=1)
    tails = _min_tail(counts, n, z)
    ecdf_p = (1 + np.searchsorted(sim_tails, tails, side="right")) / (len(sim_tails) + 1)
    ecdf_diff = counts / n - z
    hist_lo, hist_hi = _common.binom_band(n, expected / n, 0.99)
    return SBCResult(
        ranks=ranks,
        labels=labels,
        n_draws=n_draws,
        histogram=hist,
        bin_edges=edges,
        expected=expected,
        histogram_band=np.stack([hist_lo, hist_hi]),
        chi2=chi2,
        chi2_p_value=_common.chi2_sf(chi2, int(bins) - 1),
        grid=z,
        ecdf_diff=ecdf_diff,
        band=np.stack([lower / n - z, upper / n - z]),
        alpha=alpha,
        inside_band=inside,
        ecdf_p_value=np.minimum(ecdf_p, 1.0),
        max_abs_ecdf_diff=np.abs(ecdf_diff).max(axis=1),
    )


def plot_sbc_histogram(result: SBCResult, path=None):
    """Rank histograms, one panel per parameter, over the pointwise binomial 99% band
    of a bin's count under uniformity (grey) and its expected count (line).

    **Arguments:**

    - `result`: from [`sgjax.diagnostics.sbc`][].
    - `path`: where to save the figure as a PNG (it is then closed); optional.

    **Returns:** the matplotlib figure.
    """
    fig, axes = _common.panels(len(result.labels))
    edges = result.bin_edges - 0.5  # bins cover integer ranks
    for j, ax in enumerate(axes):
        lo, hi = result.histogram_band
        ax.fill_between(edges, np.append(lo, lo[-1]), np.append(hi, hi[-1]), step="post", color="0.85")
        ax.stairs(result.histogram[j], edges, fill=True, color="C0", alpha=0.6)
        ax.stairs(result.expected, edges, color="0.3", lw=1)
        ax.set_title(f"{result.labels[j]}  (χ² p = {result.chi2_p_value[j]:.2g})")
        ax.set_xlabel(f"rank (0..{result.n_draws})")
        ax.set_ylabel("count")
    fig.suptitle("SBC rank histograms (grey: pointwise binomial 99% band; line: expected count)")
    return _common.finish(fig, path)


def plot_sbc_ecdf(result: SBCResult, path=None):
    """The ECDF of the fractional ranks minus its expectation, one panel per
    parameter, inside the simultaneous `1 − alpha` band. A curve leaving the band
    flags miscalibration: a ∪ shape an overconfident posterior, a ∩ shape an
    underconfident one, a curve above (below) zero one that overestimates
    (underestimates) the parameter.

    **Arguments:**

    - `result`: from [`sgjax.diagnostics.sbc`][].
    - `path`: where to save the figure as a PNG (it is then closed); optional.

    **Returns:** the matplotlib figure.
    """
    fig, axes = _common.panels(len(result.labels))
    for j, ax in enumerate(axes):
        draw_sbc_ecdf(ax, result, j)
    fig.suptitle(f"SBC: ECDF of the ranks minus uniform (grey: simultaneous {1 - result.alpha:.0%} band)")
    return _common.finish(fig, path)


def draw_sbc_ecdf(ax, result: SBCResult, j: int) -> None:
    """Parameter `j`'s ECDF difference and the simultaneous band on one axis."""
    z = np.concatenate([[0.0], result.grid, [1.0]])
    lo, hi = (np.concatenate([[0.0], b, [0.0]]) for b in result.band)
    ax.fill_between(z, lo, hi, step="post", color="0.85")
    colour = "C0" if result.inside_band[j] else "C3"
    ax.step(z, np.concatenate([[0.0], result.ecdf_diff[j], [0.0]]), where="post", color=colour, lw=1.2)
    ax.axhline(0.0, color="0.4", lw=0.6)
    ax.set_title(f"{result.labels[j]}  (p = {result.ecdf_p_value[j]:.2g})")
    ax.set_xlabel("fractional rank")
    ax.set_ylabel("ECDF difference")
