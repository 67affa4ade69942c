"""Rejection ABC: simulate from the prior, keep the draws whose data lie nearest each
observed series. Streams over chunks of simulations with a running top-k per dataset,
so memory stays bounded for many datasets × many simulations."""

import math
import warnings
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Bool, Float

from .._custom_types import check_key, Key
from .._simulation import Prior, simulate, Simulator
from ._likelihood import check_data, Unconstrained
from ._samples import AbstractSamples


#: Simulations per chunk: the top-k merge holds `n_datasets × (n_accept + chunk)`
#: distances at a time.
DEFAULT_CHUNK_SIZE = 8192


class ABCPosterior(AbstractSamples):
    """Rejection-ABC samples for a batch of `n` datasets (NumPy arrays, dataset
    first, natural units).

    **Fields:**

    - `samples`: free parameter name → `(n, n_accept)`, the accepted prior draws,
        nearest first. Fixed parameters of the prior are left out.
    - `distance`: `(n, n_accept)`, their distances to the observed series, ascending.
    - `epsilon`: `(n,)`, the tolerance each dataset ended with: its largest accepted
        distance.
    - `n_simulations`: the simulations drawn (failed ones included).
    - `n_failed`: simulations dropped because the solve failed or gave non-finite
        values.

    **Methods:** those of every [`sgjax.AbstractPosterior`][]: `mean()`, `std()`,
    `quantile(q)`, `interval(mass)`, `box(i)`, `theta(i)`, `stacked()`.
    """

    samples: dict[str, np.ndarray]
    distance: np.ndarray
    epsilon: np.ndarray
    n_simulations: int = eqx.field(static=True)
    n_failed: int = eqx.field(static=True)


def _log1p(x):
    return jnp.log1p(jnp.maximum(x, 0.0))


def _identity(x):
    return x


def _default_transform(simulator):
    """`log1p` for counts (it tames the scale of epidemic peaks), the identity
    otherwise. Module-level functions, so that repeated calls reuse compiled code."""
    if simulator.observation is not None and simulator.observation.noise.is_count:
        return _log1p
    return _identity


@eqx.filter_jit
def _scale_series(transform, x, mask, valid):
    """The std over valid simulations of each transformed entry, 1 where it is
    constant (then it cannot rank simulations anyway)."""
    s = transform(x)
    w = (mask & valid[:, None, None]).astype(s.dtype)
    count = jnp.maximum(w.sum(0), 1.0)
    mean = (w * s).sum(0) / count
    sd = jnp.sqrt((w * (s - mean) ** 2).sum(0) / count)
    return jnp.where(sd > 0, sd, 1.0)


@eqx.filter_jit
def _scale_summary(summary, x, valid):
    s = jax.vmap(summary)(x)
    w = valid[:, None].astype(s.dtype)
    count = jnp.maximum(w.sum(0), 1.0)
    mean = (w * s).sum(0) / count
    sd = jnp.sqrt((w * (s - mean) ** 2).sum(0) / count)
    return jnp.where(sd > 0, sd, 1.0)


def _merge(best_d, best_theta, d, theta):
    """Keep the `k` smallest of the current best and a new chunk's distances, for
    every dataset: best_d `(n, k)`, best_theta `(n, k, p)`, d `(n, chunk)`, theta
    `(chunk, p)`."""
    k = best_d.shape[1]
    _, idx = jax.lax.top_k(-jnp.concatenate([best_d, d], axis=1), k)
    new_d = jnp.take_along_axis(jnp.concatenate([best_d, d], axis=1), idx, axis=1)
    old = jnp.take_along_axis(best_theta, jnp.minimum(idx, k - 1)[..., None], axis=1)
    new = theta[jnp.maximum(idx - k, 0)]
    return new_d, jnp.where((idx < k)[..., None], old, new)


@eqx.filter_jit
@eqx.debug.assert_max_traces(max_traces=None)  # counts compilations for the tests
def _step_series(transform, best_d, best_theta, s_obs, m_obs, scale, x, m, theta, valid):
    """Default summary: the transformed series, each entry standardised; entries
    missing in either series are left out of the distance."""
    z = transform(x) / scale  # (chunk, time, channels)
    z_obs = s_obs / scale  # (n, time, channels)

    def one(z_obs, m_obs):
        w = m_obs & m  # (chunk, time, channels)
        return jnp.sqrt(jnp.sum(jnp.where(w, (z - z_obs) ** 2, 0.0), axis=(1, 2)))

    d = jax.lax.map(lambda a: one(*a), (z_obs, m_obs))  # (n, chunk), one dataset at a time
    return _merge(best_d, best_theta, jnp.where(valid, d, jnp.inf), theta)


