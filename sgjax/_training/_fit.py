"""`sgjax.fit`: argument checks, a data source, an initialisation, a loop."""

import math
import time
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
import optax

from .._custom_types import check_key, Key
from .._inference import Estimator
from .._learning import AbstractTask
from ..heads import AbstractHead, Classifier, Point
from . import _init, _settings, _sources, _step
from ._arrays import array_rows, ArrayTask
from ._checkpoint import open_directory
from ._loop import run, State, TimeLimit
from ._parallel import copy, data_parallel, local, replicate


def _classifies(head: AbstractHead) -> bool:
    """Whether `head` is for model selection, as the head declares it."""
    return head.classifies


def _task_and_head(task, head, init) -> AbstractHead:
    """The head to train (the default for the task, or `init`'s), after checking that
    it goes with the task."""
    if not isinstance(task, AbstractTask):
        raise TypeError(
            f"`task` must be an sgjax task (sgjax.Task, sgjax.ModelSelection, sgjax.ArrayTask), got {type(task).__name__}."
        )
    if head is None:
        head = init.head if isinstance(init, Estimator) else Classifier() if task.n_classes else Point()
    if not isinstance(head, AbstractHead):
        raise TypeError(f"`head` must be an sgjax.heads head such as sgjax.heads.Point(), got {head!r}.")
    if bool(task.n_classes) != _classifies(head):
        raise ValueError(
            "Model selection (sgjax.ModelSelection) goes with the Classifier head, and the "
            "Classifier head only with model selection."
        )
    return head


def _source(task, keys, budget, batch_size: int, plan, pilot_size: int):
    """Where the batches come from: the task's stream, a fixed budget of it, or an
    ArrayTask's rows."""
    sizes = (batch_size, plan.steps_per_call, pilot_size, plan.validation_size)
    if isinstance(task, ArrayTask):
        if budget is not None:
            raise ValueError(
                "`budget` does not apply to an ArrayTask: its rows are the budget (subset them to use fewer)."
            )
        return array_rows(task, keys["validation"], *sizes)
    if budget is not None:
        return _sources.budget(task, keys, int(budget), *sizes)
    return _sources.Stream(task, keys, *sizes)


def _config(
    task, head, estimator, key, batch_size, learning_rate, plan, patience, budget, pilot_size, shards, time_limit, init
):
    """What a checkpoint records of the run's settings, to refuse resuming another."""
    return {
        "task": task.describe(), "head": head.config(), "network": estimator.network.config(),
        "batch_size": int(batch_size), "steps_per_call": plan.steps_per_call, "learning_rate": float(learning_rate),
        "validation_size": plan.validation_size, "eval_every": plan.eval_every, "patience": patience,
        "budget": None if budget is None else int(budget), "pilot_size": int(pilot_size), "shards": shards,
        "key": np.asarray(jax.random.key_data(key)).ravel().tolist(),
        # New settings: None unless used, so that earlier checkpoints still resume.
        "time_limit": time_limit, "init": None if init is None else "estimator",
    }  # fmt: skip


