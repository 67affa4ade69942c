"""A trained SGNN as amortized Bayesian inference: the estimator, its posterior
summaries, and saving and loading it."""

import json
import pathlib
import warnings
from collections.abc import Mapping

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Bool, Float

from .._custom_types import check_key, Key
from .._io import FileFormatError, read_csv, read_header, read_payload, write_pair
from .._learning import Space
from ..datasets import Dataset
from ..heads import AbstractHead, head_from_config
from ..nn import AbstractNetwork, network_from_config, Standardise
from ..nn.base import check_size
from ._posterior import _levels, AbstractPosterior


class Estimator(eqx.Module):
    """A trained network with everything needed to apply it: input standardisation,
    the network, the head, and the target's scaling and learning spaces.

    Built by [`sgjax.fit`][]; apply it with [`sgjax.infer`][]; save and load it with
    [`sgjax.save`][] and [`sgjax.load`][].

    **Fields:**

    - `standardise`: the input standardisation fitted on a pilot batch.
    - `network`: the network (an [`sgjax.nn.AbstractNetwork`][]).
    - `head`: the head (an [`sgjax.heads.AbstractHead`][]).
    - `y_mean`, `y_std`: the target's pilot mean and std in its learning space.
    - `labels`: one name per target component (per model for model selection).
    - `spaces`: the learning space of each component.
    - `n_classes`: the number of models for model selection, else 0.
    - `info`: a JSON string describing the task that trained it (`task.describe()`):
        its observation times `ts` and whether its noise gives counts, where the task
        records them, are checked against the data given to [`sgjax.infer`][].
    """

    standardise: Standardise
    network: AbstractNetwork
    head: AbstractHead
    y_mean: Float[Array, " k"]
    y_std: Float[Array, " k"]
    labels: tuple[str, ...] = eqx.field(static=True)
    spaces: tuple[Space, ...] = eqx.field(static=True)
    n_classes: int = eqx.field(static=True, default=0)
    info: str = eqx.field(static=True, default="{}")

    @property
    def in_time(self) -> int:
        return self.network.in_time

    @property
    def in_channels(self) -> int:
        return self.network.in_channels

    @property
    def times(self) -> np.ndarray | None:
        """The observation times the network reads (the first `in_time` of the task's
        grid), or `None` where the task's description does not record them."""
        ts = json.loads(self.info).get("ts")
        return None if ts is None or len(ts) < self.in_time else np.asarray(ts[: self.in_time], float)

    @property
    def counts(self) -> bool:
        """Whether the task's noise gives counts (whole numbers ≥ 0), as its
        description records it."""
        return bool(json.loads(self.info).get("counts", False))

    def __call__(self, x: Float[Array, "time channels"], mask: Bool[Array, "time channels"]) -> Float[Array, " m"]:
        """The head's raw output for one series."""
        return self.network(self.standardise(x, mask), mask)

    def loss(self, x, mask, y) -> Float[Array, ""]:
        """The head's loss for one sample, `y` in the learning space."""
        return self.head.loss(self(x, mask), (y - self.y_mean) / self.y_std)

    def to_natural(self, z: Float[Array, "... k"]) -> Float[Array, "... k"]:
        """Map standardised learning-space values back to natural units."""
        y = self.y_mean + self.y_std * z
        return jnp.stack([s.inverse(y[..., i]) for i, s in enumerate(self.spaces)], axis=-1)


