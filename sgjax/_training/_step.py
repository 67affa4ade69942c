"""The training step: one fused, jitted program from a batch's source (PRNG keys to
simulate from, or the rows of a batch) to an optimiser update, `lax.scan`ned over
several steps per dispatch; and the optimisers `fit` builds."""

import functools
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from .._inference import Estimator
from .._learning import AbstractTask, Batch
from ..nn import Standardise
from ._parallel import sub_batches


def _non_trainable(leaf) -> bool:
    try:
        import paramax
    except ImportError:
        return False
    return isinstance(leaf, paramax.NonTrainable)


def split(estimator: Estimator):
    """`(params, frozen)`: the trained arrays — the network's and the head's own (a
    flow's), less those marked non-trainable — and the estimator without them."""
    params, static = eqx.partition((estimator.network, estimator.head), eqx.is_inexact_array, is_leaf=_non_trainable)
    return params, eqx.tree_at(lambda e: (e.network, e.head), estimator, static, is_leaf=lambda x: x is None)


def assemble(frozen: Estimator, params) -> Estimator:
    network, head = eqx.combine(params, (frozen.network, frozen.head), is_leaf=_non_trainable)
    return eqx.tree_at(lambda e: (e.network, e.head), frozen, (network, head), is_leaf=lambda x: x is None)


def loss_and_sums(params, frozen: Estimator, batch: Batch):
    """The weighted mean loss over a batch, and its sums `(Σ weight × loss, Σ weight)`."""
    est = assemble(frozen, params)
    per = jax.vmap(est.loss)(batch.x, batch.mask, batch.y, batch.inputs)
    total, weight = jnp.sum(per * batch.weight), jnp.sum(batch.weight)
    return total / jnp.maximum(weight, 1.0), (total, weight)


def batch_loss(params, frozen: Estimator, batch: Batch):
    return loss_and_sums(params, frozen, batch)[0]


def batch_stats(batch: Batch, frozen: Estimator, sums) -> dict:
    """What `fit` learns from a batch besides its loss: the moments (`moments`) of its
    inputs, as `Standardise.fit` sees them, and of its targets (shape `(k, 1)`), over
    the samples that simulated; the least observed input (`"min"`, which decides
    `log1p` where no one declared it); and its loss sums (`loss_and_sums`)."""
    ok = (batch.weight > 0)[:, None, None]
    observed = batch.mask & ok
    n, mean, m2 = Standardise.moments(batch.x, observed, frozen.standardise.log1p)
    y = batch.y[:, :, None]
    y_n, y_mean, y_m2 = Standardise.moments(y, jnp.broadcast_to(ok, y.shape), False)
    least = jnp.min(jnp.where(observed, batch.x, jnp.inf)).astype(mean.dtype)
    return {"n": n, "mean": mean, "m2": m2, "y_n": y_n, "y_mean": y_mean, "y_m2": y_m2, "min": least,
            "total": sums[0], "weight": sums[1], **_input_stats(batch, ok[:, 0, 0])}  # fmt: skip


def _input_stats(batch: Batch, ok) -> dict:
    """The moments of the known inputs (`(k_in, 1)` each) and of their logs, and each
    input's least value: `StandardiseInputs.from_moments`'s arguments. None without
    inputs (a batch without them gives the same statistics as before)."""
    if batch.inputs is None:
        return {}
    u = batch.inputs[:, :, None]
    seen = jnp.broadcast_to(ok[:, None, None], u.shape)
    least = jnp.min(jnp.where(seen, u, jnp.inf), axis=0)
    raw = Standardise.moments(u, seen, False)
    logged = Standardise.moments(jnp.log(jnp.where(u > 0, u, 1.0)), seen, False)
    return {"u_n": raw[0], "u_mean": raw[1], "u_m2": raw[2], "ulog_n": logged[0], "ulog_mean": logged[1],
            "ulog_m2": logged[2], "u_min": least}  # fmt: skip


def _no_stats(frozen: Estimator) -> dict:
    """`batch_stats`'s structure, for a step not run."""
    (time_, channels), k = frozen.standardise.mean.shape, frozen.y_mean.shape[0]
    dtype = frozen.y_mean.dtype
    zero, grid, col = jnp.zeros((), dtype), jnp.zeros((time_, channels), dtype), jnp.zeros((k, 1), dtype)
    stats = {"n": jnp.zeros((time_, channels), jnp.int32), "mean": grid, "m2": grid, "y_n": jnp.zeros((k, 1), jnp.int32),
            "y_mean": col, "y_m2": col, "min": jnp.full((), jnp.inf, dtype), "total": zero, "weight": zero,
            "finite": jnp.ones((), bool)}  # fmt: skip
    if frozen.inputs:
        k_in = len(frozen.inputs)
        count, moment = jnp.zeros((k_in, 1), jnp.int32), jnp.zeros((k_in, 1), dtype)
        stats |= {"u_n": count, "u_mean": moment, "u_m2": moment, "ulog_n": count, "ulog_mean": moment,
                  "ulog_m2": moment, "u_min": jnp.full((k_in, 1), jnp.inf, dtype)}  # fmt: skip
    return stats


