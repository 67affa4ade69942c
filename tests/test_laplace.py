import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import pytest
import scipy.stats

import sgjax
from sgjax.baselines import fit_mle, laplace
from sgjax.observation import ObservationModel, Poisson, Scale


def test_wald_interval_of_a_reporting_rate_is_exact():
    # x_t ~ Poisson(ρ s_t) with s known: ρ̂ = Σx/Σs and the observed information gives
    # sd(log ρ̂) = 1/sqrt(Σx) exactly, in whatever unconstrained coordinates the fit uses.
    sim = sgjax.Simulator(
        sgjax.models.SIR(N=1000.0, I0=5.0), jnp.arange(1.0, 31.0), ObservationModel(Poisson(), (Scale("rho"),))
    )
    prior = sgjax.Prior(beta=0.5, gamma=0.25, rho=dist.Uniform(0.01, 5.0))
    theta = {"beta": jnp.full(4, 0.5), "gamma": jnp.full(4, 0.25), "rho": jnp.array([0.2, 0.5, 0.8, 1.5])}
    data = sgjax.simulate(sim, key=jax.random.key(0), theta=theta)
    fit = fit_mle(sim, data.observations, prior=prior, key=jax.random.key(1), n_starts=2)
    approx = laplace(sim, data.observations, prior=prior, fit=fit)
    est, lo, hi = approx.interval(lambda th: th["rho"], mass=0.9)
    total_x = np.asarray(data.observations, np.float64).sum((1, 2))
    np.testing.assert_allclose(est, total_x / np.asarray(data.signal, np.float64).sum((1, 2)), rtol=1e-4)
    half_width = (np.log(hi) - np.log(lo)) / 2
    np.testing.assert_allclose(half_width, scipy.stats.norm.ppf(0.95) / np.sqrt(total_x), rtol=0.02)
    assert bool(np.all(approx.ok))
    with pytest.raises(ValueError, match="mass"):
        approx.interval(lambda th: th["rho"], mass=1.5)
