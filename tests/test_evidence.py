"""Marginal likelihoods by sequential Monte Carlo (`sgjax.baselines.evidence`) and the
Bayes-optimal model choice (`model_posterior`), against closed forms.

The exact problem is linear-Gaussian: `y' = a + b t`, `y(0) = c`, so `y(t) = c + a t +
b t²/2`, observed with Gaussian noise of known scale under Gaussian priors. Then
`x ~ N(Φ m, σ² I + Φ S Φᵀ)` exactly, for either model: quadratic (`b` free) or linear
(`b = 0` fixed). The trajectory is a polynomial of degree 2, which Tsit5 integrates
exactly, so the only error is Monte Carlo.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import pytest
import scipy.stats

import sgjax
from sgjax.baselines import _evidence, Evidence, evidence, log_likelihood, model_posterior
from sgjax.observation import Gaussian, ObservationModel


_TS = np.arange(1.0, 11.0)
_SIGMA = 0.5
_MEAN = {"a": 0.5, "b": -0.2, "c": 1.0}
_SD = {"a": 1.0, "b": 0.3, "c": 2.0}
_PARTICLES = 1024


def _field(t, y, theta):
    return jnp.stack([theta["a"] + theta["b"] * t])


def _initial(theta):
    return jnp.stack([theta["c"]])


def _simulator():
    # Module-level functions: a simulator built again is the same static structure,
    # so it reuses compiled programs.
    model = sgjax.ODEModel(
        _field,
        initial_state=_initial,
        param_names=("a", "b", "c"),
        state_names=("y",),
        observable=sgjax.State("y"),
    )
    return sgjax.Simulator(model, jnp.asarray(_TS), ObservationModel(Gaussian("sigma")))


def _prior(quadratic: bool):
    free = ("a", "b", "c") if quadratic else ("a", "c")
    return sgjax.Prior(
        **{n: dist.Normal(_MEAN[n], _SD[n]) for n in free}, **({} if quadratic else {"b": 0.0}), sigma=_SIGMA
    )


def _exact_log_evidence(x, quadratic: bool):
    free = ("a", "b", "c") if quadratic else ("a", "c")
    columns = {"a": _TS, "b": _TS**2 / 2, "c": np.ones_like(_TS)}
    phi = np.stack([columns[n] for n in free], axis=1)
    mean = phi @ np.array([_MEAN[n] for n in free])
    cov = _SIGMA**2 * np.eye(len(_TS)) + phi @ np.diag([_SD[n] ** 2 for n in free]) @ phi.T
    return np.array([scipy.stats.multivariate_normal(mean, cov).logpdf(xi[:, 0]) for xi in x])


@pytest.fixture(scope="module")
def data():
    """Twelve series from each model: the first twelve quadratic, the rest linear."""
    rng = np.random.default_rng(0)
    out = []
    for quadratic in (True, False):
        theta = {n: rng.normal(_MEAN[n], _SD[n], 12) for n in ("a", "b", "c")}
        if not quadratic:
            theta["b"] = np.zeros(12)
        y = theta["c"][:, None] + theta["a"][:, None] * _TS + theta["b"][:, None] * _TS**2 / 2
        out.append(y + _SIGMA * rng.normal(size=y.shape))
    return np.concatenate(out)[..., None].astype(np.float32)


@pytest.fixture(scope="module")
def evidences(data):
    sim = _simulator()
    traces = eqx.debug.get_num_traces(_evidence._smc_chunk)
    out = {
        "quadratic": evidence(sim, data, prior=_prior(True), key=jax.random.key(1), n_particles=_PARTICLES),
        "linear": evidence(sim, data, prior=_prior(False), key=jax.random.key(2), n_particles=_PARTICLES),
    }
    # Two priors of different free parameters: two programs, one per model, whatever
    # the number of chunks (24 series, 3 chunks each).
    assert eqx.debug.get_num_traces(_evidence._smc_chunk) - traces == 2
    return out


def test_log_evidence_matches_the_closed_form(data, evidences):
    for name, quadratic in (("quadratic", True), ("linear", False)):
        got = np.asarray(evidences[name].log_evidence)
        err = got - _exact_log_evidence(data, quadratic)
        # SMC's log-evidence error has a standard deviation of roughly
        # sqrt(Σ_t 1/ESS_t) ≈ sqrt(8 × 2/1024) ≈ 0.12 over ~8 tempering steps at half
        # the particles' ESS. Over 24 series: the mean error (bias) within 0.1, the
        # root mean square within 0.2 and no series beyond 0.45 (~4 sd).
        assert abs(err.mean()) < 0.1, (name, err)
        assert np.sqrt(np.mean(err**2)) < 0.2, (name, err)
        assert np.max(np.abs(err)) < 0.45, (name, err)
        assert np.all(np.asarray(evidences[name].temperatures) >= 1)
        assert np.all((np.asarray(evidences[name].acceptance) > 0.05) & (np.asarray(evidences[name].acceptance) < 0.9))


def test_particles_are_draws_from_the_exact_posterior(data, evidences):
    """The particles SMC ends with are a posterior sample: against the exact Gaussian
    posterior of the linear model in (a, b, c), mean and sd per dataset and
    parameter. Tolerances: the particles are correlated by resampling (effective
    sample a few hundred of 1024), so the mean within 0.3 posterior sd (≥ 4 standard
    errors at an effective size of 200) and the sd within 20%."""
    for name, free in (("quadratic", ("a", "b", "c")), ("linear", ("a", "c"))):
        ev = evidences[name]
        assert isinstance(ev, sgjax.AbstractPosterior) and ev.names == free
        assert ev.samples["a"].shape == (24, _PARTICLES)
        columns = {"a": _TS, "b": _TS**2 / 2, "c": np.ones_like(_TS)}
        phi = np.stack([columns[n] for n in free], axis=1)
        prior_precision = np.diag([_SD[n] ** -2 for n in free])
        cov = np.linalg.inv(phi.T @ phi / _SIGMA**2 + prior_precision)
        mean = (data[:, :, 0] @ phi / _SIGMA**2 + prior_precision @ np.array([_MEAN[n] for n in free])) @ cov
        sd = np.sqrt(np.diag(cov))
        got_mean, got_sd = ev.mean(), ev.std()
        for j, n in enumerate(free):
            assert np.max(np.abs(got_mean[n] - mean[:, j])) < 0.3 * sd[j], (name, n)
            np.testing.assert_allclose(got_sd[n], sd[j], rtol=0.2, err_msg=f"{name} {n}")


def test_masked_entries_are_left_out(data, evidences):
    """With entries masked the evidence is that of the observed entries alone: the
    exact marginal of the Gaussian on them. Eight series, one chunk of the compiled
    shape, so nothing compiles again."""
    rng = np.random.default_rng(1)
    mask = rng.uniform(size=(8, len(_TS), 1)) > 0.3
    garbage = np.where(mask, data[:8], 1e3).astype(np.float32)  # masked values must not matter
    traces = eqx.debug.get_num_traces(_evidence._smc_chunk)
    got = evidence(_simulator(), garbage, mask, prior=_prior(True), key=jax.random.key(3), n_particles=_PARTICLES)
    assert eqx.debug.get_num_traces(_evidence._smc_chunk) == traces
    columns = np.stack([_TS, _TS**2 / 2, np.ones_like(_TS)], axis=1)
    mean = columns @ np.array([_MEAN[n] for n in ("a", "b", "c")])
    prior_cov = np.diag([_SD[n] ** 2 for n in ("a", "b", "c")])
    want = []
    for xi, mi in zip(data[:8, :, 0], mask[:, :, 0]):
        phi = columns[mi]
        cov = _SIGMA**2 * np.eye(mi.sum()) + phi @ prior_cov @ phi.T
        want.append(scipy.stats.multivariate_normal(mean[mi], cov).logpdf(xi[mi]))
    err = np.asarray(got.log_evidence) - np.array(want)
    # The tolerances of the unmasked test, for 8 series.
    assert np.sqrt(np.mean(err**2)) < 0.2 and np.max(np.abs(err)) < 0.45, err


def test_model_posterior_matches_the_exact_bayes_choice(data, evidences):
    index, probabilities = model_posterior(evidences)
    exact = np.stack([_exact_log_evidence(data, True), _exact_log_evidence(data, False)], axis=1)
    want = np.exp(exact - scipy.special.logsumexp(exact, axis=1, keepdims=True))
    # A log-evidence error ε moves a probability p by about p(1 − p) ε ≤ ε/4: within
    # 0.15 for the errors allowed above on both models.
    np.testing.assert_allclose(np.asarray(probabilities), want, atol=0.15)
    np.testing.assert_allclose(np.asarray(probabilities).sum(1), 1.0, atol=1e-5)
    clear = np.abs(exact[:, 0] - exact[:, 1]) > 1.0  # the choice is not a near-tie
    assert clear.sum() >= 12
    np.testing.assert_array_equal(np.asarray(index)[clear], np.argmax(exact, axis=1)[clear])
    # A prior over models shifts every log-odds by its log ratio.
    _, tilted = model_posterior(evidences, prior={"quadratic": 1.0, "linear": 3.0})
    p, q = np.asarray(probabilities, float), np.asarray(tilted, float)
    inside = np.all((p > 1e-4) & (p < 1 - 1e-4), axis=1)  # log-odds not lost to rounding
    assert inside.sum() >= 6
    logit = lambda p: np.log(p[inside, 0]) - np.log(p[inside, 1])  # noqa: E731
    np.testing.assert_allclose(logit(q), logit(p) - np.log(3.0), atol=1e-2)


def test_a_signed_gaussian_signal_is_not_floored():
    """The likelihood baselines floor a positive-mean model's signal at 1e-6; a
    Gaussian signal can be negative and must be taken as it is."""
    sim = _simulator()
    theta = {"a": -1.0, "b": -0.1, "c": -0.5, "sigma": _SIGMA}
    y = theta["c"] + theta["a"] * _TS + theta["b"] * _TS**2 / 2
    x = (y + 0.3)[:, None]
    got = log_likelihood(sim, {k: jnp.asarray(v) for k, v in theta.items()}, jnp.asarray(x))
    want = scipy.stats.norm(y, _SIGMA).logpdf(x[:, 0]).sum()
    np.testing.assert_allclose(float(got), want, rtol=1e-5)


def test_bad_input_is_refused(data, evidences):
    sim = _simulator()
    with pytest.raises(TypeError, match="PRNG key"):
        evidence(sim, data, prior=_prior(True), key=0)
    with pytest.raises(ValueError, match="target_ess"):
        evidence(sim, data, prior=_prior(True), key=jax.random.key(0), target_ess=1.5)
    with pytest.raises(ValueError, match="n_particles"):
        evidence(sim, data, prior=_prior(True), key=jax.random.key(0), n_particles=1)
    with pytest.raises(ValueError, match="shape"):
        evidence(sim, data[:, :5], prior=_prior(True), key=jax.random.key(0))
    with pytest.raises(ValueError, match="NaN"):
        evidence(sim, np.full_like(data, np.nan), prior=_prior(True), key=jax.random.key(0))
    with pytest.raises(ValueError, match="same datasets"):
        short = Evidence(evidences["linear"].log_evidence[:3], evidences["linear"].temperatures[:3],
                         evidences["linear"].acceptance[:3], _PARTICLES, None)  # fmt: skip
        model_posterior({"quadratic": evidences["quadratic"], "linear": short})
    with pytest.raises(TypeError, match="Evidence"):
        model_posterior({"quadratic": evidences["quadratic"], "linear": np.zeros(24)})
    with pytest.raises(ValueError, match="probability for each model"):
        model_posterior(evidences, prior={"quadratic": 1.0})


def test_no_finite_likelihood_gives_minus_infinity_at_once():
    """`y' = a y²` from `y(0) = 1` blows up at `t = 1/a < 1`, before the first
    observation: every solve fails, shared or per trajectory, so the evidence is
    `-inf` and no tempering step is taken."""
    model = sgjax.ODEModel(
        lambda t, y, theta: theta["a"] * y**2,
        initial_state=lambda theta: jnp.ones(1),
        param_names=("a",),
        state_names=("y",),
        observable=sgjax.State("y"),
    )
    sim = sgjax.Simulator(model, jnp.arange(1.0, 4.0), ObservationModel(Gaussian("sigma")), max_steps=64)
    prior = sgjax.Prior(a=dist.Uniform(1.5, 2.0), sigma=1.0)
    ev = evidence(sim, np.ones((2, 3, 1)), prior=prior, key=jax.random.key(0), n_particles=16)
    assert np.all(np.asarray(ev.log_evidence) == -np.inf)
    assert np.all(np.asarray(ev.temperatures) == 0)