def draw(source, x, batch_size: int, shards: int, sharding) -> Batch:
    """One training batch, traced. From a task: `shards` independent sub-batches, one
    per key split from `x`, simulated where their shard of the batch lives; the batch
    is the same whatever the devices. From any other source (`_sources.Rows`'s
    program): `source.draw(x, sharding)`, the rows `x` given to the step."""
    if not isinstance(source, AbstractTask):
        return source.draw(x, sharding)
    if shards == 1:
        return source.sample(x, batch_size)
    per = batch_size // shards
    return sub_batches(lambda k: source.sample(k, per), jax.random.split(x, shards), sharding)


def mode(n: int, update: bool = True):
    """`train_call`'s `mode`: run the first `n` steps; update the parameters or not."""
    return jnp.asarray(n, jnp.int32), jnp.asarray(update)


def all_finite(tree) -> jax.Array:
    """Whether every element of every array of `tree` is finite: one boolean."""
    leaves = jax.tree.leaves(tree)
    return functools.reduce(jnp.logical_and, (jnp.all(jnp.isfinite(a)) for a in leaves), jnp.ones((), bool))


def _check_shapes(batch: Batch, frozen: Estimator) -> None:
    time_, channels = frozen.standardise.mean.shape
    k = frozen.y_mean.shape[0]
    if batch.y.shape[-1] != k or batch.x.shape[1:] != (time_, channels):
        raise ValueError(
            f"The task's samples have inputs {batch.x.shape[1:]} and {batch.y.shape[-1]} target "
            f"components, but it declares ({time_}, {channels}) and {k} (its `labels`, "
            "`in_time` and `in_channels` must count them)."
        )
    k_in = 0 if batch.inputs is None else batch.inputs.shape[-1]
    if k_in != len(frozen.inputs):
        raise ValueError(
            f"The task's samples have {k_in} known input(s) (Batch.inputs), but it declares {len(frozen.inputs)} "
            f"(its `inputs`: {frozen.inputs})."
        )


def _steps(consts_mode, params, opt_state, xs):
    """Up to `len(xs)` optimiser steps in one dispatch. `xs` holds one PRNG key per
    step (fresh simulations) or one batch's rows per step (`_sources.Rows`).

    `consts_mode` is `(consts, mode)`: the call's constants and its `mode`, both
    in the one argument not donated. `mode` (`mode`, arrays, so one program serves
    both): `(n, update)` runs the first
    `n` steps only; without `update` the parameters and optimiser state stay as they
    are, and the call measures: each step's loss and statistics (`batch_stats`) at the
    given parameters. `fit` measures its pilot batches and its fixed validation set
    that way, with the program that trains: no other program of the simulator to
    compile (~2 s of a cold flow fit on 2 CPU cores). The statistics also hold whether
    each step's updated parameters are all finite (`"finite"`), which `fit` reads
    with the losses once per dispatch.

    **Returns:** `(params, opt_state, losses, stats)`, a loss and statistics per step
    (zeros for steps not run)."""
    (source, frozen, optimiser, batch_size, shards, sharding), (n_run, update) = consts_mode

    def run(carry, x):
        params, opt_state = carry
        batch = draw(source, x, batch_size, shards, sharding)
        _check_shapes(batch, frozen)
        (loss, sums), grads = eqx.filter_value_and_grad(loss_and_sums, has_aux=True)(params, frozen, batch)
        updates, new_state = optimiser.update(grads, opt_state, params)
        new = (eqx.apply_updates(params, updates), new_state)
        carry = jax.tree.map(lambda a, b: jnp.where(update, a, b), new, carry)
        return carry, (loss, {**batch_stats(batch, frozen, sums), "finite": all_finite(carry[0])})

    def skip(carry, x):
        return carry, (jnp.zeros((), frozen.y_mean.dtype), _no_stats(frozen))

    def step(carry, ix):
        i, x = ix
        return jax.lax.cond(i < n_run, run, skip, carry, x)

    n = jax.tree.leaves(xs)[0].shape[0]
    (params, opt_state), (losses, stats) = jax.lax.scan(step, (params, opt_state), (jnp.arange(n), xs))
    return params, opt_state, losses, stats


#: The training call, `train_call((consts, mode), params, opt_state, xs)`: `_steps`
#: jitted, its parameters, optimiser state and inputs donated (not `mode`, which no
#: output can reuse: XLA warned of an unusable donated `bool[]`). Wrapped in `eqx.debug.assert_max_traces` (no limit) so that tests can
#: count its compilations with `eqx.debug.get_num_traces(steps_body)`.
steps_body = eqx.debug.assert_max_traces(_steps, max_traces=None)
train_call = eqx.filter_jit(steps_body, donate="all-except-first")


