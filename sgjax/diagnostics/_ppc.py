"""Posterior predictive checks: simulate data from posterior draws with the same
simulator and compare them with the observation."""

from collections.abc import Callable, Mapping

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float

from .._custom_types import check_key, Key
from .._simulation import AbstractStrategy, simulate, Simulator
from . import _common


def _sum(x, mask):
    return jnp.sum(jnp.where(mask, x, 0.0))


def _max(x, mask):
    return jnp.max(jnp.where(mask, x, -jnp.inf))


#: Test statistics used when none are given: the total and the largest observed value.
DEFAULT_STATISTICS: dict[str, Callable] = {"sum": _sum, "max": _max}


class PosteriorPredictive(eqx.Module):
    """The outcome of [`sgjax.diagnostics.posterior_predictive`][] (NumPy arrays).

    **Fields:**

    - `ts`: `(time,)` the observation times.
    - `observations`: `(S, time, channels)` the simulated data, one series per
        posterior draw whose simulation succeeded; 0 where missing.
    - `signal`: `(S, time, channels)` their clean signals (e.g. expected counts).
    - `mask`: `(S, time, channels)` `True` where the simulated series is observed.
    - `lower`, `median`, `upper`: `(time, channels)` the pointwise predictive
        quantiles `(1 − band)/2`, 0.5 and `(1 + band)/2` (entries missing in a
        simulated series left out; NaN where missing in all).
    - `band`: the predictive band's probability.
    - `n_failed`: posterior draws whose simulation failed (left out).
    - `observed`, `observed_mask`: `(time, channels)` the observation and where it is
        observed, or `None`.
    - `inside`: the fraction of observed entries inside the predictive band, or
        `None`. Around `band` (or above: the band is pointwise and also holds the
        posterior's uncertainty) when the model fits.
    - `statistics`: name → the test statistic of the observation.
    - `predictive_statistics`: name → `(S,)` the statistic of each simulated series.
    - `p_values`: name → the posterior predictive p-value `P(T(x_rep) ≥ T(x))`
        (ties counted half). Values near 0 or 1 mean the observation is extreme
        for the fitted model in what `T` measures.
    """

    ts: np.ndarray
    observations: np.ndarray
    signal: np.ndarray
    mask: np.ndarray
    lower: np.ndarray
    median: np.ndarray
    upper: np.ndarray
    band: float = eqx.field(static=True)
    n_failed: int = eqx.field(static=True)
    observed: np.ndarray | None
    observed_mask: np.ndarray | None
    inside: float | None
    statistics: dict[str, float]
    predictive_statistics: dict[str, np.ndarray]
    p_values: dict[str, float]


@jax.jit
def _quantiles(x, mask, q):
    return jnp.nanquantile(jnp.where(mask, x, jnp.nan), q, axis=0)


def _check_theta(simulator: Simulator, theta) -> dict:
    draws, labels = _common.posterior_samples(theta, "posterior_predictive", "theta")
    if draws is not theta:  # a posterior object: its draws for its one dataset
        if labels is not None:
            draws = {name: np.asarray(draws)[..., j] for j, name in enumerate(labels)}
        n = next(iter(draws.values())).shape[0]
        if n != 1:
            raise ValueError(
                f"`theta` is a posterior for {n} datasets; the posterior predictive is for one: pass "
                "posterior.theta(i), the draws for dataset i."
            )
        # Quantities it holds that are not the simulator's inputs (derived targets such
        # as R0) are not needed to simulate.
        given = getattr(theta, "inputs", None)  # a Posterior's known inputs (e.g. N), one value per dataset
        theta = {name: v[0] for name, v in draws.items() if name in simulator.param_names}
        if given:
            size = next(iter(theta.values())).shape[0]
            theta |= {k: np.full(size, np.asarray(v)[0]) for k, v in given.items() if k in simulator.param_names}
        missing = [name for name in simulator.param_names if name not in theta]
        if missing:
            raise ValueError(
                f"The posterior has no draws of {missing}, which the simulator needs (fixed parameters "
                f"are left out of a posterior). Pass them too: {{**posterior.theta(0), {missing[0]!r}: value}}."
            )
    if not isinstance(theta, Mapping):
        raise TypeError(
            "`theta` must be a dict of parameter name → posterior draws (S,), or a posterior of one "
            f"dataset; got {type(theta).__name__}."
        )
    theta = {name: jnp.asarray(v, dtype=jnp.result_type(float)) for name, v in theta.items()}
    bad = {name: v.shape for name, v in theta.items() if v.ndim > 1}
    if bad:
        raise ValueError(
            f"Each entry of `theta` must hold the posterior draws of one parameter, shape (S,), or a "
            f"scalar for a fixed one; got shapes {bad}. For a posterior of several datasets, pass "
            "posterior.theta(i); for stacked samples (S, k), sgjax.unstack(samples, names)."
        )
    sizes = {v.shape[0] for v in theta.values() if v.ndim == 1}
    if len(sizes) > 1:
        raise ValueError(
            f"Every parameter in `theta` must have the same number of draws; got "
            f"{ {name: v.shape for name, v in theta.items()} }."
        )
    size = sizes.pop() if sizes else 1
    theta = {name: jnp.broadcast_to(v, (size,)) for name, v in theta.items()}
    simulator.check_theta(theta)
    return theta


