"""The fused strategy (`sgjax.experimental.Fused`) and its lane interpreter (`sgjax._internal._scalarize`).

On CPU: the fused loop as jitted JAX (the default off a GPU) and, on small batches,
the Pallas kernel itself in Pallas's interpreter; the Triton lowering of the kernel is
checked by exporting it for CUDA (no GPU needed). Accuracy is checked against a
float64 diffrax solve at rtol = atol = 1e-10, closed forms, and diffrax's own fixed
steps.
"""

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import all_models

import sgjax
from sgjax._internal._scalarize import lanes, Scalarized, UnsupportedPrimitive
from sgjax.observation import Gaussian, ObservationModel


F32 = jax.ShapeDtypeStruct((), jnp.float32)


def _random_inputs(key, model, theta, n):
    """Random states and times near a model's typical scale, and θ jittered ±50%."""
    k1, k2, k3 = jax.random.split(key, 3)
    y = jax.random.uniform(k1, (n, len(model.state_names)), minval=0.5, maxval=50.0)
    t = jax.random.uniform(k2, (n,), maxval=50.0)
    keys = jax.random.split(k3, len(theta))
    th = {k: v * jax.random.uniform(kk, (n,), minval=0.5, maxval=1.5) for kk, (k, v) in zip(keys, theta.items())}
    return t, y, th


def _stack(values, n):
    return jnp.stack([jnp.broadcast_to(jnp.asarray(v), (n,)) for v in values], axis=-1)


@pytest.mark.parametrize(
    "model, theta, ts", all_models, ids=lambda x: type(x).__name__ if hasattr(x, "state_names") else ""
)
def test_scalarizer_reproduces_every_model(model, theta, ts, getkey):
    n_state = len(model.state_names)
    state = jax.ShapeDtypeStruct((n_state,), jnp.float32)
    names = {k: F32 for k in theta}
    field = Scalarized(model.vector_field, F32, state, names)
    init = Scalarized(model.initial_state, names)
    t, y, th = _random_inputs(getkey(), model, theta, 16)

    @jax.jit
    def lane_version(t, y, th):
        dy = field(t, lanes([y[:, i] for i in range(n_state)]), th)
        return _stack(list(dy), 16), _stack(list(init(th)), 16)

    reference = jax.jit(lambda t, y, th: (jax.vmap(model.vector_field)(t, y, th), jax.vmap(model.initial_state)(th)))
    # The same primitives in the same order, compiled by XLA alike: bit for bit.
    for got, want in zip(lane_version(t, y, th), reference(t, y, th)):
        np.testing.assert_array_equal(got, want)


def test_scalarizer_structural_and_control_flow(getkey):
    # Everything a hand-written field may use that the built-ins do not: matrices,
    # concatenate, reductions, integer indexing, where, a traced-predicate cond, a
    # fixed-length loop, a custom_jvp function and a nested jit.
    mat = jnp.array([[0.0, 1.0, -0.5], [-1.0, 0.2, 0.0], [0.3, 0.0, -0.1]])

    @jax.jit
    def inner(y):
        return jnp.concatenate([y[1:], y[:1]]) * jax.nn.softplus(y)

    def field(t, y, theta):
        lin = mat @ y + theta["k"] * jnp.sum(y**2) / (1.0 + jnp.max(jnp.abs(y)))
        lin = lin + jax.lax.cond(t > 1.0, lambda v: jnp.sin(v), lambda v: jnp.cos(v) * 2.0, y)
        lin = lin + jax.lax.fori_loop(0, 3, lambda i, v: v * 0.5 + y[i], jnp.zeros(3))
        return jnp.where(y > 0, lin, -lin) + inner(y)[jnp.array(2)] + jnp.cumsum(y)[::-1]

    t, y, th = _random_inputs(getkey(), sgjax.models.Lorenz(), {"k": 0.3}, 16)
    y = y - 25.0
    f = Scalarized(field, F32, jax.ShapeDtypeStruct((3,), jnp.float32), {"k": F32})
    got = jax.jit(lambda t, y, th: _stack(list(f(t, lanes([y[:, i] for i in range(3)]), th)), 16))(t, y, th)
    want = jax.jit(jax.vmap(field))(t, y, th)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-5)


