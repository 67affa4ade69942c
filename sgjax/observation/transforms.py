"""Deterministic transforms of the clean signal: reporting, delays, day-of-week,
clamping."""

from typing import ClassVar

import equinox as eqx
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
from jaxtyping import Array, ArrayLike, Float
from numpyro.distributions import constraints

from .base import AbstractTransform, check_param, get, ParamLike


class Reporting(AbstractTransform):
    """Only a fraction of events is reported: `mean = fraction × signal`.

    **Arguments:** `fraction` in [0, 1], a number or a parameter name (to give it a
    prior).
    """

    fraction: ParamLike
    supports: ClassVar = {"fraction": constraints.unit_interval}

    def __check_init__(self):
        check_param(self.fraction, "Reporting fraction", low=0.0, high=1.0)

    def __call__(self, signal, theta, ts):
        return signal * get(self.fraction, theta)

    def default_priors(self):
        if isinstance(self.fraction, str):
            return {self.fraction: dist.Uniform(0.1, 1.0)}
        return {}


class Scale(AbstractTransform):
    """The expected observation is the signal times a positive factor: `mean = factor
    × signal`, with no upper bound — a catchability (an abundance index proportional
    to biomass), a change of units, or a multiplier whose prior reaches above 1. For a
    fraction of events reported, use [`sgjax.observation.Reporting`][], whose
    parameter stays in [0, 1].

    **Arguments:** `factor` (≥ 0), a number or a parameter name (to give it a prior).
    """

    factor: ParamLike
    supports: ClassVar = {"factor": constraints.nonnegative}

    def __check_init__(self):
        check_param(self.factor, "Scale factor", low=0.0)

    def __call__(self, signal, theta, ts):
        return signal * get(self.factor, theta)


class Clamp(AbstractTransform):
    """Clamp the expected observation to `[lower, upper]`: e.g. `Clamp(1e-6)` before
    [`sgjax.observation.LogNormal`][] noise, which needs a positive median, so that a
    signal that reaches zero (or a hair below it, from solver error) gives a tiny
    positive median instead of NaN.

    **Arguments:**

    - `lower`: the smallest value passed on (a number); `None` for no lower bound.
    - `upper`: the largest value passed on (a number); `None` (default) for none.

    **Example:** `ObservationModel(LogNormal("sigma"), (Clamp(1e-6),))`.
    """

    lower: float | None = eqx.field(static=True, default=None)
    upper: float | None = eqx.field(static=True, default=None)

    def __check_init__(self):
        for name in ("lower", "upper"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, str) or not np.isfinite(float(v))):
                raise ValueError(f"Clamp's `{name}` must be a finite number or None, got {v!r}.")
        if self.lower is None and self.upper is None:
            raise ValueError("Clamp needs `lower`, `upper` or both, e.g. Clamp(1e-6).")
        if self.lower is not None and self.upper is not None and not float(self.lower) < float(self.upper):
            raise ValueError(f"Clamp needs lower < upper, got ({self.lower}, {self.upper}).")

    def __call__(self, signal, theta, ts):
        return jnp.clip(signal, self.lower, self.upper)


def _regular(ts, what):
    d = np.diff(np.asarray(ts))
    if d.size and not np.allclose(d, d[0], rtol=1e-6):
        raise ValueError(
            f"{what} assumes equally spaced observation times (one lag = one interval), "
            "but `ts` is irregular. Use a regular grid or drop this transform."
        )


class Delay(AbstractTransform):
    """Events are reported after a delay: `mean_t = Σ_l kernel[l] × signal_{t-l}`, a
    causal convolution along time (lag `l` = `l` observation intervals). Events
    delayed past the last observation are lost, as in real reporting.

    **Arguments:** `kernel`, the probabilities of delays 0, 1, 2, ... intervals
    (non-negative, summing to at most 1). Build one from a distribution with
    [`sgjax.observation.Delay.from_distribution`][].
    """

    kernel: Float[Array, " lags"]

    def __init__(self, kernel: ArrayLike):
        k = np.asarray(kernel, dtype=float)
        if k.ndim != 1 or k.size == 0:
            raise ValueError(f"The delay kernel must be a non-empty 1-D array, got shape {k.shape}.")
        if np.any(k < 0) or not np.isfinite(k).all() or k.sum() > 1 + 1e-6:
            raise ValueError(
                f"The delay kernel must hold non-negative probabilities summing to at "
                f"most 1, got {k} (sum {k.sum():.4g})."
            )
        self.kernel = jnp.asarray(k, dtype=jnp.result_type(float))

    @classmethod
    def from_distribution(cls, distribution: dist.Distribution, max_lag: int) -> "Delay":
        """Discretise a continuous delay distribution (e.g. `dist.Gamma(2., 1.)`, in
        units of the observation interval): `kernel[l] = F(l + 1) - F(l)` for
        `l < max_lag`."""
        edges = jnp.arange(max_lag + 1, dtype=float)
        cdf = np.array(distribution.cdf(edges))
        cdf[0] = 0.0
        return cls(np.diff(cdf))

    def check(self, ts):
        _regular(ts, "Delay")

    def __call__(self, signal, theta, ts):
        lags = self.kernel.shape[0]
        padded = jnp.pad(signal, ((lags - 1, 0), (0, 0)))
        # out[t] = Σ_l kernel[l] signal[t - l]
        windows = jnp.stack([padded[lags - 1 - l : lags - 1 - l + signal.shape[0]] for l in range(lags)])
        return jnp.tensordot(self.kernel, windows, axes=1)


class DayOfWeek(AbstractTransform):
    """Multiplicative day-of-week reporting effects, normalised to average 1.

    **Arguments:**

    - `effects`: seven non-negative factors, Monday first.
    - `weekday_at_zero`: the weekday of time `t = 0` (0 = Monday). The day of an
        observation at time `t` is `(floor(t) + weekday_at_zero) mod 7`.
    """

    effects: Float[Array, "7"]
    weekday_at_zero: int = eqx.field(static=True)

    def __init__(self, effects: ArrayLike, weekday_at_zero: int = 0):
        e = np.asarray(effects, dtype=float)
        if e.shape != (7,) or np.any(e < 0) or not e.sum() > 0:
            raise ValueError(f"Day-of-week effects must be 7 non-negative factors with a positive sum, got {e}.")
        if not 0 <= int(weekday_at_zero) < 7:
            raise ValueError(f"`weekday_at_zero` must be 0..6 (0 = Monday), got {weekday_at_zero}.")
        self.effects = jnp.asarray(7 * e / e.sum(), dtype=jnp.result_type(float))
        self.weekday_at_zero = int(weekday_at_zero)

    def __call__(self, signal, theta, ts):
        day = (jnp.floor(ts).astype(int) + self.weekday_at_zero) % 7
        return signal * self.effects[day][:, None]