def _check_observed(observed, mask, shape):
    observed = np.asarray(observed, dtype=float)
    if observed.ndim == 1 and shape[1] == 1:
        observed = observed[:, None]
    if observed.shape != shape:
        raise ValueError(
            f"`observed` must be one series of shape (time, channels) = {shape} (or (time,) for one "
            f"channel) on the simulator's observation times; got {observed.shape}."
        )
    if mask is None:
        mask = np.isfinite(observed)
    else:
        mask = np.asarray(mask, dtype=bool)
        if mask.ndim == 1 and shape[1] == 1:
            mask = mask[:, None]
        if mask.shape != shape:
            raise ValueError(f"`mask` must have the shape of the observation, {shape}; got {mask.shape}.")
        mask = mask & np.isfinite(observed)
    if not mask.any():
        raise ValueError("The observation has no observed (masked-in, finite) entry to check.")
    return np.where(mask, observed, 0.0), mask


def posterior_predictive(
    simulator: Simulator,
    theta,
    observed: Float[Array, "time channels"] | None = None,
    mask: Bool[Array, "time channels"] | None = None,
    *,
    key: Key,
    band: float = 0.9,
    statistics: Mapping[str, Callable] | None = None,
    strategy: AbstractStrategy | None = None,
) -> PosteriorPredictive:
    """Simulate new data from posterior draws and check the observation against them.

    Each draw `θ_s` is pushed through the simulator (solve, then observation noise)
    with [`sgjax.simulate`][], giving the posterior predictive distribution of the
    data; draws whose simulation fails are left out and counted.

    **Arguments:**

    - `simulator`: the [`sgjax.Simulator`][] the data are assumed to come from.
    - `theta`: posterior draws for one observation: a dict of parameter name →
        `(S,)` (`posterior.theta(i)`, from any inference method), where fixed
        parameters may be given as scalars; or a posterior of one dataset (an
        [`sgjax.Posterior`][], NUTS's, ABC's), whose quantities other than the
        simulator's parameters (derived targets) are ignored. Every parameter the
        simulator reads must be present.
    - `observed`: the observed series, `(time, channels)` (or `(time,)` for one
        channel), on the simulator's times; NaN marks a missing entry. Optional: with
        none, only the predictive draws and bands are returned.
    - `mask`: `True` where `observed` is observed; default: where it is finite.
    - `key`: a JAX PRNG key for the observation noise.
    - `band`: the probability of the central pointwise predictive band (default
        0.9).
    - `statistics`: name → `T(x, mask)`, a JAX function of one series
        `(time, channels)` and its mask returning a scalar; default the sum and the
        maximum over observed entries. Simulated series are masked like the
        observation.
    - `strategy`: passed to [`sgjax.simulate`][].

    **Returns:** a [`sgjax.diagnostics.PosteriorPredictive`][].

    **Example:**

    ```python
    ppc = posterior_predictive(simulator, posterior.theta(0), x, mask, key=key)
    ppc.inside, ppc.p_values
    ```
    """
    if isinstance(observed, jax.Array) and (
        jnp.issubdtype(observed.dtype, jax.dtypes.prng_key) or (observed.dtype == jnp.uint32 and observed.shape == (2,))
    ):
        raise TypeError(
            "`posterior_predictive` got a PRNG key where the observation goes: `key` is keyword-only, "
            "posterior_predictive(simulator, theta, observed, mask, key=key)."
        )
    check_key(key)
    if not isinstance(simulator, Simulator):
        raise TypeError(f"`simulator` must be an sgjax.Simulator, got {type(simulator).__name__}.")
    theta = _check_theta(simulator, theta)
    band = _common.check_level(band, "band")
    statistics = DEFAULT_STATISTICS if statistics is None else dict(statistics)
    if not all(callable(f) for f in statistics.values()):
        raise TypeError("`statistics` must map names to functions T(x, mask) -> scalar.")

    sims = simulate(simulator, key=key, theta=theta, strategy=strategy, keep_states=False)
    valid = np.asarray(sims.valid)
    if not valid.any():
        raise ValueError("Every posterior predictive simulation failed; check the posterior draws and the solver.")
    x, signal, pred_mask = (np.asarray(a)[valid] for a in (sims.observations, sims.signal, sims.mask))
    lo_q, hi_q = (1 - band) / 2, (1 + band) / 2
    lower, median, upper = np.asarray(_quantiles(jnp.asarray(x), jnp.asarray(pred_mask), jnp.array([lo_q, 0.5, hi_q])))

    obs = obs_mask = inside = None
    stats, pred_stats, p_values = {}, {}, {}
    if observed is not None:
        obs, obs_mask = _check_observed(observed, mask, x.shape[1:])
        checked = obs_mask & np.isfinite(lower) & np.isfinite(upper)
        inside = float(np.mean(((lower <= obs) & (obs <= upper))[checked])) if checked.any() else float("nan")
        both = jnp.asarray(pred_mask & obs_mask)
        for name, fn in statistics.items():
            t_obs = float(fn(jnp.asarray(obs), jnp.asarray(obs_mask)))
            t_rep = np.asarray(jax.vmap(fn)(jnp.asarray(x), both))
            if t_rep.shape != (x.shape[0],):
                raise ValueError(
                    f"The statistic {name!r} must return a scalar per series, got shape {t_rep.shape[1:]}."
                )
            stats[name], pred_stats[name] = t_obs, t_rep
            p_values[name] = float(np.mean(t_rep > t_obs) + 0.5 * np.mean(t_rep == t_obs))
    elif mask is not None:
        raise ValueError("`mask` was given without `observed`; pass the observation too.")

    return PosteriorPredictive(
        ts=np.asarray(sims.ts),
        observations=x,
        signal=signal,
        mask=pred_mask,
        lower=lower,
        median=median,
        upper=upper,
        band=band,
        n_failed=int((~valid).sum()),
        observed=obs,
        observed_mask=obs_mask,
        inside=inside,
        statistics=stats,
        predictive_statistics=pred_stats,
        p_values=p_values,
    )