def test_scalarizer_refuses_unsupported_primitives_clearly():
    with pytest.raises(UnsupportedPrimitive, match=r"`sort`.*sgjax.SharedStep\(\)"):
        Scalarized(lambda y: jnp.sort(y), jax.ShapeDtypeStruct((3,), jnp.float32))(lanes([jnp.ones(4)] * 3))

    def loop(y):  # the number of iterations differs between trajectories
        return jax.lax.while_loop(lambda v: v[0] < 10.0, lambda v: v * 2.0, y)

    with pytest.raises(UnsupportedPrimitive, match="iterations differs between trajectories"):
        Scalarized(loop, jax.ShapeDtypeStruct((2,), jnp.float32))(lanes([jnp.arange(1.0, 5.0)] * 2))


CASES = {
    # model, observation times, bound on |fused − exact| justified by the tolerances
    # (rtol 1e-4, atol 1e-3 per step; global error a few tens of local ones):
    "SIR": (sgjax.models.SIR(), np.arange(1.0, 101.0), 1.0),  # 1e-3 of N = 1000
    "Lorenz": (sgjax.models.Lorenz(), np.linspace(0.05, 2.0, 40), 0.2),  # errors grow like exp(0.9 t)
    "LotkaVolterra": (
        sgjax.models.LotkaVolterra(),
        np.linspace(0.5, 30.0, 60),
        5.0,
    ),  # phase drift over ~5 cycles of amplitude ~150
}


@pytest.mark.parametrize("name", CASES)
def test_fused_matches_diffrax_and_exact_reference(name, getkey):
    model, ts, bound = CASES[name]
    sim = sgjax.Simulator(model, ts)
    theta = model.default_prior().sample(getkey(), 64)
    fused, ok_fused = jax.jit(lambda th: sgjax.experimental.Fused().solve(sim, th))(theta)
    assert fused.shape == (len(ts) + 1, len(model.state_names), 64)
    assert ok_fused.all()
    with jax.enable_x64(True):
        tight = dfx.PIDController(rtol=1e-10, atol=1e-10)
        sim64 = sgjax.Simulator(model, ts, stepsize_controller=tight, max_steps=100_000)
        theta64 = {k: jnp.asarray(np.asarray(v), jnp.float64) for k, v in theta.items()}
        exact, ok = jax.jit(lambda th: sgjax.PerTrajectory().solve(sim64, th))(theta64)
        exact = np.asarray(exact)
    assert ok.all()
    err_fused = np.abs(np.asarray(fused, np.float64) - exact).max()
    assert err_fused <= bound
    if name == "SIR":  # (one model: each further compile costs seconds)
        per, ok_per = jax.jit(lambda th: sgjax.PerTrajectory().solve(sim, th))(theta)
        assert ok_per.all()
        err_per = np.abs(np.asarray(per, np.float64) - exact).max()
        # Same tolerance per trajectory: no less accurate than vmap(diffeqsolve) (it
        # is usually more: steps land on the observation times, no interpolation).
        assert err_fused <= 1.5 * err_per
        # Steps run past observation times, read from Tsit5's dense output: as accurate
        # as diffrax, which does the same.
        dense, ok_dense = jax.jit(lambda th: sgjax.experimental.Fused(interpolate=True).solve(sim, th))(theta)
        assert ok_dense.all()
        assert np.abs(np.asarray(dense, np.float64) - exact).max() <= 1.5 * err_per


def test_exponential_closed_form_from_an_earlier_start():
    # The logistic closed form on an irregular grid is in test_simulate.py (every strategy).
    sim = sgjax.Simulator(sgjax.models.Exponential(), jnp.arange(1.0, 21.0), t0=-0.5)
    out = sgjax.simulate(
        sim, key=jax.random.key(0), theta={"r": jnp.array([-0.3, 0.05, 0.2])}, strategy=sgjax.experimental.Fused()
    )
    n0 = sgjax.models.Exponential().N0
    exact = n0 * np.exp(np.array([-0.3, 0.05, 0.2])[:, None] * (np.arange(1.0, 21.0) + 0.5)[None])
    # atol 1e-3 dominates for the decaying one; rtol 1e-4 per step for the others.
    np.testing.assert_allclose(out.states[..., 0], exact, rtol=1e-3, atol=2e-3)