def fit(
    task: AbstractTask,
    head: AbstractHead | None = None,
    network=None,
    *,
    key: Key,
    steps: int | None = None,
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
    callback: Callable[[int, dict], object] | None = None,
    time_limit: float | None = None,
    init: Estimator | None = None,
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

    - `task`: an [`sgjax.Task`][], [`sgjax.ModelSelection`][], an
        [`sgjax.ArrayTask`][] (simulations one already has, in memory or on disk:
        trained on in epochs, `validation_size` rows held out) or any
        [`sgjax.AbstractTask`][].
    - `head`: what to learn; default [`sgjax.heads.Point`][] (the posterior mean) for
        regression and [`sgjax.heads.Classifier`][] for model selection; or
        `Quantile()`, `Gaussian()`, `MixtureDensity()`, `Flow()`.
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
    - `steps`: optimiser steps (rounded up to a multiple of `steps_per_call`); default
        2000, or with `time_limit` no limit but the time.
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
        (rounded up to whole batches). Streaming fresh simulations, the training call
        itself simulates it from fixed keys at each evaluation (and the pilot batches
        once), without updating: no second program of the simulator to compile (~2 s
        sooner cold on 2 CPU cores), whatever the task's noise model, built-in or a
        user's own. With a `budget` it is simulated once beside the budget; from an
        `ArrayTask` it is rows held out.
    - `eval_every`: steps between validation losses (a multiple of `steps_per_call`).
    - `patience`: stop after this many evaluations without improvement (default: never);
        the best estimator seen is returned.
    - `budget`: train on this many pre-simulated samples (epochs of shuffled
        minibatches) instead of fresh simulations, to compare sample efficiency with
        budgeted methods.
    - `pilot_size`: samples used to fit input standardisation and target scaling
        (rounded up to whole batches where the training call simulates them).
    - `log1p`: standardise `log1p(x)`; default: when the task declares non-negative
        data (`AbstractTask.nonnegative`), else when all pilot data are `≥ 0` (then
        the training step compiles twice; a task that declares it compiles once).
    - `checkpoint_dir`: write checkpoints there every `checkpoint_every` steps
        (default `eval_every`), atomically; the last two are kept. With several
        processes, process 0 writes them and every process can resume from them (use a
        directory they share).
    - `resume`: continue from the newest valid checkpoint in `checkpoint_dir`; the
        result equals an uninterrupted run with the same arguments.
    - `progress`: show a tqdm progress bar (loss, validation loss, samples/s).
    - `callback`: called as `callback(step, info)` after each evaluation, `info` a dict
        with `step`, `loss` (the last dispatch's mean), `val_loss` and
        `samples_per_s`. Returning `True` or `"stop"` stops training there, cleanly:
        the best estimator so far is returned (and checkpointed).
    - `time_limit`: a wall-clock budget in seconds for the whole call. After two
        dispatches (compilation done) the throughput is measured and the run's length
        — and the default optimiser's schedule (warm-up and cosine decay) — set to
        the steps that fit, evaluations included; training stops at the first
        dispatch past the limit in any case. `steps`, if given, stays an upper bound.
        With `optimiser` given, its own schedule is kept.
    - `init`: warm start from a previous estimator (say the last round's of
        sequential rounds, `fit(task.restrict(posterior.box()), init=estimator,
        ...)`): training continues from its network and head weights, standardisation
        and target scaling (no pilot). Its labels, learning spaces and shapes must be
        the task's; `head` and `network` may be left unset (they are `init`'s) or must
        build the same shapes. With the same settings, each round reuses the
        compiled training step.
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
    start = time.perf_counter()
    check_key(key)
    head = _task_and_head(task, head, init)
    _settings.check(
        learning_rate=learning_rate, optimiser=optimiser, log1p=log1p, checkpoint_dir=checkpoint_dir,
        callback=callback, time_limit=time_limit, flags={"resume": resume, "progress": progress},
        counts={"steps": steps, "batch_size": batch_size, "steps_per_call": steps_per_call, "eval_every": eval_every,
                "pilot_size": pilot_size, "validation_size": validation_size, "patience": patience,
                "checkpoint_every": checkpoint_every},
    )  # fmt: skip
    plan = _settings.plan(
        steps=steps, time_limit=time_limit, batch_size=batch_size, steps_per_call=steps_per_call, eval_every=eval_every,
        checkpoint_every=checkpoint_every, validation_size=validation_size, budget=budget, resume=resume,
        checkpoint_dir=checkpoint_dir,
    )  # fmt: skip
    optimiser_given, timed = optimiser is not None, optimiser is None and time_limit is not None
    if timed:
        optimiser = _step.timed_optimiser(learning_rate)
    elif optimiser is None:
        optimiser = _step.default_optimiser(learning_rate, plan.steps)
    shards, sharding = data_parallel(devices, shards, batch_size)

    # The data source, and the estimator before training: a warm start, or the
    # network and head built and the scaling fitted on the pilot batches.
    names = ("pilot", "validation", "init", "train", "budget")
    keys = dict(zip(names, jax.random.split(key, 5)))
    source = _source(task, keys, budget, int(batch_size), plan, pilot_size)
    settings: dict[str, Any] = dict(
        batch_size=int(batch_size), shards=shards, sharding=sharding, steps_per_call=plan.steps_per_call
    )
    if init is not None:
        built = None if head is init.head and network is None else _init.modules(task, head, network, keys["init"])
        estimator = _init.warm_start(init, task, built, log1p)
        params = replicate(copy(_step.split(estimator)[0]), sharding)  # the caller's arrays are not donated
        opt_state = replicate(_step.init_optimiser(optimiser, params), sharding)
    else:
        built = _init.modules(task, head, network, keys["init"])
        estimator, params, opt_state = _init.initialise(task, built, source, optimiser, log1p, **settings)
    if timed:
        opt_state = _step.with_total(opt_state, min(plan.steps, 40 * plan.steps_per_call))
    frozen = _step.split(estimator)[1]

    # Resume from the newest checkpoint, or start afresh.
    config = _config(
        task,
        head,
        estimator,
        key,
        batch_size,
        learning_rate,
        plan,
        patience,
        budget,
        pilot_size,
        shards,
        time_limit,
        init,
    )
    directory, found = open_directory(checkpoint_dir, resume, optimiser, config)
    state = State(params, opt_state, best=copy(params))
    if found is not None:
        header, saved = found
        params, frozen = _step.split(saved["estimator"])
        state = State(*replicate((params, saved["opt_state"]), sharding), best=saved["best"], step=header["step"],
                      best_val=math.inf if header["best_val"] is None else header["best_val"],
                      bad_evals=header["bad_evals"], stopped=header.get("stopped", False), history=header["history"])  # fmt: skip

    consts = (source.program, frozen, optimiser, int(batch_size), shards, sharding)
    limit = TimeLimit(time_limit, start, source.validation_batches, plan.eval_every)
    state = run(
        state, consts, source, plan, batch_size=int(batch_size), patience=patience, callback=callback, limit=limit,
        timed=timed, checkpoints=(directory, config), progress=progress, optimiser_given=optimiser_given,
    )  # fmt: skip
    return _step.assemble(frozen, local(state.best)), state.history
