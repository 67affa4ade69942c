"""Observation models: transforms against exact arithmetic, noise against exact
distributions, masks, and bad data."""

from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import pytest
import scipy.stats as st

import sgjax
from sgjax.observation import (
    AbstractNoise,
    Binomial,
    Clamp,
    DayOfWeek,
    Delay,
    FixedMask,
    Gaussian,
    LogNormal,
    MissingAtRandom,
    NegativeBinomial,
    ObservationModel,
    Poisson,
    Reporting,
    Scale,
)
from sgjax.observation.base import get


TS = jnp.arange(1.0, 15.0)


def test_reporting_delay_day_of_week_exact():
    signal = jnp.arange(1.0, 15.0)[:, None] ** 2
    theta = {"rho": jnp.asarray(0.5)}
    kernel = np.array([0.5, 0.3, 0.2])
    obs = ObservationModel(Poisson(), (Reporting("rho"), Delay(kernel), DayOfWeek([1, 1, 1, 1, 1, 0.5, 0.5])))
    mean = np.asarray(obs.mean(signal, theta, TS))[:, 0]
    s = 0.5 * np.asarray(signal)[:, 0]
    delayed = np.array([sum(kernel[l] * s[t - l] for l in range(3) if t - l >= 0) for t in range(14)])
    effects = 7 * np.array([1, 1, 1, 1, 1, 0.5, 0.5]) / 6.0
    np.testing.assert_allclose(mean, delayed * effects[np.arange(1, 15) % 7], rtol=1e-6)


def test_delay_from_distribution():
    d = Delay.from_distribution(dist.Exponential(1.0), 5)
    expected = np.exp(-np.arange(5)) - np.exp(-np.arange(1, 6))
    np.testing.assert_allclose(d.kernel, expected, rtol=1e-5)


def _batch(n, mean_value, theta=None):
    signal = jnp.full((1, 1, n), mean_value)  # (time, channels, batch)
    return signal, theta or {}


def _simulate_noise(obs, mean_value, theta, n=20000, key=0):
    signal, theta = _batch(n, mean_value, theta)
    theta = {k: jnp.full((n,), v) for k, v in theta.items()}
    x, mask = obs.sample(jax.random.key(key), signal, theta, jnp.array([1.0]))
    return np.asarray(x).ravel(), np.asarray(mask).ravel()


@pytest.mark.parametrize("rate", [0.3, 4.0, 25.0, 400.0])
def test_poisson_noise_exact(rate):
    x, _ = _simulate_noise(ObservationModel(Poisson()), rate, {})
    # Mean within 5 standard errors; chi-square goodness of fit on the central bins.
    assert abs(x.mean() - rate) < 5 * np.sqrt(rate / x.size)
    _chisquare(x, st.poisson(rate))


def test_negative_binomial_dispersion_from_theta():
    mean, phi = 30.0, 4.0
    x, _ = _simulate_noise(ObservationModel(NegativeBinomial("phi")), mean, {"phi": phi})
    var = mean + mean**2 / phi
    assert abs(x.mean() - mean) < 5 * np.sqrt(var / x.size)
    # sample variance: relative standard error ~ sqrt(2/n) * (1 + kurtosis term); allow 10%
    assert abs(x.var() / var - 1) < 0.1
    _chisquare(x, st.nbinom(phi, phi / (phi + mean)))


def test_binomial_noise():
    x, _ = _simulate_noise(ObservationModel(Binomial(0.3)), 50.0, {})
    _chisquare(x, st.binom(50, 0.3))


def test_binomial_with_known_trials_observes_a_probability():
    # The signal is a probability (0.3); `trials` people are tested each time.
    x, _ = _simulate_noise(ObservationModel(Binomial(trials=1000)), 0.3, {})
    _chisquare(x, st.binom(1000, 0.3))
    x, _ = _simulate_noise(ObservationModel(Binomial(trials="n")), 0.3, {"n": 40.0})
    _chisquare(x, st.binom(40, 0.3))
    obs = ObservationModel(Binomial(trials=20))
    lp = obs.log_prob(
        jnp.array([[3.0], [21.0]]), jnp.array([[0.2], [0.5]]), {}, TS[:2], mask=jnp.array([[True], [False]])
    )
    np.testing.assert_allclose(lp, st.binom(20, 0.2).logpmf(3), rtol=1e-5)
    assert obs.log_prob(jnp.array([[21.0]]), jnp.array([[0.5]]), {}, TS[:1]) == -np.inf  # more than the trials
    assert ObservationModel(Binomial(trials="n")).param_names == ("n",)
    with pytest.raises(ValueError, match="exactly one"):
        Binomial(0.3, trials=10)
    with pytest.raises(ValueError, match="exactly one"):
        Binomial()
    with pytest.raises(ValueError, match="whole number"):
        Binomial(trials=10.5)