def measure(consts, params, opt_state, xs, n_batches: int, steps_per_call: int):
    """The statistics (`batch_stats`) of the `n_batches` batches `xs(start, stop)`
    gives, at the given parameters, by the training call without updates: `(params,
    opt_state, stats)`, the first two as the call returns them (unchanged), the
    statistics on the host, one row per batch."""
    from ._parallel import local

    rows = []
    for start in range(0, n_batches, steps_per_call):
        n = min(steps_per_call, n_batches - start)
        part = pad(xs(start, start + n), steps_per_call)
        params, opt_state, _, stats = train_call((consts, mode(n, update=False)), params, opt_state, part)
        rows.append(jax.tree.map(lambda a, n=n: np.asarray(a)[:n], jax.device_get(local(stats))))
    return params, opt_state, jax.tree.map(lambda *a: np.concatenate(a), *rows)


def pad(xs, length: int):
    """`xs` (one row per step) padded to `length` rows with copies of its last (steps
    that `mode` then skips)."""

    def one(a):
        xp = jnp if isinstance(a, jax.Array) else np
        n = a.shape[0]
        return a if n == length else xp.concatenate([a, xp.broadcast_to(a[-1:], (length - n, *a.shape[1:]))])

    return jax.tree.map(one, xs)


def validation_loss(stats: dict) -> float:
    return float(stats["total"].sum() / max(float(stats["weight"].sum()), 1.0))


@eqx.filter_jit
def eval_loss(frozen: Estimator, params, batch: Batch, chunk: int):
    """The weighted mean loss over a batch, evaluated `chunk` samples at a time."""
    chunks = jax.tree.map(lambda a: a.reshape(-1, chunk, *a.shape[1:]), batch)

    def one(b):
        est = assemble(frozen, params)
        per = jax.vmap(est.loss)(b.x, b.mask, b.y, b.inputs)
        return jnp.sum(per * b.weight), jnp.sum(b.weight)

    total, weight = jax.lax.map(one, chunks)
    return jnp.sum(total) / jnp.maximum(jnp.sum(weight), 1.0)


# Cached: an optax transformation is a pair of closures that jit keys on by identity,
# so a fresh one per `fit` would retrace and recompile the training step every time
# (8–12 s on 2 CPU cores for a flow head). Same arguments, same object.
@functools.lru_cache(maxsize=64)
def default_optimiser(learning_rate: float, steps: int) -> optax.GradientTransformation:
    """Adam with weight decay, gradient clipping at norm 1, a linear warm-up over the
    first 5% of steps and a cosine decay to 1% of the peak."""
    schedule = optax.warmup_cosine_decay_schedule(
        0.0, learning_rate, warmup_steps=max(1, steps // 20), decay_steps=steps, end_value=learning_rate * 1e-2
    )
    return optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(schedule, weight_decay=1e-4))


class ScheduleState(NamedTuple):
    """The state of `timed_optimiser`'s schedule: steps taken, and the schedule's
    length, which `fit` sets once it has measured the throughput."""

    count: jax.Array
    total: jax.Array


def _warmup_cosine(count, total, peak):
    """`optax.warmup_cosine_decay_schedule(0, peak, max(1, total // 20), total,
    peak / 100)` at `count`, with `total` an array."""
    warmup = jnp.maximum(1, total // 20)
    rising = peak * count / warmup
    span = jnp.maximum(total - warmup, 1)
    t = jnp.clip(count - warmup, 0, span) / span
    falling = peak * (0.99 * 0.5 * (1 + jnp.cos(jnp.pi * t)) + 0.01)
    return jnp.where(count < warmup, rising, falling)


def _scale_by_timed_schedule(peak: float) -> optax.GradientTransformation:
    def init(params):
        return ScheduleState(jnp.zeros((), jnp.int32), jnp.asarray(1, jnp.int32))

    def update(updates, state, params=None):
        rate = _warmup_cosine(state.count, state.total, peak)
        updates = jax.tree.map(lambda u: (-rate * u).astype(u.dtype), updates)
        return updates, ScheduleState(state.count + 1, state.total)

    return optax.GradientTransformation(init, update)


@functools.lru_cache(maxsize=64)
def timed_optimiser(learning_rate: float) -> optax.GradientTransformation:
    """`default_optimiser` whose schedule's length is a number in its state
    (`ScheduleState.total`, set by `with_total`), not a constant of the program:
    `fit(..., time_limit=...)` sets it from the throughput it measures after warm-up,
    with the training step already compiled."""
    return optax.chain(
        optax.clip_by_global_norm(1.0),
        optax.scale_by_adam(),
        optax.add_decayed_weights(1e-4),
        _scale_by_timed_schedule(learning_rate),
    )


def with_total(opt_state, total: int):
    """`opt_state` with `timed_optimiser`'s schedule length set to `total` steps (no
    change for other optimisers)."""
    is_schedule = lambda s: isinstance(s, ScheduleState)  # noqa: E731
    set_total = lambda s: s._replace(total=jnp.asarray(total, jnp.int32)) if is_schedule(s) else s  # noqa: E731
    return jax.tree.map(set_total, opt_state, is_leaf=is_schedule)


def init_optimiser(optimiser: optax.GradientTransformation, params):
    """`optimiser.init(params)` as one compiled program: op by op, each of its zero
    arrays is one more small XLA program (0.35 against 0.11 s cold for a flow's Adam
    state on 2 CPU cores)."""
    return eqx.filter_jit(optimiser.init)(params)
