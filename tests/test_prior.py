"""Priors: sampling, log density against scipy, support, and refusal of bad priors."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import pytest
import scipy.stats as st
from numpyro.distributions import constraints

import sgjax


def test_sample_and_log_prob_exact():
    prior = sgjax.Prior(
        beta=dist.LogUniform(0.1, 1.0),
        gamma=dist.Uniform(0.05, 0.5),
        k=dist.TruncatedNormal(1.0, 2.0, low=0.0),
        fixed=3.0,
    )
    theta = prior.sample(jax.random.key(0), 5000)
    assert set(theta) == {"beta", "gamma", "k", "fixed"} and theta["beta"].shape == (5000,)
    assert np.all(theta["fixed"] == 3.0)
    # Log-uniform: log(beta) is uniform on [log 0.1, 0].
    assert st.kstest(np.log(theta["beta"]), st.uniform(np.log(0.1), -np.log(0.1)).cdf).pvalue > 1e-3
    assert st.kstest(theta["k"], st.truncnorm(-0.5, np.inf, loc=1.0, scale=2.0).cdf).pvalue > 1e-3
    one = {"beta": jnp.asarray(0.5), "gamma": jnp.asarray(0.2), "k": jnp.asarray(1.5), "fixed": jnp.asarray(3.0)}
    expected = (
        -np.log(0.5 * np.log(10.0))
        + st.uniform(0.05, 0.45).logpdf(0.2)
        + st.truncnorm(-0.5, np.inf, loc=1.0, scale=2.0).logpdf(1.5)
    )
    np.testing.assert_allclose(prior.log_prob(one), expected, rtol=1e-5)


def test_support():
    prior = sgjax.Prior(beta=dist.LogUniform(0.1, 1.0), gamma=dist.Uniform(0.05, 0.5))
    theta = {"beta": jnp.array([0.5, 2.0, 0.5]), "gamma": jnp.array([0.1, 0.1, -1.0])}
    np.testing.assert_array_equal(prior.in_support(theta), [True, False, False])
    lp = prior.log_prob(theta)
    assert np.isfinite(lp[0]) and np.all(lp[1:] == -np.inf)


def test_bad_priors():
    with pytest.raises(ValueError, match="empty support"):
        sgjax.Prior(a=dist.Uniform(1.0, 0.0))
    with pytest.raises(ValueError, match="scalar distribution"):
        sgjax.Prior(a=dist.Normal(jnp.zeros(2), 1.0))
    with pytest.raises(TypeError, match="numpyro distribution"):
        sgjax.Prior(a="uniform")
    with pytest.raises(ValueError, match="at least one"):
        sgjax.Prior()
    with pytest.raises(ValueError, match="needs beta in"):
        sgjax.Prior(beta=dist.Normal(0.3, 0.1), gamma=dist.Uniform(0.1, 0.2)).check_model(sgjax.models.SIR())


def test_restrict_is_the_prior_conditioned_on_the_box():
    prior = sgjax.Prior(a=dist.LogUniform(0.5, 5.0), b=dist.Normal(0.0, 1.0), c=dist.LogNormal(0.0, 1.0), fixed=2.0)
    restricted = prior.restrict({"a": (1.0, 9.0), "b": (0.5, 2.0), "c": (0.1, 10.0), "fixed": (0.0, 1.0)})
    # Uniform families keep their family (and compiled code); the box is intersected
    # with the support (a ≤ 5); fixed parameters stay fixed.
    assert isinstance(restricted.distributions["a"], dist.LogUniform)
    assert float(restricted.distributions["a"].high) == pytest.approx(5.0)
    theta = restricted.sample(jax.random.key(0), 200_000)
    assert np.all(np.asarray(theta["fixed"]) == 2.0)
    b = np.asarray(theta["b"])
    assert b.min() >= 0.5 and b.max() <= 2.0
    exact = st.truncnorm(0.5, 2.0)
    assert abs(b.mean() - exact.mean()) < 4 * exact.std() / np.sqrt(b.size)
    assert st.kstest(b, exact.cdf).pvalue > 1e-3
    # The density is the conditioned one: renormalised inside, -inf outside.
    grid = np.linspace(0.5, 2.0, 7)
    lp = restricted.distributions["b"].log_prob(jnp.asarray(grid))
    np.testing.assert_allclose(lp, exact.logpdf(grid), rtol=1e-4)
    assert restricted.distributions["b"].log_prob(3.0) == -np.inf


def test_restrict_errors():
    prior = sgjax.Prior(a=dist.Uniform(0.0, 1.0), g=dist.Gamma(2.0, 1.0))
    with pytest.raises(ValueError, match="does not have"):
        prior.restrict({"aa": (0.1, 0.2)})
    with pytest.raises(ValueError, match="does not overlap"):
        prior.restrict({"a": (2.0, 3.0)})
    with pytest.raises(ValueError, match="pair"):
        prior.restrict({"a": 0.5})
    with pytest.raises(ValueError, match="cannot be truncated"):
        prior.restrict({"g": (1.0, 2.0)})


def test_posterior_box_holds_the_samples_with_a_margin():
    rng = np.random.default_rng(0)
    samples = {"rate": rng.lognormal(0.0, 0.5, 4000)[None], "shift": rng.normal(0.0, 1.0, 4000)[None]}
    post = sgjax.Posterior(labels=("rate", "shift"), point=None, quantiles={}, samples=samples, probabilities=None)
    box = post.box(mass=0.99, widen=0.5)
    # rate: positive, so boxed on the log scale: log-quantiles ±2.576·0.5, widened by half their width.
    lo, hi = np.log(box["rate"])
    assert lo == pytest.approx(-2 * 2.576 * 0.5, abs=0.15) and hi == pytest.approx(2 * 2.576 * 0.5, abs=0.15)
    assert box["shift"][0] == pytest.approx(-2 * 2.576, abs=0.25)
    with pytest.raises(ValueError, match="density head"):
        sgjax.Posterior(labels=("a",), point=None, quantiles={}, samples=None, probabilities=None).box()


def test_draws_are_the_same_inside_and_outside_jit():
    # Names given out of sorted order: jit hands the prior back with its dict sorted,
    # and the draws must not depend on that.
    prior = sgjax.Prior(gamma=dist.Uniform(0.0, 1.0), beta=dist.Uniform(0.0, 1.0))
    key = jax.random.key(3)
    eager = prior.sample(key, 5)
    traced = eqx.filter_jit(lambda p, k: p.sample(k, 5))(prior, key)
    assert list(eager) == ["gamma", "beta"]
    for name in eager:
        np.testing.assert_array_equal(np.asarray(eager[name]), np.asarray(traced[name]))


def test_restricted_lognormal_density_is_the_exact_truncation():
    """A log-normal held for restriction (`restrictable`) is the log-normal itself;
    restricted to [a, b] its density is `pdf(x) / (Φ((log b − μ)/σ) − Φ((log a − μ)/σ))`."""
    from sgjax._simulation._prior import restrictable, Truncated

    mu, sigma, a, b = -1.0, 0.5, 0.2, 0.6
    prior = sgjax.Prior(c=dist.LogNormal(mu, sigma), u=dist.Uniform(0.0, 1.0))
    held = restrictable(prior)
    assert isinstance(held.distributions["c"], Truncated)
    assert held.distributions["c"].support is constraints.positive  # the base's: biject_to works
    grid = np.linspace(0.05, 2.0, 9)
    np.testing.assert_allclose(
        held.log_prob({"c": grid, "u": 0.5 + 0 * grid}), prior.log_prob({"c": grid, "u": 0.5 + 0 * grid}), rtol=1e-6
    )
    np.testing.assert_array_equal(held.sample(jax.random.key(1), 100)["c"], prior.sample(jax.random.key(1), 100)["c"])
    restricted = held.restrict({"c": (a, b)})
    assert jax.tree.structure(restricted) == jax.tree.structure(held)
    mass = st.norm.cdf((np.log(b) - mu) / sigma) - st.norm.cdf((np.log(a) - mu) / sigma)
    grid = np.linspace(a, b, 7)
    exact = st.lognorm(sigma, scale=np.exp(mu)).logpdf(grid) - np.log(mass)
    np.testing.assert_allclose(restricted.distributions["c"].log_prob(jnp.asarray(grid)), exact, rtol=1e-5)
    assert restricted.distributions["c"].log_prob(b + 0.1) == -np.inf
    c = np.asarray(restricted.sample(jax.random.key(2), 100_000)["c"])
    assert c.min() >= a and c.max() <= b
    truncated = st.truncnorm((np.log(a) - mu) / sigma, (np.log(b) - mu) / sigma, loc=mu, scale=sigma)
    assert st.kstest(np.log(c), truncated.cdf).pvalue > 1e-3