def test_binomial_trials_end_to_end():
    """The issue's case: a prevalence fraction from the model, 1,000 tested a day."""
    model = sgjax.models.SIR(N=1.0, I0=1e-3, observable=sgjax.State("I"))
    sim = sgjax.Simulator(model, jnp.arange(0.0, 41.0), ObservationModel(Binomial(trials=1000)))
    out = sgjax.simulate(sim, key=jax.random.key(0), n=256)
    assert (
        out.valid.all() and np.all(out.observations <= 1000) and np.all(out.observations == np.round(out.observations))
    )
    # Σx ~ Binomial-sum with mean 1000 Σp: z-scores average to 0 within 5 standard errors.
    p = out.signal[..., 0]
    z = (out.observations[..., 0].sum(1) - 1000 * p.sum(1)) / np.sqrt(np.maximum(1000 * (p * (1 - p)).sum(1), 1e-9))
    assert abs(z.mean()) < 5 / np.sqrt(256)


def test_clamp_keeps_lognormal_finite():
    signal = jnp.array([[-1e-4], [0.0], [3.0]])
    np.testing.assert_array_equal(Clamp(1e-6)(signal, {}, TS[:3]), np.float32([[1e-6], [1e-6], [3.0]]))
    np.testing.assert_array_equal(Clamp(0.0, 2.0)(signal, {}, TS[:3]), [[0.0], [0.0], [2.0]])
    obs = ObservationModel(LogNormal(0.5), (Clamp(1e-6),))
    x, _ = obs.sample(jax.random.key(0), signal[..., None], {}, TS[:3])
    assert np.all(np.isfinite(x)) and np.all(np.asarray(x) > 0)
    assert np.isfinite(obs.log_prob(jnp.array([[1e-6], [1e-6], [3.0]]), signal, {}, TS[:3]))
    with pytest.raises(ValueError, match="lower < upper"):
        Clamp(1.0, 0.5)
    with pytest.raises(ValueError, match="needs"):
        Clamp()


class _StudentT(AbstractNoise):
    """The docstring's example of a user's own noise model."""

    scale: float | str
    df: float = 4.0
    is_count: ClassVar[bool] = False
    positive_mean: ClassVar[bool] = False

    def sample(self, key, mean, theta):
        return mean + get(self.scale, theta) * jax.random.t(key, self.df, mean.shape, mean.dtype)

    def log_prob(self, x, mean, theta):
        return dist.StudentT(self.df, mean, get(self.scale, theta)).log_prob(x)


def test_custom_noise_end_to_end():
    model = sgjax.models.SIR(observable=sgjax.State("I"))
    sim = sgjax.Simulator(model, jnp.arange(1.0, 31.0), ObservationModel(_StudentT("tau")))
    assert sim.param_names == ("beta", "gamma", "tau")
    prior = sgjax.Prior(model.default_prior().distributions, tau=dist.Uniform(1.0, 2.0))
    out = sgjax.simulate(sim, key=jax.random.key(0), n=128, prior=prior)
    assert out.valid.all()
    # (x - signal) / tau is Student-t with 4 degrees of freedom.
    resid = ((out.observations - out.signal)[..., 0] / out.theta["tau"][:, None]).ravel()
    assert st.kstest(resid, st.t(4.0).cdf).pvalue > 1e-3
    task = sgjax.Task(sim, ["beta", "tau"], prior)
    assert task.nonnegative is None  # signed data: fit's pilot batch decides
    batch = sgjax.simulate_batch(task, key=jax.random.key(1), n=64, chunk=64)
    assert np.all(np.asarray(batch.weight) == 1) and np.all(np.isfinite(np.asarray(batch.x)))
    tau = task.spaces[1].inverse(batch.y[:, 1])  # back from the logit learning space
    assert np.all((tau > 1.0) & (tau < 2.0))


def test_gaussian_and_lognormal():
    x, _ = _simulate_noise(ObservationModel(Gaussian("s")), 10.0, {"s": 2.0})
    assert st.kstest(x, st.norm(10.0, 2.0).cdf).pvalue > 1e-3
    x, _ = _simulate_noise(ObservationModel(LogNormal(0.5)), 10.0, {})
    assert st.kstest(x, st.lognorm(0.5, scale=10.0).cdf).pvalue > 1e-3


