"""Batched generation: `θ → trajectory → observation` for batches from one to millions."""

import functools
import os
import threading
import warnings
from collections.abc import Mapping
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float

from .._custom_types import check_key, Key, Params
from .._internal import _hostmem as _hostmem
from ._prior import Prior
from ._simulator import Simulator
from ._strategy import AbstractStrategy, SharedStep, solve_one, solve_or_rescue


#: Trajectories per solve. Measured on a 2-core CPU (SIR, 100 times): ~1k keeps a
#: shared-step solve's working set in cache; one 64k solve is ~2.5x slower per sample.
DEFAULT_CHUNK_SIZE = 1024

#: Chunks dispatched ahead of the one being copied to the host, on an accelerator
#: (where dispatch is asynchronous; on CPU a chunk runs while its call waits).
_IN_FLIGHT = 2


class Simulation(eqx.Module):
    """A batch of simulations: NumPy arrays on the host, indexed by sample first.

    **Fields:**

    - `theta`: dict of parameter name → `(n,)`.
    - `ts`: the observation times, `(time,)`.
    - `states`: the clean trajectories at the observation times, `(n, time, state)`
        (`None` if not kept).
    - `signal`: the clean observed quantity (e.g. daily incidence), `(n, time, channels)`.
    - `observations`: the noisy data `x`, `(n, time, channels)`; 0 where missing.
    - `mask`: `True` where observed, `(n, time, channels)`.
    - `valid`: `True` where the solve succeeded and every value is finite, `(n,)`.
    - `n_failed`: how many simulations failed in all, including those replaced by
        fresh prior draws.
    """

    theta: Params
    ts: Float[Array, " time"]
    states: Float[Array, "n time state"] | None
    signal: Float[Array, "n time channels"]
    observations: Float[Array, "n time channels"]
    mask: Bool[Array, "n time channels"]
    valid: Bool[Array, " n"]
    n_failed: int = eqx.field(static=True)

    def __len__(self):
        return self.valid.shape[0]


def _finite(a: Array) -> Bool[Array, " batch"]:
    """Whether every value of each sample is finite, batch last.

    `a * 0` is 0 where `a` is finite and NaN where it is infinite or NaN, and a sum
    propagates NaN on every backend (IEEE addition, vectorised or not), so this is
    `all(isfinite)` in one float reduction. A max reduction is not: XLA on CPU
    vectorises it with an instruction that drops NaN, so NaN trajectories passed as
    valid. Measured on a 1,024-trajectory shared-step chunk (2-core CPU, best of 15
    interleaved): SIR 100 days 4.21 ms with the old max, 4.39 ms with this, 5.70 ms
    with `jnp.all(jnp.isfinite(a))`; exponential growth 50 days 2.13 / 2.32 / 3.75 ms.
    (XLA simplifies `x * 0` only for integers, for exactly this NaN reason.)"""
    return jnp.sum(a * 0, axis=tuple(range(a.ndim - 1))) == 0


class Observed(eqx.Module):
    """A batch of simulated observations inside a traced program, sample first: what
    `observe_batch` returns.

    **Fields:** `theta` (name → `(n,)`), `states` `(n, time, state)` at the observation
    times (`None` unless kept), `signal` and `observations` `(n, time, channels)`,
    `mask` `(n, time, channels)` (`True` where observed), `valid` `(n,)`. Failed
    samples hold zeros in `states`, `signal` and `observations`.
    """

    theta: Params
    states: Float[Array, "n time state"] | None
    signal: Float[Array, "n time channels"]
    observations: Float[Array, "n time channels"]
    mask: Bool[Array, "n time channels"]
    valid: Bool[Array, " n"]


