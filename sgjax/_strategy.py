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
  `max_steps`), [`sgjax.simulate`][] re-solves that chunk per trajectory so only the
  culprits are lost. The rescue is compiled only if it is ever needed.
- [`sgjax.Fused`][] (`_fused.py`): the whole integration of a block of trajectories in
  one Pallas kernel on a GPU, each trajectory with its own adaptive steps; forward
  only (no gradients), explicit Runge–Kutta solvers only.
"""

import abc

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float

from ._custom_types import Params


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


def _diffeqsolve(simulator, field, y0, theta, controller, adjoint=None):
    """Solve `y' = field(t, y, θ)` from `t0`, saving at `t0` and every observation
    time; returns the saved states and whether the solve succeeded. `adjoint` is
    diffrax's (default: its checkpointed reverse mode)."""
    ts = simulator.ts
    sol = dfx.diffeqsolve(
        dfx.ODETerm(lambda t, y, args: field(t, y, args)),
        simulator.solver,
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
    return sol.ys, sol.result == dfx.RESULTS.successful


def _solve_one(simulator, theta, controller, adjoint=None):
    model = simulator.model
    return _diffeqsolve(simulator, model.vector_field, model.initial_state(theta), theta, controller, adjoint)


class PerTrajectory(AbstractStrategy):
    """Each trajectory takes its own adaptive steps: `jax.vmap` of
    `diffrax.diffeqsolve`. Slower on CPU, but a hard trajectory never slows its
    neighbours' step sizes; also the reference the shared-step strategy is tested
    against."""

    def solve(self, simulator, theta):
        controller = simulator.stepsize_controller
        return jax.vmap(lambda th: _solve_one(simulator, th, controller), out_axes=(-1, 0))(theta)


class _MaxOverBatch(eqx.Module):
    """Error norm for a batched state: the largest per-trajectory norm, ignoring
    trajectories that are already non-finite (they are flagged, not chased)."""

    norm: object  # the controller's per-trajectory norm

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
        re-solved per trajectory by [`sgjax.simulate`][], so only the failing
        trajectories are flagged.
    """

    fallback: bool = eqx.field(default=True, static=True)

    def solve(self, simulator, theta):
        model = simulator.model
        controller = _max_over_batch(simulator.stepsize_controller)
        # Batch on the last axis: each state component is one contiguous row.
        y0 = jax.vmap(model.initial_state, out_axes=-1)(theta)
        field = jax.vmap(model.vector_field, in_axes=(None, -1, 0), out_axes=-1)
        ys, ok = _diffeqsolve(simulator, field, y0, theta, controller)
        return ys, jnp.broadcast_to(ok, ys.shape[-1:])

    def rescue(self):
        # Kept out of the compiled chunk (a `lax.cond` would compile both branches
        # every time, ~2x the compile cost) and run only when a chunk fails whole.
        return PerTrajectory() if self.fallback else None
