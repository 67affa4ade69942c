"""Batched generation: strategies agree, determinism, compile-once, failures, bad input."""

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import pytest

import sgjax
from sgjax._simulation import _simulate, _strategy
from sgjax.observation import ObservationModel, Poisson


N = 1000.0


def sir_field(t, y, theta):
    s, i, r = y
    infections = theta["beta"] * s * i / N
    return jnp.stack([-infections, infections - theta["gamma"] * i, theta["gamma"] * i])


def user_model():
    # The model the README shows.
    return sgjax.ODEModel(
        sir_field,
        initial_state=lambda theta: jnp.array([N - 1.0, 1.0, 0.0]),
        param_names=("beta", "gamma"),
        state_names=("S", "I", "R"),
        observable=sgjax.Decrease("S"),
    )


PRIOR = sgjax.Prior(beta=dist.Uniform(0.2, 0.8), gamma=dist.Uniform(0.05, 0.2))
TS = jnp.arange(1.0, 61.0)


def sir_sim(**kw):
    return sgjax.Simulator(user_model(), TS, ObservationModel(Poisson()), **kw)


@pytest.mark.parametrize("strategy", [sgjax.SharedStep(), pytest.param(sgjax.PerTrajectory(), marks=pytest.mark.slow)])
def test_user_model_every_strategy(strategy):
    out = sgjax.simulate(sir_sim(), key=jax.random.key(0), n=50, prior=PRIOR, strategy=strategy)
    assert out.observations.shape == (50, 60, 1)
    assert out.states.shape == (50, 60, 3)
    assert out.valid.all() and out.n_failed == 0
    # S + I + R = N along every trajectory (rtol 1e-4 in float32: allow 1e-3 N).
    np.testing.assert_allclose(out.states.sum(-1), N, rtol=1e-3)
    # The signal is the per-interval decrease of S.
    s = np.concatenate([np.full((50, 1), N - 1.0), out.states[..., 0]], axis=1)
    np.testing.assert_allclose(out.signal[..., 0], s[:, :-1] - s[:, 1:], atol=2e-2)
    assert np.all(out.observations == np.round(out.observations)) and np.all(out.observations >= 0)


@pytest.mark.slow  # kept out of the default run for CI's time (issue 25); `pytest -m slow` runs it
def test_strategies_agree():
    theta = PRIOR.sample(jax.random.key(1), 200)
    sim = sgjax.Simulator(user_model(), TS)
    shared = sgjax.simulate(sim, key=jax.random.key(2), theta=theta, strategy=sgjax.SharedStep())
    per = sgjax.simulate(sim, key=jax.random.key(2), theta=theta, strategy=sgjax.PerTrajectory())
    # Each is within ~rtol=1e-4 (per step, relative to a trajectory's scale) of the
    # truth; global error over 60 days stays well under 1e-3 of N = 1000.
    np.testing.assert_allclose(shared.states, per.states, atol=1e-3 * N)
    # The shared step is at least as accurate: compare both to a tight float32 solve.
    tight = sgjax.simulate(
        sgjax.Simulator(user_model(), TS, stepsize_controller=diffrax.PIDController(rtol=1e-6, atol=1e-6)),
        key=jax.random.key(2),
        theta=theta,
        strategy=sgjax.PerTrajectory(),
    )
    err_shared = np.abs(shared.states - tight.states).max()
    err_per = np.abs(per.states - tight.states).max()
    assert err_shared <= err_per + 1e-2


def test_deterministic_and_chunking_consistent():
    sim = sir_sim()
    a = sgjax.simulate(sim, key=jax.random.key(3), n=300, prior=PRIOR, chunk_size=128)
    b = sgjax.simulate(sim, key=jax.random.key(3), n=300, prior=PRIOR, chunk_size=128)
    c = sgjax.simulate(sim, key=jax.random.key(4), n=300, prior=PRIOR, chunk_size=128)
    np.testing.assert_array_equal(a.observations, b.observations)
    assert not np.array_equal(a.observations, c.observations)
    # Given θ, the clean trajectories do not depend on how the batch is chunked.
    theta = PRIOR.sample(jax.random.key(5), 300)
    clean = sgjax.Simulator(user_model(), TS)
    whole = sgjax.simulate(clean, key=jax.random.key(6), theta=theta, chunk_size=300, strategy=sgjax.PerTrajectory())
    parts = sgjax.simulate(clean, key=jax.random.key(6), theta=theta, chunk_size=64, strategy=sgjax.PerTrajectory())
    np.testing.assert_allclose(whole.states, parts.states, rtol=1e-5, atol=1e-3)


