"""Training an SGNN: one fused, jitted step from a PRNG key to an optimiser update,
several steps per dispatch, with validation, early stopping and checkpoints."""

import functools
import inspect
import json
import math
import numbers
import os
import pathlib
import re
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from ._custom_types import Key, check_key
from ._estimator import Estimator, _config as estimator_config, skeleton
from ._io import FileFormatError, read_header, read_payload, write_pair
from ._task import AbstractTask, Batch
from .heads import AbstractHead, Point
from .nn import MLP, AbstractNetwork, Standardise
from .nn._standardise import moments, pool_moments

# Incremented whenever the training call is traced, so tests can assert it compiles once.
_TRACES = {"train": 0}

#: Checkpoints kept in a checkpoint directory (older ones are deleted).
KEEP_CHECKPOINTS = 2


class _Data(eqx.Module):
    """A fixed budget of pre-simulated training pairs (device arrays)."""

    batch: Batch

    def take(self, idx):
        return jax.tree.map(lambda a: a[idx], self.batch)


@eqx.filter_jit
def _sample(task: AbstractTask, key: Key, n: int) -> Batch:
    return task.sample(key, n)


def simulate_batch(task: AbstractTask, key: Key, n: int, chunk: int = 512) -> Batch:
    """`n` training pairs from `task`, generated in jitted chunks of `chunk` and kept
    on the device. When `n` is not a whole number of chunks, a random subset of the
    last chunk's size is dropped: chunks can be ordered inside (model selection
    stratifies by model), so cutting off the end would drop a model's share."""
    m = -(-n // chunk)
    parts = [_sample(task, k, chunk) for k in jax.random.split(key, m)]
    batch = jax.tree.map(lambda *a: jnp.concatenate(a), *parts)
    if m * chunk == n:
        return batch
    keep = jnp.sort(jax.random.permutation(jax.random.fold_in(key, m), m * chunk)[:n])
    return jax.tree.map(lambda a: a[keep], batch)


def _non_trainable(leaf) -> bool:
    try:
        import paramax
    except ImportError:
        return False
    return isinstance(leaf, paramax.NonTrainable)


def _split(estimator: Estimator):
    """`(params, frozen)`: the trained arrays — the network's and the head's own (a
    flow's), less those marked non-trainable — and the estimator without them."""
    params, static = eqx.partition((estimator.network, estimator.head), eqx.is_inexact_array, is_leaf=_non_trainable)
    return params, eqx.tree_at(lambda e: (e.network, e.head), estimator, static, is_leaf=lambda x: x is None)


def _assemble(frozen: Estimator, params) -> Estimator:
    network, head = eqx.combine(params, (frozen.network, frozen.head), is_leaf=_non_trainable)
    return eqx.tree_at(lambda e: (e.network, e.head), frozen, (network, head), is_leaf=lambda x: x is None)


def _loss_and_sums(params, frozen: Estimator, batch: Batch):
    """The weighted mean loss over a batch, and its sums `(Σ weight × loss, Σ weight)`."""
    est = _assemble(frozen, params)
    per = jax.vmap(est.loss)(batch.x, batch.mask, batch.y)
    total, weight = jnp.sum(per * batch.weight), jnp.sum(batch.weight)
    return total / jnp.maximum(weight, 1.0), (total, weight)


def _batch_loss(params, frozen: Estimator, batch: Batch):
    return _loss_and_sums(params, frozen, batch)[0]


def _batch_stats(batch: Batch, frozen: Estimator, sums) -> dict:
    """What `fit` learns from a batch besides its loss: the moments (`moments`) of its
    inputs, as `Standardise.fit` sees them, and of its targets (shape `(k, 1)`), over
    the samples that simulated, and its loss sums (`_loss_and_sums`)."""
    ok = (batch.weight > 0)[:, None, None]
    n, mean, m2 = moments(batch.x, batch.mask & ok, frozen.standardise.log1p)
    y = batch.y[:, :, None]
    y_n, y_mean, y_m2 = moments(y, jnp.broadcast_to(ok, y.shape), False)
    return {"n": n, "mean": mean, "m2": m2, "y_n": y_n, "y_mean": y_mean, "y_m2": y_m2, "total": sums[0], "weight": sums[1]}


def _data_parallel(devices, shards, batch_size: int, budget):
    """`(shards, sharding)` for `fit`'s `devices` and `shards` arguments: the key
    streams per batch and the batch axis's layout across a one-axis device mesh
    (`None` on one device)."""
    if devices is None:
        devices = jax.devices()[:1]
    elif isinstance(devices, str):
        if devices != "all":
            raise ValueError(f"`devices` must be 'all', a number or a list of jax devices, got {devices!r}.")
        devices = jax.devices()
    elif isinstance(devices, (int, np.integer)) and not isinstance(devices, bool):
        if not 1 <= devices <= len(jax.devices()):
            raise ValueError(
                f"`devices={devices}` but {len(jax.devices())} device(s) are available "
                f"({jax.devices()[0].platform}); on CPU, more can be simulated with "
                "XLA_FLAGS=--xla_force_host_platform_device_count=N set before JAX starts."
            )
        devices = jax.devices()[:devices]
    else:
        devices = list(devices)
        if not devices or not all(isinstance(d, jax.Device) for d in devices):
            raise ValueError("`devices` must be 'all', a number or a non-empty list of jax devices (jax.devices()).")
    n = len(devices)
    shards = n if shards is None else shards
    if isinstance(shards, bool) or not isinstance(shards, (int, np.integer)) or shards < 1 or shards % n:
        raise ValueError(f"`shards` must be a positive multiple of the number of devices ({n}), got {shards!r}.")
    if batch_size % shards:
        raise ValueError(f"`batch_size`={batch_size} must be a multiple of `shards`={shards} (one sub-batch per shard).")
    if n == 1:
        return int(shards), None
    mesh = jax.sharding.Mesh(np.array(devices), ("data",))
    return int(shards), jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))


