"""How a batch of trajectories is integrated.

Both strategies solve the same user vector field (written for one trajectory) and
return the same array layout; they differ in how steps are taken:

- [`sgjax.PerTrajectory`][]: `jax.vmap` of `diffrax.diffeqsolve`, each trajectory with
  its own adaptive steps. Under `vmap` the loop still runs until the slowest member
  finishes, and every step is a short sequence of small kernels.
- [`sgjax.SharedStep`][]: one `diffeqsolve` over the batched state `(state, batch)`,
  with one step size shared by the whole batch and an error norm that is the *maximum*
  over trajectories of each trajectory's own norm, so every trajectory is still held
  to its tolerance. Far fewer, fatter kernels; measured 10–20× faster on CPU for SIR.
  If a chunk's shared solve fails as a whole (one pathological trajectory exhausting
  `max_steps`), the chunk is re-solved per trajectory so only the culprits are lost:
  [`sgjax.simulate`][] does it from the host, compiling the rescue only if it is ever
  needed; a task's training batch (inside [`sgjax.fit`][]'s jitted step) does it in
  the program, with `lax.cond` (`solve_or_rescue`).
- [`sgjax.experimental.Fused`][] (`sgjax/experimental/_fused.py`): the whole
  integration of a block of trajectories in one Pallas kernel on a GPU, each
  trajectory with its own adaptive steps; forward only (no gradients), explicit
  Runge–Kutta solvers only. Experimental until it has run on a GPU.
"""

import abc
from collections.abc import Callable
from typing import cast

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
from jax import lax
from jaxtyping import Array, ArrayLike, Bool, Float

from .._custom_types import Params
from .._internal import unrolled as _unrolled


class AbstractStrategy(eqx.Module):
    """How a batch of trajectories is integrated; see [`sgjax.PerTrajectory`][] and
    [`sgjax.SharedStep`][]."""

    @abc.abstractmethod
    def solve(
        self, simulator, theta: Params
    ) -> tuple[Float[Array, "time_plus_one state batch"], Bool[Array, " batch"]]:
        """States at `t0` and every observation time for each member of the batch,
        batch last (the shared-step solver's own layout, in which per-sample checks
        vectorise over contiguous memory), and whether each solve succeeded."""

    def rescue(self) -> "AbstractStrategy | None":
        """The strategy to re-solve a chunk with when every member of it failed, or
        `None`."""
        return None


def _diffeqsolve(simulator, field, y0, theta, controller, adjoint=None, solver=None):
    """Solve `y' = field(t, y, θ)` from `t0`, saving at `t0` and every observation
    time; returns the saved states and whether the solve succeeded. `adjoint` is
    diffrax's (default: its checkpointed reverse mode); `solver` defaults to the
    simulator's."""
    ts = simulator.ts
    sol = dfx.diffeqsolve(
        dfx.ODETerm(lambda t, y, args: field(t, y, args)),
        simulator.solver if solver is None else solver,
        simulator.t0,
        ts[-1],
        simulator.dt0,
        y0,
        args=theta,
        saveat=dfx.SaveAt(ts=jnp.concatenate([jnp.asarray([simulator.t0], ts.dtype), ts])),
        stepsize_controller=controller,
        max_steps=simulator.max_steps,
        throw=False,
        **({} if adjoint is None else {"adjoint": adjoint}),
    )
    # `SaveAt(ts=...)` saves the states, so `ys` is an array (diffrax types it as optional).
    return cast(Array, sol.ys), sol.result == dfx.RESULTS.successful


def solve_one(simulator, theta, controller, adjoint=None, unrolled=False):
    """One trajectory; with `unrolled`, explicit Runge–Kutta stages unrolled
    (`sgjax/_internal/_unrolled.py`), else diffrax's solver as given (the reference)."""
    model = simulator.model
    solver = _unrolled(simulator.solver) if unrolled else None
    return _diffeqsolve(simulator, model.vector_field, model.initial_state(theta), theta, controller, adjoint, solver)


