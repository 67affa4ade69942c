"""Tasks and targets on ODE simulators: what the network sees and learns."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import pytest

import sgjax
from sgjax import models, observation as obs
from sgjax.observation import ObservationModel, Poisson


DAYS = jnp.arange(1.0, 31.0)


def _sample(task, key, n):
    return sgjax.simulate_batch(task, key=key, n=n, chunk=n)  # jitted, as in training


def _sir(observation=None, **kwargs):
    return sgjax.Simulator(models.SIR(**kwargs), DAYS, observation)


def test_task_batch_matches_simulate_and_targets_are_exact():
    sim = _sir()
    task = sgjax.Task(
        sim, ["beta", sgjax.Derived("R0"), sgjax.Derived("final_size"), sgjax.Hidden("R"), sgjax.Signal()]
    )
    assert task.labels[:4] == ("beta", "R0", "final_size", "R(t=30)")
    assert len(task.labels) == 4 + 30
    b = _sample(task, jax.random.key(0), 64)
    assert b.x.shape == (64, 30, 1) and b.mask.all() and b.y.shape == (64, 34)
    assert np.all(np.asarray(b.weight) == 1)
    # Learning spaces: beta's prior is LogUniform(0.1, 1) → logit on (0.1, 1).
    beta_space = task.spaces[0]
    assert beta_space.kind == "logit" and np.isclose(beta_space.lo, 0.1) and np.isclose(beta_space.hi, 1.0)
    beta = np.asarray(beta_space.inverse(b.y[:, 0]))
    r0 = np.asarray(b.y[:, 1])
    # Re-simulate the same θ: the clean observation (no noise here) and R equal the
    # labels, and the final size is the closed form of R0.
    theta = {"beta": beta, "gamma": beta / r0}
    again = sgjax.simulate(sim, key=jax.random.key(1), theta=theta)
    np.testing.assert_allclose(again.observations, b.x, rtol=2e-3, atol=1e-2)
    np.testing.assert_allclose(again.states[:, -1, 2], b.y[:, 3], rtol=2e-3, atol=1e-2)
    np.testing.assert_allclose(b.y[:, 4:], again.signal[:, :, 0], rtol=2e-3, atol=1e-2)
    np.testing.assert_allclose(b.y[:, 2], models.final_size(r0, 1 - 1 / 1000), rtol=1e-5)


def test_space_round_trip_and_auto_choice():
    for space, v in ((sgjax.Space("log"), 2.5), (sgjax.Space("logit", 0.3, 1.0), 0.7), (sgjax.Space("log1p"), 4.0)):
        np.testing.assert_allclose(space.inverse(space.forward(jnp.asarray(v))), v, rtol=1e-5)
    assert sgjax.Space.from_support(dist.Gamma(2.0, 1.0).support).kind == "log"
    assert sgjax.Space.from_support(dist.Normal(0.0, 1.0).support).kind == "identity"
    # A draw on the boundary of a uniform prior still gets a finite label.
    assert np.isfinite(sgjax.Space("logit", 0.5, 1.0).forward(jnp.asarray(0.5)))
    with pytest.raises(ValueError, match="choose one of"):
        sgjax.Space("sqrt")


def test_forecast_splits_the_window():
    sim = _sir(obs.ObservationModel(obs.Poisson()))
    task = sgjax.Task(sim, [sgjax.Forecast(after=23.0), "beta"])  # DAYS = 1 … 30
    b = _sample(task, jax.random.key(2), 16)
    assert task.in_time == 23 and b.x.shape == (16, 23, 1)
    assert task.labels[:7] == tuple(f"x(t={t})" for t in range(24, 31))
    # The labels are the last 7 noisy observations: integers.
    np.testing.assert_array_equal(b.y[:, :7], np.round(b.y[:, :7]))
    with pytest.raises(ValueError, match="leaves no observed times"):
        sgjax.Task(sim, sgjax.Forecast(after=0.0))
    with pytest.raises(ValueError, match="nothing to forecast"):
        sgjax.Task(sim, sgjax.Forecast(after=30.0))
    with pytest.raises(ValueError, match="not one of the simulator's observation times"):
        sgjax.Task(sim, sgjax.Forecast(after=23.5))
    with pytest.raises(TypeError, match="Forecast\\(after=simulator.ts\\[-h - 1\\]\\)"):
        sgjax.Forecast(7)  # the old count of times


def test_hidden_takes_observation_times():
    sim = _sir()  # DAYS = 1 … 30
    task = sgjax.Task(sim, [sgjax.Hidden("I", times=[5.0, 30.0]), sgjax.Hidden("R")])
    assert task.labels == ("I(t=5)", "I(t=30)", "R(t=30)")
    b = eqx.filter_jit(task.sample)(jax.random.key(0), 8)
    theta = task.prior.sample(jax.random.split(jax.random.key(0))[0], 8)  # as Task.sample draws it
    again = sgjax.simulate(sim, key=jax.random.key(1), theta=theta)
    np.testing.assert_allclose(b.y[:, 0], again.states[:, 4, 1], rtol=1e-4, atol=1e-4)  # day 5 is index 4
    np.testing.assert_allclose(b.y[:, 1:], again.states[:, -1, 1:], rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="not indices"):
        sgjax.Task(sim, [sgjax.Hidden("I", times=-1)])  # the old index of the last time
    with pytest.raises(ValueError, match="not one of"):
        sgjax.Task(sim, [sgjax.Hidden("I", times=0.5)])


def test_bad_targets_say_what_exists():
    sim = _sir()
    with pytest.raises(ValueError, match="Did you mean 'beta'"):
        sgjax.Task(sim, [sgjax.Parameter("betta")])
    with pytest.raises(ValueError, match="derives"):
        sgjax.Task(sim, ["R_0"])
    with pytest.raises(ValueError, match="states are"):
        sgjax.Task(sim, [sgjax.Hidden("Q")])
    with pytest.raises(TypeError, match="sgjax.Simulator"):
        sgjax.Task("sir", ["beta"])


def test_failed_simulations_get_zero_weight():
    sim = sgjax.Simulator(models.SIR(), DAYS, max_steps=16)  # too few steps for many draws
    b = _sample(sgjax.Task(sim, ["beta"], strategy=sgjax.PerTrajectory()), jax.random.key(3), 64)
    w = np.asarray(b.weight)
    assert 0 < w.sum() < 64
    assert np.all(np.isfinite(b.x)) and np.all(np.asarray(b.y)[w == 0] == 0)


def test_model_selection_strata_and_weights():
    # Gaussian noise: the strata and weights do not depend on the noise model, and it
    # compiles in a fraction of the count samplers' time.
    noisy = obs.ObservationModel(obs.Gaussian(1.0))
    sir = sgjax.Simulator(models.SIR(), DAYS, noisy)
    seir = sgjax.Simulator(models.SEIR(), DAYS, noisy)
    task = sgjax.ModelSelection({"SIR": sir, "SEIR": seir}, probabilities=[0.3, 0.7])
    assert task.counts(100) == (30, 70) and task.counts(7) == (2, 5)
    b = _sample(task, jax.random.key(4), 7)
    labels = np.asarray(b.y[:, 0])
    np.testing.assert_array_equal(np.sort(labels), [0, 0, 1, 1, 1, 1, 1])  # strata; rows shuffled
    # Weights restore the prior model probabilities exactly: Σ weights per model ∝ p.
    w = np.asarray(b.weight)
    np.testing.assert_allclose([w[labels == 0].sum() / 7, w[labels == 1].sum() / 7], [0.3, 0.7], rtol=1e-6)
    with pytest.raises(ValueError, match="share `ts`"):
        sgjax.ModelSelection({"a": sir, "b": sgjax.Simulator(models.SIR(), DAYS + 1, noisy)})
    with pytest.raises(ValueError, match="positive numbers summing to 1"):
        sgjax.ModelSelection({"a": sir, "b": seir}, probabilities=[0.5, 0.6])


def test_a_partial_chunk_keeps_every_model_share():
    # 128 samples from a stratified chunk of 256 (128 of each model): cutting off the
    # end would keep only the first model; a random half keeps ~64 of each.
    noisy = obs.ObservationModel(obs.Gaussian(1.0))
    sir = sgjax.Simulator(models.SIR(), DAYS, noisy)
    task = sgjax.ModelSelection({"a": sir, "b": sgjax.Simulator(models.SIR(N=500.0), DAYS, noisy)})
    labels = np.asarray(sgjax.simulate_batch(task, key=jax.random.key(0), n=128, chunk=256).y[:, 0])
    assert labels.shape == (128,)
    # Hypergeometric(256, 128, 128) has sd ~4: 64 ± 24 is a 6 sd band.
    assert 40 < np.sum(labels == 1) < 88
    # The rows are shuffled, so any first k are a fair sample (a chunk itself is
    # ordered by model): both models among the first 16 (a 1 in 2^15 miss if fair).
    assert set(labels[:16]) == {0.0, 1.0}


def test_restricted_task_reuses_the_compiled_sample():
    """`task.restrict(box)` changes array values only: a filter_jit'd function of the
    task traces once for the task and its restriction, log-normal prior included."""
    sim = sgjax.Simulator(sgjax.models.SIR(), jnp.arange(1.0, 21.0), ObservationModel(Poisson()))
    prior = sgjax.Prior(beta=dist.LogNormal(jnp.log(0.4), 0.5), gamma=dist.Uniform(0.05, 0.5))
    task = sgjax.Task(sim, ["beta", "gamma"], prior)

    def draw(task, key):
        return task.prior.sample(key, 256), task.sample(key, 64)

    counted = eqx.debug.assert_max_traces(draw, max_traces=1)
    sample = eqx.filter_jit(counted)

    box = {"beta": (0.3, 0.5), "gamma": (0.1, 0.2)}
    theta_all, _ = sample(task, jax.random.key(0))
    theta, batch = sample(task.restrict(box), jax.random.key(0))
    assert eqx.debug.get_num_traces(counted) == 1
    for name, (lo, hi) in box.items():
        v = np.asarray(theta[name])
        assert v.min() >= lo and v.max() <= hi
    assert np.all(np.asarray(batch.weight) == 1)
    # On the host the task shows the prior as given, and its restriction as truncated.
    assert isinstance(task.prior.distributions["beta"], dist.LogNormal)
    assert task.restrict(box).prior.distributions["beta"].support.upper_bound == pytest.approx(0.5)
    # The unrestricted task draws exactly the prior's own draws.
    np.testing.assert_allclose(theta_all["beta"], prior.sample(jax.random.key(0), 256)["beta"], rtol=1e-6)