def _shard(tree, sharding):
    """Lay the leading axis of every array of `tree` out across the devices (a no-op
    without a sharding)."""
    if sharding is None:
        return tree
    return jax.tree.map(lambda a: jax.lax.with_sharding_constraint(a, sharding), tree)


def _draw(source, x, batch_size: int, shards: int, sharding):
    """One training batch. From a task: `shards` independent sub-batches, one per
    key split from `x`, simulated where their shard of the batch lives (each device
    simulates its own); the batch is the same whatever the devices. From a fixed
    budget: the rows `x`, gathered and laid out across the devices."""
    if not isinstance(source, AbstractTask):
        return _shard(source.take(x), sharding)
    if shards == 1:
        return source.sample(x, batch_size)
    per = batch_size // shards

    def local(keys):
        # A device's sub-batches one after another (`lax.map`), not `vmap`ped: under
        # `vmap` a `lax.cond` runs both branches, so a shared-step solve's per-trajectory
        # rescue (`solve_or_rescue`) would run on every step (SIR, 256 samples: 1.3 ->
        # 10.3 ms), not only when the shared solve fails.
        if keys.shape[0] == 1:
            return source.sample(keys[0], per)
        batch = jax.lax.map(lambda k: source.sample(k, per), keys)
        return jax.tree.map(lambda a: a.reshape(-1, *a.shape[2:]), batch)

    keys = jax.random.split(x, shards)
    if sharding is None:
        return local(keys)
    spec = jax.sharding.PartitionSpec("data")
    return jax.shard_map(local, mesh=sharding.mesh, in_specs=spec, out_specs=spec, check_vma=False)(keys)


def _simulators(task: AbstractTask) -> tuple:
    """The simulators behind a task (none for a task that simulates on its own)."""
    return getattr(task, "simulators", None) or ((task.simulator,) if hasattr(task, "simulator") else ())


def _all_failed(task: AbstractTask) -> RuntimeError:
    """The error for a pilot batch in which every simulation failed, naming the task,
    its strategy and what to change."""
    sims, strategy = _simulators(task), getattr(task, "strategy", None)
    if not sims:
        return RuntimeError(
            f"Every sample in the pilot batch failed: {type(task).__name__}.sample gave every "
            "sample weight 0, so there is nothing to train on. Check its simulator and prior."
        )
    from ._strategy import PerTrajectory

    models = ", ".join(dict.fromkeys(type(s.model).__name__ for s in sims))
    fixes = [] if isinstance(strategy, PerTrajectory) else [
        "solve each draw on its own steps, so that one stiff draw cannot fail the others: "
        f"{type(task).__name__}(..., strategy=sgjax.PerTrajectory())"
    ]  # fmt: skip
    fixes += [
        "tighten the prior to where the model can be solved (task.restrict(box), or a narrower sgjax.Prior)",
        f"raise the simulator's max_steps (now {', '.join(str(s.max_steps) for s in sims)}) or use a "
        "stiff solver (diffrax.Kvaerno5) for a stiff model",
    ]
    return RuntimeError(
        f"Every simulation in the pilot batch failed ({type(task).__name__} of {models}, strategy "
        f"{type(strategy).__name__}), so there is nothing to train on. Try: "
        + "; ".join(f"({i}) {f}" for i, f in enumerate(fixes, 1)) + "."
    )


def _mode(n: int, update: bool = True):
    """`_train_call`'s `mode`: run the first `n` steps; update the parameters or not."""
    return jnp.asarray(n, jnp.int32), jnp.asarray(update)