@pytest.mark.slow  # kept out of the default run for CI's time (issue 25); `pytest -m slow` runs it
@pytest.mark.parametrize("workers", [2, 3])
def test_worker_threads_change_nothing(monkeypatch, workers):
    # Chunks are run by several host threads on a CPU (two per core); chunk i depends
    # only on its key, so the result is the same as from one thread, failures included.
    def field(t, y, theta):
        return theta["a"] * y**2  # blows up before t = 2 when a > 0.5

    model = sgjax.ODEModel(field, lambda theta: jnp.array([1.0]), ("a",), ("y",), sgjax.State("y"))
    sim = sgjax.Simulator(model, jnp.linspace(0.1, 2.0, 20), ObservationModel(Poisson()), max_steps=256)
    theta = {"a": jnp.linspace(0.01, 0.6, 333)}
    prior = sgjax.Prior(a=dist.Uniform(0.0, 0.55))
    runs = {}
    for w in (1, workers):
        monkeypatch.setattr(_simulate, "_workers", lambda n_chunks, w=w: min(w, n_chunks))
        with pytest.warns(UserWarning, match="failed"):
            given = sgjax.simulate(
                sim, key=jax.random.key(0), theta=theta, chunk_size=32, strategy=sgjax.PerTrajectory()
            )
        drawn = sgjax.simulate(sim, key=jax.random.key(1), n=333, prior=prior, chunk_size=32)
        runs[w] = (given, drawn)
    for one, many in zip(runs[1], runs[workers]):
        for a, b in zip(jax.tree.leaves(one), jax.tree.leaves(many)):
            np.testing.assert_array_equal(a, b)
    given = runs[1][0]
    assert 0 < given.valid.sum() < 333 and (given.observations[~given.valid] == 0).all()


def test_a_failing_worker_stops_the_others(monkeypatch):
    # An error in one worker thread reaches the caller, and the other threads stop
    # after their current chunk instead of simulating the rest.
    sim = sgjax.Simulator(user_model(), TS)
    sgjax.simulate(sim, key=jax.random.key(0), n=32, prior=PRIOR, chunk_size=32)  # compile
    calls = []
    real = _simulate._chunk_from_prior

    def flaky(*args):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("chunk failed")
        return real(*args)

    monkeypatch.setattr(_simulate, "_chunk_from_prior", flaky)
    monkeypatch.setattr(_simulate, "_workers", lambda n_chunks: min(2, n_chunks))
    with pytest.raises(RuntimeError, match="chunk failed"):
        sgjax.simulate(sim, key=jax.random.key(1), n=32 * 200, prior=PRIOR, chunk_size=32)
    assert len(calls) < 20  # of 200 chunks


def test_compiles_once(monkeypatch):
    # A chunk function of its own (a fresh compilation cache) that counts its traces.
    counted = eqx.debug.assert_max_traces(_simulate._chunk_outputs, max_traces=1)
    monkeypatch.setattr(_simulate, "_chunk_outputs", counted)
    monkeypatch.setattr(_simulate, "_chunk_from_prior", eqx.filter_jit(_simulate._from_prior))
    sim = sir_sim()
    sgjax.simulate(sim, key=jax.random.key(0), n=256, prior=PRIOR, chunk_size=128)
    # Same shapes, new key, new prior values, more chunks: no new trace.
    prior2 = sgjax.Prior(beta=dist.Uniform(0.3, 0.7), gamma=dist.Uniform(0.06, 0.1))
    sgjax.simulate(sim, key=jax.random.key(1), n=512, prior=prior2, chunk_size=128)
    assert eqx.debug.get_num_traces(counted) == 1