@eqx.filter_jit
@eqx.debug.assert_max_traces(max_traces=None)  # counts compilations for the tests
def _step_summary(summary, shared, best_d, best_theta, s_obs, m_obs, scale, x, theta, valid):
    """User summary of each simulated series after zeroing the entries the observed
    series misses; computed once per simulation when every dataset has the same
    mask (`shared`), else once per dataset × simulation."""

    def dist_to(s_obs, s):
        return jnp.sqrt(jnp.sum(((s - s_obs) / scale) ** 2, axis=-1))

    if shared:
        s = jax.vmap(summary)(jnp.where(m_obs[0], x, 0.0))
        d = jax.vmap(dist_to, in_axes=(0, None))(s_obs, s)
    else:

        def one(a):
            s_obs, m_obs = a
            return dist_to(s_obs, jax.vmap(summary)(jnp.where(m_obs, x, 0.0)))

        d = jax.lax.map(one, (s_obs, m_obs))
    return _merge(best_d, best_theta, jnp.where(valid, d, jnp.inf), theta)


def _check_summary(summary, shape, dtype):
    if not callable(summary):
        raise TypeError(
            f"`summary` must be a function of one series (time, channels) -> vector, got {type(summary).__name__}."
        )
    try:
        out = jax.eval_shape(summary, jax.ShapeDtypeStruct(shape, dtype))
    except Exception as e:
        raise ValueError(
            f"`summary` failed on one series of shape {shape} (time, channels): {e}. It "
            "must be a jittable function of one series, e.g. lambda x: x.sum(keepdims=True)."
        ) from e
    if not isinstance(out, jax.ShapeDtypeStruct) or math.prod(out.shape) == 0:
        raise ValueError(
            f"`summary` must return one array of statistics for one series (flattened "
            f"to a vector), got {getattr(out, 'shape', type(out).__name__)}; e.g. "
            "lambda x: x.sum(keepdims=True)."
        )


class _Flat(eqx.Module):
    """A user summary with its output flattened to a vector."""

    summary: Callable = eqx.field(static=True)

    def __call__(self, x):
        return jnp.ravel(self.summary(x))


def _check_int(value, name):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")
    return int(value)