def solve_signal(simulator: Simulator, theta: Params, *, strategy: AbstractStrategy, rescue: bool = False):
    """Solve a batch and take its clean signal, batch last (the shared-step solver's
    own layout, in which per-sample checks reduce over leading axes and vectorise
    over contiguous memory): the first half of sgjax's one definition of a simulated
    observation, shared by simulation (`observe_batch`, `simulate`) and the
    evidence baseline; `solve_signal_one` is its one-trajectory, differentiable form
    for the likelihood baselines.

    **Arguments:**

    - `simulator`: the [`sgjax.Simulator`][].
    - `theta`: name → `(batch,)`.
    - `strategy`: how the batch is solved.
    - `rescue`: re-solve in the program, per trajectory, a batch whose shared solve
        fails whole (`solve_or_rescue`); for code inside a larger jitted function.

    **Returns:** `(ys, signal, valid)`: the states at `t0` and every observation time
    `(time + 1, state, batch)`, the signal `(time, channels, batch)`, and `(batch,)`
    whether the solve succeeded with every state and signal value finite. Failed
    samples are not zeroed.
    """
    ys, signal, ok, finite = _solve_signal(simulator, strategy, theta, rescue)
    return ys, signal, ok & finite


def solve_signal_one(
    simulator: Simulator, theta: Params, *, adjoint: dfx.AbstractAdjoint | None = None, unrolled: bool = False
):
    """`solve_signal` for one trajectory, differentiable through `adjoint`: the same
    solve → signal → validity, for the likelihood baselines, which differentiate it
    (reverse mode through diffrax's checkpointed adjoint, or `diffrax.ForwardMode()`)
    and have no batch to share steps across. `unrolled` unrolls explicit Runge–Kutta
    stages (`sgjax/_internal/_unrolled.py`).

    **Returns:** `(ys, signal, valid)`: the states at `t0` and every observation time
    `(time + 1, state)`, the signal `(time, channels)`, and whether the solve
    succeeded with every value finite (a scalar)."""
    ys, ok = solve_one(simulator, theta, simulator.stepsize_controller, adjoint, unrolled=unrolled)
    signal = simulator.signal(ys)
    return ys, signal, ok & jnp.all(jnp.isfinite(ys)) & jnp.all(jnp.isfinite(signal))


def _solve_signal(simulator, strategy, theta, rescue):
    solve = functools.partial(solve_or_rescue, strategy) if rescue else strategy.solve
    ys, ok = solve(simulator, theta)  # (time + 1, state, batch)
    signal = jax.vmap(simulator.signal, in_axes=-1, out_axes=-1)(ys)  # (time, channels, batch)
    return ys, signal, ok, _finite(ys) & _finite(signal)


def _solve_observe(simulator: Simulator, strategy: AbstractStrategy, theta: Params, key: Key, rescue: bool = False):
    """Solve → signal → noise → validity for one chunk, batch last: the one
    definition of a simulated observation. Returns the states at `t0` and every
    observation time, the signal, the observations, the mask and `valid`; failed
    samples are not yet zeroed (a non-finite signal is 0 before noise)."""
    ys, signal, ok, finite = _solve_signal(simulator, strategy, theta, rescue)
    x, mask = simulator.observe(key, jnp.where(finite, signal, 0.0), theta)
    return ys, signal, x, mask, ok & finite & _finite(x)


def observe_batch(
    simulator: Simulator,
    theta: Params,
    *,
    key: Key,
    strategy: AbstractStrategy | None = None,
    keep_states: bool = True,
) -> Observed:
    """Simulated observations of a batch of `θ` inside a traced program (a task's
    training batch, a posterior predictive draw): solve, signal, noise and validity,
    sample first, failed samples zeroed. A batch whose shared solve fails whole is
    re-solved per trajectory in the program, as [`sgjax.simulate`][] does from the
    host. Jittable; `simulate` is the host-side entry point for large batches.

    **Arguments:**

    - `simulator`: the [`sgjax.Simulator`][].
    - `theta`: name → `(n,)`, every parameter the simulator reads.
    - `key`: the noise's (and missingness's) PRNG key.
    - `strategy`: default [`sgjax.SharedStep`][].
    - `keep_states`: return the states at the observation times (else `None`).

    **Returns:** an `Observed`.
    """
    strategy = SharedStep() if strategy is None else strategy
    ys, signal, x, mask, valid = _solve_observe(simulator, strategy, theta, key, rescue=True)

    # Failed samples hold zeros so that reductions over a batch never see NaN;
    # `valid` says which to use.
    def batch_first(a):
        return jnp.moveaxis(jnp.where(valid, a, 0), -1, 0)

    states = batch_first(ys[1:]) if keep_states else None
    return Observed(theta, states, batch_first(signal), batch_first(x), jnp.moveaxis(mask, -1, 0), valid)


