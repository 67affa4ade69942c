"""Amortized inference with a trained estimator: observed data checked against what
it was trained on, the posterior (`infer`) and its density (`log_prob`)."""

import json
import pathlib
import warnings
from collections.abc import Mapping
from typing import cast, Protocol

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import ArrayLike

from .._custom_types import check_key, Key
from .._io import read_csv
from ..datasets import Dataset
from ..nn.base import check_size
from ._estimator import Estimator
from ._posterior import Posterior, SAMPLE_LEVELS


# The heads' own capabilities, read duck-typed (a user's head may have them without
# subclassing sgjax's): the summaries say which one the head is.
class _QuantileHead(Protocol):
    levels: tuple[float, ...]


class _DensityHead(Protocol):
    def log_prob(self, out: jax.Array, y: jax.Array) -> jax.Array: ...


def _batched(a):
    """`(time,)` or `(time, channels)` → `(1, time, channels)`."""
    if a.ndim == 1:
        a = a[:, None]
    return a[None] if a.ndim == 2 else a


def prepare_observations(estimator: Estimator, x, mask):
    x = _batched(np.asarray(x, dtype=float))
    if x.ndim != 3:
        raise ValueError(f"Observations must be (time,), (time, channels) or (n, time, channels); got shape {x.shape}.")
    want = (estimator.in_time, estimator.in_channels)
    if x.shape[1:] != want:
        raise ValueError(
            f"The estimator was trained on series of {want[0]} times and {want[1]} channel(s); "
            f"got {x.shape[1]} times and {x.shape[2]} channel(s). Pad a shorter series to "
            f"{want[0]} times and pass `mask` with False where there is no observation."
        )
    if mask is None:
        if np.isnan(x).any():
            where = [tuple(int(i) for i in w) for w in np.argwhere(np.isnan(x))[:5]]
            raise ValueError(
                f"The observations contain NaN (e.g. at index {where}). To mark missing "
                "entries, pass `mask` (True where observed) — e.g. `mask = ~np.isnan(x)` "
                "— and the NaNs are ignored."
            )
        mask = np.ones(x.shape, bool)
    else:
        mask = _batched(np.asarray(mask, bool))
        if mask.shape != x.shape:
            raise ValueError(f"`mask` has shape {mask.shape} but the observations have shape {x.shape}.")
        if not mask.all() and not getattr(estimator.network, "mask_input", True):
            warnings.warn(
                f"{int((~mask).sum())} entries are missing, but this estimator was trained on "
                "fully observed simulations and its network does not read the mask: missing "
                "entries count as the standardised mean. Train with missingness in the "
                "observation model (e.g. MissingAtRandom) to infer from incomplete series.",
                stacklevel=3,
            )
    _check_values(estimator, x, mask)
    x = np.where(mask, x, 0.0)
    return jnp.asarray(x, jnp.result_type(float)), jnp.asarray(mask)


def _check_values(estimator: Estimator, x: np.ndarray, mask: np.ndarray) -> None:
    """Refuse observed entries (`mask` True; masked ones may hold anything) that are
    not finite, or that the estimator cannot read: negative or fractional counts for
    count noise (as the task's description records it), values at or below -1 where
    it standardises `log1p(x)`. Each would give a NaN or meaningless posterior
    without an error."""
    with np.errstate(invalid="ignore"):
        checks = [(~np.isfinite(x), "but observed entries must be finite: set `mask` False where a value is missing")]
        if estimator.counts:
            why = "but this estimator was trained on count noise, whose observations are whole numbers >= 0"
            checks.append(((x < 0) | (x != np.round(x)), why))
        if estimator.standardise.log1p:
            why = (
                "but this estimator standardises log1p(x) (sgjax.fit's choice for non-negative data such "
                "as counts), which is -inf or NaN at or below -1"
            )
            checks.append((x <= -1, why))
    for bad, why in checks:
        bad = bad & mask
        if bad.any():
            i, t, c = (int(v) for v in np.argwhere(bad)[0])
            times = estimator.times
            when = f" at time {times[t]:g}" if times is not None else ""
            raise ValueError(
                f"Observation x[{i}, {t}, {c}] (series {i}, channel {c}{when}) is {x[i, t, c]:g}, {why} "
                f"({int(bad.sum())} observed entries like it). Check the data."
            )