@eqx.filter_jit(donate="all-except-first")
def _train_call(consts, params, opt_state, xs, mode):
    """Up to `len(xs)` optimiser steps in one dispatch. `xs` holds one PRNG key per
    step (on-the-fly simulation) or one row of indices per step (fixed budget).

    `mode` (`_mode`, arrays, so one program serves both): `(n, update)` runs the first
    `n` steps only; without `update` the parameters and optimiser state stay as they
    are, and the call measures: each step's loss and statistics (`_batch_stats`) at the
    given parameters. `fit` draws its pilot batch and evaluates its fixed validation
    set (fixed keys) that way, with the program that trains: no other program of the
    simulator to compile (~2 s of a cold flow fit on 2 CPU cores). The statistics also
    hold whether each step's updated parameters are all finite (`"finite"`), which
    `fit` reads with the losses once per dispatch (`_check_finite`).

    **Returns:** `(params, opt_state, losses, stats)`, a loss and statistics per step
    (zeros for steps not run)."""
    _TRACES["train"] += 1
    source, frozen, optimiser, batch_size, shards, sharding = consts
    n_run, update = mode
    time_, channels = frozen.standardise.mean.shape
    k = frozen.y_mean.shape[0]

    def run(carry, x):
        params, opt_state = carry
        batch = _draw(source, x, batch_size, shards, sharding)
        if batch.y.shape[-1] != k or batch.x.shape[1:] != (time_, channels):
            raise ValueError(
                f"The task's samples have inputs {batch.x.shape[1:]} and {batch.y.shape[-1]} target "
                f"components, but it declares ({time_}, {channels}) and {k} (its `labels`, "
                "`in_time` and `in_channels` must count them)."
            )
        (loss, sums), grads = eqx.filter_value_and_grad(_loss_and_sums, has_aux=True)(params, frozen, batch)
        updates, new_state = optimiser.update(grads, opt_state, params)
        new = (eqx.apply_updates(params, updates), new_state)
        carry = jax.tree.map(lambda a, b: jnp.where(update, a, b), new, carry)
        return carry, (loss, {**_batch_stats(batch, frozen, sums), "finite": _all_finite(carry[0])})

    def skip(carry, x):
        dtype = frozen.y_mean.dtype
        zero, grid, col = jnp.zeros((), dtype), jnp.zeros((time_, channels), dtype), jnp.zeros((k, 1), dtype)
        stats = {"n": jnp.zeros((time_, channels), jnp.int32), "mean": grid, "m2": grid, "y_n": jnp.zeros((k, 1), jnp.int32),
                 "y_mean": col, "y_m2": col, "total": zero, "weight": zero, "finite": jnp.ones((), bool)}  # fmt: skip
        return carry, (zero, stats)

    def step(carry, ix):
        i, x = ix
        return jax.lax.cond(i < n_run, run, skip, carry, x)

    (params, opt_state), (losses, stats) = jax.lax.scan(step, (params, opt_state), (jnp.arange(len(xs)), xs))
    return params, opt_state, losses, stats


def _all_finite(tree) -> jax.Array:
    """Whether every element of every array of `tree` is finite: one boolean."""
    leaves = jax.tree.leaves(tree)
    return functools.reduce(jnp.logical_and, (jnp.all(jnp.isfinite(a)) for a in leaves), jnp.ones((), bool))


def _measure(consts, params, opt_state, key, n_batches: int, steps_per_call: int):
    """The statistics (`_batch_stats`) of `n_batches` batches simulated from `key` at
    the given parameters, by the training call without updates: `(params, opt_state,
    stats)`, the first two as the call returns them (unchanged), the statistics on
    the host, one row per batch."""
    keys = jax.random.split(key, n_batches)
    rows = []
    for start in range(0, n_batches, steps_per_call):
        xs = keys[start : start + steps_per_call]
        n = len(xs)
        xs = jnp.concatenate([xs, jnp.broadcast_to(xs[-1:], (steps_per_call - n, *xs.shape[1:]))]) if n < steps_per_call else xs
        params, opt_state, _, stats = _train_call(consts, params, opt_state, xs, _mode(n, update=False))
        rows.append(jax.tree.map(lambda a: np.asarray(a)[:n], stats))
    return params, opt_state, jax.tree.map(lambda *a: np.concatenate(a), *rows)


def _pilot_scaling(stats: dict, log1p: bool, task: AbstractTask):
    """`(standardise, y_mean, y_std)` from a pilot's statistics (`_measure`) of
    `task`'s batches: what `_initial_estimator` fits on a pilot batch, pooled over its
    batches."""
    pooled = lambda name: pool_moments(*(stats[name + p].astype(np.float64) for p in ("n", "mean", "m2")))  # noqa: E731
    y_n, y_mean, y_m2 = (a[:, 0] for a in pooled("y_"))  # every target: the same samples
    if not y_n[0]:
        raise _all_failed(task)
    dtype = stats["mean"].dtype
    n, mean, m2 = pooled("")
    standardise = Standardise.from_moments(n.astype(int), mean.astype(dtype), m2.astype(dtype), log1p=log1p)
    if task.n_classes:
        return standardise, np.zeros(1), np.ones(1)
    y_std = np.sqrt(y_m2 / y_n)
    return standardise, y_mean, _floored_std(y_mean, y_std)


def _floored_std(y_mean, y_std):
    return np.where(y_std > 1e-8 * np.maximum(np.abs(y_mean), 1.0), y_std, 1.0)


def _validation_loss(stats: dict) -> float:
    return float(stats["total"].sum() / max(float(stats["weight"].sum()), 1.0))


@eqx.filter_jit
def _eval_loss(frozen: Estimator, params, batch: Batch, chunk: int):
    """The weighted mean loss over a batch, evaluated `chunk` samples at a time."""
    chunks = jax.tree.map(lambda a: a.reshape(-1, chunk, *a.shape[1:]), batch)

    def one(b):
        est = _assemble(frozen, params)
        per = jax.vmap(est.loss)(b.x, b.mask, b.y)
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


def _make_network(network, task: AbstractTask, out_size: int, key) -> AbstractNetwork:
    if network is None:
        network = MLP
    if isinstance(network, AbstractNetwork):
        got = (network.in_time, network.in_channels, network.out_size)
        want = (task.in_time, task.in_channels, out_size)
        if got != want:
            raise ValueError(
                f"The network maps (time, channels) = {got[:2]} to {got[2]} outputs, but the task "
                f"and head need {want[:2]} → {want[2]}. Pass the class (e.g. sgjax.nn.MLP) or "
                "functools.partial(sgjax.nn.MLP, width=...) and fit builds it with the right sizes."
            )
        return network
    if not callable(network):
        raise TypeError(f"`network` must be an sgjax.nn network, its class, or a factory; got {network!r}.")
    # Fully observed data: the mask is a constant 1, so a built-in network need not
    # read it (MLP 2x256 on 100 times: the network step ~18% cheaper).
    extra = {"mask_input": False} if task.fully_observed and _takes_mask_input(network) else {}
    net = network(task.in_time, task.in_channels, out_size, key=key, **extra)
    if not isinstance(net, AbstractNetwork):
        raise TypeError(f"The network factory returned {type(net).__name__}, not an sgjax.nn.AbstractNetwork.")
    return net


