"""The fused strategy: the whole integration of a block of trajectories in one kernel.

Under XLA, `jax.vmap(diffrax.diffeqsolve)` (and the shared-step solve) is a while loop
driven from the host, each step a sequence of small kernels; on a GPU that caps a
large ensemble near 1% of the device's peak (DiffEqGPU.jl measured a fused kernel per
block of trajectories 69× faster than `jit(vmap(diffrax))`).
[`sgjax.experimental.Fused`][] writes that kernel with Pallas: each program of the grid integrates `block` trajectories, one
per lane of a vector, from `t0` to the last observation time, inside one kernel
launch, with the model's own `vector_field` turned into lane arithmetic by
`sgjax._internal._scalarize`.

Each lane takes its own adaptive steps (like DiffEqGPU's per-thread integration):
explicit Runge–Kutta steps from the simulator's solver's Butcher tableau, with the
diffrax `PIDController`'s accept/reject test and step-size update per trajectory.
The loop runs over observation times: inside, lanes step until they reach the next
observation time, then wait (masked) for the slowest lane of the block; the state
is written to the output row for that time, the same row for every lane.

Steps are cut short to land exactly on each observation time (the default). The
alternative, `interpolate=True`, lets steps run past observation times and reads
each from the solver's dense output as diffrax does: fewer steps per trajectory
(SIR on a daily grid: ~40 instead of ~100 over 100 days), but lanes then step at
different times, and lanes run in lockstep, so the block pays for the union of its
lanes' steps: measured 181 lockstep iterations against 101 for 256 SIR draws.

Without a GPU the same loop runs as ordinary jitted JAX with the lanes being the whole
chunk (a "fused lax loop"), which XLA compiles to one while loop over `(chunk,)`
vectors. Pallas's interpreter runs the kernel itself (jitted, as fast on CPU: SIR
140k/s either way for 4,096 draws on 2 cores, but twice the compile time, 3.0 s
against 1.5 s), which is how the tests check the kernel without a GPU.
"""

from typing import Any

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from .._internal import lanes, Scalarized
from .._simulation import AbstractStrategy


#: Relative slack when splitting an interval into fixed steps of `dt0`: an interval
#: that is `n` steps long up to rounding gets exactly `n` steps.
_FIXED_STEP_SLACK = 1e-5


def _is_pow2(n) -> bool:
    return isinstance(n, int) and n >= 1 and (n & (n - 1)) == 0


class _Aux:
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
            return _Handle(self.size - 1, np.dtype(x.dtype))
        return float(np.asarray(x))

    def array(self, x) -> Any:
        """A traced constant array: handles to its entries, as an object array."""
        start = self.size
        self.traced.append(jnp.ravel(x).astype(self.dtype))
        out = np.empty(x.shape, object)
        for k, idx in enumerate(np.ndindex(x.shape)):
            out[idx] = _Handle(start + k, np.dtype(x.dtype))
        return out

    @property
    def size(self) -> int:
        return sum(t.shape[0] for t in self.traced)

    def vector(self):
        if not self.traced:
            return jnp.zeros((1,), self.dtype)  # a kernel input must exist
        return jnp.concatenate(self.traced)


class _Handle:
    def __init__(self, index, dtype):
        self.index, self.dtype = index, dtype

    def resolve(self, aux_values):
        v = aux_values[self.index]
        return v if self.dtype == v.dtype else v.astype(self.dtype)


def _resolve(x, aux_values):
    if isinstance(x, _Handle):
        return x.resolve(aux_values)
    if isinstance(x, np.ndarray) and x.dtype == object:
        out = np.empty(x.shape, object)
        for idx in np.ndindex(x.shape):
            out[idx] = _resolve(x[idx], aux_values)
        return out
    return x


class _Plan:
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
        self.aux = _Aux(dtype)
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


class _Ops:
    """The kernel's arithmetic on lanes, with the plan's traced numbers resolved."""

    def __init__(self, plan: _Plan, theta_lanes, aux_values, width):
        self.plan = plan
        self.aux_values = aux_values
        self.width = width
        self.theta = dict(zip(plan.theta_names, theta_lanes))
        self.field_consts = [_resolve(c, aux_values) for c in plan.field_consts]
        self.init_consts = [_resolve(c, aux_values) for c in plan.init_consts]
        self.norm_consts = [_resolve(c, aux_values) for c in getattr(plan, "norm_consts", [])]
        self.dense_consts = [_resolve(c, aux_values) for c in getattr(plan, "dense_consts", [])]

    def num(self, x):
        return _resolve(x, self.aux_values)

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