@pytest.mark.parametrize("solver", [dfx.Tsit5(), dfx.Heun()], ids=["Tsit5", "Heun"])
def test_fixed_steps_are_diffrax_steps(solver):
    # dt0 divides every interval, so the steps coincide with diffrax's: in float64 the
    # two agree to rounding.
    with jax.enable_x64(True):
        ts = np.array([0.25, 0.5, 1.0, 1.5])
        sim = sgjax.Simulator(
            sgjax.models.Lorenz(), ts, solver=solver, stepsize_controller=dfx.ConstantStepSize(), dt0=0.0125
        )
        theta = {"sigma": jnp.array([10.0, 12.0]), "rho": jnp.array([28.0, 20.0]), "beta": jnp.array([8 / 3, 2.0])}
        fused, ok = jax.jit(lambda th: sgjax.experimental.Fused().solve(sim, th))(theta)
        ref, ok_ref = jax.jit(lambda th: sgjax.PerTrajectory().solve(sim, th))(theta)
        assert ok.all() and ok_ref.all()
        np.testing.assert_allclose(fused, ref, rtol=1e-9, atol=1e-9)
        # Too many steps for max_steps: every trajectory fails, as in diffrax.
        short = sgjax.Simulator(
            sgjax.models.Lorenz(),
            ts,
            solver=solver,
            stepsize_controller=dfx.ConstantStepSize(),
            dt0=0.0125,
            max_steps=100,
        )
        _, ok = jax.jit(lambda th: sgjax.experimental.Fused().solve(short, th))(theta)
        assert not ok.any()


def test_blow_ups_and_step_limits_are_flagged_not_fatal():
    def field(t, y, theta):
        return theta["a"] * y**2  # y' = a y², y0 = 1: blows up at t = 1/a

    model = sgjax.ODEModel(field, lambda theta: jnp.array([1.0]), ("a",), ("y",), sgjax.State("y"))
    sim = sgjax.Simulator(model, jnp.linspace(0.1, 2.0, 20), max_steps=256)
    theta = {"a": jnp.array([0.1, 0.2, 5.0, 0.3, 100.0])}  # 5 and 100 blow up before t=2
    with pytest.warns(UserWarning, match="2 of 5 simulations failed"):
        out = sgjax.simulate(sim, key=jax.random.key(0), theta=theta, strategy=sgjax.experimental.Fused())
    np.testing.assert_array_equal(out.valid, [True, True, False, True, False])
    assert np.isfinite(out.states).all()
    a = np.array([0.1, 0.2, 0.3])
    np.testing.assert_allclose(
        out.states[out.valid][..., 0], 1 / (1 - a[:, None] * np.asarray(sim.ts)[None]), rtol=1e-3
    )

    # A step budget too small for one trajectory fails that one only.
    lorenz = sgjax.Simulator(sgjax.models.Lorenz(), jnp.linspace(0.05, 1.0, 20), max_steps=60)
    theta = {"sigma": jnp.array([10.0, 10.0]), "rho": jnp.array([28.0, 1e4]), "beta": jnp.array([8 / 3, 8 / 3])}
    ys, ok = jax.jit(lambda th: sgjax.experimental.Fused().solve(lorenz, th))(theta)
    np.testing.assert_array_equal(ok, [True, False])
    assert np.isfinite(np.asarray(ys)[..., 0]).all()


def test_simulate_end_to_end_with_noise():
    # (Gaussian noise: the noise model is the strategy's business only through the
    # signal, and the exact Poisson sampler alone costs seconds of compile.)
    sim = sgjax.Simulator(sgjax.models.SIR(), jnp.arange(1.0, 61.0), ObservationModel(Gaussian(2.0)))
    out = sgjax.simulate(sim, key=jax.random.key(0), n=100, strategy=sgjax.experimental.Fused(), chunk_size=64)
    assert out.observations.shape == (100, 60, 1) and out.states.shape == (100, 60, 3)
    assert out.valid.all() and out.n_failed == 0
    np.testing.assert_allclose(out.states.sum(-1), 1000.0, rtol=1e-3)  # S + I + R = N
    # The signal is the daily decrease of S; the noise around it has sd 2.
    s = np.concatenate([np.full((100, 1), 999.0), out.states[..., 0]], axis=1)
    np.testing.assert_allclose(out.signal[..., 0], s[:, :-1] - s[:, 1:], atol=2e-2)
    assert 1.9 < np.std(out.observations - out.signal) < 2.1


