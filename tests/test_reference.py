"""The reference baselines — a NUTS posterior and rejection ABC — against an exact
posterior on a real ODE simulator.

The problem: SIR with β and γ fixed, so the epidemic curve `s` is known, and a
reporting multiplier ρ ~ Gamma(a, b) observed as x_t ~ Poisson(ρ s_t). The posterior
is exactly Gamma(a + Σx, b + Σs), over the observed entries only when some are
masked; Σx is a sufficient statistic.
"""

import warnings

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import pytest

import sgjax
from sgjax.baselines import _abc, _nuts, ABCPosterior, nuts, ReferencePosterior, rejection_abc
from sgjax.observation import ObservationModel, Poisson, Scale


A, B = 20.0, 40.0  # ρ ~ Gamma(20, 40): mean 0.5, sd 0.11
BETA, GAMMA, RHO = 0.6, 0.2, 0.5
T = 25

# One configuration for every NUTS call, so the file compiles the sampler once.
NUTS_KW = dict(num_warmup=300, num_samples=1000, num_chains=2, chunk_size=2)


@pytest.fixture(scope="module")
def problem():
    sim = sgjax.Simulator(
        sgjax.models.SIR(N=1000.0, I0=1.0),
        jnp.arange(1.0, T + 1.0),
        ObservationModel(Poisson(), (Scale("rho"),)),
    )
    prior = sgjax.Prior(beta=BETA, gamma=GAMMA, rho=dist.Gamma(A, B))
    one = {"beta": jnp.array([BETA]), "gamma": jnp.array([GAMMA]), "rho": jnp.array([1.0])}
    s = np.asarray(sgjax.simulate(sim, key=jax.random.key(0), theta=one).signal[0], np.float64)
    # Datasets at ρ = 0.5, the prior's mean: near the centre of the prior predictive.
    n = 3
    theta = {"beta": jnp.full(n, BETA), "gamma": jnp.full(n, GAMMA), "rho": jnp.full(n, RHO)}
    x = np.asarray(sgjax.simulate(sim, key=jax.random.key(1), theta=theta).observations)
    return sim, prior, s, x


def exact(x, s, mask=None):
    """Mean and sd of Gamma(a + Σx, b + Σs) over the observed entries, per dataset."""
    x = np.asarray(x, np.float64)
    mask = np.ones(x.shape, bool) if mask is None else np.broadcast_to(mask, x.shape)
    shape = A + np.where(mask, x, 0).sum((1, 2))
    rate = B + np.where(mask, s, 0).sum((1, 2))
    return shape / rate, np.sqrt(shape) / rate


def _masked(x):
    """The third dataset with its last 10 days masked and garbage put there."""
    mask = np.ones(x.shape, bool)
    mask[2, -10:] = False
    garbage = x.copy()
    garbage[2, -10:] = 1e4
    return garbage, mask


# -- NUTS ---------------------------------------------------------------------------