def _weighted(coeffs, ks, s):
    """`Σ_j coeffs[j] k_j[s]`, skipping zero coefficients; `None` if all are zero."""
    acc = None
    for c, k in zip(coeffs, ks):
        if c != 0.0:
            term = k[s] if c == 1.0 else c * k[s]
            acc = term if acc is None else acc + term
    return acc


def _combine(y, h, coeffs, ks):
    """`y + h Σ_j coeffs[j] k_j` per state component."""
    out = []
    for s in range(len(y)):
        acc = _weighted(coeffs, ks, s)
        out.append(y[s] if acc is None else y[s] + h * acc)
    return out


def _rk_step(ops: _Ops, t, y, h, k1):
    """One explicit Runge–Kutta step: the new state, the error estimate (or `None`)
    and every stage's derivative (the last is the next first stage of an FSAL
    tableau)."""
    plan = ops.plan
    if k1 is None:
        k1 = ops.f(t + plan.c[0] * h if plan.c[0] else t, y)
    ks = [k1]
    for c, row in zip(plan.c[1:], plan.a):
        ks.append(ops.f(t + c * h, _combine(y, h, row, ks)))
    y1 = _combine(y, h, plan.b_sol, ks)
    if plan.b_error is None:
        err = None
    else:
        err = []
        for s in range(len(y)):
            acc = _weighted(plan.b_error, ks, s)
            err.append(jnp.zeros_like(y[s]) if acc is None else h * acc)
    return y1, err, ks


def _any(mask):
    # `jnp.any` lowers to reduce_or, which Triton lacks: take the max of numbers.
    return jnp.max(mask.astype(jnp.int32)) > 0


def _all_finite(y):
    ok = jnp.isfinite(y[0])
    for v in y[1:]:
        ok = ok & jnp.isfinite(v)
    return ok


def _integrate(plan: _Plan, time, theta_lanes, aux_values, save, saved, width):
    """The whole integration of `width` lanes: returns `(ok, saved)`, where `save(k,
    y, saved)` records the state at time index `k` (0 being `t0`) and `time(k)` reads
    the `k`th time."""
    ops = _Ops(plan, theta_lanes, aux_values, width)
    y = ops.y0()
    saved = save(0, y, saved)
    if plan.adaptive:
        return _integrate_adaptive(ops, time, y, save, saved)
    return _integrate_fixed(ops, time, y, save, saved)


def _integrate_fixed(ops, time, y, save, saved):
    """Equal steps, the same for every lane: each interval split into
    `ceil(Δ / dt0)` steps (up to rounding), so with `dt0` dividing the intervals the
    steps are diffrax's."""
    plan = ops.plan
    dtype = plan.dtype

    def interval(k, carry):
        y, k1, total, finite, saved = carry
        t_start, t_end = time(k - 1), time(k)
        n = jnp.maximum(jnp.ceil((t_end - t_start) / plan.dt0 * (1.0 - _FIXED_STEP_SLACK)), 1.0)
        h = (t_end - t_start) / n

        def step(i, c):
            y, k1 = c
            t = t_start + i.astype(dtype) * h
            y1, _, ks = _rk_step(ops, t, y, h, k1 if plan.fsal else None)
            return y1, (ks[-1] if plan.fsal else k1)

        y, k1 = lax.fori_loop(0, n.astype(jnp.int32), step, (y, k1))
        saved = save(k, y, saved)
        return y, k1, total + n.astype(jnp.int32), finite & _all_finite(y), saved

    k1 = ops.f(time(0), y) if plan.fsal else [jnp.zeros_like(v) for v in y]
    init = (y, k1, jnp.zeros((), jnp.int32), _all_finite(y), saved)
    _, _, total, finite, saved = lax.fori_loop(1, plan.n_times, interval, init)
    return finite & (total <= plan.max_steps), saved