def _batch_first(a: Array) -> Array:
    """`(..., batch) -> (batch, ...)` as one 2-D transpose, which XLA on CPU tiles; an
    N-D transpose, or one fused with an element-wise op, reads with a stride (measured
    0.1-0.2 ms against 0.5 ms for the states of 1,024 SIR trajectories)."""
    return a.reshape(-1, a.shape[-1]).T.reshape(a.shape[-1:] + a.shape[:-1])


def _chunk_outputs(simulator, strategy, theta: Params, key: Key, keep_states: bool):
    """`simulate`'s chunk, batch first. Failed samples are zeroed on the host, not
    here, so that nothing fuses into the transposes; the states keep `t0`, sliced off
    on the host, for the same reason."""
    ys, signal, x, mask, valid = _solve_observe(simulator, strategy, theta, key)
    states = _batch_first(ys) if keep_states else None
    return theta, states, _batch_first(signal), _batch_first(x), _batch_first(mask), valid


_chunk_given = eqx.filter_jit(_chunk_outputs)


def _from_prior(simulator, strategy, prior: Prior, key: Key, size: int, keep_states: bool):
    ktheta, knoise = jax.random.split(key)
    return _chunk_outputs(simulator, strategy, prior.sample(ktheta, size), knoise, keep_states)


_chunk_from_prior = eqx.filter_jit(_from_prior)


def _noise_key(key, from_prior: bool):
    return jax.random.split(key)[1] if from_prior else key


def _workers(n_chunks: int) -> int:
    """Host threads that dispatch chunks. XLA on CPU runs a program's solver loop on
    one core, but separate programs concurrently: two threads ran 1.9x one thread on 2
    cores, and two per core another ~1.1x (a thread copying its chunk to the host or
    waiting on the kernel for fresh pages leaves its core to another's chunk). An
    accelerator runs one stream, fed by one thread."""
    if jax.default_backend() != "cpu":
        return 1
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, min(2 * cores, n_chunks))


