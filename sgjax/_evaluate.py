"""Checking a trained estimator on held-out simulations."""

import jax
import numpy as np

from ._custom_types import Key
from ._estimator import Estimator, Posterior, infer
from ._task import AbstractTask
from ._train import simulate_batch


def evaluate(estimator: Estimator, task: AbstractTask, key: Key, n: int = 2000, *, chunk: int = 512) -> dict:
    """Recovery on `n` fresh simulations from `task` (held out: use a key never used
    for training).

    **Returns:** for regression, a dict per target component with `r2` (of the point
    estimate, in natural units), `rmse`, and `coverage_50` / `coverage_90`, the
    fraction of true values inside the central 50% / 90% credible intervals (should be
    close to 0.5 / 0.9 for a calibrated posterior); for model selection, `accuracy`,
    `log_loss` and the mean predicted probability of the true model. Also `n`, the
    number of valid simulations used.
    """
    post, truth = held_out(estimator, task, key, n, chunk=chunk)
    if estimator.n_classes:
        label = truth.astype(int)
        p_true = post.probabilities[np.arange(len(label)), label]
        return {
            "n": len(label),
            "accuracy": float(np.mean(post.probabilities.argmax(1) == label)),
            "log_loss": float(-np.mean(np.log(np.maximum(p_true, 1e-12)))),
            "mean_probability_of_truth": float(np.mean(p_true)),
        }
    return {"n": len(truth), **recovery(post, truth)}


def held_out(estimator: Estimator, task: AbstractTask, key: Key, n: int, *, chunk: int = 512, n_samples: int = 1000):
    """The posterior for `n` fresh simulations and their true targets in natural units
    (`(n, k)`; the model index `(n,)` for model selection), failed simulations
    dropped."""
    batch = simulate_batch(task, key, n, chunk)
    ok = np.asarray(batch.weight) > 0
    x, mask, y = (np.asarray(a)[ok] for a in (batch.x, batch.mask, batch.y))
    post = infer(estimator, x, mask, key=jax.random.fold_in(key, 1), n_samples=n_samples)
    if estimator.n_classes:
        return post, y[:, 0]
    return post, np.stack([np.asarray(s.inverse(y[:, i])) for i, s in enumerate(estimator.spaces)], axis=1)


def recovery(post: Posterior, truth: np.ndarray) -> dict:
    """R², RMSE and interval coverage of a posterior against true values `(n, k)`."""
    out = {}
    for j, label in enumerate(post.labels):
        t = truth[:, j]
        entry = {}
        if post.point is not None:
            err = post.point[:, j] - t
            entry["r2"] = float(1 - np.mean(err**2) / np.var(t)) if np.var(t) > 0 else float("nan")
            entry["rmse"] = float(np.sqrt(np.mean(err**2)))
        for mass in (0.5, 0.9):
            try:
                lo, hi = post.interval(mass)
            except ValueError:
                continue
            entry[f"coverage_{round(mass * 100)}"] = float(np.mean((t >= lo[:, j]) & (t <= hi[:, j])))
        out[label] = entry
    return out