@pytest.mark.slow  # kept out of the default run for CI's time (issue 25); `pytest -m slow` runs it
def test_nuts_matches_exact_posterior(problem, getkey):
    sim, prior, s, x = problem
    garbage, mask = _masked(x)
    before = eqx.debug.get_num_traces(_nuts._nuts_chunk)
    post = nuts(sim, garbage, mask, prior=prior, key=getkey(), **NUTS_KW)
    # 3 datasets in chunks of 2: the last chunk is padded, so one compilation.
    assert eqx.debug.get_num_traces(_nuts._nuts_chunk) - before <= 1
    assert isinstance(post, ReferencePosterior) and len(post) == 3
    assert post.names == ("rho",)  # fixed β, γ are left out
    assert post.samples["rho"].shape == (3, 2000)
    assert post.r_hat["rho"].shape == post.ess["rho"].shape == post.divergences.shape == (3,)
    np.testing.assert_array_less(post.r_hat["rho"], 1.02)
    assert np.all(post.divergences == 0)
    ess = post.ess["rho"]
    assert np.all(ess > 300)

    mean, sd = exact(x, s, mask)  # the masked entries carry no information
    # Monte-Carlo standard errors: sd/√ESS for the mean, sd/√(2 ESS) for the sd;
    # 5 of them.
    np.testing.assert_array_less(np.abs(post.mean()["rho"] - mean), 5 * sd / np.sqrt(ess))
    np.testing.assert_array_less(np.abs(post.std()["rho"] - sd), 5 * sd / np.sqrt(2 * ess))
    # The garbage would have moved the third posterior far away had it been used.
    unmasked_mean, _ = exact(garbage, s)
    assert abs(unmasked_mean[2] - mean[2]) > 100 * sd[2]

    q = post.quantile([0.05, 0.5, 0.95])["rho"]
    assert q.shape == (3, 3) and np.all(np.diff(q, axis=1) > 0)
    np.testing.assert_allclose(post.quantile(0.5)["rho"], q[:, 1])

    # The posterior is one with the others: every diagnostic takes it, or a dict built
    # from it, alike (truth as θ comes from simulate: fixed β, γ included and ignored).
    assert isinstance(post, sgjax.AbstractPosterior)
    truth = {"beta": np.full(3, BETA), "gamma": np.full(3, GAMMA), "rho": np.full(3, RHO)}
    draws = {name: np.asarray(v) for name, v in post.samples.items()}
    key = getkey()
    a, b = sgjax.diagnostics.sbc(post, truth, key=key), sgjax.diagnostics.sbc(draws, truth, key=key)
    assert a.labels == b.labels == ("rho",)
    np.testing.assert_array_equal(a.ranks, b.ranks)
    assert a.summary() == b.summary()
    np.testing.assert_array_equal(
        sgjax.diagnostics.expected_coverage(post, truth).coverage,
        sgjax.diagnostics.expected_coverage(draws, truth).coverage,
    )
    one = {"rho": draws["rho"][0, ::4]}
    c2st_kw = dict(key=key, epochs=3)
    assert sgjax.diagnostics.c2st(post.theta(0), one, **c2st_kw) == sgjax.diagnostics.c2st(
        {"rho": draws["rho"][0]}, one, **c2st_kw
    )


def test_nuts_compiles_once_across_datasets(problem, getkey):
    sim, prior, s, x = problem
    nuts(sim, x[:2], prior=prior, key=getkey(), **NUTS_KW)  # compiles, unless cached
    before = eqx.debug.get_num_traces(_nuts._nuts_chunk)
    post = nuts(sim, x[::-1] + 1.0, prior=prior, key=getkey(), **NUTS_KW)  # 2 chunks, padded
    post2 = nuts(sim, x[1:], prior=prior, key=getkey(), **NUTS_KW)
    assert eqx.debug.get_num_traces(_nuts._nuts_chunk) == before
    assert post.samples["rho"].shape == (3, 2000) and post2.samples["rho"].shape == (2, 2000)
    # The padded copy never leaks into the results: the reversed data's last dataset
    # is x[0] + 1, sampled on its own.
    np.testing.assert_allclose(post.mean()["rho"], exact(x[::-1] + 1.0, s)[0], atol=0.02)


def test_nuts_errors(problem, getkey):
    sim, prior, s, x = problem
    with pytest.raises(ValueError, match=r"shape \(n, time, channels\)"):
        nuts(sim, x[:, :-1], prior=prior, key=getkey())
    with pytest.raises(ValueError, match="NaN"):
        nuts(sim, np.where(x > 5, np.nan, x), prior=prior, key=getkey())
    with pytest.raises(ValueError, match="whole counts"):
        nuts(sim, x + 0.5, prior=prior, key=getkey())
    with pytest.raises(ValueError, match="`num_samples` must be an integer >= 4"):
        nuts(sim, x, prior=prior, key=getkey(), num_samples=2)
    with pytest.raises(ValueError, match="num_chains"):
        nuts(sim, x, prior=prior, key=getkey(), num_chains=0)
    with pytest.raises(ValueError, match="target_accept_prob"):
        nuts(sim, x, prior=prior, key=getkey(), target_accept_prob=1.5)
    with pytest.raises(TypeError, match="diffrax adjoint"):
        nuts(sim, x, prior=prior, key=getkey(), adjoint="forward")
    with pytest.raises(TypeError, match="sgjax.Prior"):
        nuts(sim, x, prior={"rho": dist.Gamma(A, B)}, key=getkey())
    with pytest.raises(ValueError, match="no distribution for"):
        nuts(sim, x, prior=sgjax.Prior(beta=BETA, gamma=GAMMA), key=getkey())
    with pytest.raises(ValueError, match="Every parameter of the prior is fixed"):
        nuts(sim, x, prior=sgjax.Prior(beta=BETA, gamma=GAMMA, rho=RHO), key=getkey())
    clean = sgjax.Simulator(sim.model, sim.ts)
    with pytest.raises(ValueError, match="no observation model"):
        nuts(clean, x, prior=prior, key=getkey())