def _run(simulator, strategy, key, n, size, prior=None, theta=None, keep_states=True):
    """Simulate `n` samples in chunks of one compiled size, dispatched from Python.

    Measured on CPU: a Python loop over jitted chunks is ~4x faster than `lax.map`
    over the same chunks inside one jit (XLA copies the solver's loop state when a
    while loop is nested in a scan). Chunk `i` depends only on the `i`-th key, so the
    result does not depend on which thread runs it. Finished chunks are copied into
    preallocated host arrays, so memory is the output plus a chunk per worker (plus
    `_IN_FLIGHT` on an accelerator). Returns NumPy arrays: `(θ, states, signal,
    observations, mask, valid)`.
    """
    n_chunks = -(-n // size)
    keys = list(jax.random.split(key, n_chunks))
    rescue = strategy.rescue()
    out = {}  # "theta": dict of buffers, "rest": buffers of the other outputs

    def dispatch(i):
        if theta is None:
            assert prior is not None, "_run needs a prior or θ"
            return _chunk_from_prior(simulator, strategy, prior, keys[i], size, keep_states)
        part = {name: v[i * size : (i + 1) * size] for name, v in theta.items()}
        short = size - next(iter(part.values())).shape[0]
        if short:  # pad the last chunk so every call has the compiled shape
            part = {name: jnp.concatenate([v, jnp.repeat(v[-1:], short)]) for name, v in part.items()}
        return _chunk_given(simulator, strategy, part, keys[i], keep_states)

    def collect(i, result):
        valid = np.asarray(result[-1])
        if rescue is not None and not valid.any():
            # The whole chunk failed (one trajectory dragged the shared step past
            # max_steps): re-solve each member, compiled only if ever needed.
            result = _chunk_given(simulator, rescue, result[0], _noise_key(keys[i], theta is None), keep_states)
            valid = np.asarray(result[-1])
        th = {name: np.asarray(v) for name, v in result[0].items()}
        ys, signal, x, mask = (None if a is None else np.asarray(a) for a in result[1:-1])
        rest = [None if ys is None else ys[:, 1:], signal, x, mask, valid]
        if not out:  # chunk 0, collected on this thread before any worker starts
            out["theta"] = {name: np.empty((n,) + a.shape[1:], a.dtype) for name, a in th.items()}
            # Reused memory of dead outputs: first touches of fresh pages cost ~25% of a run.
            out["rest"] = [None if a is None else _hostmem.empty((n,) + a.shape[1:], a.dtype) for a in rest]
        start, stop = i * size, min((i + 1) * size, n)
        for buf, a in zip([*out["theta"].values(), *out["rest"]], [*th.values(), *rest]):
            if buf is not None:
                buf[start:stop] = a[: stop - start]
        failed = start + np.flatnonzero(~valid[: stop - start])
        if failed.size:  # failed samples hold zeros: reductions over a batch never see NaN
            for buf in out["rest"][:3]:
                if buf is not None:
                    buf[failed] = 0

    halt = threading.Event()  # set when any thread fails or is interrupted

    def work(chunks, ahead):
        pending = []
        for i in chunks:
            if halt.is_set():
                return
            pending.append((i, dispatch(i)))
            if len(pending) > ahead:
                collect(*pending.pop(0))
        for item in pending:
            collect(*item)

    work([0], 0)  # on this thread: compiles, and fixes the buffers' shapes
    workers = _workers(n_chunks - 1)
    if workers > 1:
        with ThreadPoolExecutor(workers) as pool:
            futures = [pool.submit(work, range(1 + w, n_chunks, workers), 0) for w in range(workers)]
            try:
                done, _ = wait(futures, return_when=FIRST_EXCEPTION)
                for f in [*done, *futures]:  # a failed one first, if any
                    f.result()
            except BaseException:  # an error or Ctrl-C: the other threads stop after their chunk
                halt.set()
                raise
    else:
        work(range(1, n_chunks), _IN_FLIGHT)
    return (out["theta"], *out["rest"])


def simulate(
    simulator: Simulator,
    n: int | None = None,
    *,
    key: Key,
    prior: Prior | None = None,
    theta: Params | None = None,
    strategy: AbstractStrategy | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    resample_failed: bool = True,
    max_rounds: int = 10,
    keep_states: bool = True,
) -> Simulation:
    """Simulate a batch: draw `θ` from the prior (or take the given `θ`), solve every
    trajectory, and observe it through the simulator's observation model.

    **Arguments:**

    - `simulator`: the [`sgjax.Simulator`][].
    - `key`: a JAX PRNG key. The result is a deterministic function of it and of
        `chunk_size` and `strategy`, bit for bit, given the same sgjax, jax and jaxlib
        versions and the same backend and device type (measured identical on 1 and 2
        CPU cores: SIR and Lorenz, 4,096 draws); across backends (CPU and GPU) results
        agree to rounding only.
    - `n`: how many samples. Required with `prior`; taken from `θ` otherwise.
    - `prior`: an [`sgjax.Prior`][] over every parameter the simulator reads. If
        neither `prior` nor `theta` is given, `simulator.default_prior()` is used.
    - `theta`: a dict of parameter name → array of shape `(n,)` to simulate instead;
        every value must be finite and inside its parameter's support (as a prior's
        support must be). Entries named after the model's derived quantities (`R0`
        in a posterior's samples) are ignored; any other unknown name is refused.
    - `strategy`: [`sgjax.SharedStep`][] (default), [`sgjax.PerTrajectory`][], or
        [`sgjax.experimental.Fused`][] (one kernel per block of trajectories, for a GPU).
    - `chunk_size`: samples per compiled call; bounds memory for very large `n`. On a
        CPU the chunks run on two host threads per core; the result is the same as
        from one thread.
    - `resample_failed`: with a prior, replace failed simulations (solver failure,
        NaN or infinity) by fresh draws, up to `max_rounds` times — i.e. sample the
        prior restricted to where the simulator works. Otherwise they are only
        flagged in `valid`.
    - `keep_states`: keep the full clean trajectories (`states`); turn off to save
        memory for very large `n`.

    With the environment variable `SGJAX_HOST_POOL=1`, large output arrays reuse the
    memory of earlier outputs that nothing references any more, which saves the page
    faults of fresh memory (`sgjax/_internal/_hostmem.py`; off by default, see
    `sgjax/_internal/README.md`); `SGJAX_HOST_POOL_BYTES` caps what is kept idle
    (default 1 GiB).

    **Returns:** a [`sgjax.Simulation`][]. Failures never raise: they are counted in
    `n_failed`, flagged in `valid`, and hold zeros.
    """
    if hasattr(n, "dtype") and not isinstance(n, (int, np.integer)):
        raise TypeError(
            "`key` is keyword-only: call sgjax.simulate(simulator, n, key=key), not simulate(simulator, key, n)."
        )
    check_key(key)
    if not isinstance(simulator, Simulator):
        raise TypeError(f"`simulator` must be an sgjax.Simulator, got {type(simulator).__name__}.")
    strategy = SharedStep() if strategy is None else strategy
    if not isinstance(strategy, AbstractStrategy):
        raise TypeError(
            f"`strategy` must be sgjax.SharedStep(), sgjax.PerTrajectory() or sgjax.experimental.Fused(), got {strategy!r}."
        )
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"`chunk_size` must be a positive integer, got {chunk_size!r}.")
    if theta is not None:
        if prior is not None:
            raise ValueError("Pass either `prior` or `theta`, not both.")
        if not isinstance(theta, Mapping):
            raise TypeError(f"`theta` must be a dict of parameter name -> array, got {type(theta).__name__}.")
        theta = simulator.parameters_of(theta)  # a posterior's samples may hold R0 too
        theta = {k: jnp.atleast_1d(jnp.asarray(v, dtype=jnp.result_type(float))) for k, v in theta.items()}
        m = simulator.check_theta(theta)
        if n is not None and n != m:
            raise ValueError(f"`n`={n} but θ holds {m} samples; leave `n` out when passing θ.")
        n = m
        out = _run(simulator, strategy, key, n, min(chunk_size, n), theta=theta, keep_states=keep_states)
    else:
        if n is None or not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"`n` must be a positive integer when sampling from a prior, got {n!r}.")
        n = int(n)
        prior = simulator.default_prior() if prior is None else prior
        if not isinstance(prior, Prior):
            raise TypeError(f"`prior` must be an sgjax.Prior, got {type(prior).__name__}.")
        prior.check_model(simulator.model, simulator.param_names, support=simulator.parameter_support)
        out = _run(simulator, strategy, key, n, min(chunk_size, n), prior=prior, keep_states=keep_states)
    valid = out[-1]
    n_failed = int((~valid).sum())
    rounds = 0
    while prior is not None and resample_failed and not valid.all() and rounds < max_rounds:
        # Redraw whole chunks of the compiled size (no recompilation) and use every
        # valid draw among them.
        rounds += 1
        bad = np.flatnonzero(~valid)
        size = min(chunk_size, n)
        redo = _run(
            simulator,
            strategy,
            jax.random.fold_in(key, rounds),
            -(-len(bad) // size) * size,
            size,
            prior=prior,
            keep_states=keep_states,
        )
        good = np.flatnonzero(redo[-1])[: len(bad)]
        n_failed += len(redo[-1]) - int(redo[-1].sum())
        for old, new in zip(jax.tree.leaves(out), jax.tree.leaves(redo)):
            old[bad[: len(good)]] = new[good]
        valid = out[-1]
    if not valid.all():
        warnings.warn(
            f"{int((~valid).sum())} of {n} simulations failed (solver failure or "
            "non-finite values); they are flagged in `Simulation.valid`. Tighten the "
            "prior, raise `max_steps`, or try another solver.",
            stacklevel=2,
        )
    theta_out, states, signal, x, mask, valid_arr = out
    return Simulation(
        theta=theta_out,
        ts=simulator.ts,
        states=states,
        signal=signal,
        observations=x,
        mask=mask,
        valid=valid_arr,
        n_failed=n_failed,
    )