@pytest.mark.slow  # kept out of the default run for CI's time (issue 25); `pytest -m slow` runs it
def test_pallas_kernel_matches_the_lax_loop():
    # The kernel itself (Pallas's interpreter): a batch that is not a multiple of the
    # block (padded), adaptive and fixed steps; the same arithmetic as the lax loop.
    theta = {"beta": jnp.linspace(0.2, 0.9, 20), "gamma": jnp.linspace(0.05, 0.3, 20)}
    for kw in ({}, {"stepsize_controller": dfx.ConstantStepSize(), "dt0": 0.5}):
        sim = sgjax.Simulator(sgjax.models.SIR(), jnp.arange(1.0, 11.0), **kw)
        kernel, ok_kernel = jax.jit(lambda th: sgjax.experimental.Fused(block=8, pallas=True).solve(sim, th))(theta)
        loop, ok_loop = jax.jit(lambda th: sgjax.experimental.Fused(pallas=False).solve(sim, th))(theta)
        assert ok_kernel.all() and ok_loop.all()
        np.testing.assert_allclose(kernel, loop, rtol=1e-6)


def test_traced_model_and_controller_values_reach_the_kernel():
    # Under jax.jit with the simulator as an argument, the model's N and the
    # controller's tolerances are tracers; a kernel cannot capture them, so they are
    # passed in.
    sim = sgjax.Simulator(
        sgjax.models.SIR(N=jnp.asarray(500.0)), jnp.arange(1.0, 11.0),
        stepsize_controller=dfx.PIDController(rtol=jnp.asarray(1e-4), atol=jnp.asarray(1e-3)),
    )  # fmt: skip
    theta = {"beta": jnp.linspace(0.2, 0.9, 8), "gamma": jnp.linspace(0.05, 0.3, 8)}
    arrays, static = eqx.partition(sim, eqx.is_array)
    solve = jax.jit(lambda arrays, th, strategy: strategy.solve(eqx.combine(arrays, static), th), static_argnums=2)
    kernel, ok = solve(arrays, theta, sgjax.experimental.Fused(block=8, pallas=True))
    loop, _ = solve(arrays, theta, sgjax.experimental.Fused(pallas=False))
    assert ok.all()
    np.testing.assert_allclose(kernel, loop, rtol=1e-6)
    np.testing.assert_allclose(kernel.sum(axis=1), 500.0, rtol=1e-4)  # S + I + R = N


@pytest.mark.parametrize(
    "model, theta, ts", all_models, ids=lambda x: type(x).__name__ if hasattr(x, "state_names") else ""
)
def test_kernel_lowers_to_triton_for_cuda(model, theta, ts):
    # Cross-platform export runs the Pallas → Triton lowering without a GPU: every
    # primitive of the kernel must have a Triton rule (no reduce_or, no 2-D stacking).
    fixed = dict(stepsize_controller=dfx.ConstantStepSize(), dt0=0.01)
    variants = [({}, False)]
    if isinstance(model, sgjax.models.Lorenz):  # fixed steps, dense output, Dopri5
        variants += [(fixed, False), ({}, True), ({"solver": dfx.Dopri5()}, True)]
    for kw, interpolate in variants:
        sim = sgjax.Simulator(model, ts, **kw)
        strategy = sgjax.experimental.Fused(pallas=True, interpret=False, interpolate=interpolate)
        args = {k: jax.ShapeDtypeStruct((1000,), jnp.float32) for k in theta}
        exported = jax.export.export(
            jax.jit(lambda th: strategy.solve(sim, th)),
            platforms=["cuda"],
            disabled_checks=[jax.export.DisabledSafetyCheck.custom_call("__gpu$xla.gpu.triton")],
        )(args)
        assert "__gpu$xla.gpu.triton" in exported.mlir_module()


def test_clear_errors():
    theta = {"beta": jnp.array([0.5]), "gamma": jnp.array([0.1])}
    implicit = sgjax.Simulator(sgjax.models.SIR(), jnp.arange(1.0, 11.0), solver=dfx.Kvaerno5())
    with pytest.raises(TypeError, match="explicit Runge–Kutta.*Kvaerno5.*SharedStep"):
        sgjax.experimental.Fused().solve(implicit, theta)
    clip = sgjax.Simulator(
        sgjax.models.SIR(), jnp.arange(1.0, 11.0),
        stepsize_controller=dfx.ClipStepSizeController(dfx.PIDController(rtol=1e-4, atol=1e-3), step_ts=[5.0]),
    )  # fmt: skip
    with pytest.raises(TypeError, match="ClipStepSizeController.*lands on every observation time"):
        sgjax.experimental.Fused().solve(clip, theta)
    with pytest.raises(ValueError, match="power of two"):
        sgjax.experimental.Fused(block=100)