def _takes_mask_input(network) -> bool:
    """Whether `network` is an sgjax.nn network class (or a `functools.partial` of
    one) with a `mask_input` argument the caller has not set."""
    keywords = {}
    while isinstance(network, functools.partial):
        keywords.update(network.keywords)
        network = network.func
    return (
        isinstance(network, type)
        and issubclass(network, AbstractNetwork)
        and "mask_input" in inspect.signature(network.__init__).parameters
        and "mask_input" not in keywords
    )


def _modules(task, head, network, n_targets: int, key):
    """The network and the built head for `n_targets` target components: all that
    the initial estimator needs but the pilot batch."""
    net = _make_network(network, task, head.n_outputs(n_targets, task.n_classes), key)
    return net, head.build(n_targets, jax.random.fold_in(key, 1))


def _initial_estimator(task, head, network, pilot: Batch, log1p, key, modules=None) -> Estimator:
    """The estimator before training: input standardisation and target scaling fitted
    on `pilot`, the network and head from `modules` (built by `_modules` for the
    pilot's number of targets) or built here."""
    x, mask, w = np.asarray(pilot.x), np.asarray(pilot.mask), np.asarray(pilot.weight)
    ok = w > 0
    if not ok.any():
        raise _all_failed(task)
    if log1p is None:  # counts (non-negative data) are standardised on the log scale
        log1p = bool(np.all(x[ok][mask[ok]] >= 0))
    standardise = Standardise.fit(x[ok], mask[ok], log1p=log1p)
    if task.n_classes:
        y_mean, y_std, k = np.zeros(1), np.ones(1), 1
    else:
        y = np.asarray(pilot.y)[ok]
        y_mean, y_std, k = y.mean(0), y.std(0), y.shape[1]
        y_std = _floored_std(y_mean, y_std)
    modules = _modules(task, head, network, k, key) if modules is None else modules
    return _estimator(task, modules, standardise, y_mean, y_std)


def _estimator(task, modules, standardise: Standardise, y_mean, y_std) -> Estimator:
    dtype = jnp.result_type(float)
    net, built = modules
    return Estimator(
        standardise=standardise,
        network=net,
        head=built,
        y_mean=jnp.asarray(y_mean, dtype),
        y_std=jnp.asarray(y_std, dtype),
        labels=tuple(task.labels),
        spaces=tuple(task.spaces),
        n_classes=task.n_classes,
        info=json.dumps(task.describe()),
    )


def _copy(tree):
    """Fresh buffers for every array of `tree` (transfers: nothing to compile). An
    array spread over several processes is copied shard by shard, where it lives."""

    def one(a):
        if isinstance(a, jax.Array) and not a.is_fully_addressable:
            shards = [jax.device_put(s.data, s.device, may_alias=False) for s in a.addressable_shards]
            return jax.make_array_from_single_device_arrays(a.shape, a.sharding, shards)
        return jax.device_put(a, may_alias=False)

    return jax.tree.map(one, tree)


def _log1p_known(task: AbstractTask, log1p) -> bool | None:
    """`fit`'s choice of `log1p` when it is known before the pilot batch: as given, or
    `True` where every simulator's noise gives non-negative data (counts, log-normal
    values), which the pilot's test (all observed values >= 0) then always passes.
    `None`: only the pilot can tell."""
    if log1p is not None:
        return bool(log1p)
    return task.nonnegative


def _placeholder(task, modules, log1p: bool, n_targets: int):
    """`(params, frozen)` of an estimator that differs from the one `fit` will train
    only in the values of its standardisation and target scaling (arrays, traced):
    the programs compiled for it are the real estimator's."""
    skeleton = Standardise.skeleton(task.in_time, task.in_channels, log1p)
    return _split(_estimator(task, modules, skeleton, np.zeros(n_targets), np.ones(n_targets)))


def _init(optimiser: optax.GradientTransformation, params):
    """`optimiser.init(params)` as one compiled program: op by op, each of its zero
    arrays is one more small XLA program (0.35 against 0.11 s cold for a flow's Adam
    state on 2 CPU cores)."""
    return eqx.filter_jit(optimiser.init)(params)


def _checkpoints(directory: pathlib.Path) -> list[pathlib.Path]:
    return sorted(directory.glob("ckpt-*.json"))


def _checkpoint_step(path: pathlib.Path) -> int:
    return int(path.stem.removeprefix("ckpt-"))


# `atomic_write`'s temporary files for a checkpoint's two files: `.ckpt-<step>.eqx.XXXXXXXX.tmp`.
_CHECKPOINT_TMP = re.compile(r"\.ckpt-\d+\.(eqx|json)\.[A-Za-z0-9_]+\.tmp")


def _remove_stale_temporaries(directory: pathlib.Path) -> None:
    """Delete the temporary files of checkpoint writes that a kill interrupted (only
    those: nothing else in `directory` is touched)."""
    for path in directory.iterdir():
        if _CHECKPOINT_TMP.fullmatch(path.name):
            path.unlink(missing_ok=True)


