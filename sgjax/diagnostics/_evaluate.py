"""Checking a trained estimator on held-out simulations."""

import json
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

from .._custom_types import check_key, Key
from .._inference import AbstractPosterior, Estimator, infer, Posterior
from .._learning import AbstractTask
from .._training import simulate_batch
from ..nn.base import check_size


def not_a_key(value, name: str, call: str) -> None:
    """Refuse a PRNG key given positionally where `name` goes: `key` is keyword-only."""
    typed = isinstance(value, jax.Array) and jax.numpy.issubdtype(value.dtype, jax.dtypes.prng_key)
    raw = isinstance(value, jax.Array) and value.dtype == jax.numpy.uint32 and value.shape == (2,)
    if typed or raw:
        raise TypeError(
            f"`{call}` got a PRNG key where `{name}` goes: `key` is keyword-only, e.g. {call}(..., key=key)."
        )


def evaluate(estimator: Estimator, task: AbstractTask, n: int = 2000, *, key: Key, chunk: int = 512) -> dict:
    """Recovery on `n` fresh simulations from `task` (held out: use a key never used
    for training).

    **Arguments:**

    - `estimator`: a trained [`sgjax.Estimator`][].
    - `task`: the task it was trained on (its prior may differ).
    - `n`: how many simulations.
    - `key`: a PRNG key (keyword-only) for the simulations and posterior samples.
    - `chunk`: simulations per compiled call.

    **Returns:** for regression, a dict per target component with `r2` (of the point
    estimate, in natural units), `rmse`, and `coverage_50` / `coverage_90`, the
    fraction of true values inside the central 50% / 90% credible intervals (should be
    close to 0.5 / 0.9 for a calibrated posterior); for model selection, `accuracy`,
    `log_loss` and the mean predicted probability of the true model. Also `n`, the
    number of valid simulations used.

    **Raises:** `ValueError` when `task` is not the one `estimator` was trained on
    (other targets, model or observation times; the prior may differ).
    """
    not_a_key(n, "n", "evaluate")
    post, truth = held_out(estimator, task, n, key=key, chunk=chunk)
    if estimator.n_classes:
        # A classifier's: the true model index, and the posterior's model probabilities.
        assert post.probabilities is not None
        label = truth.astype(int)
        p_true = post.probabilities[np.arange(len(label)), label]
        return {
            "n": len(label),
            "accuracy": float(np.mean(post.probabilities.argmax(1) == label)),
            "log_loss": float(-np.mean(np.log(np.maximum(p_true, 1e-12)))),
            "mean_probability_of_truth": float(np.mean(p_true)),
        }
    return {"n": len(post), **recovery(post, truth)}


def held_out(
    estimator: Estimator, task: AbstractTask, n: int, *, key: Key, chunk: int = 512, n_samples: int = 1000
) -> tuple[Posterior, Any]:
    """The posterior for `n` fresh simulations and their true targets in natural units
    (name → `(n,)`; the model index `(n,)` for model selection: the estimator says
    which), failed simulations dropped."""
    if not isinstance(estimator, Estimator):
        raise TypeError(f"`estimator` must be an sgjax.Estimator, got {type(estimator).__name__}.")
    check_key(key)
    n, chunk = check_size(n, "n"), check_size(chunk, "chunk")
    check_size(n_samples, "n_samples")
    check_task(estimator, task)
    batch = simulate_batch(task, key=key, n=n, chunk=chunk)
    ok = np.asarray(batch.weight) > 0
    x, mask, y = (np.asarray(a)[ok] for a in (batch.x, batch.mask, batch.y))
    inputs = None
    if batch.inputs is not None:  # known per-series inputs (Task(..., inputs=...)), by name
        given = np.asarray(batch.inputs)[ok]
        inputs = {name: given[:, j] for j, name in enumerate(estimator.inputs)}
    post = infer(estimator, x, mask, inputs=inputs, key=jax.random.fold_in(key, 1), n_samples=n_samples)
    if estimator.n_classes:
        return post, y[:, 0].astype(int)  # the model index, an integer to index with
    labels, spaces = estimator.labels, estimator.spaces
    return post, {label: np.asarray(spaces[i].inverse(y[:, i])) for i, label in enumerate(labels)}


def check_task(estimator: Estimator, task: AbstractTask) -> None:
    """Refuse a `task` other than the one `estimator` was trained on: other labels,
    numbers of classes or input sizes, or a description (`task.describe()`) that
    differs in an entry both record (observation times compared to rounding). The
    prior is not part of the description: evaluating under another prior is allowed,
    and so are other model probabilities for model selection."""
    if not isinstance(task, AbstractTask):
        raise TypeError(f"`task` must be an sgjax task (sgjax.Task, ModelSelection, ...), got {type(task).__name__}.")
    saved, now = json.loads(estimator.info), json.loads(json.dumps(task.describe()))
    shape = lambda e: (tuple(e.labels), e.n_classes, e.in_time, e.in_channels)  # noqa: E731
    same = shape(estimator) == shape(task) and all(
        np.allclose(saved[k], now[k]) if k == "ts" and len(saved[k]) == len(now[k]) else saved[k] == now[k]
        for k in saved.keys() & now.keys() - {"probabilities"}
    )
    if not same:
        raise ValueError(
            f"`task` is not the task the estimator was trained on: the estimator learned {_what(saved, estimator)}; "
            f"the task gives {_what(now, task)}. Evaluate with the training task (its prior may differ)."
        )


def _what(description: dict, source) -> str:
    """A task in a few words, from its description and sizes."""
    model = description.get("model") or description.get("models") or description.get("kind", "an unknown task")
    ts = description.get("ts")
    at = f" at {len(ts)} times {ts[0]:g}..{ts[-1]:g}" if ts else ""
    return f"{', '.join(source.labels)} of {model} from {source.in_time} times x {source.in_channels} channel(s){at}"


def recovery(post: AbstractPosterior, truth: Mapping[str, np.ndarray]) -> dict:
    """R², RMSE and interval coverage of a posterior against true values (name →
    `(n,)`), for each label of `truth`. The point estimate is `post.point` where it has
    one (an SGNN's), else the posterior mean; a coverage is left out where the
    posterior has no such interval."""
    point = getattr(post, "point", None)
    if point is None:
        point = post.mean()
    intervals = {}
    for mass in (0.5, 0.9):
        try:
            intervals[mass] = post.interval(mass)
        except ValueError:
            continue
    out = {}
    for label, t in truth.items():
        t = np.asarray(t)
        entry = {}
        err = point[label] - t
        entry["r2"] = float(1 - np.mean(err**2) / np.var(t)) if np.var(t) > 0 else float("nan")
        entry["rmse"] = float(np.sqrt(np.mean(err**2)))
        for mass, (lo, hi) in intervals.items():
            entry[f"coverage_{round(mass * 100)}"] = float(np.mean((t >= lo[label]) & (t <= hi[label])))
        out[label] = entry
    return out