def test_blow_ups_are_flagged_not_fatal():
    def field(t, y, theta):
        return theta["a"] * y**2  # y' = a y², y0 = 1: blows up at t = 1/a

    model = sgjax.ODEModel(field, lambda theta: jnp.array([1.0]), ("a",), ("y",), sgjax.State("y"))
    sim = sgjax.Simulator(model, jnp.linspace(0.1, 2.0, 20), max_steps=256)
    theta = {"a": jnp.array([0.1, 0.2, 5.0, 0.3, 100.0])}  # 5 and 100 blow up before t=2
    for strategy in (sgjax.SharedStep(), sgjax.PerTrajectory()):
        with pytest.warns(UserWarning, match="2 of 5 simulations failed"):
            out = sgjax.simulate(sim, key=jax.random.key(0), theta=theta, strategy=strategy)
        np.testing.assert_array_equal(out.valid, [True, True, False, True, False])
        assert np.isfinite(out.states).all()
        # Failed samples hold zeros, the mask and θ are kept.
        for a in (out.states, out.signal, out.observations):
            assert (a[~out.valid] == 0).all()
        np.testing.assert_array_equal(out.theta["a"], theta["a"])
        a = np.array([0.1, 0.2, 0.3])
        exact = 1 / (1 - a[:, None] * np.asarray(sim.ts)[None])
        np.testing.assert_allclose(out.states[out.valid][..., 0], exact, rtol=1e-3)


def test_failed_draws_are_resampled():
    def field(t, y, theta):
        return theta["a"] * y**2

    model = sgjax.ODEModel(field, lambda theta: jnp.array([1.0]), ("a",), ("y",), sgjax.State("y"))
    sim = sgjax.Simulator(model, jnp.linspace(0.1, 2.0, 20), max_steps=256)
    prior = sgjax.Prior(a=dist.Uniform(0.0, 1.0))  # a > 0.5 blows up before t = 2
    out = sgjax.simulate(sim, key=jax.random.key(0), n=200, prior=prior)
    assert out.valid.all()
    assert out.n_failed > 50  # about half of the first draws fail
    assert np.all(out.theta["a"] < 0.5)


def test_bad_input():
    model = user_model()
    with pytest.raises(ValueError, match="strictly increasing"):
        sgjax.Simulator(model, [1.0, 3.0, 2.0])
    with pytest.raises(ValueError, match="interval ending at t0 is empty"):
        sgjax.Simulator(model, [0.0, 1.0])  # incidence over an empty interval
    with pytest.raises(ValueError, match="must be before \\(or at\\) the first observation"):
        sgjax.Simulator(model, [1.0, 2.0], t0=1.5)
    with pytest.raises(ValueError, match="states are"):
        sgjax.ODEModel(sir_field, lambda t: jnp.zeros(3), ("beta", "gamma"), ("S", "I", "R"), sgjax.State("X"))
    sim = sgjax.Simulator(model, TS)
    with pytest.raises(ValueError, match="Did you mean 'beta'"):
        sgjax.simulate(
            sim,
            key=jax.random.key(0),
            n=4,
            prior=sgjax.Prior(betta=dist.Uniform(0, 1), gamma=dist.Uniform(0, 1), beta=1.0),
        )
    with pytest.raises(ValueError, match="no distribution for \\['gamma'\\]"):
        sgjax.simulate(sim, key=jax.random.key(0), n=4, prior=sgjax.Prior(beta=dist.Uniform(0, 1)))
    with pytest.raises(ValueError, match="same shape"):
        sgjax.simulate(sim, key=jax.random.key(0), theta={"beta": jnp.ones(3), "gamma": jnp.ones(2)})
    with pytest.raises(ValueError, match="positive integer"):
        sgjax.simulate(sim, key=jax.random.key(0), n=0, prior=PRIOR)
    positive = sgjax.ODEModel(
        sir_field,
        lambda theta: jnp.array([N - 1.0, 1.0, 0.0]),
        ("beta", "gamma"),
        ("S", "I", "R"),
        sgjax.Decrease("S"),
        support={"beta": dist.constraints.positive, "gamma": dist.constraints.positive},
    )
    with pytest.raises(ValueError, match="needs beta in"):
        sgjax.simulate(
            sgjax.Simulator(positive, TS),
            key=jax.random.key(0),
            n=4,
            prior=sgjax.Prior(beta=dist.Normal(0.5, 0.1), gamma=dist.Uniform(0.1, 0.2)),
        )


