"""The standard diagnostics of a trained estimator in one call: recovery, coverage and
simulation-based calibration on held-out simulations, with one figure (like
BayesFlow's default diagnostics)."""

from collections.abc import Mapping
from typing import Any

import equinox as eqx
import jax
import numpy as np

from .._custom_types import check_key, Key
from .._inference import Estimator
from .._learning import AbstractTask
from .._plots import _pyplot
from . import _common
from ._coverage import Coverage, draw_coverage, expected_coverage
from ._evaluate import held_out
from ._sbc import draw_sbc_ecdf, sbc, SBCResult


#: The central interval drawn as error bars in the recovery panels.
RECOVERY_INTERVAL = 0.9


class Diagnosis(eqx.Module):
    """The standard diagnostics of a posterior over `n` simulated datasets, from
    [`sgjax.diagnostics.diagnose`][] (or `Diagnosis.from_samples`). NumPy arrays;
    dicts map each quantity's name to its values.

    **Fields:**

    - `labels`: the quantities checked (the estimator's targets).
    - `truth`: name → `(n,)`, the values each dataset was simulated from.
    - `estimate`: name → `(n,)`, the posterior mean.
    - `lower`, `upper`: name → `(n,)`, the central 90% credible interval.
    - `r2`: name → the coefficient of determination of the posterior mean,
        `1 − Σ(estimate − truth)² / Σ(truth − mean truth)²`: how much of the prior's
        spread the data recover (the exact posterior's own R² is below 1 where the
        data do not pin a quantity down).
    - `rmse`: name → the root mean squared error of the posterior mean.
    - `coverage`: the [`sgjax.diagnostics.Coverage`][] of central intervals.
    - `sbc`: the [`sgjax.diagnostics.SBCResult`][] of the ranks.
    - `n_samples`: posterior draws per dataset.

    **Methods:** `summary()`, a JSON-friendly dict; `plot(path=None)`, one figure.
    """

    labels: tuple[str, ...] = eqx.field(static=True)
    truth: dict[str, np.ndarray]
    estimate: dict[str, np.ndarray]
    lower: dict[str, np.ndarray]
    upper: dict[str, np.ndarray]
    r2: dict[str, float]
    rmse: dict[str, float]
    coverage: Coverage
    sbc: SBCResult
    n_samples: int = eqx.field(static=True)

    def __len__(self) -> int:
        """`n`, the datasets checked."""
        return self.sbc.ranks.shape[0]

    @classmethod
    def from_samples(cls, posterior, truth, *, key: Key, labels=None) -> "Diagnosis":
        """The diagnostics of any posterior's draws for simulated datasets.

        **Arguments:**

        - `posterior`: posterior draws for `n` datasets simulated from the prior: a
            posterior (an [`sgjax.Posterior`][], NUTS's, ABC's: anything with
            `.samples`), a dict name → `(n, draws)`, or a stacked array
            `(n, draws, k)` with `labels`.
        - `truth`: the values behind each dataset, a dict name → `(n,)` (or `(n, k)`
            with stacked samples).
        - `key`: a JAX PRNG key, for the SBC band and ties.
        - `labels`: names for stacked samples only.

        **Returns:** a `Diagnosis`.
        """
        check_key(key)
        samples, truth_arr, labels = _common.check_samples(posterior, truth, "diagnose", labels)
        draws, true = np.asarray(samples, np.float64), np.asarray(truth_arr, np.float64)
        mean = draws.mean(axis=1)
        lo, hi = np.quantile(draws, [(1 - RECOVERY_INTERVAL) / 2, (1 + RECOVERY_INTERVAL) / 2], axis=1)
        err = mean - true
        var = true.var(axis=0)
        r2 = np.where(var > 0, 1 - np.mean(err**2, axis=0) / np.where(var > 0, var, 1.0), np.nan)
        rmse = np.sqrt(np.mean(err**2, axis=0))
        named = lambda a: {label: a[:, j] for j, label in enumerate(labels)}  # noqa: E731
        return cls(
            labels=labels,
            truth=named(true),
            estimate=named(mean),
            lower=named(lo),
            upper=named(hi),
            r2={label: float(r2[j]) for j, label in enumerate(labels)},
            rmse={label: float(rmse[j]) for j, label in enumerate(labels)},
            coverage=expected_coverage(samples, truth_arr, labels=labels),
            sbc=sbc(samples, truth_arr, key=key, labels=labels),
            n_samples=draws.shape[1],
        )

    def summary(self) -> dict:
        """Per quantity: `r2`, `rmse`, the coverage of the central 50% and 90%
        intervals, the largest coverage shortfall below nominal, and the SBC
        p-values and whether the ranks' ECDF stays inside its band; and `n`."""
        cov, ranks = self.coverage.summary(), self.sbc.summary()
        out: dict[str, Any] = {"n": len(self)}
        for label in self.labels:
            levels = cov[label]["coverage"]
            out[label] = {
                "r2": self.r2[label],
                "rmse": self.rmse[label],
                **{f"coverage_{round(float(lv) * 100)}": c for lv, c in levels.items() if float(lv) in (0.5, 0.9)},
                "max_coverage_shortfall": cov[label]["max_shortfall"],
                "sbc_ecdf_p_value": ranks[label]["ecdf_p_value"],
                "sbc_chi2_p_value": ranks[label]["chi2_p_value"],
                "sbc_inside_band": ranks[label]["inside_band"],
            }
        return out

    def plot(self, path=None):
        """One figure, a column per quantity: recovery (posterior mean and 90%
        interval against the truth), expected coverage, and the SBC ECDF
        difference in its simultaneous band.

        **Arguments:** `path`, where to save the figure as a PNG (it is then closed);
        optional.

        **Returns:** the matplotlib figure.
        """
        plt = _pyplot()
        k = len(self.labels)
        fig, axes = plt.subplots(3, k, figsize=(max(3.6 * k, 4.5), 10.0), squeeze=False)
        for j, label in enumerate(self.labels):
            ax = axes[0, j]
            t, m = self.truth[label], self.estimate[label]
            ax.errorbar(
                t, m, yerr=[m - self.lower[label], self.upper[label] - m],
                fmt="o", ms=2.5, lw=0.5, color="C0", ecolor="C0", alpha=0.5,
            )  # fmt: skip
            edges = [min(t.min(), self.lower[label].min()), max(t.max(), self.upper[label].max())]
            ax.plot(edges, edges, color="0.4", lw=0.8, ls="--")
            ax.set_title(f"{label}  (R² = {self.r2[label]:.3f}, RMSE = {self.rmse[label]:.3g})")
            ax.set_xlabel("true value")
            ax.set_ylabel(f"posterior mean, {RECOVERY_INTERVAL:.0%} interval")
            draw_coverage(axes[1, j], self.coverage, j)
            draw_sbc_ecdf(axes[2, j], self.sbc, j)
        axes[1, 0].legend(fontsize=7, loc="upper left")
        fig.suptitle(f"{len(self)} simulations: recovery, coverage, SBC", fontsize=10)
        return _common.finish(fig, path)


