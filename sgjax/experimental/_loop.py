"""The integration loop a fused kernel runs on its lanes: explicit Runge–Kutta steps
from a `Plan`'s tableau (`_plan.py`), with equal steps
(`diffrax.ConstantStepSize`) or each lane's own adaptive steps (diffrax's
`PIDController`, lane by lane), the state saved at every observation time."""

from typing import Any

import jax.numpy as jnp
from jax import lax

from ._plan import Ops, Plan


#: Relative slack when splitting an interval into fixed steps of `dt0`: an interval
#: that is `n` steps long up to rounding gets exactly `n` steps.
_FIXED_STEP_SLACK = 1e-5


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


def _rk_step(ops: Ops, t, y, h, k1):
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


def all_finite(y):
    ok = jnp.isfinite(y[0])
    for v in y[1:]:
        ok = ok & jnp.isfinite(v)
    return ok


def integrate(plan: Plan, time, theta_lanes, aux_values, save, saved, width):
    """The whole integration of `width` lanes: returns `(ok, saved)`, where `save(k,
    y, saved)` records the state at time index `k` (0 being `t0`) and `time(k)` reads
    the `k`th time."""
    ops = Ops(plan, theta_lanes, aux_values, width)
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
        return y, k1, total + n.astype(jnp.int32), finite & all_finite(y), saved

    k1 = ops.f(time(0), y) if plan.fsal else [jnp.zeros_like(v) for v in y]
    init = (y, k1, jnp.zeros((), jnp.int32), all_finite(y), saved)
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
    state: dict[str, Any] = dict(
        t=t, y=y, k1=k1, dt=dt, inv1=one, inv2=one, at_dtmin=jnp.zeros((width,), bool),
        n=jnp.zeros((width,), jnp.int32), ok=all_finite(y) & jnp.isfinite(dt),
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
            assert err is not None  # an adaptive plan's solver has an error estimate

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
            s["ok"] = ok & ~(accept & ~all_finite(y1)) & ~(live & ~jnp.isfinite(new_dt))
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