def test_theta_outside_the_support_is_refused():
    # A negative beta simulated "validly" into negative incidence (issue 24 item 8).
    sim = sgjax.Simulator(sgjax.models.SIR(), TS, ObservationModel(sgjax.observation.Gaussian(1.0)))
    theta = {"beta": jnp.array([0.5, -0.3, 0.4, -1.0]), "gamma": jnp.full(4, 0.1)}
    msg = r"θ\['beta'\] = -0.3 at sample 1 \(2 of 4 values\) is not a finite value in SIR's support for beta, \(0.0, inf\)"
    for strategy in (sgjax.SharedStep(), sgjax.PerTrajectory()):
        with pytest.raises(ValueError, match=msg):
            sgjax.simulate(sim, key=jax.random.key(0), theta=theta, strategy=strategy)
    with pytest.raises(ValueError, match=r"θ\['gamma'\] = nan at sample 0"):
        sgjax.simulate(sim, key=jax.random.key(0), theta={"beta": [0.5], "gamma": [float("nan")]})
    # A model without declared supports (any real value) still refuses infinities.
    with pytest.raises(
        ValueError, match=r"θ\['beta'\] = inf at sample 0 .* ODEModel's support for beta, \(-inf, inf\)"
    ):
        sgjax.simulate(
            sgjax.Simulator(user_model(), TS), key=jax.random.key(0), theta={"beta": [np.inf], "gamma": [0.1]}
        )
    # The boundary of an open support is outside it; values inside simulate.
    with pytest.raises(ValueError, match=r"θ\['gamma'\] = 0 at sample 0"):
        sgjax.simulate(sim, key=jax.random.key(0), theta={"beta": [0.5], "gamma": [0.0]})
    assert sgjax.simulate(sim, key=jax.random.key(0), theta={"beta": [0.5], "gamma": [0.1]}).valid.all()


def test_an_integer_key_is_refused():
    with pytest.raises(TypeError, match=r"`key` must be one JAX PRNG key, e.g. key=jax.random.key\(0\), got 0"):
        sgjax.simulate(sir_sim(), key=0, n=4, prior=PRIOR)
    with pytest.raises(TypeError, match=r"`key` must be one JAX PRNG key.*shape \(2,\)"):
        sgjax.simulate(sir_sim(), key=jax.random.split(jax.random.key(0)), n=4, prior=PRIOR)


def test_wrong_shapes_are_reported_at_construction():
    bad_y0 = sgjax.ODEModel(sir_field, lambda th: jnp.zeros(2), ("beta", "gamma"), ("S", "I", "R"), sgjax.State("I"))
    with pytest.raises(ValueError, match="initial_state returned shape \\(2,\\)"):
        sgjax.Simulator(bad_y0, TS)
    bad_field = sgjax.ODEModel(
        lambda t, y, th: y[:2], lambda th: jnp.zeros(3), ("beta", "gamma"), ("S", "I", "R"), sgjax.State("I")
    )
    with pytest.raises(ValueError, match="vector_field returned shape \\(2,\\)"):
        sgjax.Simulator(bad_field, TS)


def test_irregular_grid_matches_closed_form():
    # Logistic growth on an irregular grid, every strategy, against the closed form.
    def field(t, y, th):
        return th["r"] * y * (1 - y / 100.0)

    model = sgjax.ODEModel(field, lambda th: jnp.array([5.0]), ("r",), ("N",), sgjax.State("N"))
    ts = jnp.array([0.3, 0.5, 2.0, 2.1, 7.5, 12.0, 30.0])
    sim = sgjax.Simulator(model, ts, stepsize_controller=diffrax.PIDController(rtol=1e-6, atol=1e-6))
    r = jnp.array([0.2, 0.5, 1.0])
    exact = 100.0 / (1 + (100.0 / 5.0 - 1) * np.exp(-np.asarray(r)[:, None] * np.asarray(ts)[None]))
    for strategy in (sgjax.SharedStep(), sgjax.PerTrajectory(), sgjax.experimental.Fused()):
        out = sgjax.simulate(sim, key=jax.random.key(0), theta={"r": r}, strategy=strategy)
        np.testing.assert_allclose(out.states[..., 0], exact, rtol=1e-4)  # rtol 1e-6 per step, float32