class Posterior(AbstractPosterior):
    """A trained network's posterior for a batch of `n` observed series, in natural
    units (NumPy arrays, series first) — an [`sgjax.AbstractPosterior`][], so every
    diagnostic and plot that takes NUTS's or ABC's samples takes it too.

    **Fields:**

    - `labels`: the target components (or, for model selection, the models).
    - `point`: name → `(n,)`, the point estimate: the head's posterior mean for a
        `Point` head, the mean of the samples for a density head, the median for a
        `Quantile` head; `None` for model selection.
    - `quantiles`: level → (name → `(n,)`): a `Quantile` head's trained levels, or
        [`SAMPLE_LEVELS`][] from the samples of a density head.
    - `samples`: name → `(n, draws)` for density heads (`Gaussian`, `MixtureDensity`,
        `Flow`), else `None`. [`stacked`][sgjax.AbstractPosterior.stacked]`()` (or
        [`sgjax.stack`][]`(posterior.samples)`) gives the `(n, draws, k)` array.
    - `probabilities`: `(n, models)` for model selection (the models in `labels`),
        else `None`. Such a posterior has no samples, quantiles or intervals: asking
        for them is an error that points here.
    - `parameters`: the labels that are the simulator's parameters (where the task
        recorded them), which [`theta`][sgjax.AbstractPosterior.theta] keeps; `None`
        keeps every label.

    The summaries [`mean`][sgjax.AbstractPosterior.mean], [`quantile`][sgjax.AbstractPosterior.quantile]
    and [`interval`][sgjax.AbstractPosterior.interval] come from the samples of a
    density head; a `Quantile` head answers at its trained levels only, a `Point` head
    gives its mean only.
    """

    labels: tuple[str, ...]
    point: dict[str, np.ndarray] | None
    quantiles: dict[float, dict[str, np.ndarray]]
    samples: dict[str, np.ndarray] | None
    probabilities: np.ndarray | None
    parameters: tuple[str, ...] | None = None

    def __check_init__(self):
        for field in ("samples", "point"):
            value = getattr(self, field)
            if value is not None and not isinstance(value, dict):
                raise TypeError(
                    f"`Posterior.{field}` must be a dict mapping each label to an array with the series first "
                    f"(sgjax's one convention for θ), got {type(value).__name__}; for a stacked array "
                    f"use sgjax.unstack(array, labels)."
                )
        if not all(isinstance(v, dict) for v in self.quantiles.values()):
            raise TypeError("`Posterior.quantiles` must map each level to a dict label → (n,).")
        if self.parameters is not None and not set(self.parameters) <= set(self.labels):
            raise ValueError(f"`parameters` {self.parameters} must be among the labels {self.labels}.")

    def _need_samples(self, what: str) -> dict[str, np.ndarray]:
        if self.probabilities is not None:
            raise ValueError(
                f"{what} is not defined here: this posterior is a model-selection classifier's, and holds "
                f"model probabilities, not samples, quantiles or intervals. Read `posterior.probabilities` "
                f"((n, models), the models in posterior.labels: {', '.join(self.labels)})."
            )
        if self.samples is None:
            held = f"quantiles at the levels {sorted(self.quantiles)}" if self.quantiles else "a point estimate"
            raise ValueError(
                f"{what} needs posterior samples, but this posterior holds {held} only: use a density head "
                "(Flow, Gaussian, MixtureDensity) for samples."
            )
        return self.samples

    @property
    def names(self) -> tuple[str, ...]:
        """The target components (or models), in order: `labels`."""
        return self.labels

    def __len__(self) -> int:
        for held in (self.probabilities, self.samples, self.point, next(iter(self.quantiles.values()), None)):
            if held is not None:
                return len(held) if not isinstance(held, dict) else next(iter(held.values())).shape[0]
        return 0

    def mean(self) -> dict[str, np.ndarray]:
        """The posterior mean: name → `(n,)` — `point`, for a `Point` head or a density
        head (the mean of its samples)."""
        if self.probabilities is None and self.point is not None and (self.samples is not None or not self.quantiles):
            return dict(self.point)
        return super().mean()

    def quantile(self, q) -> dict[str, np.ndarray]:
        """Posterior quantiles at level(s) `q`: name → `(n,)` for one level, `(n, len(q))`
        for several. From the samples of a density head; a `Quantile` head answers at
        its trained levels only."""
        if self.samples is not None or self.probabilities is not None or not self.quantiles:
            return super().quantile(q)
        q_np = _levels(q)
        have = np.array(sorted(self.quantiles))
        picked = []
        for level in np.atleast_1d(q_np):
            hit = np.flatnonzero(np.isclose(have, level, rtol=0, atol=1e-9))
            if not len(hit):
                raise ValueError(
                    f"This posterior holds the quantiles of a Quantile head at its trained levels {have.tolist()} "
                    f"only, not {float(level):g}: ask for one of those, or train with those levels "
                    "(heads.Quantile(levels=...)) or a density head."
                )
            picked.append(self.quantiles[float(have[hit[0]])])
        if q_np.ndim == 0:
            return dict(picked[0])
        return {k: np.stack([p[k] for p in picked], axis=-1) for k in self.labels}

    def interval(self, mass: float = 0.9) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """The central credible interval holding `mass`: `(lower, upper)`, each name →
        `(n,)`. A `Quantile` head gives it where it was trained at both ends' levels."""
        if self.samples is None and self.probabilities is None and self.quantiles and 0 < mass < 1:
            lo, hi = round((1 - mass) / 2, 6), round((1 + mass) / 2, 6)
            if lo not in self.quantiles or hi not in self.quantiles:
                have = sorted(self.quantiles)
                raise ValueError(
                    f"A {mass:.0%} interval needs the {lo} and {hi} quantiles; available: {have}. Train a "
                    "Quantile head with those levels, or a density head (Flow, Gaussian, MixtureDensity)."
                )
        return super().interval(mass)

    def theta(self, i: int = 0) -> dict[str, np.ndarray]:
        """The posterior draws for series `i`: name → `(draws,)`, for the simulator's
        parameters only where the task recorded them (derived quantities such as R0
        are left out), so that [`sgjax.simulate`][]`(simulator, theta=posterior.theta(i),
        key=...)` is a posterior predictive draw."""
        draws = super().theta(i)
        return draws if self.parameters is None else {k: draws[k] for k in self.parameters}

    def summary(self, i: int = 0) -> dict:
        """A JSON-friendly dict of the summaries for series `i`: per label its point
        estimate and quantiles; for model selection the model probabilities."""
        if self.probabilities is not None:
            return {"probabilities": dict(zip(self.labels, map(float, self.probabilities[i])))}
        out = {}
        for label in self.labels:
            entry = {}
            if self.point is not None:
                entry["point"] = float(self.point[label][i])
            entry["quantiles"] = {str(q): float(v[label][i]) for q, v in sorted(self.quantiles.items())}
            out[label] = entry
        return out


