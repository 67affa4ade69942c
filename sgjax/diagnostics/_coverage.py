"""Expected coverage: how often central credible intervals contain the truth, at every
credible level, over observations simulated from the prior."""

from collections.abc import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from . import _common


#: Credible levels checked by default: 5%, 10%, …, 95%, and 99%.
DEFAULT_LEVELS = tuple(np.round(np.arange(0.05, 0.951, 0.05), 2)) + (0.99,)


class Coverage(eqx.Module):
    """The outcome of [`sgjax.diagnostics.expected_coverage`][] (NumPy arrays).

    **Fields:**

    - `levels`: `(L,)` the credible levels.
    - `coverage`: `(L, k)` the fraction of observations whose central interval at
        each level contains the truth, per parameter. Calibrated posteriors give
        `coverage ≈ levels`; below means overconfident (intervals too narrow or off
        centre), above underconfident.
    - `band`: `(2, L)` the pointwise binomial band (holding `band_mass`) of the
        coverage a calibrated posterior shows over `n` observations.
    - `band_mass`: the band's probability.
    - `n`: the observations.
    - `labels`: the parameters' names.

    **Methods:** `summary()`, a JSON-friendly dict per parameter.
    """

    levels: np.ndarray
    coverage: np.ndarray
    band: np.ndarray
    band_mass: float = eqx.field(static=True)
    n: int = eqx.field(static=True)
    labels: tuple[str, ...] = eqx.field(static=True)

    def summary(self) -> dict:
        """Per parameter: coverage at each level, and the largest shortfall below the
        nominal level (positive when the intervals are too narrow)."""
        return {
            label: {
                "coverage": {f"{lv:g}": float(c) for lv, c in zip(self.levels, self.coverage[:, j])},
                "max_shortfall": float(np.max(self.levels - self.coverage[:, j])),
            }
            for j, label in enumerate(self.labels)
        }


@jax.jit
def _covered(samples, truth, levels):
    q = jnp.concatenate([(1 - levels) / 2, (1 + levels) / 2])
    bounds = jnp.quantile(samples.astype(float), q, axis=1)  # (2L, n, k)
    lower, upper = jnp.split(bounds, 2)
    inside = (lower <= truth) & (truth <= upper)  # (L, n, k)
    return jnp.mean(inside, axis=1)


def expected_coverage(
    samples,
    truth,
    levels: Sequence[float] | Float[Array, " L"] = DEFAULT_LEVELS,
    *,
    labels: Sequence[str] | None = None,
    band: float = 0.95,
) -> Coverage:
    """The empirical coverage of central (equal-tailed) credible intervals.

    For each observation, parameter and level `ℓ`, the interval between the
    `(1 − ℓ)/2` and `(1 + ℓ)/2` quantiles of the posterior draws (linear
    interpolation between order statistics) is checked for the true value.
    Calibrated posteriors cover it a fraction `ℓ` of the time.

    **Arguments:**

    - `samples`: posterior draws for `n` observations simulated from the prior: a
        posterior (anything with `.samples`, a mapping name → `(n, draws)`: an
        [`sgjax.Posterior`][], NUTS's, ABC's), such a mapping, or a stacked array
        `(n, draws, k)` (one parameter may be `(n, draws)`).
    - `truth`: the parameters behind each observation: a mapping name → `(n,)`
        (extra entries ignored), or an array `(n, k)` (`(n,)`) in the order of
        stacked samples.
    - `levels`: credible levels strictly between 0 and 1; default 0.05, 0.10, …,
        0.95 and 0.99. Levels near 1 need many draws: the 99% interval's edges are
        the 0.5% and 99.5% quantiles.
    - `labels`: the parameters' names, for summaries and plots, with stacked
        samples only (named samples carry their names).
    - `band`: the probability of the binomial band drawn around the diagonal.

    **Returns:** a [`sgjax.diagnostics.Coverage`][].
    """
    samples, truth, labels = _common.check_samples(samples, truth, "expected_coverage", labels)
    n = samples.shape[0]
    levels_np = np.asarray(levels, dtype=float)
    if levels_np.ndim != 1 or levels_np.size == 0 or not np.all((levels_np > 0) & (levels_np < 1)):
        raise ValueError(
            f"`levels` must be a 1-D sequence of credible levels strictly between 0 and 1 "
            f"(e.g. [0.5, 0.9]), got {levels!r}."
        )
    band = _common.check_level(band, "band")
    cov = _covered(samples, truth, jnp.asarray(levels_np, float))
    lo, hi = _common.binom_band(n, levels_np, band)
    return Coverage(
        levels=levels_np,
        coverage=np.asarray(cov),
        band=np.stack([lo, hi]) / n,
        band_mass=band,
        n=n,
        labels=labels,
    )


def plot_coverage(result: Coverage, path=None):
    """Empirical coverage against the credible level, one panel per parameter, with
    the diagonal and the binomial band a calibrated posterior stays in pointwise.

    **Arguments:**

    - `result`: from [`sgjax.diagnostics.expected_coverage`][].
    - `path`: where to save the figure as a PNG (it is then closed); optional.

    **Returns:** the matplotlib figure.
    """
    fig, axes = _common.panels(len(result.labels), width=3.4, height=3.4)
    for j, ax in enumerate(axes):
        draw_coverage(ax, result, j)
    axes[0].legend(fontsize=7, loc="upper left")
    fig.suptitle("Expected coverage of central intervals")
    return _common.finish(fig, path)


def draw_coverage(ax, result: Coverage, j: int) -> None:
    """Parameter `j`'s coverage curve on one axis."""
    ax.fill_between(result.levels, *result.band, color="0.85", label=f"{result.band_mass:.0%} band (n={result.n})")
    ax.plot([0, 1], [0, 1], color="0.4", lw=0.8, ls="--")
    ax.plot(result.levels, result.coverage[:, j], "o-", ms=3, color="C0", label="empirical")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_aspect("equal")
    ax.set_title(result.labels[j])
    ax.set_xlabel("credible level")
    ax.set_ylabel("coverage")