def test_derived_quantities_for_a_batch():
    sim = sgjax.Simulator(sgjax.models.SIR(), jnp.arange(1.0, 201.0))
    out = sgjax.simulate(
        sim, key=jax.random.key(0), theta={"beta": jnp.array([0.5, 0.3]), "gamma": jnp.array([0.1, 0.2])}
    )
    d = sim.derived(out.theta, out.states)
    np.testing.assert_allclose(d["R0"], [5.0, 1.5], rtol=1e-6)
    # After 200 days the epidemic is over: the attack rate equals the exact final size.
    np.testing.assert_allclose(d["attack_rate"], d["final_size"], atol=2e-3)


def test_shared_step_holds_each_trajectory_inside_a_clip_controller():
    sim = sgjax.Simulator(
        user_model(),
        TS,
        stepsize_controller=diffrax.ClipStepSizeController(diffrax.PIDController(rtol=1e-4, atol=1e-3), step_ts=[30.0]),
    )
    controller = _strategy._max_over_batch(sim.stepsize_controller)
    assert isinstance(controller.controller.norm, _strategy._MaxOverBatch)
    theta = PRIOR.sample(jax.random.key(1), 64)
    shared = sgjax.simulate(sim, key=jax.random.key(2), theta=theta, strategy=sgjax.SharedStep())
    per = sgjax.simulate(sim, key=jax.random.key(2), theta=theta, strategy=sgjax.PerTrajectory())
    np.testing.assert_allclose(shared.states, per.states, atol=1e-3 * N)


def test_solve_compiles_once():
    sim = sgjax.Simulator(user_model(), TS)
    sgjax.solve(sim, {"beta": 0.5, "gamma": 0.1})
    with jax.log_compiles():
        import logging

        records = []
        handler = logging.Handler()
        handler.emit = records.append
        logging.getLogger("jax").addHandler(handler)
        try:
            sgjax.solve(sim, {"beta": 0.4, "gamma": 0.2})
        finally:
            logging.getLogger("jax").removeHandler(handler)
    assert not [r for r in records if "Compiling" in r.getMessage()]


def test_keep_states_false_drops_states_only():
    sim = sgjax.Simulator(user_model(), TS)
    full = sgjax.simulate(sim, key=jax.random.key(0), n=100, prior=PRIOR, chunk_size=64)
    lean = sgjax.simulate(sim, key=jax.random.key(0), n=100, prior=PRIOR, chunk_size=64, keep_states=False)
    assert lean.states is None
    np.testing.assert_array_equal(full.observations, lean.observations)


@pytest.mark.parametrize(
    "solver",
    # Ralston and Midpoint are two-stage tableaus like Heun's.
    [diffrax.Tsit5(), diffrax.Dopri5(), diffrax.Dopri8(), diffrax.Bosh3(), diffrax.Heun()],
    ids=lambda s: type(s).__name__,
)
@pytest.mark.parametrize("adaptive", [True, False], ids=["pid", "constant"])
def test_unrolled_stages_match_diffrax(solver, adaptive):
    # SharedStep runs diffrax's explicit Runge–Kutta tableaus with their stages
    # unrolled; the same steps and values as diffrax's own stage loop, up to
    # rounding, and the dense output at the save times too.
    from sgjax._internal._unrolled import unrolled as _unrolled, UnrolledERK as _UnrolledERK

    unrolled = _unrolled(solver)
    assert isinstance(unrolled, _UnrolledERK)
    field = lambda t, y, args: jnp.stack([y[1], -args * y[0] - 0.1 * y[1]])  # damped oscillator
    ts = jnp.linspace(0.3, 10.0, 37)

    def solve(s):
        controller = diffrax.PIDController(rtol=1e-5, atol=1e-7) if adaptive else diffrax.ConstantStepSize()
        sol = diffrax.diffeqsolve(
            diffrax.ODETerm(field), s, 0.0, 10.0, None if adaptive else 0.05, jnp.array([1.0, 0.0]),
            args=2.0, saveat=diffrax.SaveAt(ts=ts), stepsize_controller=controller, max_steps=10_000,
        )  # fmt: skip
        return sol.ys, sol.stats["num_steps"]

    ys, steps = jax.jit(solve, static_argnums=0)(solver)
    ys_unrolled, steps_unrolled = jax.jit(solve, static_argnums=0)(unrolled)
    if adaptive:  # a rounding-level change of an error estimate may flip an accept
        assert abs(int(steps_unrolled) - int(steps)) <= 2 + 0.01 * int(steps)
        np.testing.assert_allclose(ys_unrolled, ys, rtol=1e-4, atol=1e-5)
    else:
        assert int(steps_unrolled) == int(steps)
        np.testing.assert_allclose(ys_unrolled, ys, rtol=1e-5, atol=1e-6)