def diagnose(
    estimator: Estimator,
    task: AbstractTask,
    *,
    key: Key,
    n: int = 200,
    n_samples: int = 255,
    chunk: int = 512,
) -> Diagnosis:
    """The standard diagnostics of a trained estimator on fresh simulations:
    recovery (R², RMSE of the posterior mean), expected coverage of central credible
    intervals, and simulation-based calibration, in one call with one figure.

    Simulates `n` datasets from `task` (failed simulations are dropped), infers each
    one's posterior with `n_samples` draws, and checks the draws against the values
    they were simulated from. A posterior that is right for every dataset passes
    each check; see [`sgjax.diagnostics.sbc`][] and
    [`sgjax.diagnostics.expected_coverage`][] for what their failures look like.

    **Arguments:**

    - `estimator`: a trained [`sgjax.Estimator`][] with a density head (`Gaussian`,
        `MixtureDensity`, `Flow`): the checks need posterior draws.
    - `task`: the task it was trained on (its prior may differ). Use a `key` never
        used for training, so the simulations are held out.
    - `key`: a JAX PRNG key for the simulations, the posterior draws and the SBC
        band.
    - `n`: simulated datasets. SBC's and coverage's resolution grow with `n`
        (coverage's binomial sd is `√(ℓ(1 − ℓ)/n)`, 0.02 at n = 200 for ℓ = 0.9).
    - `n_samples`: posterior draws per dataset (ranks take `n_samples + 1` values).
    - `chunk`: simulations per compiled call.

    **Returns:** a [`sgjax.diagnostics.Diagnosis`][]: `summary()` for numbers,
    `plot(path)` for the figure.

    **Example:**

    ```python
    estimator, _ = sgjax.fit(task, sgjax.heads.Flow(), key=k_train)
    check = sgjax.diagnostics.diagnose(estimator, task, key=k_check)
    check.summary()["beta"]["r2"], check.plot("diagnostics.png")
    ```
    """
    if not isinstance(estimator, Estimator):
        raise TypeError(f"`estimator` must be an sgjax.Estimator (from sgjax.fit), got {type(estimator).__name__}.")
    if estimator.n_classes:
        raise ValueError(
            "`diagnose` checks posterior draws, and this estimator chooses between models. Use "
            "sgjax.evaluate(estimator, task, key=key) for its accuracy and calibration."
        )
    check_key(key)
    k_data, k_check = jax.random.split(key)
    post, truth = held_out(estimator, task, key=k_data, n=n, chunk=chunk, n_samples=n_samples)
    if not isinstance(truth, Mapping):
        truth = {label: np.asarray(truth)[:, j] for j, label in enumerate(estimator.labels)}
    return Diagnosis.from_samples(post, truth, key=k_check)