def _latest_checkpoint(directory: pathlib.Path, optimiser):
    """The newest checkpoint whose payload verifies, or `None`. A checkpoint whose
    write was interrupted has no JSON (written last) or a payload that fails its
    checksum; it is skipped in favour of the previous one."""
    errors = []
    for path in reversed(_checkpoints(directory)):
        try:
            header = read_header(path, "checkpoint")
            est = skeleton(header["estimator"])
            params, _ = _split(est)
            like = {"estimator": est, "opt_state": optimiser.init(params), "best": params}
            return header, read_payload(path.with_suffix(""), header, like)
        except (FileFormatError, KeyError) as e:
            errors.append(f"{path.name}: {e}")
    if errors:
        raise FileFormatError("No usable checkpoint in " + str(directory) + ":\n" + "\n".join(errors))
    return None


# Arguments of `fit` that may be `None` (their default) instead of a positive integer.
_OPTIONAL_COUNTS = ("patience", "checkpoint_every")


def _check_settings(*, learning_rate, optimiser, log1p, checkpoint_dir, callback, flags: dict, counts: dict) -> None:
    """Refuse `fit`'s settings of the wrong type or out of range before anything runs:
    `counts` must be positive integers (or `None`, for `_OPTIONAL_COUNTS`), `flags`
    booleans."""
    for name, v in counts.items():
        if v is None and name in _OPTIONAL_COUNTS:
            continue
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            default = " or None" if name in _OPTIONAL_COUNTS else ""
            raise ValueError(f"`{name}` must be a positive integer{default}, got {v!r}.")
    ok = isinstance(learning_rate, numbers.Real) and not isinstance(learning_rate, bool)
    if not (ok and math.isfinite(learning_rate) and learning_rate > 0):
        raise ValueError(f"`learning_rate` must be a finite positive number such as 3e-3, got {learning_rate!r}.")
    if optimiser is not None and not (callable(getattr(optimiser, "init", None)) and callable(getattr(optimiser, "update", None))):
        raise TypeError(f"`optimiser` must be an optax.GradientTransformation such as optax.adam(1e-3), got {optimiser!r}.")
    for name, v in {**flags, "log1p": log1p}.items():
        if not isinstance(v, (bool, np.bool_)) and not (name == "log1p" and v is None):
            raise TypeError(f"`{name}` must be True or False{' or None (decide from the pilot)' if name == 'log1p' else ''}, got {v!r}.")
    if callback is not None and not callable(callback):
        raise TypeError(f"`callback` must be a function callback(step, metrics) or None, got {callback!r}.")
    if checkpoint_dir is not None:
        if not isinstance(checkpoint_dir, (str, os.PathLike)):
            raise TypeError(f"`checkpoint_dir` must be a directory path (str or pathlib.Path), got {checkpoint_dir!r}.")
        if pathlib.Path(checkpoint_dir).exists() and not pathlib.Path(checkpoint_dir).is_dir():
            raise ValueError(f"`checkpoint_dir` {str(checkpoint_dir)!r} is a file; name a directory (it is created if missing).")