def _initial_step(ops, t0, y0, f0):
    """diffrax's (Hairer's) initial step size, lane by lane."""
    plan = ops.plan
    num = ops.num
    rtol, atol = num(plan.rtol), num(plan.atol)
    scale = [atol + jnp.abs(v) * rtol for v in y0]
    d0 = ops.norm([v / s for v, s in zip(y0, scale)])
    d1 = ops.norm([v / s for v, s in zip(f0, scale)])
    small = (d0 < 1e-5) | (d1 < 1e-5)
    h0 = jnp.where(small, 1e-6, 0.01 * (d0 / jnp.where(small, 1.0, d1)))
    f1 = ops.f(t0 + h0, [v + h0 * f for v, f in zip(y0, f0)])
    d2 = ops.norm([(a - b) / s for a, b, s in zip(f1, f0, scale)]) / h0
    max_d = jnp.maximum(d1, d2)
    h1 = jnp.where(
        max_d <= 1e-15,
        jnp.maximum(1e-6, h0 * 1e-3),
        jnp.power(0.01 / jnp.where(max_d <= 1e-15, 1.0, max_d), 1.0 / num(plan.error_order)),
    )
    return jnp.minimum(100 * h0, h1)


def _integrate_adaptive(ops, time, y, save, saved):
    """Each lane its own adaptive steps, diffrax's PIDController lane by lane. With
    `plan.interpolate`, steps run on to the final time and each observation time's
    state comes from the solver's dense output of the step across it (as in
    diffrax); otherwise steps are cut short to land on every observation time."""
    plan = ops.plan
    dtype = plan.dtype
    num = ops.num
    width = ops.width
    rtol, atol = num(plan.rtol), num(plan.atol)
    safety, factormin, factormax = num(plan.safety), num(plan.factormin), num(plan.factormax)
    c1, c2, c3 = (num(c) for c in plan.coeffs)
    dtmin = None if plan.dtmin is None else num(plan.dtmin)
    dtmax = None if plan.dtmax is None else num(plan.dtmax)
    t_final = time(plan.n_times - 1)

    t = jnp.full((width,), time(0), dtype)
    k1 = ops.f(t, y)
    if plan.dt0 is None:
        dt = _initial_step(ops, t, y, k1)
    else:
        dt = jnp.full((width,), plan.dt0, dtype)
    if dtmax is not None:
        dt = jnp.minimum(dt, dtmax)
    if dtmin is not None:
        dt = jnp.maximum(dt, dtmin)
    one = jnp.ones((width,), dtype)
    # Per lane: time, state, first stage (FSAL), proposed step, the controller's
    # memory (the last two inverse scaled errors, whether at dtmin), steps taken,
    # success; for dense output also the last accepted step's start and stages.
    state = dict(
        t=t, y=y, k1=k1, dt=dt, inv1=one, inv2=one, at_dtmin=jnp.zeros((width,), bool),
        n=jnp.zeros((width,), jnp.int32), ok=_all_finite(y) & jnp.isfinite(dt),
    )  # fmt: skip
    if plan.interpolate:
        state.update(t_prev=t, y_prev=y, ks=[[jnp.zeros_like(v) for v in y] for _ in plan.c])

    def interval(k, carry):
        state, saved = carry
        t_obs = time(k)
        t_stop = t_final if plan.interpolate else t_obs

        def active(s):
            return s["ok"] & (s["t"] < t_obs)

        def step(s):
            s = dict(s)
            t, y, dt = s["t"], s["y"], s["dt"]
            live = active(s)
            exhausted = live & (s["n"] >= plan.max_steps)
            ok = s["ok"] & ~exhausted
            live = live & ~exhausted
            remaining = t_stop - t
            clipped = dt >= remaining
            h = jnp.where(live, jnp.where(clipped, remaining, dt), 0.0)
            y1, err, ks = _rk_step(ops, t, y, h, s["k1"] if plan.fsal else None)

            nan = jnp.isnan(y1[0])
            for v in y1[1:]:
                nan = nan | jnp.isnan(v)
            scaled = [
                e / (atol + jnp.maximum(jnp.abs(a), jnp.abs(jnp.where(nan, a, b))) * rtol)
                for e, a, b in zip(err, y, y1)
            ]
            error = ops.norm(scaled)
            keep = error < 1
            if dtmin is not None:
                keep = keep | s["at_dtmin"]
            inv = 1.0 / error
            factor = safety * one
            if c1 != 0:
                factor = factor * jnp.power(inv, c1)
            if c2 != 0:
                factor = factor * jnp.power(s["inv1"], c2)
            if c3 != 0:
                factor = factor * jnp.power(s["inv2"], c3)
            lo = jnp.where(keep, 1.0, factormin)
            hi = jnp.where(keep, factormax, safety)
            # A non-finite error (the step left the field's domain) shrinks the step.
            factor = jnp.where(jnp.isnan(factor), factormin, jnp.minimum(jnp.maximum(factor, lo), hi))
            new_dt = h * factor
            # A step cut short to land on a given time says nothing against the step
            # the controller proposed: keep the larger.
            new_dt = jnp.where(keep & clipped, jnp.maximum(new_dt, dt), new_dt)
            inv = jnp.where((inv == 0) | jnp.isinf(inv) | jnp.isnan(inv), 1.0, inv)
            new_at_dtmin = s["at_dtmin"]
            if dtmax is not None:
                new_dt = jnp.minimum(new_dt, dtmax)
            if dtmin is not None:
                if not plan.force_dtmin:
                    ok = ok & ~(live & (new_dt < dtmin))
                new_dt = jnp.where(s["at_dtmin"] & (factor == 1), dtmin, new_dt)
                new_at_dtmin = new_dt <= dtmin
                new_dt = jnp.maximum(new_dt, dtmin)

            accept = live & keep

            def take(new, old):
                return jnp.where(accept, new, old)

            if plan.interpolate:
                s["t_prev"] = take(t, s["t_prev"])
                s["y_prev"] = [take(a, b) for a, b in zip(y, s["y_prev"])]
                s["ks"] = [[take(a, b) for a, b in zip(new, old)] for new, old in zip(ks, s["ks"])]
            s["t"] = take(jnp.where(clipped, t_stop, t + h), t)
            s["y"] = [take(b, a) for a, b in zip(y, y1)]
            if plan.fsal:
                s["k1"] = [take(b, a) for a, b in zip(s["k1"], ks[-1])]
            s["ok"] = ok & ~(accept & ~_all_finite(y1)) & ~(live & ~jnp.isfinite(new_dt))
            s["dt"] = jnp.where(live, new_dt, dt)
            s["inv1"], s["inv2"] = (
                jnp.where(live, jnp.where(keep, inv, s["inv1"]), s["inv1"]),
                jnp.where(live, jnp.where(keep, s["inv1"], s["inv2"]), s["inv2"]),
            )
            s["at_dtmin"] = jnp.where(live, new_at_dtmin, s["at_dtmin"])
            s["n"] = s["n"] + live.astype(jnp.int32)
            return s

        state = lax.while_loop(lambda s: _any(active(s)), step, state)
        y_obs = state["y"]
        if plan.interpolate:
            # Every live lane's last accepted step ends at or after t_obs.
            dense = ops.dense(state["t_prev"], state["t"], state["y_prev"], state["y"], state["ks"], t_obs)
            y_obs = [jnp.where(state["t"] == t_obs, a, b) for a, b in zip(y_obs, dense)]
        saved = save(k, y_obs, saved)
        return state, saved

    state, saved = lax.fori_loop(1, plan.n_times, interval, (state, saved))
    return state["ok"], saved