def test_unrolled_leaves_other_solvers_alone():
    from sgjax._simulation._strategy import _unrolled

    for solver in (diffrax.Kvaerno5(), diffrax.Euler()):
        assert _unrolled(solver) is solver


@pytest.mark.slow  # kept out of the default run for CI's time (issue 25); `pytest -m slow` runs it
def test_reused_output_memory_never_touches_a_live_result(monkeypatch):
    # With the pool opted in, outputs above 1 MiB reuse the memory of dead ones
    # (sgjax/_internal/_hostmem.py).
    import gc

    monkeypatch.setenv("SGJAX_HOST_POOL", "1")
    sim = sir_sim()
    first = sgjax.simulate(sim, key=jax.random.key(0), n=2048, prior=PRIOR)
    assert first.states.nbytes > 1 << 20
    kept = {k: np.array(getattr(first, k)) for k in ("states", "signal", "observations")}
    where = {getattr(first, k).__array_interface__["data"][0] for k in kept}
    second = sgjax.simulate(sim, key=jax.random.key(1), n=2048, prior=PRIOR)  # `first` is alive: fresh memory
    for k, v in kept.items():
        np.testing.assert_array_equal(getattr(first, k), v)
    del first
    gc.collect()
    again = sgjax.simulate(sim, key=jax.random.key(0), n=2048, prior=PRIOR)  # may reuse first's memory
    for k, v in kept.items():
        np.testing.assert_array_equal(getattr(again, k), v)
    assert where & {getattr(again, k).__array_interface__["data"][0] for k in kept}  # reused
    assert not np.array_equal(second.observations, again.observations)


def test_observing_at_the_start_time():
    """`ts[0] == t0` observes the initial state itself (prevalence on day 0), with the
    rest of the trajectory unchanged: the same as starting at t0 and observing from
    ts[1]."""
    prevalence = sgjax.models.SIR(observable=sgjax.State("I"))
    theta = {"beta": jnp.array([0.5, 0.3]), "gamma": jnp.array([0.1, 0.2])}
    ts = jnp.arange(0.0, 31.0)
    at_start = sgjax.simulate(sgjax.Simulator(prevalence, ts), key=jax.random.key(0), theta=theta)
    after = sgjax.simulate(sgjax.Simulator(prevalence, ts[1:]), key=jax.random.key(0), theta=theta)
    assert at_start.valid.all()
    np.testing.assert_array_equal(at_start.signal[:, 0, 0], [1.0, 1.0])  # I0 = 1, exactly
    np.testing.assert_allclose(at_start.signal[:, 1:], after.signal, rtol=1e-5)


def test_theta_from_a_posterior_drops_derived_quantities():
    """A posterior's samples of every label (parameters and R0) simulate as they are;
    a name that is neither is refused with the simulator's parameters."""
    sim = sgjax.Simulator(sgjax.models.SIR(), TS)
    theta = {"beta": jnp.array([0.5, 0.4]), "gamma": jnp.array([0.1, 0.2])}
    plain = sgjax.simulate(sim, key=jax.random.key(0), theta=theta)
    extra = sgjax.simulate(sim, key=jax.random.key(0), theta={**theta, "R0": jnp.array([5.0, 2.0])})
    np.testing.assert_array_equal(plain.signal, extra.signal)
    assert set(extra.theta) == {"beta", "gamma"}
    with pytest.raises(ValueError, match="unknown parameters \\['R\\(t=60\\)'\\].*describe"):
        sgjax.simulate(sim, key=jax.random.key(0), theta={**theta, "R(t=60)": jnp.ones(2)})
    task = sgjax.Task(sim, ["beta", "R0", sgjax.Hidden("R"), "gamma"])
    assert task.describe()["parameters"] == ["beta", "gamma"]