def plot_posterior_predictive(result: PosteriorPredictive, path=None, *, ylabel: str = "observation"):
    """The observation over the posterior predictive bands (the central `band` and
    50% bands, and the median), one panel per channel.

    **Arguments:**

    - `result`: from [`sgjax.diagnostics.posterior_predictive`][].
    - `path`: where to save the figure as a PNG (it is then closed); optional.
    - `ylabel`: the y-axis label.

    **Returns:** the matplotlib figure.
    """
    channels = result.median.shape[1]
    fig, axes = _common.panels(channels, width=6.5, height=4.0, max_cols=2)
    q25, q75 = np.asarray(
        _quantiles(jnp.asarray(result.observations), jnp.asarray(result.mask), jnp.array([0.25, 0.75]))
    )
    for c, ax in enumerate(axes):
        label = f"{result.band:.0%} predictive"
        ax.fill_between(result.ts, result.lower[:, c], result.upper[:, c], color="C0", alpha=0.2, label=label)
        ax.fill_between(result.ts, q25[:, c], q75[:, c], color="C0", alpha=0.35, label="50% predictive")
        ax.plot(result.ts, result.median[:, c], color="C0", lw=1.5, label="predictive median")
        title = "Posterior predictive check" if channels == 1 else f"channel {c}"
        if result.observed is not None and result.observed_mask is not None:  # given together
            m = result.observed_mask[:, c]
            ax.plot(result.ts[m], result.observed[m, c], "ko", ms=3.5, label="observed")
            title += f" ({result.inside:.0%} of points inside)" if c == 0 else ""
        ax.set_title(title)
        ax.set_xlabel("time")
        ax.set_ylabel(ylabel)
    axes[0].legend(fontsize=7)
    return _common.finish(fig, path)
