"""What is static about one fused solve (`Plan`: the Butcher tableau, the controller's
numbers, the model's functions on lanes, built at trace time) and the lane arithmetic
the kernel runs (`Ops`, with the plan's traced numbers resolved inside the kernel)."""

from typing import Any

import diffrax as dfx
import jax
import jax.core
import jax.numpy as jnp
import numpy as np

from .._internal import lanes, Scalarized


class Aux:
    """Numbers the kernel needs that may be traced values of the enclosing
    computation (a kernel cannot capture those): concrete numbers stay Python
    constants; traced ones are packed into one vector passed to the kernel."""

    def __init__(self, dtype):
        self.dtype = dtype
        self.traced: list = []

    def number(self, x) -> Any:
        """A scalar: a Python float if concrete, else a handle into the vector."""
        if isinstance(x, jax.core.Tracer):
            self.traced.append(jnp.reshape(x, (1,)).astype(self.dtype))
            return Handle(self.size - 1, np.dtype(x.dtype))
        return float(np.asarray(x))

    def array(self, x) -> Any:
        """A traced constant array: handles to its entries, as an object array."""
        start = self.size
        self.traced.append(jnp.ravel(x).astype(self.dtype))
        out = np.empty(x.shape, object)
        for k, idx in enumerate(np.ndindex(x.shape)):
            out[idx] = Handle(start + k, np.dtype(x.dtype))
        return out

    @property
    def size(self) -> int:
        return sum(t.shape[0] for t in self.traced)

    def vector(self):
        if not self.traced:
            return jnp.zeros((1,), self.dtype)  # a kernel input must exist
        return jnp.concatenate(self.traced)


class Handle:
    def __init__(self, index, dtype):
        self.index, self.dtype = index, dtype

    def resolve(self, aux_values):
        v = aux_values[self.index]
        return v if self.dtype == v.dtype else v.astype(self.dtype)


def resolve(x, aux_values):
    if isinstance(x, Handle):
        return x.resolve(aux_values)
    if isinstance(x, np.ndarray) and x.dtype == object:
        out = np.empty(x.shape, object)
        for idx in np.ndindex(x.shape):
            out[idx] = resolve(x[idx], aux_values)
        return out
    return x