class Fused(AbstractStrategy):
    """The whole integration of a block of trajectories in one kernel, each
    trajectory (one lane) with its own adaptive steps — for fast forward simulation
    on a GPU. No gradients flow through it.

    Experimental: the Pallas kernel has been checked against diffrax in Pallas's
    interpreter on CPU but has not yet run on a GPU, where it is meant to pay off; its
    interface may change, and it may be removed if on a GPU it does not beat
    [`sgjax.SharedStep`][].

    From the model's own `vector_field` (traced once and run lane by lane; see
    `sgjax/_internal/_scalarize.py` for what it may contain), the simulator's explicit
    Runge–Kutta solver (`diffrax.Tsit5`, `Dopri5`, `Dopri8`, `Bosh3`, `Heun`, `Ralston`,
    `Midpoint`: any with a Butcher tableau) and its `diffrax.PIDController` (the
    same accept/reject rule and step-size update as diffrax, PID terms included,
    applied per trajectory with diffrax's default RMS error norm or the controller's
    own) or `diffrax.ConstantStepSize` (each observation interval split into
    `ceil(Δ/dt0)` equal steps). A trajectory fails (`ok=False`)
    when it needs more than `max_steps` steps in all or its state stops being
    finite; the rest of its block is unaffected.

    **Arguments:**

    - `block`: trajectories per kernel program, a power of two; with `num_warps=4`,
        128 is one trajectory per GPU thread.
    - `interpolate`: with adaptive steps, `False` (default) cuts steps short to land
        exactly on every observation time; `True` lets them run on and takes each
        observation from the solver's dense output (diffrax's interpolation class for
        that solver), as diffrax does. Fewer steps per trajectory, but lanes step out
        of phase, and a block runs in lockstep: see the module notes.
    - `num_warps`: warps per program of the Triton kernel.
    - `pallas`: run the Pallas kernel (`True`) or the same loop as ordinary jitted JAX
        over the whole chunk (`False`). `None` (default): the kernel on a GPU, JAX
        elsewhere (as fast as Pallas's interpreter on CPU, and half its compile time).
    - `interpret`: run the Pallas kernel in Pallas's interpreter; `None` (default):
        unless the default backend is a GPU.

    **Example:**

    ```python
    sims = sgjax.simulate(simulator, key, 2**20, strategy=sgjax.experimental.Fused(), chunk_size=2**20)
    ```
    """

    block: int = eqx.field(default=128, static=True)
    interpolate: bool = eqx.field(default=False, static=True)
    num_warps: int = eqx.field(default=4, static=True)
    pallas: bool | None = eqx.field(default=None, static=True)
    interpret: bool | None = eqx.field(default=None, static=True)

    def __check_init__(self):
        if not _is_pow2(self.block):
            raise ValueError(f"`block` must be a power of two (Triton's vectors are), got {self.block!r}.")
        if not _is_pow2(self.num_warps):
            raise ValueError(f"`num_warps` must be a power of two, got {self.num_warps!r}.")

    def solve(self, simulator, theta):
        names = sorted(theta)
        dtype = simulator.ts.dtype
        plan = _Plan(simulator, names, dtype, self.interpolate)
        times = jnp.concatenate([jnp.asarray([simulator.t0], dtype), simulator.ts])
        theta_mat = jnp.stack([jnp.asarray(theta[k], dtype) for k in names])  # (params, batch)
        aux = plan.aux.vector()
        on_gpu = jax.default_backend() == "gpu"
        use_pallas = on_gpu if self.pallas is None else self.pallas
        if not use_pallas:
            return _solve_lax(plan, times, theta_mat, aux)
        interpret = (not on_gpu) if self.interpret is None else self.interpret
        return _solve_pallas(plan, times, theta_mat, aux, self.block, self.num_warps, interpret)


