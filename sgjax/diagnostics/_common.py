"""Shared pieces of the diagnostics: input checks, binomial tail probabilities and
quantiles (in JAX, vectorised), and figure handling."""

import math
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import betainc
from jaxtyping import Array

from .. import _plots
from .._stats import chi2_sf as chi2_sf


def posterior_samples(obj, fn: str, what: str = "samples") -> tuple[Any, tuple[str, ...] | None]:
    """The samples held by a posterior object (anything with a `.samples` attribute:
    [`sgjax.Posterior`][], [`sgjax.baselines.ReferencePosterior`][], ...), with the
    labels it carries if its samples are a stacked array; anything else unchanged."""
    if isinstance(obj, (Mapping, np.ndarray, jax.Array)) or not hasattr(obj, "samples"):
        return obj, None
    samples = obj.samples
    if samples is None:
        raise ValueError(
            f"`{fn}` needs posterior draws, and this {type(obj).__name__} (`{what}`) holds none: its head "
            "gives a point estimate, quantiles or model probabilities. Train a density head "
            "(Gaussian, MixtureDensity, Flow) and call sgjax.infer with n_samples."
        )
    labels = None if isinstance(samples, Mapping) else getattr(obj, "labels", None)
    return samples, labels


def _stack_named(theta: Mapping, names: tuple[str, ...], fn: str, what: str, shape: str) -> np.ndarray:
    """`theta[name]` for each name, stacked on a last axis; each entry must have the
    shape described by `shape` (its number of axes is checked by the caller)."""
    missing = [n for n in names if n not in theta]
    if missing:
        raise ValueError(
            f"`{fn}`: `{what}` has no entry for {missing}; it has {list(theta)}. Give {shape} for "
            f"every parameter of the posterior ({list(names)})."
        )
    arrays = [np.asarray(theta[n]) for n in names]
    shapes = {n: a.shape for n, a in zip(names, arrays)}
    if len(set(shapes.values())) != 1:
        raise ValueError(f"`{fn}`: every entry of `{what}` must have one shape, {shape}; got {shapes}.")
    return np.stack(arrays, axis=-1)


