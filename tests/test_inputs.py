"""Known per-dataset inputs (issue 25 §2): a population size or an exposure passed to
the network beside the observed series, in training and in inference."""

import dataclasses
import functools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import pytest
import scipy.stats

import sgjax
from sgjax import models
from sgjax._learning._target import Draw


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


# ---- Everything else that applies a trained estimator takes the inputs too. ----


class WithoutInputs(PoissonExposure):
    inputs = ()

    def sample(self, key, n):
        return dataclasses.replace(super().sample(key, n), inputs=None)


def test_embed_gives_the_inputs_to_the_network(trained):
    x = np.stack([X, X, X + 1.0, X * 2.0])[..., None]
    N = np.array([1.0, 3.0, 10.0, 2.0])
    z = sgjax.embed(trained, x, inputs={"N": N})
    # The network's raw output for each series with its own input, in natural units
    # (the estimator standardises them): the same compiled arithmetic, so ~exact.
    want = eqx.filter_jit(jax.vmap(trained))(
        jnp.asarray(x, jnp.float32), jnp.ones(x.shape, bool), jnp.asarray(N[:, None], jnp.float32)
    )
    np.testing.assert_allclose(z, np.asarray(want), rtol=1e-6, atol=1e-7)
    assert not np.allclose(z[0], z[1])  # one series, two exposures: two summaries
    # In chunks (other batch shapes, other compiled programs: rounding only).
    np.testing.assert_allclose(sgjax.embed(trained, x, inputs={"N": N}, chunk=3), z, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(sgjax.embed(trained, x[2], inputs={"N": 10.0}), z[2:3], rtol=1e-6, atol=1e-7)
    with pytest.raises(TypeError, match="reads the known inputs N"):
        sgjax.embed(trained, x)
    with pytest.raises(ValueError, match=r"unknown \['M'\]"):
        sgjax.embed(trained, x, inputs={"N": N, "M": N})


def test_simulation_bank_and_mismatch_score_keep_the_simulations_inputs(trained):
    task = PoissonExposure()
    bank = sgjax.SimulationBank.simulate(trained, task, 256, key=jax.random.key(4))
    assert bank.inputs is not None and bank.inputs.shape == (len(bank), 1)
    assert np.all((bank.inputs >= N_LOW * 0.999) & (bank.inputs <= N_HIGH * 1.001))
    # The bank's summaries are those of its series under their own inputs ...
    N = bank.inputs[:, 0]
    np.testing.assert_allclose(
        np.asarray(bank.z * bank.scale), sgjax.embed(trained, bank.x, bank.mask, inputs={"N": N}), rtol=1e-5, atol=1e-6
    )
    # ... so each of its first series, asked with its input, finds itself at distance
    # 0 (its counts alone recur: 3 Poisson counts, but its exposure is continuous).
    idx, dist_ = bank.nearest(bank.x[:20], bank.mask[:20], 3, inputs={"N": N[:20]})
    np.testing.assert_array_equal(idx[:, 0], np.arange(20))
    # Distances come from |a|² + |b|² - 2a·b in float32: a self-distance of 0 reads as
    # up to sqrt(~1e-6) = 1e-3 (measured ≤ 1.4e-3); summaries are standardised, O(1).
    np.testing.assert_allclose(dist_[:, 0], 0.0, atol=1e-2)
    with pytest.raises(TypeError, match="reads the known inputs N"):
        bank.nearest(bank.x[:2], bank.mask[:2], 3)

    key = jax.random.key(5)
    detector = sgjax.MismatchScore.fit(trained, task, key=key, n_reference=256, n_calibration=128, k=5)
    # The calibration scores are those of fresh simulations under their own inputs.
    cal = sgjax.simulate_batch(task, key=jax.random.split(key)[1], n=128)
    ok = np.asarray(cal.weight) > 0
    u = np.asarray(cal.inputs)[ok, 0]
    want = detector.bank.nearest(np.asarray(cal.x)[ok], np.asarray(cal.mask)[ok], 5, inputs={"N": u})[1].mean(1)
    np.testing.assert_allclose(detector.calibration, np.sort(want), rtol=1e-6)
    s = detector.score(bank.x[:4], bank.mask[:4], inputs={"N": N[:4]})
    got = detector.bank.nearest(bank.x[:4], bank.mask[:4], 5, inputs={"N": N[:4]})[1].mean(1)
    np.testing.assert_allclose(s["score"], got)
    assert np.all((s["p_value"] > 0) & (s["p_value"] <= 1))
    with pytest.raises(TypeError, match="reads the known inputs N"):
        detector.score(bank.x[:4], bank.mask[:4])
    with pytest.raises(ValueError, match=r"known inputs \(\) are not the estimator's \('N',\)"):
        sgjax.SimulationBank.simulate(trained, WithoutInputs(), 64, key=key)


# ---- A posterior keeps its inputs: posterior.theta(i) simulates directly. ----


def test_posterior_records_the_inputs_for_theta(trained):
    x = np.stack([X, X])[..., None]
    post = sgjax.infer(trained, x, inputs={"N": np.array([1.0, 3.0])}, key=jax.random.key(1), n_samples=50)
    np.testing.assert_array_equal(post.inputs["N"], [1.0, 3.0])
    theta = post.theta(1)
    assert set(theta) == {"lam", "N"} and theta["lam"].shape == (50,)
    np.testing.assert_array_equal(theta["N"], np.full(50, 3.0))
    np.testing.assert_array_equal(post.theta(-2)["N"], np.full(50, 1.0))
    one = sgjax.infer(trained, X, inputs={"N": 763}, key=jax.random.key(1), n_samples=7)
    np.testing.assert_array_equal(one.theta(0)["N"], np.full(7, 763.0))
    with pytest.raises(ValueError, match=r"shape \(2,\)"):
        dataclasses.replace(post, inputs={"N": np.ones(3)})
    with pytest.raises(ValueError, match="both a label and a known input"):
        dataclasses.replace(post, inputs={"lam": np.ones(2)})


def test_posterior_theta_simulates_a_simulator_that_reads_the_input():
    # A posterior over beta and gamma inferred for a town of 800: its draws simulate
    # through SIR(N="N") exactly as through SIR(N=800.0), with nothing added by hand.
    ts = jnp.arange(1.0, 11.0)
    rng = np.random.default_rng(0)
    draws = {"beta": rng.uniform(0.4, 0.8, (2, 5)), "gamma": rng.uniform(0.1, 0.3, (2, 5))}
    post = sgjax.Posterior(
        labels=("beta", "gamma"),
        point=None,
        quantiles={},
        samples=draws,
        probabilities=None,
        parameters=("beta", "gamma"),
        inputs={"N": np.array([500.0, 800.0])},
    )
    key = jax.random.key(2)
    named = sgjax.simulate(sgjax.Simulator(models.SIR(N="N"), ts), theta=post.theta(1), key=key)
    fixed = sgjax.simulate(sgjax.Simulator(models.SIR(N=800.0), ts), theta={k: draws[k][1] for k in draws}, key=key)
    # N from θ (a float32 array) or a Python float: the same solve to float32 rounding,
    # which the adaptive steps carry (measured relative difference ≤ 5e-6).
    np.testing.assert_allclose(named.states, fixed.states, rtol=1e-4)
    np.testing.assert_array_equal(named.theta["N"], np.full(5, 800.0))
    # The posterior of that one town goes to the posterior predictive whole: its N with it.
    one = dataclasses.replace(post, samples={k: v[1:] for k, v in draws.items()}, inputs={"N": np.array([800.0])})
    ppc = sgjax.diagnostics.posterior_predictive(sgjax.Simulator(models.SIR(N="N"), ts), one, key=key)
    np.testing.assert_allclose(ppc.signal, fixed.signal, rtol=1e-4)


# ---- Derived quantities scaled by a θ entry. ----


def _sir_with_N(**kw):
    ts = jnp.arange(1.0, 31.0)
    model = models.SIR(N="N", **kw)
    prior = sgjax.Prior({**models.SIR().default_prior().distributions, "N": dist.Uniform(200.0, 5000.0)})
    return model, sgjax.Simulator(model, ts), prior


def test_derived_scaled_by_a_theta_entry_is_the_fraction_times_it():
    model, sim, prior = _sir_with_N()
    assert model.N == "N"
    # One draw, the target applied directly: θ["N"] times the fraction, exactly.
    theta = {"beta": jnp.asarray(0.6), "gamma": jnp.asarray(0.2), "N": jnp.asarray(1234.0)}
    states = jnp.zeros((len(sim.ts), 3))
    draw = Draw(theta, sim.ts, states, states[:, :1], states[:, :1])
    fraction = sgjax.Derived("final_size")(draw, sim)
    assert 0.9 < float(fraction[0]) < 1.0  # R0 = 3
    np.testing.assert_array_equal(sgjax.Derived("final_size", scale=model.N)(draw, sim), fraction * 1234.0)
    np.testing.assert_array_equal(sgjax.Derived("final_size", scale=1000)(draw, sim), fraction * 1000.0)
    # In a task: each sample's final size in people is its fraction times its own N.
    key = jax.random.key(6)
    task = sgjax.Task(sim, [sgjax.Derived("final_size", scale="N")], prior, inputs=("N",))
    batch = task.sample(key, 32)
    draws = task._prior.sample(jax.random.split(key)[0], 32)
    N = np.asarray(batch.inputs[:, 0])
    np.testing.assert_array_equal(N, np.asarray(draws["N"]))
    frac = jax.vmap(lambda th: model.derived(th, sim.ts, states)["final_size"])(draws)
    assert np.all(np.asarray(batch.weight) == 1) and np.ptp(N) > 1000  # N varies per sample
    np.testing.assert_allclose(np.asarray(batch.y[:, 0]), np.asarray(frac) * N, rtol=1e-6)


def test_derived_scale_is_checked_at_task_construction():
    model, sim, prior = _sir_with_N()
    with pytest.raises(ValueError, match=r"scale='M'\): the scale names no θ entry of the simulator, which reads"):
        sgjax.Task(sim, [sgjax.Derived("final_size", scale="M")], prior)
    plain = sgjax.Simulator(models.SIR(), jnp.arange(1.0, 11.0))
    with pytest.raises(ValueError, match=r"SIR\(N='N'\)"):
        sgjax.Task(plain, [sgjax.Derived("final_size", scale="N")])
    with pytest.raises(TypeError, match="must be a number or the name of a θ entry"):
        sgjax.Derived("final_size", scale=[1.0, 2.0])


# ---- Model selection with known inputs. ----


def _selection(**kw):
    ts = jnp.arange(1.0, 11.0)

    def pair(model):
        sim = sgjax.Simulator(model, ts, sgjax.observation.ObservationModel(sgjax.observation.Poisson()))
        return sim, sgjax.Prior({**model.default_prior().distributions, "N": dist.Uniform(200.0, 2000.0)})

    return sgjax.ModelSelection({"SIR": pair(models.SIR(N="N")), "SEIR": pair(models.SEIR(N="N"))}, **kw)


def test_model_selection_draws_its_inputs_from_each_model():
    ms = _selection(inputs=("N",))
    assert ms.inputs == ("N",) and ms.describe()["inputs"] == ["N"] and "inputs" not in _selection().describe()
    key = jax.random.key(7)
    batch = ms.sample(key, 20)
    assert batch.inputs.shape == (20, 1)
    # Each model's share holds the population sizes its simulations were drawn with.
    want = []
    for i, (prior, m) in enumerate(zip(ms.priors, ms.counts(20))):
        ktheta = jax.random.split(jax.random.fold_in(key, i))[0]
        want.append(np.asarray(prior.sample(ktheta, m)["N"]))
    np.testing.assert_array_equal(np.asarray(batch.inputs[:, 0]), np.concatenate(want))
    ts = jnp.arange(1.0, 11.0)
    plain = sgjax.Simulator(models.SEIR(), ts)
    sir = sgjax.Simulator(models.SIR(N="N"), ts)
    sir_prior = sgjax.Prior({**models.SIR().default_prior().distributions, "N": dist.Uniform(200.0, 2000.0)})
    with pytest.raises(ValueError, match=r"Model 'SEIR': `inputs` \['N'\] are not entries of θ"):
        sgjax.ModelSelection({"SIR": (sir, sir_prior), "SEIR": plain}, inputs=("N",))
    with pytest.raises(TypeError, match="sequence of θ names"):
        sgjax.ModelSelection({"SIR": (sir, sir_prior), "SEIR": plain}, inputs=(1,))


@pytest.mark.slow  # ~20 s alone on 2 CPU cores (compiles fit and infer for a two-model classifier)
def test_model_selection_with_inputs_fits_and_infers():
    ms = _selection(inputs=("N",))
    clf, _ = sgjax.fit(
        ms,
        sgjax.heads.Classifier(),
        functools.partial(sgjax.nn.MLP, width=16),
        key=jax.random.key(0),
        steps=100,
        batch_size=64,
        validation_size=128,
        pilot_size=256,
        progress=False,
    )
    assert clf.inputs == ("N",)
    # The inputs' standardisation was fitted on the pilot's N ~ Uniform(200, 2000).
    mean = float(clf.input_standardise.mean[0])
    assert (np.log(600.0) < mean < np.log(1500.0)) if bool(clf.input_standardise.log[0]) else (600 < mean < 1500)
    batch = ms.sample(jax.random.key(8), 6)
    x, mask = np.asarray(batch.x), np.asarray(batch.mask)
    N = np.asarray(batch.inputs[:, 0])
    post = sgjax.infer(clf, x, mask, inputs={"N": N})
    assert post.probabilities.shape == (6, 2)
    np.testing.assert_allclose(post.probabilities.sum(1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(post.inputs["N"], N.astype(float))
    # The network reads N: the same series under another N gets other probabilities.
    other = sgjax.infer(clf, x, mask, inputs={"N": N * 1.5})
    assert not np.allclose(other.probabilities, post.probabilities)
    with pytest.raises(TypeError, match="reads the known inputs N"):
        sgjax.infer(clf, x, mask)