def rejection_abc(
    simulator: Simulator,
    x: Float[ArrayLike, "*n time channels"],
    mask: Bool[ArrayLike, "*n time channels"] | None = None,
    *,
    prior: Prior,
    key: Key,
    n_simulations: int = 100_000,
    n_accept: int | None = None,
    quantile: float | None = None,
    summary: Callable[[Float[Array, "time channels"]], Float[Array, " d"]] | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> ABCPosterior:
    """Rejection ABC for each dataset: draw `n_simulations` parameter sets from the
    prior, simulate each through the simulator (noise included), and keep the
    `n_accept` draws whose data lie nearest the observed series.

    The distance is Euclidean between summaries, each component divided by its
    standard deviation over the first chunk of simulations. The default summary is
    the whole series — after `log1p` for a count noise model — with entries the
    observed series misses (mask `False`) left out of the distance. A user `summary`
    sees one series `(time, channels)` with those entries zeroed, in the simulated
    and the observed series alike. Simulations that fail are dropped. The prior
    draws are shared by every dataset; each keeps a running top-`n_accept` over
    chunks of `chunk_size` simulations, so memory is bounded whatever
    `n_simulations`.

    **Arguments:**

    - `simulator`: the [`sgjax.Simulator`][].
    - `x`: one series `(time, channels)` or a batch `(n, time, channels)`.
    - `mask`: `True` where observed, broadcastable to `x`; `None` observes all.
    - `prior`: an [`sgjax.Prior`][] over every parameter the simulator reads.
    - `key`: a JAX PRNG key.
    - `n_simulations`: prior draws to simulate.
    - `n_accept`: draws to keep per dataset (default 1000); or give `quantile`.
    - `quantile`: the fraction of simulations to keep, instead of `n_accept`.
    - `summary`: a jittable function of one series `(time, channels)` returning an
        array of statistics (flattened to a vector), e.g.
        `lambda x: x.sum(keepdims=True)`; `None` for the default. The stream is
        compiled once per call for a given function object.
    - `chunk_size`: simulations per chunk.

    **Returns:** an [`sgjax.baselines.ABCPosterior`][].

    **Example:**

    ```python
    post = rejection_abc(sim, x, prior=prior, key=jax.random.key(0), quantile=0.01)
    post.mean()["beta"], post.epsilon
    ```
    """
    if not isinstance(simulator, Simulator):
        raise TypeError(f"`simulator` must be an sgjax.Simulator, got {type(simulator).__name__}.")
    if not isinstance(prior, Prior):
        raise TypeError(f"`prior` must be an sgjax.Prior, got {type(prior).__name__}.")
    prior.check_model(simulator.model, simulator.param_names, support=simulator.parameter_support)
    check_key(key)
    n_simulations = _check_int(n_simulations, "n_simulations")
    chunk_size = _check_int(chunk_size, "chunk_size")
    if n_accept is not None and quantile is not None:
        raise ValueError("Give either `n_accept` or `quantile`, not both.")
    if quantile is not None:
        if not 0.0 < quantile <= 1.0:
            raise ValueError(f"`quantile` must be in (0, 1], got {quantile!r}.")
        n_accept = max(1, round(quantile * n_simulations))
    n_accept = _check_int(1000 if n_accept is None else n_accept, "n_accept")
    if n_accept > n_simulations:
        raise ValueError(
            f"`n_accept`={n_accept} is more than `n_simulations`={n_simulations}: "
            "simulate more, or accept fewer (e.g. quantile=0.01)."
        )
    free = Unconstrained(prior).free
    x, mask = check_data(simulator, x, mask)
    x = jnp.where(mask, x, 0.0)
    n, time, channels = x.shape
    if summary is not None:
        _check_summary(summary, (time, channels), x.dtype)
        summary = _Flat(summary)

    size = min(chunk_size, n_simulations)
    n_chunks = -(-n_simulations // size)
    keys = jax.random.split(key, n_chunks)
    best_d = jnp.full((n, n_accept), jnp.inf, x.dtype)
    best_theta = jnp.full((n, n_accept, len(free)), jnp.nan, x.dtype)
    transform = _default_transform(simulator)
    shared = bool(jnp.all(mask == mask[:1]))
    n_failed = 0
    scale = s_obs = None
    for i in range(n_chunks):
        with warnings.catch_warnings():  # failures are counted and reported once below
            warnings.simplefilter("ignore", UserWarning)
            sims = simulate(simulator, key=keys[i], n=size, prior=prior, resample_failed=False, keep_states=False)
        # The last chunk has the compiled size; draws beyond n_simulations are unused.
        valid = np.asarray(sims.valid) & (np.arange(size) < n_simulations - i * size)
        n_failed += int(np.sum(~np.asarray(sims.valid)[: n_simulations - i * size]))
        theta = jnp.stack([jnp.asarray(sims.theta[name]) for name in free], axis=-1)
        xs = jnp.asarray(sims.observations, x.dtype)
        if scale is None:
            if summary is None:
                scale = _scale_series(transform, xs, jnp.asarray(sims.mask), jnp.asarray(valid))
                s_obs = transform(x)
            else:
                scale = _scale_summary(summary, xs, jnp.asarray(valid))
                s_obs = jax.vmap(summary)(x)
        if summary is None:
            best_d, best_theta = _step_series(
                transform, best_d, best_theta, s_obs, mask, scale, xs, jnp.asarray(sims.mask), theta, jnp.asarray(valid)
            )
        else:
            best_d, best_theta = _step_summary(
                summary, shared, best_d, best_theta, s_obs, mask, scale, xs, theta, jnp.asarray(valid)
            )
    best_d, best_theta = np.asarray(best_d), np.asarray(best_theta)
    n_valid = n_simulations - n_failed
    if n_valid < n_accept:
        raise RuntimeError(
            f"Only {n_valid} of {n_simulations} simulations succeeded, fewer than "
            f"n_accept={n_accept}. Simulate more, tighten the prior, or raise the "
            "simulator's `max_steps`."
        )
    if n_failed:
        warnings.warn(
            f"{n_failed} of {n_simulations} simulations failed (solver failure or "
            "non-finite values) and were dropped, i.e. ABC sampled the prior restricted "
            "to where the simulator works.",
            stacklevel=2,
        )
    return ABCPosterior(
        samples={name: best_theta[..., j] for j, name in enumerate(free)},
        distance=best_d,
        epsilon=best_d[:, -1],
        n_simulations=n_simulations,
        n_failed=n_failed,
    )
