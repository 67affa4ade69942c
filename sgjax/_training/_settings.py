"""`fit`'s settings: refused when of the wrong type or out of range, before anything
runs, and normalised (counts rounded to whole dispatches and batches)."""

import math
import numbers
import os
import pathlib
from typing import cast, NamedTuple

import numpy as np


# Arguments of `fit` that may be `None` (their default) instead of a positive integer.
_OPTIONAL_COUNTS = ("steps", "patience", "checkpoint_every")

#: `fit`'s number of steps when neither `steps` nor `time_limit` is given.
DEFAULT_STEPS = 2000


class Plan(NamedTuple):
    """The normalised counts of a run: `steps` (the most; a whole number of
    dispatches), `steps_per_call`, `eval_every`, `checkpoint_every`, `validation_size`
    (whole batches)."""

    steps: int
    steps_per_call: int
    eval_every: int
    checkpoint_every: int
    validation_size: int


def check(*, learning_rate, optimiser, log1p, checkpoint_dir, callback, time_limit, flags: dict, counts: dict) -> None:
    """Refuse `fit`'s settings of the wrong type or out of range: `counts` must be
    positive integers (or `None`, for `_OPTIONAL_COUNTS`), `flags` booleans."""
    for name, v in counts.items():
        if v is None and name in _OPTIONAL_COUNTS:
            continue
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            default = " or None" if name in _OPTIONAL_COUNTS else ""
            raise ValueError(f"`{name}` must be a positive integer{default}, got {v!r}.")
    if not _positive(learning_rate):
        raise ValueError(f"`learning_rate` must be a finite positive number such as 3e-3, got {learning_rate!r}.")
    if time_limit is not None and not _positive(time_limit):
        raise ValueError(
            f"`time_limit` must be a finite positive number of seconds such as 600, or None, got {time_limit!r}."
        )
    if optimiser is not None and not (
        callable(getattr(optimiser, "init", None)) and callable(getattr(optimiser, "update", None))
    ):
        raise TypeError(
            f"`optimiser` must be an optax.GradientTransformation such as optax.adam(1e-3), got {optimiser!r}."
        )
    for name, v in {**flags, "log1p": log1p}.items():
        if not isinstance(v, (bool, np.bool_)) and not (name == "log1p" and v is None):
            raise TypeError(
                f"`{name}` must be True or False{' or None (decide from the pilot)' if name == 'log1p' else ''}, got {v!r}."
            )
    if callback is not None and not callable(callback):
        raise TypeError(f"`callback` must be a function callback(step, info) or None, got {callback!r}.")
    if checkpoint_dir is not None:
        if not isinstance(checkpoint_dir, (str, os.PathLike)):
            raise TypeError(f"`checkpoint_dir` must be a directory path (str or pathlib.Path), got {checkpoint_dir!r}.")
        if pathlib.Path(checkpoint_dir).exists() and not pathlib.Path(checkpoint_dir).is_dir():
            raise ValueError(
                f"`checkpoint_dir` {str(checkpoint_dir)!r} is a file; name a directory (it is created if missing)."
            )


def _positive(v) -> bool:
    ok = isinstance(v, numbers.Real) and not isinstance(v, bool)
    return ok and math.isfinite(v) and cast(float, v) > 0  # `numbers.Real` declares no `>`


def plan(
    *,
    steps,
    time_limit,
    batch_size,
    steps_per_call,
    eval_every,
    checkpoint_every,
    validation_size,
    budget,
    resume,
    checkpoint_dir,
) -> Plan:
    """The run's counts, after the checks `check` cannot make alone. Without `steps`, a
    time-limited run has no step limit (its schedule's length comes from the
    throughput) and any other run takes `DEFAULT_STEPS`."""
    if steps is None:
        steps = DEFAULT_STEPS if time_limit is None else 10**12
    steps_per_call = min(steps_per_call, steps)
    steps = -(-steps // steps_per_call) * steps_per_call
    checkpoint_every = eval_every if checkpoint_every is None else checkpoint_every
    for name, v in (("eval_every", eval_every), ("checkpoint_every", checkpoint_every)):
        if v % steps_per_call:
            raise ValueError(f"`{name}`={v} must be a multiple of `steps_per_call`={steps_per_call}.")
    if budget is not None and (not isinstance(budget, (int, np.integer)) or budget < batch_size):
        raise ValueError(f"`budget` must be an integer of at least one batch ({batch_size}), got {budget!r}.")
    if resume and checkpoint_dir is None:
        raise ValueError("`resume=True` needs `checkpoint_dir`.")
    validation_size = -(-validation_size // batch_size) * batch_size
    return Plan(int(steps), int(steps_per_call), int(eval_every), int(checkpoint_every), int(validation_size))