def test_nuts_warnings():
    # The check on its own: a sampler run that fails to mix would cost a compilation.
    fine = {"rho": np.array([1.001, 1.01])}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _nuts._warn(fine, np.array([0, 0]), 2)
    with pytest.warns(UserWarning, match=r"not mixed for 1 of 2 datasets \(split R-hat up to 1.3"):
        _nuts._warn({"rho": np.array([1.001, 1.3])}, np.array([0, 0]), 2)
    with pytest.warns(UserWarning, match="R-hat"):
        _nuts._warn({"rho": np.array([np.nan, 1.0])}, np.array([0, 0]), 2)
    with pytest.warns(UserWarning, match="3 divergent transitions after warmup in 1 of 2"):
        _nuts._warn(fine, np.array([0, 3]), 2)


@pytest.mark.slow
def test_nuts_two_parameter_sir(getkey):
    """β and γ free with a dense mass matrix, gradients in reverse mode (the default
    forward mode is checked above): the chains agree and the posterior covers the
    truth."""
    sim = sgjax.Simulator(sgjax.models.SIR(N=1000.0, I0=1.0), jnp.arange(1.0, 61.0), ObservationModel(Poisson()))
    prior = sgjax.Prior(beta=dist.LogUniform(0.2, 1.0), gamma=dist.LogUniform(0.05, 0.5))
    truth = {"beta": jnp.array([0.5, 0.3]), "gamma": jnp.array([0.2, 0.1])}
    x = sgjax.simulate(sim, key=getkey(), theta=truth).observations
    post = nuts(
        sim, x, prior=prior, key=getkey(), num_warmup=300, num_samples=500, adjoint=diffrax.RecursiveCheckpointAdjoint()
    )
    for name in ("beta", "gamma"):
        np.testing.assert_array_less(post.r_hat[name], 1.05)
        lo, hi = post.quantile([0.0005, 0.9995])[name].T
        assert np.all((lo < truth[name]) & (truth[name] < hi))


# -- rejection ABC ------------------------------------------------------------------


def _total(x):
    return x.sum(keepdims=True)  # Σx, the sufficient statistic


def test_abc_matches_exact_posterior_and_epsilon_shrinks(problem, getkey):
    sim, prior, s, x = problem
    mean, sd = exact(x, s)
    k = 50
    coarse = rejection_abc(sim, x, prior=prior, key=getkey(), n_simulations=2_000, n_accept=k, summary=_total)
    fine = rejection_abc(
        sim, x, prior=prior, key=getkey(), n_simulations=50_000, n_accept=k, summary=_total, chunk_size=8192
    )
    assert isinstance(fine, ABCPosterior) and fine.names == ("rho",)
    assert fine.samples["rho"].shape == fine.distance.shape == (3, k)
    assert fine.n_simulations == 50_000 and fine.n_failed == 0
    np.testing.assert_array_equal(fine.epsilon, fine.distance[:, -1])
    assert np.all(np.diff(fine.distance, axis=1) >= 0)
    np.testing.assert_array_less(fine.epsilon, coarse.epsilon)
    # Σx is discrete and sufficient, and ~4 in every 1000 prior draws reproduce it
    # exactly: with 50k simulations all k accepted draws match it (ε = 0), so they
    # are exact, independent posterior draws and the only error is Monte Carlo,
    # sd/√k. Allow 4 of those.
    np.testing.assert_array_equal(fine.epsilon, 0.0)
    np.testing.assert_array_less(np.abs(fine.mean()["rho"] - mean), 4 * sd / np.sqrt(k))
    # With 2k simulations ε > 0: wider, but still centred within its own spread.
    assert np.all(coarse.epsilon > 0)
    np.testing.assert_array_less(np.abs(coarse.mean()["rho"] - mean), 4 * coarse.std()["rho"])