def check_samples(samples, truth, fn: str, labels: Sequence[str] | None = None) -> tuple[Array, Array, tuple[str, ...]]:
    """Posterior draws `(n, draws, k)`, true values `(n, k)` as JAX arrays, and the
    parameters' labels.

    `samples` is a posterior object (anything with a `.samples` mapping name →
    `(n, draws)`), such a mapping itself, or a stacked array `(n, draws, k)` (one
    parameter: `(n, draws)`) with optional `labels`. `truth` is a mapping name →
    `(n,)` (extra entries, e.g. fixed parameters, are ignored) or an array `(n, k)`
    (`(n,)`) in the samples' order."""
    samples, carried = posterior_samples(samples, fn)
    if isinstance(samples, Mapping):
        if labels is not None:
            raise TypeError(
                f"`{fn}` takes the labels from the names of the samples; `labels=` is only for stacked "
                "arrays. To check some parameters only, pass {name: samples[name] for name in ...}."
            )
        if not samples:
            raise ValueError(f"`{fn}` got no samples: the mapping of parameter name -> draws (n, draws) is empty.")
        labels = tuple(samples)
        samples = _stack_named(samples, labels, fn, "samples", "(n, draws)")
        if samples.ndim != 3:
            raise ValueError(
                f"`{fn}` needs the draws of each parameter as (n, draws) — n datasets, draws from each "
                f"posterior — got {samples.shape[:-1]}."
            )
        if not isinstance(truth, Mapping):
            raise TypeError(
                f"`{fn}` got named samples {list(labels)}, so `truth` must name its values too: a dict "
                f"name -> (n,), e.g. Simulation.theta or sgjax.unstack(y, {list(labels)}); got "
                f"{type(truth).__name__}."
            )
        truth = _stack_named(truth, labels, fn, "truth", "(n,)")
    else:
        labels = carried if labels is None else labels
        if isinstance(truth, Mapping):
            if labels is None:
                raise ValueError(
                    f"`{fn}` got `truth` as a dict, so it needs the names of the stacked samples' "
                    "columns: pass `labels=`, or the samples as a dict name -> (n, draws)."
                )
            truth = _stack_named(truth, tuple(labels), fn, "truth", "(n,)")
    samples, truth = jnp.asarray(samples), jnp.asarray(truth)
    if samples.ndim == 2:  # one parameter
        samples, truth = samples[..., None], (truth[:, None] if truth.ndim == 1 else truth)
    if samples.ndim != 3 or truth.ndim != 2:
        raise ValueError(
            f"`{fn}` needs `samples` of shape (n, draws, k) — n observations, draws from each "
            f"posterior, k parameters — and `truth` of shape (n, k); got {samples.shape} and "
            f"{truth.shape}. For one parameter, (n, draws) and (n,) also work; or pass a posterior "
            "(or a dict name -> (n, draws)) and `truth` as a dict name -> (n,)."
        )
    n, s, k = samples.shape
    if truth.shape != (n, k):
        raise ValueError(
            f"`samples` {samples.shape} holds draws for n={n} observations and k={k} parameters, "
            f"so `truth` must have shape ({n}, {k}); got {truth.shape}. Pass the true parameters "
            "behind each simulated observation, in the same order as the samples."
        )
    if n < 1 or s < 1 or k < 1:
        raise ValueError(f"`{fn}` needs at least one observation, draw and parameter; got samples {samples.shape}.")
    # On the host: an eager JAX reduction would compile for every new shape.
    if not (np.isfinite(np.asarray(samples)).all() and np.isfinite(np.asarray(truth)).all()):
        raise ValueError(
            f"`{fn}` got NaN or infinite values in `samples` or `truth`. Drop failed simulations "
            "(e.g. those with `Simulation.valid` False) and their posteriors first."
        )
    return samples, truth, check_labels(labels, k)


def check_labels(labels: Sequence[str] | None, k: int) -> tuple[str, ...]:
    if labels is None:
        return tuple(f"θ[{j}]" for j in range(k))
    labels = tuple(str(label) for label in labels)
    if len(labels) != k:
        raise ValueError(f"Got {len(labels)} labels {labels} for {k} parameters; give one label per parameter.")
    return labels


def check_level(value: float, name: str) -> float:
    value = float(value)
    if not 0.0 < value < 1.0:
        raise ValueError(f"`{name}` must lie strictly between 0 and 1, got {value}.")
    return value


# -- binomial tails ------------------------------------------------------------------
# Exact through the regularised incomplete beta function, evaluated by one jitted
# kernel of a fixed chunk shape, so that every use in a session (band edges,
# histogram bands, tail probabilities) shares a single compilation (~1-2 s on CPU);
# the rest is NumPy on the host. In float32 the tails are accurate to ~1e-3 relative
# for n ≤ 1000 (~2e-2 at n = 1e4): enough to draw bands, and the simultaneous band's
# level is set by simulation through these same functions, so it stays calibrated
# whatever their rounding.

_CHUNK = 4096


@jax.jit
def _betainc_kernel(a, b, x):
    return betainc(a, b, x)


def _betainc(a, b, x) -> np.ndarray:
    """The regularised incomplete beta function I_x(a, b) elementwise, a, b > 0."""
    a, b, x = np.broadcast_arrays(*(np.asarray(v, float) for v in (a, b, x)))
    shape, flat = a.shape, [v.ravel() for v in (a, b, x)]
    out = np.empty(a.size)
    dtype = jnp.result_type(float)
    for start in range(0, a.size, _CHUNK):
        part = [v[start : start + _CHUNK] for v in flat]
        size = len(part[0])
        padded = [np.pad(v, (0, _CHUNK - size), constant_values=0.5).astype(dtype) for v in part]
        out[start : start + size] = np.asarray(_betainc_kernel(*padded))[:size]
    return out.reshape(shape)


