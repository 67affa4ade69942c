"""A trained SGNN as amortized Bayesian inference: the estimator, its posterior
summaries, and saving and loading it."""

import json
import pathlib
import warnings

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float

from ._custom_types import check_key, Key
from ._io import FileFormatError, read_csv, read_header, read_payload, write_pair
from ._target import Space
from .datasets import Dataset
from .heads import AbstractHead, head_from_config
from .nn import AbstractNetwork, Standardise, network_from_config
from .nn.base import check_size


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


class Posterior(eqx.Module):
    """Posterior summaries for a batch of observed series, in natural units (NumPy
    arrays, observation first).

    **Fields:**

    - `labels`: the target components (or models).
    - `point`: `(n, k)` — the point head's posterior mean (in the learning space,
        mapped back); for a density head the posterior mean of its samples; for a
        quantile head the median.
    - `quantiles`: level → `(n, k)`.
    - `samples`: `(n, n_samples, k)` for density heads, else `None`.
    - `probabilities`: `(n, models)` for model selection, else `None`.
    """

    labels: tuple[str, ...]
    point: np.ndarray | None
    quantiles: dict
    samples: np.ndarray | None
    probabilities: np.ndarray | None

    def interval(self, mass: float = 0.9) -> tuple[np.ndarray, np.ndarray]:
        """The central credible interval holding `mass`: `(lower, upper)`, each
        `(n, k)`."""
        lo, hi = round((1 - mass) / 2, 6), round((1 + mass) / 2, 6)
        have = sorted(self.quantiles)
        if lo not in self.quantiles or hi not in self.quantiles:
            raise ValueError(f"A {mass:.0%} interval needs the {lo} and {hi} quantiles; available: {have}.")
        return self.quantiles[lo], self.quantiles[hi]

    def box(self, i: int = 0, mass: float = 0.996, widen: float = 0.2) -> dict[str, tuple[float, float]]:
        """A box holding this posterior (observation `i`), to restrict a prior to for
        a further, truncated round of training ([`sgjax.Prior.restrict`][]): per
        target, the central interval of its samples holding `mass`, widened on each
        side by `widen` times its width — on the log scale when every sample is
        positive. A flow trained on the whole prior tends to be too wide, so the box
        errs on the wide side; a box that cut into the posterior would bias it."""
        if self.samples is None:
            raise ValueError("A box needs posterior samples: use a density head (Flow, Gaussian, MixtureDensity).")
        if not 0 < mass < 1 or widen < 0:
            raise ValueError(f"`mass` must be in (0, 1) and `widen` ≥ 0, got mass={mass}, widen={widen}.")
        out = {}
        for j, label in enumerate(self.labels):
            s = np.asarray(self.samples[i, :, j], dtype=float)
            s = s[np.isfinite(s)]
            log = bool(np.all(s > 0))
            v = np.log(s) if log else s
            lo, hi = np.quantile(v, [(1 - mass) / 2, (1 + mass) / 2])
            lo, hi = lo - widen * (hi - lo), hi + widen * (hi - lo)
            out[label] = (float(np.exp(lo)), float(np.exp(hi))) if log else (float(lo), float(hi))
        return out

    def summary(self, i: int = 0) -> dict:
        """A JSON-friendly dict of the summaries for observation `i`."""
        out = {}
        if self.probabilities is not None:
            return {"probabilities": dict(zip(self.labels, map(float, self.probabilities[i])))}
        for j, label in enumerate(self.labels):
            entry = {}
            if self.point is not None:
                entry["point"] = float(self.point[i, j])
            entry["quantiles"] = {str(q): float(v[i, j]) for q, v in sorted(self.quantiles.items())}
            out[label] = entry
        return out


#: Quantile levels reported from samples of a density head.
SAMPLE_LEVELS = (0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.975)


def _batched(a):
    """`(time,)` or `(time, channels)` → `(1, time, channels)`."""
    if a.ndim == 1:
        a = a[:, None]
    return a[None] if a.ndim == 2 else a


