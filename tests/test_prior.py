"""Priors: sampling, log density against scipy, support, and refusal of bad priors."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import pytest
import scipy.stats as st

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