def solve_or_rescue(strategy: AbstractStrategy, simulator, theta: Params):
    """`strategy.solve` inside a traced program (a task's training batch), re-solved
    with `strategy.rescue()` when every member failed.

    Without it, one stiff draw failed a whole shared-step batch: Lorenz with
    `sigma, rho ~ Uniform(0.1, 5000)`, where 79% of draws solve alone, kept 0 of 256
    samples per batch, and `fit` stopped; with it, 79%. Measured on the shared 2-core
    CPU (`Task.sample` of 256 draws, jitted alone; load varied, so ranges):

    - `lax.cond` on "the shared solve failed" → per-trajectory re-solve (chosen): no
        run-time cost when not triggered (SIR 100 days: 1.3-4.3 ms either way); it
        compiles both branches, 6.4 → 11.2 s (median of 3; a per-trajectory batch
        alone 6.9 s); when triggered the batch costs a per-trajectory solve to
        `max_steps` (Lorenz: 33 → 418 ms).
    - Splitting the batch into 16 shared solves (vmapped): +30% compile, +20% run
        time, and no rescue at all here: with 21% stiff draws nearly every group of 16
        holds one (kept 0%).
    - A `while_loop` run at most once (to stay lazy under `vmap`): XLA hoists the
        loop-invariant per-trajectory solve out of the loop, so it always runs
        (SIR 1.3 → 8.6 ms).
    - A shared solve whose failure is per member would need the step controller to
        decide which member to give up on; `max_steps` is a budget for the whole
        solve, so none can be singled out before it is spent.

    Under `jax.vmap` a `lax.cond` whose predicate is batched runs both branches (SIR
    1.3 → 10.3 ms a batch), so `fit` draws the sub-batches of `shards > 1` one after
    another (`lax.map`, `shard_map` across devices), never vmapped; do the same in
    code of one's own, or pass `SharedStep(fallback=False)`.
    """
    ys, ok = strategy.solve(simulator, theta)
    rescue = strategy.rescue()
    if rescue is None:
        return ys, ok
    return lax.cond(jnp.any(ok), lambda: (ys, ok), lambda: rescue.solve(simulator, theta))


class PerTrajectory(AbstractStrategy):
    """Each trajectory takes its own adaptive steps: `jax.vmap` of
    `diffrax.diffeqsolve`. Slower on CPU, but a hard trajectory never slows its
    neighbours' step sizes; also the reference the shared-step strategy is tested
    against."""

    def solve(self, simulator, theta):
        controller = simulator.stepsize_controller
        return jax.vmap(lambda th: solve_one(simulator, th, controller), out_axes=(-1, 0))(theta)


class _MaxOverBatch(eqx.Module):
    """Error norm for a batched state: the largest per-trajectory norm, ignoring
    trajectories that are already non-finite (they are flagged, not chased)."""

    norm: Callable[..., ArrayLike]  # the controller's per-trajectory norm

    def __call__(self, error):
        per_traj = jax.vmap(self.norm, in_axes=-1)(error)
        return jnp.max(jnp.where(jnp.isfinite(per_traj), per_traj, 0.0))


def _max_over_batch(controller):
    """The controller with its error norm taken per trajectory, then maximised."""
    if isinstance(controller, dfx.PIDController):
        return eqx.tree_at(lambda c: c.norm, controller, _MaxOverBatch(controller.norm))
    if isinstance(controller, dfx.ClipStepSizeController):
        return eqx.tree_at(lambda c: c.controller, controller, _max_over_batch(controller.controller))
    if isinstance(controller, (dfx.ConstantStepSize, dfx.StepTo)):
        return controller  # no error control: nothing to hold per trajectory
    raise TypeError(
        f"SharedStep cannot hold each trajectory to its tolerance with a "
        f"{type(controller).__name__}: it supports diffrax.PIDController (optionally "
        "inside ClipStepSizeController), ConstantStepSize and StepTo. Use "
        "sgjax.PerTrajectory() for other controllers."
    )


class SharedStep(AbstractStrategy):
    """One solve over the whole batch with a shared adaptive step whose error norm is
    the maximum over trajectories of each one's own norm. The default: see the module
    notes and `benchmarks/RESULTS.md` for the measurement.

    **Arguments:**

    - `fallback`: if `True` (default), a chunk whose shared solve fails as a whole is
        re-solved per trajectory, so only the failing trajectories are flagged: by
        [`sgjax.simulate`][] from the host, and inside a task's training batch by
        `lax.cond` (which compiles the per-trajectory solve into the training step,
        about twice the simulation's compile time). `False` compiles no rescue.
    """

    fallback: bool = eqx.field(default=True, static=True)

    def solve(self, simulator, theta):
        model = simulator.model
        controller = _max_over_batch(simulator.stepsize_controller)
        # Batch on the last axis: each state component is one contiguous row.
        y0 = jax.vmap(model.initial_state, out_axes=-1)(theta)
        field = jax.vmap(model.vector_field, in_axes=(None, -1, 0), out_axes=-1)
        ys, ok = _diffeqsolve(simulator, field, y0, theta, controller, solver=_unrolled(simulator.solver))
        return ys, jnp.broadcast_to(ok, ys.shape[-1:])

    def rescue(self):
        # `simulate` keeps it out of the compiled chunk (a `lax.cond` compiles both
        # branches every time, ~2x the compile cost) and runs it only when a chunk
        # fails whole; a training batch cannot call back to the host.
        return PerTrajectory() if self.fallback else None