def _chisquare(x, law):
    lo, hi = law.ppf(0.001), law.ppf(0.999)
    edges = np.arange(lo, hi + 2) - 0.5
    counts, _ = np.histogram(x, np.concatenate([[-np.inf], edges[1:-1], [np.inf]]))
    cdf = law.cdf(edges[1:-1] - 0.5)
    probs = np.diff(np.concatenate([[0.0], cdf, [1.0]]))
    expected = probs * x.size
    keep = expected > 5
    stat = ((counts[keep] - expected[keep]) ** 2 / expected[keep]).sum()
    assert st.chi2(keep.sum() - 1).sf(stat) > 1e-3


def test_log_prob_matches_scipy():
    x = jnp.array([[3.0], [0.0], [7.0]])
    signal = jnp.array([[2.0], [1.0], [6.0]])
    theta = {"phi": jnp.asarray(5.0)}
    lp = ObservationModel(NegativeBinomial("phi")).log_prob(x, signal, theta, jnp.arange(1.0, 4.0))
    m = np.array([2.0, 1.0, 6.0])
    expected = st.nbinom(5.0, 5.0 / (5.0 + m)).logpmf([3, 0, 7]).sum()
    np.testing.assert_allclose(lp, expected, rtol=1e-5)
    # A mask leaves entries out.
    lp_masked = ObservationModel(Poisson()).log_prob(x, signal, {}, TS[:3], mask=jnp.array([[True], [False], [True]]))
    np.testing.assert_allclose(lp_masked, st.poisson([2.0, 6.0]).logpmf([3, 7]).sum(), rtol=1e-5)


def test_missing_values():
    x, mask = _simulate_noise(ObservationModel(Poisson(), missing=MissingAtRandom(0.2)), 5.0, {})
    assert abs((~mask).mean() - 0.2) < 5 * np.sqrt(0.2 * 0.8 / mask.size)
    assert np.all(x[~mask] == 0)
    fixed = ObservationModel(Poisson(), missing=FixedMask([True, False, True]))
    x, mask = fixed.sample(jax.random.key(0), jnp.ones((3, 1, 4)), {}, jnp.arange(1.0, 4.0))
    np.testing.assert_array_equal(np.asarray(mask)[:, 0, :].T, [[True, False, True]] * 4)


def test_observation_params_join_the_prior():
    model = sgjax.models.SIR()
    ts = jnp.arange(1.0, 31.0)
    sim = sgjax.Simulator(model, ts, ObservationModel(NegativeBinomial("phi"), (Reporting("rho"),)))
    assert sim.param_names == ("beta", "gamma", "rho", "phi")  # model, transforms, noise
    assert set(sim.default_prior().names) == {"beta", "gamma", "phi", "rho"}
    assert sgjax.simulate(sim, key=jax.random.key(0), n=64).valid.all()
    # Reporting scales the mean: under Poisson noise, Σx ~ Poisson(ρ Σsignal), so the
    # z-scores average to 0 with standard error 1/sqrt(n); without reporting they
    # would be hugely positive.
    sim = sgjax.Simulator(model, ts, ObservationModel(Poisson(), (Reporting("rho"),)))
    out = sgjax.simulate(sim, key=jax.random.key(1), n=256)
    expected = out.theta["rho"] * out.signal.sum(axis=(1, 2))
    z = (out.observations.sum(axis=(1, 2)) - expected) / np.sqrt(np.maximum(expected, 1e-9))
    assert abs(z.mean()) < 5 / np.sqrt(256)


def test_an_observation_parameters_prior_must_stay_in_its_support():
    # Reporting's fraction is a probability: a prior reaching above 1 is refused where
    # the task, simulate or a baseline meets it, naming the parameter and the range
    # (it used to act as an unbounded multiplier, silently).
    model, ts = sgjax.models.SIR(), jnp.arange(1.0, 11.0)
    sim = sgjax.Simulator(model, ts, ObservationModel(Poisson(), (Reporting("rho"),)))
    assert sim.parameter_support("rho") is dist.constraints.unit_interval
    wide = sgjax.Prior({**model.default_prior().distributions, "rho": dist.Uniform(0.01, 5.0)})
    with pytest.raises(ValueError, match=r"'rho'.*\(0.01, 5\).*the observation model needs rho in \(0, 1\)"):
        sgjax.Task(sim, ["beta"], wide)
    with pytest.raises(ValueError, match="the observation model needs rho"):
        sgjax.simulate(sim, 4, prior=wide, key=jax.random.key(0))
    for piece, name in [(NegativeBinomial("k"), "k"), (Gaussian("s"), "s"), (Binomial("p"), "p")]:
        other = sgjax.Simulator(model, ts, ObservationModel(piece))
        bad = sgjax.Prior({**model.default_prior().distributions, name: dist.Normal(0.0, 1.0)})
        with pytest.raises(ValueError, match=f"needs {name} in"):
            sgjax.Task(other, ["beta"], bad)
    # A multiplier with no upper bound is Scale: the same mean, factor × signal.
    scaled = sgjax.Simulator(model, ts, ObservationModel(Poisson(), (Scale("rho"),)))
    sgjax.Task(scaled, ["beta"], wide)
    theta = {"beta": jnp.array([0.5]), "gamma": jnp.array([0.2]), "rho": jnp.array([2.5])}
    out = sgjax.simulate(scaled, theta=theta, key=jax.random.key(1))
    signal = np.asarray(out.signal)
    np.testing.assert_allclose(scaled.observation.mean(signal[0], theta, ts), 2.5 * signal[0], rtol=1e-6)
    with pytest.raises(ValueError, match="Scale factor"):
        Scale(-1.0)


