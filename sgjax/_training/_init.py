"""The estimator before training: its network and head, and its input
standardisation and target scaling. One path fits the latter: the moments of pilot
batches (`_step.batch_stats`, measured by the training call itself), pooled
(`pilot_scaling`). A warm start (`warm_start`) takes all of it from an estimator."""

import dataclasses
import functools
import inspect
import json
from typing import Any, cast

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._inference import Estimator
from .._learning import AbstractTask
from ..heads import AbstractHead
from ..nn import AbstractNetwork, MLP, Standardise, StandardiseInputs
from . import _step
from ._parallel import copy, replicate


def make_network(network, task: AbstractTask, out_size: int, key) -> AbstractNetwork:
    if network is None:
        network = MLP
    if isinstance(network, AbstractNetwork):
        got = (network.in_time, network.in_channels, network.out_size)
        want = (task.in_time, _channels(task), out_size)
        if got != want:
            raise ValueError(
                f"The network maps (time, channels) = {got[:2]} to {got[2]} outputs, but the task "
                f"and head need {want[:2]} → {want[2]} (a known input is one more channel). Pass the class (e.g. sgjax.nn.MLP) or "
                "functools.partial(sgjax.nn.MLP, width=...) and fit builds it with the right sizes."
            )
        return network
    if not callable(network):
        raise TypeError(f"`network` must be an sgjax.nn network, its class, or a factory; got {network!r}.")
    # Fully observed data: the mask is a constant 1, so a built-in network need not
    # read it (MLP 2x256 on 100 times: the network step ~18% cheaper).
    extra: dict[str, Any] = {"mask_input": False} if task.fully_observed and _takes_mask_input(network) else {}
    net = network(task.in_time, _channels(task), out_size, key=key, **extra)
    if not isinstance(net, AbstractNetwork):
        raise TypeError(f"The network factory returned {type(net).__name__}, not an sgjax.nn.AbstractNetwork.")
    return net


def _channels(task: AbstractTask) -> int:
    """The channels the network reads: the observed ones and one per known input
    (`nn.append_inputs`)."""
    return task.in_channels + len(task.inputs)


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


def n_targets(task: AbstractTask) -> int:
    return 1 if task.n_classes else len(task.labels)


def modules(task, head: AbstractHead, network, key):
    """The network and the built head: all that the initial estimator needs but its
    scaling."""
    k = n_targets(task)
    net = make_network(network, task, head.n_outputs(k, task.n_classes), key)
    return net, head.build(k, jax.random.fold_in(key, 1))


def estimator(task, modules, standardise: Standardise, y_mean, y_std, inputs=None) -> Estimator:
    """The estimator of `task` with the built `modules` and the given scaling;
    `inputs`: the known inputs' `StandardiseInputs` (a placeholder where `None` and the
    task has inputs)."""
    dtype = jnp.result_type(float)
    if inputs is None and task.inputs:
        inputs = StandardiseInputs.skeleton(len(task.inputs))
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
        inputs=tuple(task.inputs),
        input_standardise=inputs,
    )


def placeholder(task, modules, log1p: bool):
    """`(params, frozen)` of an estimator that differs from the one `fit` will train
    only in the values of its standardisation and target scaling (arrays, traced):
    the programs compiled for it are the real estimator's."""
    skeleton = Standardise.skeleton(task.in_time, task.in_channels, log1p)
    k = n_targets(task)
    return _step.split(estimator(task, modules, skeleton, np.zeros(k), np.ones(k)))


def log1p_guess(task: AbstractTask, log1p) -> bool | None:
    """`fit`'s choice of `log1p` before any data are seen: as given, or `True` where
    the task declares non-negative observations (`AbstractTask.nonnegative`: counts,
    log-normal values). `None`: the pilot decides (all observed values `≥ 0`)."""
    return bool(log1p) if log1p is not None else task.nonnegative


def pilot_scaling(stats: dict, log1p: bool, task: AbstractTask):
    """`(standardise, y_mean, y_std, inputs)` from pilot batches' statistics
    (`_step.batch_stats`, one row per batch), pooled; `inputs` the known inputs'
    `StandardiseInputs` (`None` without)."""
    pooled = lambda name: Standardise.pool_moments(*(stats[name + p].astype(np.float64) for p in ("n", "mean", "m2")))  # noqa: E731
    y_n, y_mean, y_m2 = (a[:, 0] for a in pooled("y_"))  # every target: the same samples
    if not y_n[0]:
        raise all_failed(task)
    dtype = stats["mean"].dtype
    n, mean, m2 = pooled("")
    standardise = Standardise.from_moments(n.astype(int), mean.astype(dtype), m2.astype(dtype), log1p=log1p)
    inputs = None
    if task.inputs:
        least = np.min(stats["u_min"], axis=0)[:, 0]
        inputs = StandardiseInputs.from_moments(least, *([a[:, 0] for a in pooled(p)] for p in ("u_", "ulog_")))
    if task.n_classes:
        return standardise, np.zeros(1), np.ones(1), inputs
    y_std = np.sqrt(y_m2 / y_n)
    return standardise, y_mean, np.where(y_std > 1e-8 * np.maximum(np.abs(y_mean), 1.0), y_std, 1.0), inputs