#: Quantile levels reported from samples of a density head.
SAMPLE_LEVELS = (0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.975)


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
def _summaries(estimator: Estimator, x, mask, key, n_samples: int):
    out = jax.vmap(estimator)(x, mask)
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
            source, (times, x, mask) = f"The dataset from {x.path.name}", (x.times, x.values, x.mask)
        else:
            source, (times, x, mask) = str(x), read_csv(x)
        check_times(estimator, times, source)
    return prepare_observations(estimator, x, mask)


def infer(
    estimator: Estimator,
    x,
    mask=None,
    *,
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
    - `key`: a PRNG key (keyword-only), required for a density head (`Gaussian`,
        `MixtureDensity`, `Flow`), whose posterior samples it draws; other heads
        ignore it. One key gives the same samples every call.
    - `n_samples`: posterior samples per series (density heads), at least 1.

    **Returns:** a [`sgjax.Posterior`][]: samples (density heads) name → `(n,
    n_samples)`, point estimates and quantiles name → `(n,)`, credible intervals
    (`posterior.interval(0.9)`), or model probabilities (model selection).

    **Raises:** `TypeError` without `key` for a density head. `ValueError` for data the
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
    s = jax.tree.map(np.asarray, _summaries(estimator, x, mask, key if density else None, n_samples))
    labels = estimator.labels
    if estimator.n_classes:
        return Posterior(labels, None, {}, None, s["probabilities"])
    named = lambda a: {label: a[..., j] for j, label in enumerate(labels)}  # noqa: E731
    quantiles, samples, point = {}, None, None
    if "samples" in s:
        samples = named(s["samples"])
        point = named(s["samples"].mean(axis=1))
        qs = np.quantile(s["samples"], SAMPLE_LEVELS, axis=1)
        quantiles = {lvl: named(q) for lvl, q in zip(SAMPLE_LEVELS, qs)}
    elif "quantiles" in s:
        quantiles = {lvl: named(s["quantiles"][:, i]) for i, lvl in enumerate(estimator.head.levels)}
        point = quantiles.get(0.5)
    if "mean" in s and samples is None:
        point = named(s["mean"])
    recorded = json.loads(estimator.info).get("parameters")
    parameters = None if recorded is None else tuple(p for p in labels if p in recorded)
    return Posterior(labels, point, quantiles, samples, None, parameters)


@eqx.filter_jit
def _log_prob(estimator: Estimator, x, mask, theta):
    def one(x, mask, theta):  # theta (m, k): m values for one series
        out = estimator(x, mask)
        z = jnp.stack([s.forward(theta[:, i]) for i, s in enumerate(estimator.spaces)], axis=-1)
        # d(learning space)/d(natural), per component: the change of variables.
        jac = jnp.stack([jax.vmap(jax.grad(s.forward))(theta[:, i]) for i, s in enumerate(estimator.spaces)], axis=-1)
        std = (z - estimator.y_mean) / estimator.y_std
        lp = jax.vmap(lambda zz: estimator.head.log_prob(out, zz))(std)
        return lp - jnp.sum(jnp.log(estimator.y_std)) + jnp.sum(jnp.log(jnp.abs(jac)), axis=-1)

    return jax.vmap(one)(x, mask, theta)


def log_prob(estimator: Estimator, theta: Mapping[str, ArrayLike], x, mask=None) -> np.ndarray:
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
    lp = np.asarray(_log_prob(estimator, x, mask, stacked))
    lp = np.where(np.isfinite(lp), lp, -np.inf)
    return lp.reshape(shape)


def save(path, estimator: Estimator, *, overwrite: bool = False) -> pathlib.Path:
    """Save an estimator to the directory `path` as `estimator.eqx` (array leaves
    only, no pickle) and `estimator.json` (structure, versions, checksums of both).

    Refuses to replace an existing saved estimator unless `overwrite=True`.
    """
    if not isinstance(estimator, Estimator):
        raise TypeError(f"`estimator` must be an sgjax.Estimator, got {type(estimator).__name__}.")
    path = pathlib.Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise ValueError(
            f"Cannot save to {path}: it or a folder above it is a file. `path` names a directory "
            "(new or existing) to hold estimator.eqx and estimator.json; choose another path."
        ) from None
    stem = path / "estimator"
    if stem.with_suffix(".json").exists() and not overwrite:
        raise FileExistsError(
            f"{stem.with_suffix('.json')} exists; pass overwrite=True to replace it, or choose another path."
        )
    write_pair(stem, estimator, estimator_config(estimator))
    return path


def estimator_config(estimator: Estimator) -> dict:
    return {
        "kind": "estimator",
        "network": estimator.network.config(),
        "head": estimator.head.config(),
        "standardise": estimator.standardise.config(),
        "labels": list(estimator.labels),
        "spaces": [s.config() for s in estimator.spaces],
        "n_classes": estimator.n_classes,
        "dtype": str(estimator.y_mean.dtype),
        "task": json.loads(estimator.info),
    }


def skeleton(config: dict) -> Estimator:
    """An estimator of the structure `config` describes, with placeholder values."""
    try:
        std = config["standardise"]
        k = max(len(config["labels"]), 1) if not config["n_classes"] else 1
        dtype = jnp.dtype(config["dtype"])
        return Estimator(
            standardise=_standardise(std),
            network=network_from_config(config["network"], key=jax.random.key(0)),
            head=head_from_config(config["head"]),
            y_mean=jnp.zeros(k, dtype),
            y_std=jnp.ones(k, dtype),
            labels=tuple(config["labels"]),
            spaces=tuple(Space(**s) for s in config["spaces"]),
            n_classes=int(config["n_classes"]),
            info=_task_info(config.get("task", {})),
        )
    except (KeyError, TypeError) as e:
        raise FileFormatError(f"The saved configuration is incomplete or malformed ({e!r}).") from None


def _task_info(task) -> str:
    """The saved task description as `Estimator.info`, checked where inference reads
    it: `ts` a list of times, `counts` true or false."""
    ts = task.get("ts", []) if isinstance(task, dict) else None
    times = isinstance(ts, list) and all(isinstance(t, (int, float)) and not isinstance(t, bool) for t in ts)
    if not times or not isinstance(task.get("counts", False), bool):
        raise FileFormatError(
            "The saved estimator was edited or damaged: its `task` entry does not describe a task (a dict "
            "whose `ts` is a list of times and whose `counts` is true or false). Restore it or retrain."
        )
    return json.dumps(task)


def _standardise(config: dict) -> Standardise:
    # `Standardise.skeleton` with jax.numpy for its NumPy: traced under
    # `eqx.filter_eval_shape` (in `load`), it allocates nothing however large the
    # header says the series are.
    shape = (check_size(config["in_time"], "in_time"), check_size(config["in_channels"], "in_channels"))
    dtype = jnp.result_type(float)
    return Standardise(jnp.zeros(shape, dtype), jnp.ones(shape, dtype), config["log1p"])


def load(path) -> Estimator:
    """Load an estimator saved by [`sgjax.save`][] (or by `sgjax train`), in any
    process. The structure is rebuilt by sgjax from the JSON, after the JSON's own
    checksum is verified; only array values are read from the payload, after its
    checksum and the sizes the JSON declares are verified, before anything is
    allocated."""
    stem = pathlib.Path(path) / "estimator"
    header = read_header(stem.with_suffix(".json"), "estimator")
    return read_payload(stem, header, eqx.filter_eval_shape(skeleton, header))