def fit(
    task: AbstractTask,
    head: AbstractHead | None = None,
    network=None,
    *,
    key: Key,
    steps: int = 2000,
    batch_size: int = 512,
    optimiser: optax.GradientTransformation | None = None,
    learning_rate: float = 3e-3,
    steps_per_call: int = 25,
    validation_size: int = 4096,
    eval_every: int = 250,
    patience: int | None = None,
    budget: int | None = None,
    pilot_size: int = 4096,
    log1p: bool | None = None,
    checkpoint_dir=None,
    checkpoint_every: int | None = None,
    resume: bool = False,
    progress: bool = True,
    callback: Callable[[int, dict], None] | None = None,
    devices=None,
    shards: int | None = None,
) -> tuple[Estimator, dict]:
    """Train an SGNN on a stream of fresh simulations (or on a fixed budget of them).

    Each training step draws `θ` from the prior, simulates, observes, computes the
    target, and updates the network — all inside one jitted function, `steps_per_call`
    steps per dispatch with `lax.scan`, parameter and optimiser buffers donated. Input
    standardisation and target scaling are fitted on a pilot batch and stored with the
    estimator.

    **Arguments:**

    - `task`: an [`sgjax.Task`][], [`sgjax.ModelSelection`][] or any
        [`sgjax.AbstractTask`][].
    - `head`: what to learn; default [`sgjax.heads.Point`][] (the posterior mean), or
        `Quantile()`, `Gaussian()`, `MixtureDensity()`, `Classifier()` (model
        selection).
    - `network`: an [`sgjax.nn`][] class (default `MLP`), a factory
        `(in_time, in_channels, out_size, *, key) → network` such as
        `functools.partial(sgjax.nn.GRU, hidden=128)`, or a built network.
    - `key`: the PRNG key. The run is a deterministic function of it and of the
        other arguments given the same sgjax, jax and jaxlib versions, the same
        backend and device type, the same `devices` and `shards`, and the same number
        of CPU cores available to the process: two identical fits then give
        bitwise-identical parameters, and a run interrupted and resumed from its
        checkpoints equals an uninterrupted one bit for bit. Beyond that, results
        agree to rounding only: XLA:CPU splits large operations (matrix products)
        among the cores it may use, so the same fit on 1 core and on 2 differs in the
        last bits (SIR, the default MLP, batch 512, 100 steps: two thirds of the
        parameters differ, by ~1e-7; the validation loss in the 7th digit). To compare
        runs across machines, give them the same cores (e.g. `taskset -c 0`).
    - `steps`: optimiser steps (rounded up to a multiple of `steps_per_call`).
    - `batch_size`: samples per step.
    - `optimiser`: any optax transformation; default [`sgjax.default_optimiser`][]
        with `learning_rate` over `steps`.
    - `learning_rate`: the default optimiser's peak learning rate (a finite positive
        number; recorded in checkpoints even with `optimiser`). 3e-3 trained each
        network and head tried to a lower validation loss than 1e-3 in the same steps
        (SIR with reporting and Poisson counts; MLP, GRU and Transformer; point,
        mixture and flow heads; `benchmarks/RESULTS.md`).
    - `steps_per_call`: steps fused into one dispatch.
    - `validation_size`: a fixed held-out set of simulations for the validation loss
        (rounded up to whole batches). Where `log1p` is known before any data are seen
        (count or log-normal noise, or given) and training streams fresh simulations
        on one device, the training call itself simulates it from fixed keys at each
        evaluation (and the pilot batch once), without updating: no second program of
        the simulator to compile, ~2 s sooner cold on 2 CPU cores. Otherwise both
        are simulated once, beside the network's construction.
    - `eval_every`: steps between validation losses (a multiple of `steps_per_call`).
    - `patience`: stop after this many evaluations without improvement (default: never);
        the best estimator seen is returned.
    - `budget`: train on this many pre-simulated samples (epochs of shuffled
        minibatches) instead of fresh simulations, to compare sample efficiency with
        budgeted methods.
    - `pilot_size`: samples used to fit input standardisation and target scaling
        (rounded up to whole batches where the training call simulates them).
    - `log1p`: standardise `log1p(x)`; default: when all pilot data are `≥ 0`.
    - `checkpoint_dir`: write checkpoints there every `checkpoint_every` steps
        (default `eval_every`), atomically; the last two are kept. With several
        processes, process 0 writes them and every process can resume from them (use a
        directory they share).
    - `resume`: continue from the newest valid checkpoint in `checkpoint_dir`; the
        result equals an uninterrupted run with the same arguments.
    - `progress`: show a tqdm progress bar (loss, validation loss, samples/s).
    - `callback`: called as `callback(step, metrics)` after each evaluation.
    - `devices`: data-parallel training over several devices: `"all"` (every device
        of every process, e.g. all local GPUs, or all GPUs of a cluster after
        `jax.distributed.initialize()`), a number `n` (the first `n`), or a list of
        `jax.Device`s. Each device simulates its own shard of every batch from its
        own keys and computes its part of the loss; XLA averages the gradients
        across devices, and parameters stay replicated. Default: one device.
    - `shards`: independent key streams per batch (default: one per device). The
        batch, and so the whole run, depends on `shards` but not on the devices: a
        run on 4 devices equals a one-device run with `shards=4` up to rounding (the
        devices sum their gradients in another order).

    **Returns:** `(estimator, history)`, `history` a dict of lists: `step`, `loss`,
    `val_step`, `val_loss`, `samples_per_s`.

    **Raises:** `ValueError` / `TypeError` for settings of the wrong type or out of
    range (before anything is simulated); `FileExistsError` when `checkpoint_dir`
    holds checkpoints and `resume` is false; `RuntimeError` when every simulation of
    the pilot batch failed (the message names the fixes); and
    `TrainingDivergedError` (a `FloatingPointError`) when a training loss or
    the parameters become NaN or infinite: it names the first such step (`.step`)
    and the last good checkpoint (`.checkpoint`, kept on disk; later steps are not
    saved). The check costs no host sync per step: each dispatch returns its
    losses and a flag per step, read once per dispatch.
    """
    check_key(key)
    if not isinstance(task, AbstractTask):
        raise TypeError(f"`task` must be an sgjax task (sgjax.Task, sgjax.ModelSelection), got {type(task).__name__}.")
    head = Point() if head is None else head
    if not isinstance(head, AbstractHead):
        raise TypeError(f"`head` must be an sgjax.heads head such as sgjax.heads.Point(), got {head!r}.")
    from .heads import Classifier

    if bool(task.n_classes) != isinstance(head, Classifier):
        raise ValueError(
            "Model selection (sgjax.ModelSelection) goes with the Classifier head, and the "
            "Classifier head only with model selection."
        )
    _check_settings(
        learning_rate=learning_rate, optimiser=optimiser, log1p=log1p, checkpoint_dir=checkpoint_dir,
        callback=callback, flags={"resume": resume, "progress": progress},
        counts={"steps": steps, "batch_size": batch_size, "steps_per_call": steps_per_call, "eval_every": eval_every,
                "pilot_size": pilot_size, "validation_size": validation_size, "patience": patience,
                "checkpoint_every": checkpoint_every},
    )  # fmt: skip
    optimiser_given = optimiser is not None
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
    optimiser = default_optimiser(learning_rate, steps) if optimiser is None else optimiser
    shards, sharding = _data_parallel(devices, shards, batch_size, budget)

    k_pilot, k_val, k_init, k_train, k_budget = jax.random.split(key, 5)
    validation_size = -(-validation_size // batch_size) * batch_size
    n_targets = 1 if task.n_classes else len(task.labels)
    guess = _log1p_known(task, log1p)
    # Streaming from a simulator whose data fix `log1p` in advance: the pilot batch
    # and the validation set (fixed keys) are simulated and measured by the training
    # call itself (`_measure`), in whole batches; the program depends on the
    # standardisation's shape, not its values. A resumed run takes this path too, so
    # that it evaluates the same validation set as the run it continues. Otherwise (a
    # fixed budget, several devices, or data the pilot must look at) they are
    # pre-simulated.
    in_program = guess is not None and budget is None and sharding is None
    val_f = None
    if in_program:
        modules = _modules(task, head, network, n_targets, k_init)
        params, frozen = _placeholder(task, modules, guess, n_targets)
        # The training call donates its parameters: it gets copies, so that a network
        # or head passed in built (say the last round's) keeps its arrays.
        params = _copy(params)
        opt_state = _init(optimiser, params)
        consts = (task, frozen, optimiser, int(batch_size), shards, None)
        params, opt_state, pilot = _measure(consts, params, opt_state, k_pilot, -(-pilot_size // batch_size), steps_per_call)
        estimator = _estimator(task, modules, *_pilot_scaling(pilot, guess, task))
        frozen = _split(estimator)[1]
    else:
        # Pre-simulated sets in chunks of simulate_batch's one size, whatever the batch
        # size: the held-out sets of sgjax.evaluate, MismatchScore and the experiments
        # reuse that one compiled sampler of the task. They are simulated on a second
        # thread while this one builds the network and head (op by op, mostly Python);
        # the validation set is first needed at the first evaluation.
        pool = ThreadPoolExecutor(1, thread_name_prefix="sgjax-presimulate")
        pilot_f = pool.submit(simulate_batch, task, k_pilot, pilot_size)
        val_f = pool.submit(simulate_batch, task, k_val, validation_size)
        try:
            modules = _modules(task, head, network, n_targets, k_init)
            pilot = pilot_f.result()
            if not task.n_classes and pilot.y.shape[1] != n_targets:  # labels that do not count the targets
                modules = None
            estimator = _initial_estimator(task, head, network, pilot, log1p, k_init, modules)
        except BaseException:
            val_f.cancel()
            raise
        finally:
            pool.shutdown(wait=False)  # the validation set may still be running
        params, frozen = _split(estimator)
        params = _copy(params)  # as above: the caller's arrays are not donated
        opt_state = _init(optimiser, params)

    config = {
        "task": task.describe(),
        "head": head.config(),
        "network": estimator.network.config(),
        "batch_size": int(batch_size),
        "steps_per_call": int(steps_per_call),
        "learning_rate": float(learning_rate),
        "validation_size": int(validation_size),
        "eval_every": int(eval_every),
        "patience": patience,
        "budget": None if budget is None else int(budget),
        "pilot_size": int(pilot_size),
        "shards": shards,
        "key": np.asarray(jax.random.key_data(key)).ravel().tolist(),
    }
    history = {"step": [], "loss": [], "val_step": [], "val_loss": [], "samples_per_s": []}
    step, best_val, bad_evals, best = 0, math.inf, 0, _copy(params)
    already_stopped = False  # a resumed run that had stopped early stays stopped
    ckpt_dir = None if checkpoint_dir is None else pathlib.Path(checkpoint_dir)
    if ckpt_dir is not None:
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        if jax.process_index() == 0:  # the one writer (below)
            _remove_stale_temporaries(ckpt_dir)
        if _checkpoints(ckpt_dir) and not resume:
            newest = _checkpoints(ckpt_dir)[-1]
            raise FileExistsError(
                f"{ckpt_dir} already holds checkpoints (the newest {newest.name}, step "
                f"{_checkpoint_step(newest)}). Pass resume=True to continue that run, or delete the "
                "directory (or choose another `checkpoint_dir`) to start afresh."
            )
        found = _latest_checkpoint(ckpt_dir, optimiser) if resume else None
        if found is not None:
            header, state = found
            saved = {"shards": 1, **header["fit"]}  # checkpoints from before data parallelism
            diff = {k: (saved.get(k), v) for k, v in config.items() if saved.get(k) != v}
            if diff:
                raise ValueError(f"Cannot resume: the checkpoint was trained with other settings {diff} (saved, now).")
            estimator = state["estimator"]
            params, frozen = _split(estimator)
            opt_state, best = state["opt_state"], state["best"]
            step, best_val, bad_evals, history = header["step"], header["best_val"], header["bad_evals"], header["history"]
            best_val = math.inf if best_val is None else best_val
            already_stopped = header.get("stopped", False)

    if budget is not None:
        source = _Data(simulate_batch(task, k_budget, int(budget)))
        per_epoch = int(budget) // batch_size
        seed = np.asarray(jax.random.key_data(k_budget)).ravel()
    else:
        source = task
    consts = (source, frozen, optimiser, int(batch_size), shards, sharding)
    if sharding is not None:  # parameters and optimiser state: a copy on every device
        replicated = jax.sharding.NamedSharding(sharding.mesh, jax.sharding.PartitionSpec())
        params, opt_state = jax.device_put((params, opt_state), replicated)
    perms = {}

    def xs_for(call: int):
        if budget is None:
            return jax.random.split(jax.random.fold_in(k_train, call), steps_per_call)
        rows = []
        for s in range(call * steps_per_call, (call + 1) * steps_per_call):
            epoch, pos = divmod(s, per_epoch)
            if epoch not in perms:  # one shuffle per epoch, a function of the key and epoch only
                perms.clear()
                perms[epoch] = np.random.default_rng([*seed.tolist(), epoch]).permutation(int(budget))
            rows.append(perms[epoch][pos * batch_size : (pos + 1) * batch_size])
        return jnp.asarray(np.stack(rows))

    from tqdm.auto import tqdm

    bar = tqdm(total=steps, initial=step, disable=not progress, unit="step", dynamic_ncols=True)
    window_start, window_samples, first_call, rate = time.perf_counter(), 0, step // steps_per_call, math.nan
    stopped = already_stopped

    def validation_loss():
        nonlocal params, opt_state
        if val_f is not None:
            return float(_eval_loss(frozen, params, val_f.result(), batch_size))
        params, opt_state, stats = _measure(consts, params, opt_state, k_val, validation_size // batch_size, steps_per_call)
        return _validation_loss(stats)

    try:
        while step < steps and not stopped:
            call = step // steps_per_call
            params, opt_state, losses, stats = _train_call(consts, params, opt_state, xs_for(call), _mode(steps_per_call))
            _check_finite(*jax.device_get(_local((losses, stats["finite"]))), step, ckpt_dir, optimiser_given)
            step += steps_per_call
            window_samples += steps_per_call * batch_size
            history["step"].append(step)
            history["loss"].append(float(jnp.mean(losses)))
            if call == first_call:  # the first dispatch includes compilation: not counted in samples/s
                window_start, window_samples = time.perf_counter(), 0
            bar.update(steps_per_call)
            bar.set_postfix(loss=f"{history['loss'][-1]:.4g}", val=f"{best_val:.4g}", samples_s=f"{rate:,.0f}")
            if step % eval_every == 0 or step >= steps:
                v = validation_loss()
                if window_samples:
                    rate = window_samples / (time.perf_counter() - window_start)
                history["val_step"].append(step)
                history["val_loss"].append(v)
                history["samples_per_s"].append(None if math.isnan(rate) else rate)
                if v < best_val:
                    best_val, bad_evals, best = v, 0, _copy(params)
                else:
                    bad_evals += 1
                    stopped = patience is not None and bad_evals >= patience
                if callback is not None:
                    callback(step, {"loss": history["loss"][-1], "val_loss": v, "samples_per_s": rate})
                window_start, window_samples = time.perf_counter(), 0
            due = ckpt_dir is not None and (step % checkpoint_every == 0 or step >= steps or stopped)
            if due and jax.process_index() == 0:  # one writer when several processes train together
                _save_checkpoint(
                    ckpt_dir, step, _assemble(frozen, _local(params)), _local(opt_state), _local(best), best_val,
                    bad_evals, history, config, stopped,
                )  # fmt: skip
    finally:
        bar.close()
    return _assemble(frozen, _local(best)), history


class TrainingDivergedError(FloatingPointError):
    """Raised by [`sgjax.fit`][] when the training loss or the parameters become NaN or
    infinite. `step` is the first such optimiser step (counted from 1); `checkpoint`
    the last checkpoint written before it (kept, its parameters finite; the path of
    its two files without their `.json` / `.eqx` suffix), or `None`."""

    def __init__(self, message: str, step: int, checkpoint: pathlib.Path | None):
        super().__init__(message)
        self.step = step
        self.checkpoint = checkpoint


def _check_finite(losses, finite, done: int, ckpt_dir, optimiser_given: bool) -> None:
    """Raise `TrainingDivergedError` unless each loss of a dispatch that began after
    step `done`, and the parameters after each of its updates (`finite`), are finite."""
    bad = ~np.isfinite(losses) | ~finite
    if not bad.any():
        return
    i = int(np.argmax(bad))
    step = done + i + 1
    if np.isfinite(losses[i]):
        what = f"its update made the parameters non-finite (NaN or inf; its loss was {losses[i]:.4g})"
    else:
        what = f"its loss is {losses[i]} (the parameters were finite): the network's output or the batch's data is not finite"
    fix = "Lower the optimiser's learning rate" if optimiser_given else "Lower `learning_rate`"
    fix += ", and check that the simulations are finite under the prior (sgjax.simulate)."
    ckpts = [] if ckpt_dir is None else _checkpoints(ckpt_dir)
    last = ckpts[-1].with_suffix("") if ckpts else None
    if ckpts:
        kept = f" The last good checkpoint, {last} (step {_checkpoint_step(ckpts[-1])}), is kept."
    elif ckpt_dir is not None:
        kept = f" No checkpoint had been written to {ckpt_dir} yet."
    else:
        kept = " Nothing was saved: pass `checkpoint_dir` to keep checkpoints of a long run."
    raise TrainingDivergedError(f"Training diverged at step {step}: {what}. {fix}{kept}", step, last)


def _local(tree):
    """Arrays replicated over the devices of several processes, as this process's own
    copy (every process holds all of each), so that they can be saved, converted to
    NumPy and used like any array. Other leaves pass through."""

    def one(a):
        if isinstance(a, jax.Array) and not a.is_fully_addressable:
            return a.addressable_data(0)
        return a

    return jax.tree.map(one, tree)


def _save_checkpoint(directory, step, estimator, opt_state, best, best_val, bad_evals, history, config, stopped):
    header = {
        "kind": "checkpoint",
        "step": step,
        "best_val": None if math.isinf(best_val) else best_val,
        "bad_evals": bad_evals,
        "stopped": stopped,
        "history": history,
        "fit": config,
        "estimator": estimator_config(estimator),
    }
    write_pair(directory / f"ckpt-{step:08d}", {"estimator": estimator, "opt_state": opt_state, "best": best}, header)
    for old in _checkpoints(directory)[:-KEEP_CHECKPOINTS]:
        old.unlink()
        old.with_suffix(".eqx").unlink(missing_ok=True)