def test_bad_observation_input():
    with pytest.raises(ValueError, match="Reporting fraction must lie in"):
        Reporting(1.5)
    with pytest.raises(ValueError, match="summing to at most 1"):
        Delay([0.7, 0.7])
    with pytest.raises(ValueError, match="irregular"):
        sgjax.Simulator(
            sgjax.models.SIR(), jnp.array([1.0, 2.0, 4.0]), ObservationModel(Poisson(), (Delay([0.5, 0.5]),))
        )
    with pytest.raises(ValueError, match="7 non-negative"):
        DayOfWeek([1.0, 2.0])
    obs = ObservationModel(Poisson())
    with pytest.raises(ValueError, match="negative values"):
        obs.check_data([1.0, -2.0, 3.0])
    with pytest.raises(ValueError, match="fractional"):
        obs.check_data([1.5, 2.0])
    with pytest.raises(ValueError, match="mask"):
        obs.check_data([1.0, np.nan])
    with pytest.raises(TypeError, match="noise"):
        ObservationModel("poisson")


def test_poisson_normal_approximation_is_opt_in():
    assert Poisson().method == "exact"
    x, _ = _simulate_noise(ObservationModel(Poisson(method="normal")), 400.0, {})
    # Rounded normal: mean and variance of Poisson(400) within sampling error.
    assert abs(x.mean() - 400.0) < 5 * np.sqrt(400.0 / x.size)
    assert abs(x.var() / 400.0 - 1) < 0.05
    assert np.all(x == np.round(x))
    with pytest.raises(ValueError, match="exact' or 'normal"):
        Poisson(method="fast")


# Slow: test_random.py::test_extremes_* run the same samplers at these inputs in CI.
@pytest.mark.slow
def test_count_noise_returns_for_huge_means():
    """Issue 24: `Poisson().sample` at mean 1e26 never returned (the rejection
    sampler's constants overflowed). In a child process under a timeout, so that a
    regression fails instead of hanging the suite: huge means come back as the
    mean to float precision (Poisson, binomial) or finite around it (negative
    binomial); a NaN mean gives NaN, which `simulate` flags as failed."""
    import subprocess
    import sys

    code = (
        "import jax, jax.numpy as jnp, numpy as np\n"
        "from sgjax.observation import Binomial, NegativeBinomial, Poisson\n"
        "mean = jnp.asarray([1e26, 3e38, jnp.nan, 1e26], jnp.float32)\n"
        "for noise in (Poisson(), NegativeBinomial(10.0), Binomial(0.5)):\n"
        "    print(*np.asarray(noise.sample(jax.random.key(0), mean, {})).tolist())\n"
    )
    try:
        out = subprocess.run(
            [sys.executable, "-c", code], check=True, timeout=120, capture_output=True, text=True
        ).stdout
    except subprocess.TimeoutExpired:
        pytest.fail("count noise did not return for a mean of 1e26 (hang)")
    poisson, negbin, binomial = (np.asarray(line.split(), np.float64) for line in out.splitlines())
    f32 = lambda x: float(np.float32(x))  # noqa: E731
    # sqrt(1e26) = 1e13 is below the float32 spacing there (~7e18): the mean itself.
    np.testing.assert_array_equal(poisson[[0, 1, 3]], [f32(1e26), f32(3e38), f32(1e26)])
    np.testing.assert_array_equal(binomial[[0, 1, 3]], [f32(5e25), f32(1.5e38), f32(5e25)])
    assert np.all(np.isfinite(negbin[[0, 3]])) and np.all((negbin[[0, 3]] > 1e24) & (negbin[[0, 3]] < 1e27))
    assert np.isnan(poisson[2]) and np.isnan(negbin[2]) and np.isnan(binomial[2])


def test_the_observed_data_has_one_name():
    data = sgjax.datasets.boarding_school()
    np.testing.assert_array_equal(data.observations[:3, 0], [3, 8, 26])
    assert data.values is data.observations  # the old name still works
    assert "observations" in sgjax.Simulation.__dataclass_fields__