def binom_cdf(c, n: int, p) -> np.ndarray:
    """P(X ≤ c) for X ~ Binomial(n, p), `c` integer-valued."""
    c, p = np.broadcast_arrays(np.asarray(c, float), np.asarray(p, float))
    c_safe = np.clip(c, 0, n - 1)
    value = _betainc(n - c_safe, c_safe + 1, 1 - p)
    return np.where((c >= 0) & (c < n), value, np.where(c < 0, 0.0, 1.0))


def binom_tail(c, n: int, p) -> np.ndarray:
    """The smaller tail probability of a count, `min(P(X ≤ c), P(X ≥ c))`, with one
    incomplete beta evaluation: the lower tail below the mean, the upper one above
    (near the mean both are ≈ 1/2, far above any threshold in use)."""
    c, p = np.broadcast_arrays(np.asarray(c, float), np.asarray(p, float))
    below = c < n * p
    a = np.where(below, n - c, c)
    b = np.where(below, c + 1, n - c + 1)
    ok = (a > 0) & (b > 0)
    value = _betainc(np.where(ok, a, 1.0), np.where(ok, b, 1.0), np.where(below, 1 - p, p))
    return np.where(ok, value, 1.0)


def binom_deviance(c, n: int, p) -> np.ndarray:
    """A cheap proxy for how extreme a count is: the binomial deviance of `c`, moved
    half a count towards the mean (a continuity correction). Larger means a smaller
    tail probability, nearly monotonically across `p` (the signed root deviance is
    close to normal), so it picks the candidates whose exact tails are compared."""
    c, p = np.broadcast_arrays(np.asarray(c, float), np.asarray(p, float))
    mean = n * p
    c = np.where(c < mean, np.minimum(c + 0.5, mean), np.maximum(c - 0.5, mean))
    with np.errstate(divide="ignore", invalid="ignore"):
        lo = np.where(c > 0, c * np.log(c / mean), 0.0)
        hi = np.where(c < n, (n - c) * np.log((n - c) / (n - mean)), 0.0)
    return 2 * (lo + hi)


def binom_quantile(q, n: int, p, *, strict: bool = False) -> np.ndarray:
    """The smallest integer `c` in `0..n` with `P(X ≤ c) ≥ q` (or `> q` with
    `strict`), by a vectorised bisection of `⌈log2(n + 2)⌉` steps."""
    q, p = np.broadcast_arrays(np.asarray(q, float), np.asarray(p, float))
    lo, hi = np.full(q.shape, -1.0), np.full(q.shape, float(n))  # not ok(lo), ok(hi)
    for _ in range(math.ceil(math.log2(n + 2)) + 1):
        mid = np.floor((lo + hi) / 2)
        f = binom_cdf(mid, n, p)
        good = f > q if strict else f >= q
        lo, hi = np.where(good, lo, mid), np.where(good, mid, hi)
    return hi


def binom_band(n: int, p, mass: float) -> tuple[np.ndarray, np.ndarray]:
    """Central pointwise interval `(lower, upper)` of Binomial(n, p) counts holding at
    least `mass` (each tail at most `(1 − mass)/2`)."""
    tail = (1 - mass) / 2
    return binom_quantile(tail, n, p), binom_quantile(1 - tail, n, p)


# -- figures -------------------------------------------------------------------------


def finish(fig, path):
    """Lay out a figure; save it to `path` as a PNG if one is given. Returns it."""
    fig.tight_layout()
    if path is not None:
        _plots.save_figure(fig, path)
    return fig


def panels(k: int, width: float = 3.6, height: float = 3.0, max_cols: int = 4):
    """A figure with one axis per parameter, unused ones switched off."""
    plt = _plots._pyplot()
    cols = min(k, max_cols)
    rows = -(-k // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    for ax in axes.flat[k:]:
        ax.axis("off")
    return fig, list(axes.flat[:k])