class Plan:
    """Everything static about one solve: the tableau, the controller's numbers, the
    model's functions on lanes. Built at trace time."""

    def __init__(self, simulator, theta_names, dtype, interpolate):
        solver, controller = simulator.solver, simulator.stepsize_controller
        tableau = getattr(solver, "tableau", None)
        if (
            not isinstance(solver, dfx.AbstractERK)
            or tableau is None
            or tableau.implicit
            or tableau.a_diagonal is not None
        ):
            raise TypeError(
                f"sgjax.experimental.Fused integrates with explicit Runge–Kutta solvers given by a Butcher "
                f"tableau (diffrax.Tsit5, Dopri5, Dopri8, Bosh3, Heun, Ralston, Midpoint), got "
                f"{type(solver).__name__}. Pass one of those as the Simulator's `solver=`, or "
                "use sgjax.SharedStep() or sgjax.PerTrajectory() for implicit and other solvers."
            )
        model = simulator.model
        self.n_state = len(model.state_names)
        self.n_times = len(simulator.ts) + 1  # t0 and every observation time
        self.dtype = dtype
        self.t0 = simulator.t0
        self.dt0 = simulator.dt0
        self.max_steps = simulator.max_steps
        self.aux = Aux(dtype)
        self.c = [float(tableau.c1)] + [float(c) for c in tableau.c]
        self.a = [[float(v) for v in row] for row in tableau.a_lower]
        self.b_sol = [float(v) for v in tableau.b_sol]
        self.b_error = None if tableau.b_error is None else [float(v) for v in tableau.b_error]
        self.fsal = bool(tableau.fsal)

        scalar = jax.ShapeDtypeStruct((), dtype)
        state = jax.ShapeDtypeStruct((self.n_state,), dtype)
        theta = {k: scalar for k in theta_names}
        self.theta_names = tuple(sorted(theta_names))
        self.field = Scalarized(model.vector_field, scalar, state, theta)
        self.init = Scalarized(model.initial_state, theta)
        self.field_consts = [self.aux.array(c) for c in self.field.traced_consts]
        self.init_consts = [self.aux.array(c) for c in self.init.traced_consts]

        self.interpolate = False
        if isinstance(controller, dfx.ConstantStepSize):
            self.adaptive = False
            if self.dt0 is None:
                raise ValueError("A constant step size needs the Simulator's `dt0`.")
        elif isinstance(controller, dfx.PIDController):
            self.adaptive = True
            if self.b_error is None:
                raise TypeError(
                    f"{type(solver).__name__} has no error estimate, so it cannot take adaptive "
                    "steps: use diffrax.ConstantStepSize() with `dt0=`, or an adaptive solver "
                    "such as diffrax.Tsit5()."
                )
            num = self.aux.number
            self.rtol, self.atol = num(controller.rtol), num(controller.atol)
            self.safety = num(controller.safety)
            self.factormin, self.factormax = num(controller.factormin), num(controller.factormax)
            self.dtmin = None if controller.dtmin is None else num(controller.dtmin)
            self.dtmax = None if controller.dtmax is None else num(controller.dtmax)
            self.force_dtmin = bool(controller.force_dtmin)
            order = controller.error_order
            order = solver.error_order(dfx.ODETerm(model.vector_field)) if order is None else order
            self.error_order = num(order)
            p, i, d = (num(getattr(controller, k)) for k in ("pcoeff", "icoeff", "dcoeff"))
            if not all(isinstance(x, float) for x in (p, i, d, self.error_order)):
                raise TypeError(
                    "sgjax.experimental.Fused needs the PIDController's pcoeff, icoeff, dcoeff and error_order "
                    "as Python numbers (they decide which terms the kernel computes), but they are "
                    "traced here. Build the controller with plain floats, or use sgjax.SharedStep()."
                )
            # diffrax's exponents of the last three inverse scaled errors.
            self.coeffs = ((i + p + d) / self.error_order, -(p + 2 * d) / self.error_order, d / self.error_order)
            self.norm = Scalarized(controller.norm, state)
            self.norm_consts = [self.aux.array(c) for c in self.norm.traced_consts]
            self.interpolate = interpolate
            if interpolate:
                # The solver's own dense output (diffrax's interpolation class), with
                # diffrax's stage increments `k_i = h f_i`.
                stages = jax.ShapeDtypeStruct((len(self.c), self.n_state), dtype)

                def dense(t0, t1, y0, y1, k, t):
                    return solver.interpolation_cls(t0=t0, t1=t1, y0=y0, y1=y1, k=k).evaluate(t)

                self.dense = Scalarized(dense, scalar, scalar, state, state, stages, scalar)
                self.dense_consts = [self.aux.array(c) for c in self.dense.traced_consts]
        else:
            raise TypeError(
                f"sgjax.experimental.Fused supports diffrax.PIDController and diffrax.ConstantStepSize, got "
                f"{type(controller).__name__}. Pass one of those as the Simulator's "
                "`stepsize_controller=` (a ClipStepSizeController's `step_ts` are not needed: "
                "Fused lands on every observation time), or use sgjax.SharedStep()."
            )


class Ops:
    """The kernel's arithmetic on lanes, with the plan's traced numbers resolved."""

    def __init__(self, plan: Plan, theta_lanes, aux_values, width):
        self.plan = plan
        self.aux_values = aux_values
        self.width = width
        self.theta = dict(zip(plan.theta_names, theta_lanes))
        self.field_consts = [resolve(c, aux_values) for c in plan.field_consts]
        self.init_consts = [resolve(c, aux_values) for c in plan.init_consts]
        self.norm_consts = [resolve(c, aux_values) for c in getattr(plan, "norm_consts", [])]
        self.dense_consts = [resolve(c, aux_values) for c in getattr(plan, "dense_consts", [])]

    def num(self, x):
        return resolve(x, self.aux_values)

    def lane(self, x):
        """An entry as a full `(width,)` vector of the state dtype."""
        if not isinstance(x, jax.Array) or x.dtype != self.plan.dtype:
            x = jnp.asarray(x, self.plan.dtype)
        return x if x.shape == (self.width,) else jnp.broadcast_to(x, (self.width,))

    def f(self, t, y):
        out = self.plan.field(t, lanes(y), self.theta, traced=self.field_consts)
        return [self.lane(v) for v in out]

    def y0(self):
        return [self.lane(v) for v in self.plan.init(self.theta, traced=self.init_consts)]

    def norm(self, x):
        return self.lane(self.plan.norm(lanes(x), traced=self.norm_consts)[()])

    def dense(self, t0, t1, y0, y1, ks, t):
        """The solver's interpolant of the step from `(t0, y0)` to `(t1, y1)` with
        stages `ks` (derivatives), at `t`."""
        h = t1 - t0
        k = np.empty((len(ks), len(y0)), object)
        for i, stage in enumerate(ks):
            for s, v in enumerate(stage):
                k[i, s] = h * v
        out = self.plan.dense(t0, t1, lanes(y0), lanes(y1), k, t, traced=self.dense_consts)
        return [self.lane(v) for v in out]