def initialise(task, built, source, optimiser, log1p, *, batch_size: int, shards: int, sharding, steps_per_call: int):
    """`(estimator, params, opt_state)` before training: the scaling fitted on
    `source`'s pilot batches, measured by the training call (no update).

    Where no one declared `log1p` (`log1p_guess` is `None`), the pilot is measured
    without it and decides: all observed values `≥ 0` standardise `log1p(x)`. That case
    alone measures the pilot twice and compiles the training call a second time (its
    program depends on `log1p`); a task that declares `nonnegative` compiles once."""
    guess = log1p_guess(task, log1p)

    def measure(log1p: bool):
        params, frozen = placeholder(task, built, log1p)
        # The training call donates its parameters: it gets copies, so that a network
        # or head passed in built (say the last round's) keeps its arrays.
        params = replicate(copy(params), sharding)
        opt_state = replicate(_step.init_optimiser(optimiser, params), sharding)
        consts = (source.program, frozen, optimiser, batch_size, shards, sharding)
        return _step.measure(consts, params, opt_state, source.pilot, source.pilot_batches, steps_per_call)

    params, opt_state, stats = measure(bool(guess))
    if guess is None:
        if not stats["y_n"].sum():
            raise all_failed(task)
        if float(stats["min"].min()) >= 0:
            params, opt_state, stats = measure(True)
    decided = bool(guess) if guess is not None else float(stats["min"].min()) >= 0
    return estimator(task, built, *pilot_scaling(stats, decided, task)), params, opt_state


def warm_start(init: Estimator, task: AbstractTask, built, log1p) -> Estimator:
    """`init`, ready to train further on `task`: its network and head weights, its
    standardisation and target scaling. `built`: the network and head `fit` would
    build (`None` to take `init`'s), whose shapes must be `init`'s."""
    if not isinstance(init, Estimator):
        raise TypeError(f"`init` must be an sgjax.Estimator (a previous fit's), got {type(init).__name__}.")
    want = (tuple(task.labels), tuple(task.spaces), task.n_classes, (task.in_time, task.in_channels), task.inputs)
    got = (tuple(init.labels), tuple(init.spaces), init.n_classes, tuple(init.standardise.mean.shape), init.inputs)
    names = ("labels", "learning spaces", "n_classes", "(in_time, in_channels)", "known inputs")
    for name, a, b in zip(names, got, want):
        if a != b:
            raise ValueError(f"`init` cannot warm-start this task: its {name} are {a}, the task's {b}.")
    if log1p is not None and bool(log1p) != init.standardise.log1p:
        raise ValueError(
            f"`log1p={log1p}` but `init` standardises with log1p={init.standardise.log1p}; leave `log1p` unset."
        )
    if built is not None:
        shapes = lambda m: jax.tree.map(lambda a: (a.shape, a.dtype), eqx.filter(m, eqx.is_array))  # noqa: E731
        mine, theirs = shapes((init.network, init.head)), shapes(tuple(built))
        if jax.tree.structure(mine) != jax.tree.structure(theirs) or jax.tree.leaves(mine) != jax.tree.leaves(theirs):
            raise ValueError(
                "`init`'s network and head differ in shape from the `network` and `head` given: a warm start "
                "continues the same architecture. Leave `head` and `network` unset to take init's."
            )
    return dataclasses.replace(init, info=json.dumps(task.describe()))  # `info` is static


def _simulators(task: AbstractTask) -> tuple:
    """The simulators behind a task (none for a task that simulates on its own)."""
    return getattr(task, "simulators", None) or ((cast(Any, task).simulator,) if hasattr(task, "simulator") else ())


def all_failed(task: AbstractTask) -> RuntimeError:
    """The error for a pilot in which every simulation failed, naming the task, its
    strategy and what to change."""
    sims, strategy = _simulators(task), getattr(task, "strategy", None)
    if not sims:
        return RuntimeError(
            f"Every sample in the pilot batch failed: {type(task).__name__}.sample gave every "
            "sample weight 0, so there is nothing to train on. Check its simulator and prior."
        )
    from .._simulation import PerTrajectory

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
        + "; ".join(f"({i}) {f}" for i, f in enumerate(fixes, 1))
        + "."
    )
