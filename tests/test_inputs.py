"""Known per-dataset inputs (issue 25 §2): a population size or an exposure passed to
the network beside the observed series, in training and in inference."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import pytest
import scipy.stats

import sgjax
from sgjax import models


# λ ~ Gamma(A, rate B); known exposure N; x_t ~ Poisson(N λ) for t = 1..T. Then
# λ | x, N ~ Gamma(A + Σx, rate B + T N): the posterior depends on N as much as on x.
A, B, T = 2.0, 2.0, 3
N_LOW, N_HIGH = 0.5, 20.0


class PoissonExposure(sgjax.AbstractTask):
    labels = ("lam",)
    spaces = (sgjax.Space("log"),)
    in_time = T
    in_channels = 1
    inputs = ("N",)
    nonnegative = True
    fully_observed = True

    def sample(self, key, n):
        k1, k2, k3 = jax.random.split(key, 3)
        lam = jax.random.gamma(k1, A, (n,)) / B
        N = jnp.exp(jax.random.uniform(k2, (n,), minval=np.log(N_LOW), maxval=np.log(N_HIGH)))
        x = jax.random.poisson(k3, (N * lam)[:, None, None], (n, T, 1)).astype(lam.dtype)
        return sgjax.Batch(x, jnp.ones(x.shape, bool), jnp.log(lam)[:, None], jnp.ones(n), N[:, None])


def exact(x, N):
    """The exact posterior of λ: shape and rate of its Gamma."""
    return A + np.sum(x), B + T * N


@pytest.fixture(scope="module")
def trained():
    est, _ = sgjax.fit(
        PoissonExposure(),
        sgjax.heads.Gaussian(),
        functools.partial(sgjax.nn.MLP, width=64),
        key=jax.random.key(0),
        steps=1000,
        batch_size=256,
        validation_size=1024,
        pilot_size=1024,
        progress=False,
    )
    return est


X = np.array([3.0, 4.0, 5.0])
EXPOSURES = (1.0, 3.0, 10.0)


def test_posterior_mean_follows_the_exact_one_across_the_known_input(trained):
    # The same counts under exposures 1, 3 and 10: exact posterior means 2.80, 1.27 and
    # 0.44, posterior sds 0.75, 0.34 and 0.12 (a relative sd of 1/sqrt(14) = 27%).
    # Tolerance: 10% of the exact mean, 0.37 posterior sd; measured error < 4% after
    # 1000 steps (the Gaussian in log λ approximates a Gamma of shape 14 well). A
    # network that ignored N would give one mean for all three, off by >= 55% for two
    # of them.
    x = np.stack([X] * len(EXPOSURES))[..., None]
    post = sgjax.infer(trained, x, inputs={"N": np.array(EXPOSURES)}, key=jax.random.key(1), n_samples=4000)
    shape, rate = exact(X, np.array(EXPOSURES))
    mean = post.mean()["lam"]
    np.testing.assert_allclose(mean, shape / rate, rtol=0.10)
    assert np.all(np.diff(mean) < 0)
    # One series at a time, with a scalar input: the same answer.
    one = sgjax.infer(trained, X, inputs={"N": 3.0}, key=jax.random.key(1), n_samples=4000)
    np.testing.assert_allclose(one.mean()["lam"][0], shape / rate[1], rtol=0.10)


def test_log_prob_takes_the_input_and_saving_keeps_it(trained, tmp_path):
    # The log density at the exact posterior's quartiles, under each exposure,
    # against the exact Gamma's: within 0.15 nats (a density within ~15%).
    for N in EXPOSURES:
        shape, rate = exact(X, N)
        lam = scipy.stats.gamma(shape, scale=1 / rate).ppf([0.25, 0.5, 0.75])
        lp = sgjax.log_prob(trained, {"lam": lam}, X, inputs={"N": N})
        want = scipy.stats.gamma(shape, scale=1 / rate).logpdf(lam)
        np.testing.assert_allclose(lp, want, atol=0.15)
    loaded = sgjax.load(sgjax.save(tmp_path / "est", trained))
    assert loaded.inputs == ("N",)
    for a, b in zip(jax.tree.leaves(trained.input_standardise), jax.tree.leaves(loaded.input_standardise)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert bool(loaded.input_standardise.log[0])  # the exposure is positive: standardised in log
    lp = sgjax.log_prob(loaded, {"lam": 1.0}, X, inputs={"N": 3.0})
    assert lp == sgjax.log_prob(trained, {"lam": 1.0}, X, inputs={"N": 3.0})


def test_inputs_are_refused_by_name(trained):
    key = jax.random.key(0)
    with pytest.raises(TypeError, match="reads the known inputs N"):
        sgjax.infer(trained, X, key=key)
    with pytest.raises(ValueError, match=r"missing \['N'\]"):
        sgjax.infer(trained, X, inputs={}, key=key)
    with pytest.raises(ValueError, match=r"unknown \['M'\]"):
        sgjax.infer(trained, X, inputs={"N": 1.0, "M": 2.0}, key=key)
    with pytest.raises(ValueError, match=r"shape \(2,\)"):
        sgjax.infer(trained, np.stack([X, X])[..., None], inputs={"N": [1.0, 2.0, 3.0]}, key=key)
    with pytest.raises(ValueError, match="finite"):
        sgjax.log_prob(trained, {"lam": 1.0}, X, inputs={"N": np.nan})
    without = dataclasses.replace(trained, inputs=(), input_standardise=None)
    with pytest.raises(ValueError, match="trained without known inputs"):
        sgjax.infer(without, X, inputs={"N": 1.0}, key=key)


def test_task_draws_a_model_constant_as_an_input():
    ts = jnp.arange(1.0, 21.0)
    sim = sgjax.Simulator(models.SIR(N="N"), ts)
    assert sim.param_names == ("beta", "gamma", "N") and models.SIR().param_names == ("beta", "gamma")
    prior = sgjax.Prior({**models.SIR().default_prior().distributions, "N": dist.Uniform(200.0, 5000.0)})
    task = sgjax.Task(sim, ["beta", "gamma"], prior, inputs=("N",))
    assert task.inputs == ("N",) and task.describe()["inputs"] == ["N"]
    key = jax.random.key(3)
    batch = task.sample(key, 16)
    # The inputs are the population sizes the simulations were drawn with.
    theta = task._prior.sample(jax.random.split(key)[0], 16)
    np.testing.assert_array_equal(np.asarray(batch.inputs[:, 0]), np.asarray(theta["N"]))
    # A named N is the number: the same right-hand side, start and derived quantities
    # as SIR(N=1234.0).
    one = {"beta": jnp.asarray(0.5), "gamma": jnp.asarray(0.2)}
    fixed, named = models.SIR(N=1234.0, I0=3.0), models.SIR(N="N", I0="I0")
    theta = {**one, "N": jnp.asarray(1234.0), "I0": jnp.asarray(3.0)}
    y = jnp.array([1000.0, 200.0, 34.0])
    np.testing.assert_allclose(named.vector_field(0.0, y, theta), fixed.vector_field(0.0, y, one), rtol=1e-6)
    np.testing.assert_array_equal(named.initial_state(theta), fixed.initial_state(one))
    ys = jnp.stack([y, y * 0.9])
    want, got = fixed.derived(one, ts[:2], ys), named.derived(theta, ts[:2], ys)
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-6)
    assert named.parameter_support("N").lower_bound == 0 and named.param_names == ("beta", "gamma", "N", "I0")
    with pytest.raises(ValueError, match="both a target and a known input"):
        sgjax.Task(sim, ["beta", "N"], prior, inputs=("N",))
    with pytest.raises(ValueError, match=r"SIR\(N='N'\)"):
        sgjax.Task(sgjax.Simulator(models.SIR(), ts), ["beta"], inputs=("N",))


def test_array_task_reads_given_inputs():
    rng = np.random.default_rng(0)
    n = 64
    theta = {"lam": rng.gamma(A, 1 / B, n)}
    N = rng.uniform(1, 10, n)
    x = rng.poisson((N * theta["lam"])[:, None], (n, T)).astype(float)
    N[5] = np.nan  # a row whose input is not finite gets weight 0
    task = sgjax.ArrayTask(theta, x, inputs={"N": N})
    assert task.inputs == ("N",) and task.describe()["inputs"] == ["N"]
    batch = task.read(np.array([7, 5, 2]))
    np.testing.assert_allclose(batch.inputs[[0, 2], 0], N[[7, 2]], rtol=1e-6)  # float32
    np.testing.assert_array_equal(batch.weight, [1.0, 0.0, 1.0])
    with pytest.raises(ValueError, match="both a target"):
        sgjax.ArrayTask(theta, x, inputs={"lam": N})
    with pytest.raises(ValueError, match=r"inputs\['N'\]"):
        sgjax.ArrayTask(theta, x, inputs={"N": N[:3]})


def test_evaluate_gives_the_held_out_inputs_to_the_network(trained):
    # held_out reads each simulation's known input from the batch and passes it by
    # name. R² of log λ (Monte Carlo, 200,000 draws of this task): 0.73 for the exact
    # posterior mean, 0.30 for the best predictor blind to N; so R² > 0.5 needs N.
    metrics = sgjax.evaluate(trained, PoissonExposure(), n=512, key=jax.random.key(3))
    assert metrics["lam"]["r2"] > 0.5