def _prepare(estimator: Estimator, x, mask):
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
    return _prepare(estimator, x, mask)


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
    - `key`: a PRNG key for posterior samples (density heads); default key 0.
    - `n_samples`: posterior samples per series (density heads), at least 1.

    **Returns:** a [`sgjax.Posterior`][] with point estimates, quantiles and credible
    intervals, samples (density heads) and model probabilities (model selection).

    **Raises:** `ValueError` for data the estimator cannot read: other times than the
    training grid, non-finite observed entries, negative or fractional counts for an
    estimator trained on count noise, negative values where it standardises `log1p(x)`.
    """
    if not isinstance(estimator, Estimator):
        raise TypeError(f"`estimator` must be an sgjax.Estimator (from sgjax.fit or sgjax.load), got {type(estimator).__name__}.")
    n_samples = check_size(n_samples, "n_samples")
    if key is not None:
        check_key(key)
    x, mask = _observed(estimator, x, mask)
    if key is None and estimator.head.is_density:
        key = jax.random.key(0)
    s = jax.tree.map(np.asarray, _summaries(estimator, x, mask, key if estimator.head.is_density else None, n_samples))
    if estimator.n_classes:
        return Posterior(estimator.labels, None, {}, None, s["probabilities"])
    quantiles, samples, point = {}, None, None
    if "samples" in s:
        samples = s["samples"]
        point = samples.mean(axis=1)
        qs = np.quantile(samples, SAMPLE_LEVELS, axis=1)
        quantiles = {lvl: q for lvl, q in zip(SAMPLE_LEVELS, qs)}
    elif "quantiles" in s:
        levels = estimator.head.levels
        quantiles = {lvl: s["quantiles"][:, i] for i, lvl in enumerate(levels)}
        point = quantiles.get(0.5)
    if "mean" in s and samples is None:
        point = s["mean"]
    return Posterior(estimator.labels, point, quantiles, samples, None)


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


def log_prob(estimator: Estimator, theta, x, mask=None) -> np.ndarray:
    """The approximate posterior log density `log q(θ | x)` in natural units, for
    estimators whose head is a density (`Gaussian`, `MixtureDensity`, `Flow`).

    **Arguments:**

    - `estimator`: a trained [`sgjax.Estimator`][] with a density head.
    - `theta`: target values in natural units: `(k,)` or `(m, k)` for one series,
        `(n, m, k)` for `n` series (`m` values each).
    - `x`, `mask`: the observed series, as for [`sgjax.infer`][].

    **Returns:** log densities of shape `(m,)` for one series, `(n, m)` for many;
    `-inf` outside the target's support.
    """
    if not isinstance(estimator, Estimator):
        raise TypeError(f"`estimator` must be an sgjax.Estimator, got {type(estimator).__name__}.")
    if not hasattr(estimator.head, "log_prob") or not estimator.head.is_density:
        raise ValueError(
            f"The {type(estimator.head).__name__} head gives no density; train with a density head "
            "(sgjax.heads.Gaussian(), MixtureDensity() or Flow()) to evaluate log densities."
        )
    one_series = isinstance(x, (str, pathlib.Path)) or np.ndim(x) <= 2
    x, mask = _observed(estimator, x, mask)
    k = estimator.y_mean.shape[0]
    theta = jnp.asarray(theta, estimator.y_mean.dtype)
    if one_series:
        theta = theta.reshape(1, -1, k) if theta.ndim <= 2 else theta
    if theta.ndim != 3 or theta.shape[0] != x.shape[0] or theta.shape[2] != k:
        raise ValueError(
            f"`theta` must have shape (m, {k}) for one series or (n, m, {k}) for n = {x.shape[0]} "
            f"series ({', '.join(estimator.labels)}), got {tuple(np.shape(theta))}."
        )
    # Outside a component's support the learning-space map is clipped flat, so the
    # change of variables has a zero Jacobian there and the log density is -inf.
    lp = np.asarray(_log_prob(estimator, x, mask, theta))
    lp = np.where(np.isfinite(lp), lp, -np.inf)
    return lp[0] if one_series else lp


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
        raise FileExistsError(f"{stem.with_suffix('.json')} exists; pass overwrite=True to replace it, or choose another path.")
    write_pair(stem, estimator, _config(estimator))
    return path


def _config(estimator: Estimator) -> dict:
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