def _solve_lax(plan, times, theta_mat, aux):
    n = theta_mat.shape[1]
    aux_values = [aux[i] for i in range(plan.aux.size)]

    def save(k, y, saved):
        return lax.dynamic_update_index_in_dim(saved, jnp.stack(y), k, 0)

    saved = jnp.zeros((plan.n_times, plan.n_state, n), plan.dtype)
    ok, ys = _integrate(plan, lambda k: times[k], list(theta_mat), aux_values, save, saved, n)
    return ys, ok


def _solve_pallas(plan, times, theta_mat, aux, block, num_warps, interpret):
    from jax.experimental import pallas as pl
    from jax.experimental.pallas import triton as pltriton

    n_params, n = theta_mat.shape
    padded = -(-n // block) * block
    if padded != n:  # pad with copies of the last draw: valid parameters, discarded
        theta_mat = jnp.concatenate([theta_mat, jnp.repeat(theta_mat[:, -1:], padded - n, axis=1)], axis=1)
    n_aux = plan.aux.size

    def kernel(times_ref, aux_ref, theta_ref, ys_ref, ok_ref):
        theta_lanes = [theta_ref[p, :] for p in range(n_params)]
        aux_values = [aux_ref[i] for i in range(n_aux)]

        def save(k, y, saved):
            for s, v in enumerate(y):
                ys_ref[k, s, :] = v
            return saved

        ok, _ = _integrate(plan, lambda k: times_ref[k], theta_lanes, aux_values, save, None, block)
        ok_ref[:] = ok.astype(jnp.int32)

    ys, ok = pl.pallas_call(
        kernel,
        grid=(padded // block,),
        in_specs=[
            pl.BlockSpec((plan.n_times,), lambda i: (0,)),
            pl.BlockSpec((aux.shape[0],), lambda i: (0,)),
            pl.BlockSpec((n_params, block), lambda i: (0, i)),
        ],
        out_specs=[
            pl.BlockSpec((plan.n_times, plan.n_state, block), lambda i: (0, 0, i)),
            pl.BlockSpec((block,), lambda i: (i,)),
        ],
        out_shape=[
            jax.ShapeDtypeStruct((plan.n_times, plan.n_state, padded), plan.dtype),
            jax.ShapeDtypeStruct((padded,), jnp.int32),
        ],
        interpret=interpret,
        compiler_params=pltriton.CompilerParams(num_warps=num_warps, num_stages=1),
        name="sgjax_fused_ode",
    )(times, aux, theta_mat)
    return ys[..., :n], ok[:n] > 0