def check_times(estimator: Estimator, times, source: str = "The data") -> None:
    """Refuse observations at other times than the estimator was trained on.

    **Arguments:**

    - `estimator`: a trained [`sgjax.Estimator`][].
    - `times`: the observation times of the data, one per row.
    - `source`: what the data are, for the message (e.g. the CSV's path).

    **Raises:** `ValueError` naming the first differing time and the training grid.
    Nothing is checked where the task's description does not record its times
    ([`sgjax.AbstractTask.describe`][] without `"ts"`).
    """
    want = estimator.times
    times = np.asarray(times, float).reshape(-1)
    if want is None or (times.shape == want.shape and np.allclose(times, want)):
        return
    n = min(len(times), len(want))
    differ = np.flatnonzero(~np.isclose(times[:n], want[:n]))
    problems = [f"has {len(times)} rows, not {len(want)}"] if len(times) != len(want) else []
    if len(differ):
        i = differ[0]
        problems.append(f"its row {i + 1} is at time {times[i]:g} where the training grid has {want[i]:g}")
    raise ValueError(
        f"{source} {' and '.join(problems)}: the estimator was trained on observations at {_grid(want)}. "
        "Give one row per training time, in order, with empty cells where a value is missing."
    )


def _grid(ts: np.ndarray) -> str:
    """`ts` in a few words: `14 times 1, 2, ..., 14 (every 1)`."""
    if len(ts) <= 4:
        return f"{len(ts)} times " + ", ".join(f"{t:g}" for t in ts)
    step = np.diff(ts)
    every = f" (every {step[0]:g})" if np.allclose(step, step[0]) else ""
    return f"{len(ts)} times {ts[0]:g}, {ts[1]:g}, ..., {ts[-1]:g}{every}"


@eqx.filter_jit
def _summaries(estimator: Estimator, x, mask, inputs, key, n_samples: int):
    out = jax.vmap(estimator)(x, mask, inputs)
    k = estimator.y_mean.shape[0]
    keys = None if key is None else jax.random.split(key, x.shape[0])
    summarise = lambda o, kk: estimator.head.summarise(o, k, kk, n_samples)  # noqa: E731
    s = jax.vmap(summarise)(out, keys) if keys is not None else jax.vmap(lambda o: summarise(o, None))(out)
    if estimator.n_classes:
        return s
    return {name: estimator.to_natural(v) for name, v in s.items()}


def _observed(estimator: Estimator, x, mask):
    """Observations (an array, a `Dataset`, or the path of a CSV) as a checked batch
    with a mask; the times of a CSV or a `Dataset` are checked against the
    training grid."""
    if isinstance(x, (str, pathlib.Path, Dataset)):
        if mask is not None:
            raise ValueError(
                "A CSV file or a Dataset carries its own missing entries (empty cells, `Dataset.mask`); "
                "do not pass `mask` with it."
            )
        if isinstance(x, Dataset):
            source, (times, x, mask) = f"The dataset from {x.path.name}", (x.times, x.observations, x.mask)
        else:
            source, (times, x, mask) = str(x), read_csv(x)
        check_times(estimator, times, source)
    return prepare_observations(estimator, x, mask)