def test_abc_default_summary_ignores_masked_entries(problem, getkey):
    sim, prior, s, x = problem
    garbage, mask = _masked(x)
    key = getkey()
    before = eqx.debug.get_num_traces(_abc._step_series)
    kw = dict(prior=prior, key=key, n_simulations=3072, quantile=0.01, chunk_size=1024)
    a = rejection_abc(sim, garbage, mask, **kw)
    b = rejection_abc(sim, np.where(mask, x, 0), mask, **kw)
    assert eqx.debug.get_num_traces(_abc._step_series) - before <= 1  # 3 chunks, 2 calls: one compilation
    assert a.samples["rho"].shape == (3, 31)
    np.testing.assert_array_equal(a.distance, b.distance)
    np.testing.assert_array_equal(a.samples["rho"], b.samples["rho"])
    # Same with a user summary (it sees the masked entries zeroed), where the masks
    # differ between datasets.
    kw["summary"] = _total
    a = rejection_abc(sim, garbage, mask, **kw)
    b = rejection_abc(sim, np.where(mask, x, 0), mask, **kw)
    np.testing.assert_array_equal(a.distance, b.distance)


def test_abc_running_top_k_is_exact(getkey):
    """Merging chunk after chunk keeps exactly the k smallest distances overall."""
    n, k, chunk, p = 4, 7, 20, 2
    d_all = np.array(jax.random.uniform(getkey(), (5 * chunk, n)))
    d_all[3, 0] = np.inf  # a failed simulation is never accepted
    theta_all = np.stack([np.arange(5 * chunk), -np.arange(5 * chunk)], axis=-1).astype(np.float32)
    best_d = jnp.full((n, k), jnp.inf)
    best_theta = jnp.full((n, k, p), jnp.nan)
    merge = jax.jit(_abc._merge)
    for c in range(5):
        sl = slice(c * chunk, (c + 1) * chunk)
        best_d, best_theta = merge(best_d, best_theta, jnp.asarray(d_all[sl].T), jnp.asarray(theta_all[sl]))
    order = np.argsort(d_all, axis=0)[:k].T  # (n, k)
    np.testing.assert_array_equal(np.asarray(best_d), np.take_along_axis(d_all.T, order, 1))
    np.testing.assert_array_equal(np.asarray(best_theta), theta_all[order])


def test_abc_errors(problem, getkey):
    sim, prior, s, x = problem
    kw = dict(prior=prior, key=getkey(), n_simulations=100)
    with pytest.raises(ValueError, match="either `n_accept` or `quantile`"):
        rejection_abc(sim, x, n_accept=10, quantile=0.1, **kw)
    with pytest.raises(ValueError, match="more than `n_simulations`"):
        rejection_abc(sim, x, n_accept=1000, **kw)
    with pytest.raises(ValueError, match="quantile"):
        rejection_abc(sim, x, quantile=0.0, **kw)
    with pytest.raises(ValueError, match="n_simulations"):
        rejection_abc(sim, x, prior=prior, key=getkey(), n_simulations=0)
    with pytest.raises(TypeError, match="function of one series"):
        rejection_abc(sim, x, n_accept=10, summary="sum", **kw)
    with pytest.raises(ValueError, match="`summary` failed"):
        rejection_abc(sim, x, n_accept=10, summary=lambda x: x @ jnp.ones(7), **kw)
    with pytest.raises(ValueError, match="one array of statistics"):
        rejection_abc(sim, x, n_accept=10, summary=lambda x: x[:0], **kw)
    with pytest.raises(ValueError, match=r"shape \(n, time, channels\)"):
        rejection_abc(sim, x[..., 0].T, n_accept=10, **kw)
    with pytest.raises(ValueError, match="negative"):
        rejection_abc(sim, -x, n_accept=10, **kw)