def known_inputs(estimator: Estimator, inputs, n: int):
    """`inputs` (name → scalar or `(n,)`) as the `(n, k_in)` array the estimator
    reads, in the order of `estimator.inputs`; `None` for an estimator without
    inputs. Refuses missing, unknown or misshapen entries by name."""
    names = estimator.inputs
    if not names:
        if inputs:
            raise ValueError(
                f"This estimator was trained without known inputs, so it cannot read `inputs` ({', '.join(inputs)}); "
                "train with sgjax.Task(..., inputs=(...)) to pass them, or leave `inputs` out."
            )
        return None
    if not isinstance(inputs, Mapping):
        raise TypeError(
            f"This estimator reads the known inputs {', '.join(names)} beside the series: pass `inputs`, a dict "
            f"with one value per input, e.g. inputs={{{names[0]!r}: ...}}; got {type(inputs).__name__}."
        )
    missing, extra = [k for k in names if k not in inputs], [k for k in inputs if k not in names]
    if missing or extra:
        problems = [f"missing {missing}"] * bool(missing) + [f"unknown {extra}"] * bool(extra)
        raise ValueError(
            f"`inputs` must have exactly one entry per known input of the estimator ({', '.join(names)}); "
            + "; ".join(problems)
            + "."
        )
    columns = []
    for k in names:
        v = np.asarray(inputs[k], dtype=float)
        if v.ndim > 1 or (v.ndim == 1 and len(v) != n):
            raise ValueError(f"`inputs[{k!r}]` must be a scalar or have shape ({n},), one per series; got {v.shape}.")
        if not np.all(np.isfinite(v)):
            raise ValueError(f"`inputs[{k!r}]` must be finite, got {v}.")
        columns.append(np.broadcast_to(v, (n,)))
    return jnp.asarray(np.stack(columns, axis=1), estimator.y_mean.dtype)


def infer(
    estimator: Estimator,
    x,
    mask=None,
    *,
    inputs: Mapping[str, ArrayLike] | None = None,
    key: Key | None = None,
    n_samples: int = 2000,
) -> Posterior:
    """Amortized inference: the posterior for one or many observed series in one call.

    **Arguments:**

    - `estimator`: a trained [`sgjax.Estimator`][].
    - `x`: observations: `(time,)`, `(time, channels)` or `(n, time, channels)`; or the
        path of a CSV file with a `time` column and one column per channel; or an
        [`sgjax.datasets.Dataset`][]. The times of a CSV or a dataset must be the
        training times (`estimator.times`).
    - `mask`: `True` where observed (same shape as `x`); missing entries may hold
        anything, even NaN. Without it, NaN in `x` is an error.
    - `inputs`: the known per-dataset inputs of an estimator trained with them
        (`estimator.inputs`, from `Task(..., inputs=...)`): a dict with one entry per
        input, each a scalar (the same for every series) or `(n,)` (one per series),
        in natural units. `None` for an estimator without inputs.
    - `key`: a PRNG key (keyword-only), required for a density head (`Gaussian`,
        `MixtureDensity`, `Flow`), whose posterior samples it draws; other heads
        ignore it. One key gives the same samples every call.
    - `n_samples`: posterior samples per series (density heads), at least 1.

    **Returns:** a [`sgjax.Posterior`][]: samples (density heads) name → `(n,
    n_samples)`, point estimates and quantiles name → `(n,)`, credible intervals
    (`posterior.interval(0.9)`), or model probabilities (model selection). It
    records the known `inputs` (name → `(n,)`), which `posterior.theta(i)` adds to
    the draws for [`sgjax.simulate`][].

    **Example:**

    ```python
    posterior = sgjax.infer(estimator, "data.csv", key=jax.random.key(1))
    # an estimator trained with Task(..., inputs=("N",)): the town's known size
    posterior = sgjax.infer(estimator, x, inputs={"N": 763}, key=jax.random.key(1))
    ```

    **Raises:** `TypeError` without `key` for a density head. `ValueError` for missing
    or unknown `inputs`, or `inputs` given to an estimator trained without. `ValueError` for data the
    estimator cannot read: other times than the training grid, non-finite observed
    entries, negative or fractional counts for an estimator trained on count noise,
    negative values where it standardises `log1p(x)`.
    """
    if not isinstance(estimator, Estimator):
        raise TypeError(
            f"`estimator` must be an sgjax.Estimator (from sgjax.fit or sgjax.load), got {type(estimator).__name__}."
        )
    n_samples = check_size(n_samples, "n_samples")
    density = estimator.head.is_density
    if key is not None:
        check_key(key)
    x, mask = _observed(estimator, x, mask)
    if key is None and density:
        raise TypeError(
            f"This estimator's {type(estimator.head).__name__} head draws posterior samples, so `infer` needs a "
            "PRNG key: pass key=jax.random.key(seed) (keyword-only). The same key gives the same samples."
        )
    u = known_inputs(estimator, inputs, x.shape[0])
    # The inputs as given (float64), for `Posterior.theta`; `known_inputs` checked them.
    given = None
    if u is not None:
        assert inputs is not None  # known_inputs refuses None for an estimator with inputs
        given = {k: np.broadcast_to(np.asarray(inputs[k], float), (x.shape[0],)).copy() for k in estimator.inputs}
    s = jax.tree.map(np.asarray, _summaries(estimator, x, mask, u, key if density else None, n_samples))
    labels = estimator.labels
    if estimator.n_classes:
        return Posterior(
            labels=labels, point=None, quantiles={}, samples=None, probabilities=s["probabilities"], inputs=given
        )
    named = lambda a: {label: a[..., j] for j, label in enumerate(labels)}  # noqa: E731
    quantiles, samples, point = {}, None, None
    if "samples" in s:
        samples = named(s["samples"])
        point = named(s["samples"].mean(axis=1))
        qs = np.quantile(s["samples"], SAMPLE_LEVELS, axis=1)
        quantiles = {lvl: named(q) for lvl, q in zip(SAMPLE_LEVELS, qs)}
    elif "quantiles" in s:
        quantiles = {
            lvl: named(s["quantiles"][:, i]) for i, lvl in enumerate(cast(_QuantileHead, estimator.head).levels)
        }
        point = quantiles.get(0.5)
    if "mean" in s and samples is None:
        point = named(s["mean"])
    recorded = json.loads(estimator.info).get("parameters")
    parameters = None if recorded is None else tuple(p for p in labels if p in recorded)
    return Posterior(
        labels=labels,
        point=point,
        quantiles=quantiles,
        samples=samples,
        probabilities=None,
        parameters=parameters,
        inputs=given,
    )


@eqx.filter_jit
def _log_prob(estimator: Estimator, x, mask, inputs, theta):
    def one(x, mask, inputs, theta):  # theta (m, k): m values for one series
        out = estimator(x, mask, inputs)
        z = jnp.stack([s.forward(theta[:, i]) for i, s in enumerate(estimator.spaces)], axis=-1)
        # d(learning space)/d(natural), per component: the change of variables.
        jac = jnp.stack([jax.vmap(jax.grad(s.forward))(theta[:, i]) for i, s in enumerate(estimator.spaces)], axis=-1)
        std = (z - estimator.y_mean) / estimator.y_std
        head = cast(_DensityHead, estimator.head)  # `log_prob` checked the head has a density
        lp = jax.vmap(lambda zz: head.log_prob(out, zz))(std)
        return lp - jnp.sum(jnp.log(estimator.y_std)) + jnp.sum(jnp.log(jnp.abs(jac)), axis=-1)

    return jax.vmap(one)(x, mask, inputs, theta)


def log_prob(
    estimator: Estimator, theta: Mapping[str, ArrayLike], x, mask=None, *, inputs: Mapping[str, ArrayLike] | None = None
) -> np.ndarray:
    """The approximate posterior log density `log q(θ | x)` in natural units, for
    estimators whose head is a density (`Gaussian`, `MixtureDensity`, `Flow`).

    The argument order is that of [`sgjax.baselines.log_likelihood`][]`(simulator,
    theta, x, mask)`.

    **Arguments:**

    - `estimator`: a trained [`sgjax.Estimator`][] with a density head.
    - `theta`: θ in natural units, a dict with one entry per target (`estimator.labels`,
        no more, no fewer). For one series each entry is a scalar or `(m,)` values.
        For a batch of `n` series the first axis is the series: each entry is a
        scalar (the same value for every series), `(n,)` (one value per series, as a
        true θ), or `(n, m)` / `(1, m)` (`m` values per series, e.g.
        `posterior.samples`). Entries broadcast against each other.
    - `x`, `mask`: the observed series, as for [`sgjax.infer`][].
    - `inputs`: the known per-dataset inputs, as for [`sgjax.infer`][].

    **Returns:** log densities of θ's shape: `()` or `(m,)` for one series, `(n,)` or
    `(n, m)` for a batch; `-inf` outside the target's support.

    **Raises:** `TypeError` for θ that is not a dict (a stacked array: use
    [`sgjax.unstack`][]`(array, estimator.labels)`); `ValueError` for missing or extra
    entries or shapes that do not fit the series.
    """
    if not isinstance(estimator, Estimator):
        raise TypeError(f"`estimator` must be an sgjax.Estimator, got {type(estimator).__name__}.")
    if not hasattr(estimator.head, "log_prob") or not estimator.head.is_density:
        raise ValueError(
            f"The {type(estimator.head).__name__} head gives no density; train with a density head "
            "(sgjax.heads.Gaussian(), MixtureDensity() or Flow()) to evaluate log densities."
        )
    labels = estimator.labels
    if not isinstance(theta, Mapping):
        raise TypeError(
            f"`theta` must be a dict mapping each target ({', '.join(labels)}) to its values, got "
            f"{type(theta).__name__}; for a stacked array (..., {len(labels)}) pass "
            "sgjax.unstack(array, estimator.labels)."
        )
    missing, extra = [n for n in labels if n not in theta], [n for n in theta if n not in labels]
    if missing or extra:
        raise ValueError(
            f"`theta` must have exactly one entry per target of the estimator ({', '.join(labels)}); "
            + "; ".join(
                m for m in (f"missing {missing}" if missing else "", f"not targets: {extra}" if extra else "") if m
            )
            + "."
        )
    one_series = isinstance(x, (str, pathlib.Path, Dataset)) or np.ndim(x) <= 2
    x, mask = _observed(estimator, x, mask)
    n = x.shape[0]
    values = [np.asarray(theta[name], dtype=float) for name in labels]
    rank = max(v.ndim for v in values)
    try:
        if one_series:
            if rank > 1:
                raise ValueError
            shape = np.broadcast_shapes(*(v.shape for v in values))
            full = [np.broadcast_to(v, shape).reshape(1, -1) for v in values]
        else:
            if rank > 2:
                raise ValueError
            # The series axis first: a scalar or (n,) is one value per series.
            padded = [v.reshape(v.shape + (1,) * (2 - v.ndim)) if v.ndim else v.reshape(1, 1) for v in values]
            target = np.broadcast_shapes((n, 1), *(v.shape for v in padded))
            if target[0] != n:
                raise ValueError
            shape = target if rank == 2 else (n,)
            full = [np.broadcast_to(v, target) for v in padded]
    except ValueError:
        got = ", ".join(f"{name}: {v.shape}" for name, v in zip(labels, values))
        want = "scalars or (m,)" if one_series else f"scalars, (n,), (n, m) or (1, m) with n = {n} series first"
        raise ValueError(f"The entries of `theta` must be {want}, and broadcast together; got {got}.") from None
    stacked = jnp.asarray(np.stack(full, axis=-1), estimator.y_mean.dtype)
    # Outside a component's support the learning-space map is clipped flat, so the
    # change of variables has a zero Jacobian there and the log density is -inf.
    u = known_inputs(estimator, inputs, n)
    lp = np.asarray(_log_prob(estimator, x, mask, u, stacked))
    lp = np.where(np.isfinite(lp), lp, -np.inf)
    return lp.reshape(shape)
