"""Maximum likelihood with information criteria (`sgjax.baselines.fit_mle`, `select`).

Accuracy tests run in float64 (scoped with `jax.enable_x64`) on data made outside
sgjax (closed forms, scipy), so no simulation is compiled. Each distinct simulator,
prior structure and chunk shape compiles one fit (~10 s on a loaded 2-core CPU), so the
exact-answer problem also serves the mask, chunking and compile-once checks, and the
model-selection test (two more compiles) is marked slow.
"""

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import pytest
import scipy.integrate
import scipy.stats

import sgjax
from sgjax import models
from sgjax.baselines import _mle, fit_mle, log_likelihood, MLEResult, select, Unconstrained
from sgjax.baselines._likelihood import negative_log_likelihood
from sgjax.observation import ObservationModel, Poisson, Reporting


_TS = np.arange(1.0, 21.0)  # 20 observation times


def _reporting_problem():
    """Exponential growth `s(t) = 10 exp(0.2 t)` with `r` fixed, observed through
    Poisson noise of mean `ρ s`: the log likelihood `Σ x log(ρ s) − ρ s + const` is
    maximised exactly at `ρ̂ = Σ x / Σ s`. Tight solver tolerances make the solved
    signal equal the closed form to ~1e-9."""
    sim = sgjax.Simulator(
        models.Exponential(),
        _TS,
        ObservationModel(Poisson(), (Reporting("rho"),)),
        stepsize_controller=dfx.PIDController(rtol=1e-11, atol=1e-11),
    )
    prior = sgjax.Prior(r=0.2, rho=dist.Uniform(0.05, 1.0))
    return sim, prior


def test_reporting_fraction_exact_mask_and_compile_once():
    with jax.enable_x64(True):
        sim, prior = _reporting_problem()
        rng = np.random.default_rng(0)
        s = 10.0 * np.exp(0.2 * _TS)[None, :, None]  # the clean signal, closed form
        rho = np.array([0.2, 0.45, 0.8])
        x = rng.poisson(rho[:, None, None] * s).astype(float)
        mask = np.ones(x.shape, bool)
        mask[1, ::3] = False  # some entries of the second series are missing
        want = np.sum(x * mask, axis=(1, 2)) / np.sum(s * mask, axis=(1, 2))
        key = jax.random.key(0)
        # Chunks of one dataset: three calls of one compiled shape. Reverse mode here
        # (forward, the default, is used by the other fits).
        adjoint = dfx.RecursiveCheckpointAdjoint()
        kwargs = dict(
            prior=prior, n_starts=3, optimiser_rtol=1e-10, optimiser_atol=1e-10, chunk_size=1, adjoint=adjoint
        )
        traces = eqx.debug.get_num_traces(_mle._fit_chunk)
        fit = fit_mle(sim, x, mask, key=key, **kwargs)
        assert eqx.debug.get_num_traces(_mle._fit_chunk) == traces + 1
        # Tolerance: BFGS stops when the logit of ρ moves by less than ~1e-10, and the
        # solved signal is within ~1e-9 of the closed form.
        np.testing.assert_allclose(fit.theta["rho"], want, rtol=1e-7)
        np.testing.assert_array_equal(fit.theta["r"], 0.2)  # fixed, reported as is
        assert fit.n_params == 1 and bool(fit.converged.all())
        # The log likelihood is concave in ρ, with one optimum; but not in the logit
        # the fit works in, where it flattens as ρ → 1: the third dataset's start from
        # ρ = 0.19 overshoots to ρ ≈ 0.94, where BFGS stalls until its 256 steps run
        # out. That start did not finish, so it is not counted.
        np.testing.assert_array_equal(fit.n_starts_at_best, [3, 3, 2])
        np.testing.assert_array_equal(fit.n_obs, mask.sum(axis=(1, 2)))
        ll = scipy.stats.poisson.logpmf(x, want[:, None, None] * s)
        np.testing.assert_allclose(fit.log_likelihood, np.sum(ll * mask, axis=(1, 2)), rtol=1e-9)

        # Values changed where the mask is False leave the fit exactly as it was (same
        # key, so the same starts); new data of the same shape does not retrace.
        fit2 = fit_mle(sim, np.where(mask, x, 12345.0), mask, key=key, **kwargs)
        np.testing.assert_array_equal(fit2.theta["rho"], fit.theta["rho"])
        np.testing.assert_array_equal(fit2.log_likelihood, fit.log_likelihood)
        # One series (time, channels) is a batch of one, of the same compiled shape.
        one = fit_mle(sim, x[2], key=jax.random.key(1), **kwargs)
        np.testing.assert_allclose(one.theta["rho"], want[2:], rtol=1e-7)
        assert eqx.debug.get_num_traces(_mle._fit_chunk) == traces + 1
        # The optimiser's tolerances under their deprecated names: the same fit (and
        # the same compiled function), with a warning that names the new ones.
        old = {k: v for k, v in kwargs.items() if not k.startswith("optimiser_")}
        with (
            pytest.warns(FutureWarning, match="`rtol` is deprecated.*optimiser_rtol=1e-10"),
            pytest.warns(FutureWarning, match="`atol` is deprecated.*optimiser_atol=1e-10"),
        ):
            fit3 = fit_mle(sim, x, mask, key=key, rtol=1e-10, atol=1e-10, **old)
        np.testing.assert_array_equal(fit3.theta["rho"], fit.theta["rho"])
        assert eqx.debug.get_num_traces(_mle._fit_chunk) == traces + 1


@pytest.mark.parametrize("adjoint", [dfx.RecursiveCheckpointAdjoint(), dfx.ForwardMode()])
def test_objective_value_and_gradient(adjoint):
    # The objective fit_mle minimises, −ℓ(u) with ρ = 0.05 + 0.95 sigmoid(u), against
    # its closed form: −Σ x log(ρ s) − ρ s − log x!, gradient −Σ (x/ρ − s) dρ/du; and
    # against the shared `log_likelihood`, in both gradient modes.
    with jax.enable_x64(True):
        sim, prior = _reporting_problem()
        space = Unconstrained(prior)
        s = 10.0 * np.exp(0.2 * _TS)[:, None]
        x = np.random.default_rng(1).poisson(0.4 * s).astype(float)
        mask = np.arange(len(_TS))[:, None] % 4 != 0
        u = jnp.array([0.3])
        # Through the custom derivative that both fit_mle and nuts differentiate.
        value, grad = eqx.filter_jit(
            lambda sim, space, u, x, mask: jax.value_and_grad(
                negative_log_likelihood(sim, space, x, mask, adjoint=adjoint)
            )(u)
        )(sim, space, u, jnp.asarray(x), jnp.asarray(mask))
        sig = 1.0 / (1.0 + np.exp(-0.3))
        rho = 0.05 + 0.95 * sig
        want = -np.sum(scipy.stats.poisson.logpmf(x, rho * s) * mask)
        want_grad = -np.sum((x / rho - s) * mask) * 0.95 * sig * (1.0 - sig)
        # Tolerance: the solved signal is within ~1e-9 of the closed form.
        np.testing.assert_allclose(value, want, rtol=1e-8)
        np.testing.assert_allclose(grad, [want_grad], rtol=1e-7)
        ref = eqx.filter_jit(log_likelihood)(sim, space.theta(u), jnp.asarray(x), jnp.asarray(mask))
        np.testing.assert_allclose(-value, ref, rtol=1e-12)


def test_failed_solves_are_reported_not_raised():
    # Every solve fails (one step allowed): no exception, ℓ = −inf, not converged.
    sim = sgjax.Simulator(models.Exponential(), _TS, ObservationModel(Poisson()), max_steps=1)
    x = np.ones((2, len(_TS), 1))
    fit = fit_mle(sim, x, prior=sgjax.Prior(r=dist.Uniform(0.1, 0.3)), key=jax.random.key(0), n_starts=2)
    np.testing.assert_array_equal(fit.log_likelihood, -np.inf)
    np.testing.assert_array_equal(fit.converged, False)
    np.testing.assert_array_equal(fit.n_starts_at_best, 0)
    np.testing.assert_array_equal(fit.aic, np.inf)


def test_starts_at_best_counts_successful_starts_at_the_best_optimum():
    # One dataset per row, four starts each: the best start, and how many successful
    # starts lie within AT_BEST_ATOL + AT_BEST_RTOL·|ℓ̂| of its log likelihood and
    # within AT_BEST_UTOL of it in u.
    tol = _mle.AT_BEST_ATOL + _mle.AT_BEST_RTOL * 100.0
    ll = jnp.array(
        [
            [-100.0, -100.0 - 0.5 * tol, -100.0 - 2 * tol, -jnp.inf],  # two agree, one short in ℓ
            [-100.0, -100.0, -100.0, -100.0],  # the best failed; of three equal ℓ, one is elsewhere
            [-100.0, -105.0, jnp.nan, -120.0],  # only the best finished
            [-100.0, -100.0, -jnp.inf, jnp.nan],  # none finished: the best finite one, 0 agree
        ]
    )
    ok = jnp.array([[True] * 4, [False, True, True, True], [True, False, True, False], [False] * 4])
    u = jnp.array(
        [
            [0.0, 0.5 * _mle.AT_BEST_UTOL, 0.0, 0.0],
            [0.0, 1.0, 1.0 + 0.5 * _mle.AT_BEST_UTOL, 40.0],  # 40: run onto a flat edge
            [2.0, 2.0, 2.0, 2.0],
            [3.0, 4.0, 5.0, 6.0],
        ]
    )[..., None]
    best_u, best, converged, at_best = jax.vmap(_mle._best_start)(u, ll, ok)
    np.testing.assert_array_equal(best_u[:, 0], [0.0, 1.0, 2.0, 3.0])
    np.testing.assert_array_equal(best, [-100.0] * 4)
    np.testing.assert_array_equal(converged, [True, True, True, False])
    np.testing.assert_array_equal(at_best, [2, 2, 1, 0])
    fit = MLEResult(
        theta={}, log_likelihood=best, n_params=1, n_obs=jnp.full(4, 9), converged=converged, n_starts_at_best=at_best
    )
    np.testing.assert_array_equal(fit.replicated, [True, True, False, False])


def test_information_criteria_formulas():
    with jax.enable_x64(True):
        ll = jnp.array([-10.0, -250.5, 3.25, -7.0])
        n_obs = jnp.array([40, 100, 7, 4])
        k = 3
        fit = MLEResult(
            theta={"a": jnp.zeros(4)},
            log_likelihood=ll,
            n_params=k,
            n_obs=n_obs,
            converged=jnp.ones(4, bool),
            n_starts_at_best=jnp.ones(4, int),
        )
        ll_, n_ = np.asarray(ll), np.asarray(n_obs, float)
        aic = 2 * k - 2 * ll_
        # float64 on both sides, the same operations: equal to rounding.
        np.testing.assert_allclose(fit.aic, aic, rtol=1e-15)
        np.testing.assert_allclose(fit.bic, k * np.log(n_) - 2 * ll_, rtol=1e-15)
        # AICc needs n_obs > k + 1; with n_obs = 4 = k + 1 it is infinite.
        np.testing.assert_allclose(fit.aicc[:3], aic[:3] + 2 * k * (k + 1) / (n_[:3] - k - 1), rtol=1e-15)
        assert fit.aicc[3] == np.inf
        assert len(fit) == 4


def test_select_weights():
    n_obs = jnp.full(2, 50)
    ones = jnp.ones(2, bool)
    fits = {
        "small": MLEResult(
            theta={},
            log_likelihood=jnp.array([-100.0, -50.0]),
            n_params=1,
            n_obs=n_obs,
            converged=ones,
            n_starts_at_best=2 * ones,
        ),
        "big": MLEResult(
            theta={},
            log_likelihood=jnp.array([-90.0, -49.5]),
            n_params=3,
            n_obs=n_obs,
            converged=ones,
            n_starts_at_best=2 * ones,
        ),
        "failed": MLEResult(
            theta={},
            log_likelihood=jnp.array([-jnp.inf, -jnp.inf]),
            n_params=1,
            n_obs=n_obs,
            converged=~ones,
            n_starts_at_best=0 * ones,
        ),
    }
    for criterion in ("aic", "aicc", "bic"):
        index, weights = select(fits, criterion)
        values = np.stack([np.asarray(getattr(f, criterion)) for f in fits.values()], 1)
        np.testing.assert_array_equal(index, np.argmin(values, 1))
        w = np.exp(-0.5 * (values - values.min(1, keepdims=True)))
        np.testing.assert_allclose(weights, w / w.sum(1, keepdims=True), rtol=1e-6, atol=1e-12)
        assert weights.shape == (2, 3)
    index, weights = select(fits, "aic")
    # AIC: 202 vs 186 (big wins), then 102 vs 105 (small wins); the failed fit gets 0.
    np.testing.assert_array_equal(index, [1, 0])
    np.testing.assert_allclose(weights[:, 2], 0.0)
    np.testing.assert_allclose(weights[1, :2], [1 / (1 + np.exp(-1.5)), 1 - 1 / (1 + np.exp(-1.5))], rtol=1e-6)


def _sir_incidence(beta, gamma, n, i0, ts):
    """Daily incidence `S(t − 1) − S(t)` of SIR from scipy at tolerance 1e-11."""

    def f(t, y):
        s, i = y
        return [-beta * s * i / n, beta * s * i / n - gamma * i]

    grid = np.concatenate([[0.0], ts])
    sol = scipy.integrate.solve_ivp(f, (0.0, ts[-1]), [n - i0, i0], t_eval=grid, rtol=1e-11, atol=1e-9, method="DOP853")
    return -np.diff(sol.y[0])


def test_sir_recovery():
    with jax.enable_x64(True):
        ts = np.arange(1.0, 41.0)
        sim = sgjax.Simulator(
            models.SIR(N=1e5, I0=10.0),
            ts,
            ObservationModel(Poisson()),
            stepsize_controller=dfx.PIDController(rtol=1e-8, atol=1e-6),
        )
        prior = sgjax.Prior(beta=dist.LogUniform(0.1, 1.0), gamma=dist.LogUniform(0.05, 0.5))
        truth = {"beta": np.array([0.5, 0.6]), "gamma": np.array([0.2, 0.3])}
        signal = np.stack([_sir_incidence(b, g, 1e5, 10.0, ts) for b, g in zip(truth["beta"], truth["gamma"])])
        x = np.random.default_rng(2).poisson(signal)[..., None].astype(float)
        fit = fit_mle(sim, x, prior=prior, key=jax.random.key(3), n_starts=6)
        assert bool(fit.converged.all()) and fit.n_params == 2
        assert bool(fit.replicated.all())  # more than one start found the optimum
        for name in truth:  # thousands of cases a day: the estimates are within ~1.5%
            np.testing.assert_allclose(fit.theta[name], truth[name], rtol=0.03)
        # The maximum is at least the truth's likelihood. Tolerance 1e-3: the truth's
        # likelihood is computed from scipy's signal, which differs from sgjax's by
        # ~1e-7 relative, i.e. by ~1e-4 in log likelihood.
        ll_true = scipy.stats.poisson.logpmf(x[..., 0], signal).sum(axis=1)
        assert np.all(np.asarray(fit.log_likelihood) >= ll_true - 1e-3)
        np.testing.assert_array_equal(fit.n_obs, 40)


# Slow: test_models.py::test_intervention_gradient_in_switch_time checks the gradient in CI.
@pytest.mark.slow
def test_intervention_switch_time_is_fitted():
    # Noise-free SIRIntervention data (the clean incidence, rounded to counts), every
    # parameter free, four starts all more than 10 days from the true t_change = 20.
    # While β jumped at t_change the likelihood's gradient in t_change was 0 and each
    # start kept its own; now the fit finds it (to 1e-4 days: the rounding of the
    # data moves the optimum by less than that).
    with jax.enable_x64(True):
        ts = np.arange(1.0, 41.0)
        model = models.SIRIntervention(N=1e4, I0=5.0)
        controller = dfx.PIDController(rtol=1e-6, atol=1e-6)
        sim = sgjax.Simulator(model, ts, ObservationModel(Poisson()), stepsize_controller=controller)
        truth = dict(beta=0.5, effect=0.5, gamma=0.2, t_change=20.0)
        ys = np.vstack([[model.N - model.I0, model.I0, 0.0], sgjax.solve(sim, truth)])
        x = np.round(np.asarray(model.observable(ys, model.state_names)))
        # Names in sorted order: a Prior's draws depend on its order, and inside the
        # compiled fit its dict comes back sorted, so only then are these the starts.
        prior = sgjax.Prior(
            beta=dist.LogUniform(0.1, 1.0),
            effect=dist.Uniform(0.0, 1.0),
            gamma=dist.LogUniform(0.05, 0.5),
            t_change=dist.Uniform(5.0, 40.0),
        )
        key = jax.random.key(3)
        starts = prior.sample(jax.random.fold_in(key, 0), 4)["t_change"]
        assert np.all(np.abs(np.asarray(starts) - 20.0) > 10.0), starts
        fit = fit_mle(sim, x, prior=prior, key=key, n_starts=4)
        assert abs(float(fit.theta["t_change"][0]) - 20.0) < 1e-2
        for name in ("beta", "effect", "gamma"):
            np.testing.assert_allclose(fit.theta[name], truth[name], rtol=1e-3)
        assert bool(fit.converged[0]) and int(fit.n_starts_at_best[0]) >= 2


@pytest.mark.slow
def test_logistic_data_select_logistic():
    with jax.enable_x64(True):
        ts = np.arange(1.0, 31.0)
        logistic = sgjax.Simulator(models.Logistic(), ts, ObservationModel(Poisson()))
        exponential = sgjax.Simulator(models.Exponential(), ts, ObservationModel(Poisson()))
        r, K = np.array([[0.4], [0.3]]), np.array([[5000.0], [3000.0]])
        signal = K / (1.0 + (K / 10.0 - 1.0) * np.exp(-r * ts))  # closed form, N0 = 10
        x = np.random.default_rng(4).poisson(signal)[..., None].astype(float)
        fits = {
            "exponential": fit_mle(
                exponential, x, prior=sgjax.Prior(r=dist.Uniform(0.0, 1.0)), key=jax.random.key(5), n_starts=4
            ),
            "logistic": fit_mle(
                logistic,
                x,
                prior=sgjax.Prior(r=dist.LogUniform(0.05, 2.0), K=dist.LogUniform(100.0, 1e5)),
                key=jax.random.key(6),
                n_starts=4,
            ),
        }
        for criterion in ("aic", "bic"):
            index, weights = select(fits, criterion)
            np.testing.assert_array_equal(index, [1, 1])
            assert np.all(np.asarray(weights[:, 1]) > 1 - 1e-9)


def test_errors():
    sim, prior = _reporting_problem()
    x = np.ones((len(_TS), 1))
    key = jax.random.key(0)
    with pytest.raises(ValueError, match=r"shape \(n, time, channels\)"):
        fit_mle(sim, np.ones((len(_TS) + 1, 1)), prior=prior, key=key)
    with pytest.raises(ValueError, match="no distribution for \\['rho'\\]"):
        fit_mle(sim, x, prior=sgjax.Prior(r=dist.Uniform(0.1, 0.3)), key=key)
    with pytest.raises(ValueError, match="nothing in the simulator uses"):
        fit_mle(sim, x, prior=sgjax.Prior(r=0.2, rho=0.5, rhoo=dist.Uniform(0, 1)), key=key)
    with pytest.raises(ValueError, match="nothing to fit"):
        fit_mle(sim, x, prior=sgjax.Prior(r=0.2, rho=0.5), key=key)
    with pytest.raises(ValueError, match="`n_starts` must be a positive integer"):
        fit_mle(sim, x, prior=prior, key=key, n_starts=0)
    with pytest.raises(ValueError, match="`max_steps` must be a positive integer"):
        fit_mle(sim, x, prior=prior, key=key, max_steps=2.5)
    with pytest.raises(TypeError, match="PRNG key"):
        fit_mle(sim, x, prior=prior, key=0)
    with pytest.raises(TypeError, match="sgjax.Prior"):
        fit_mle(sim, x, prior={"rho": dist.Uniform(0, 1)}, key=key)
    with pytest.raises(ValueError, match="fractional"):
        fit_mle(sim, x + 0.5, prior=prior, key=key)
    with pytest.raises(ValueError, match="no observation model"):
        fit_mle(sgjax.Simulator(models.Exponential(), _TS), x, prior=sgjax.Prior(r=dist.Uniform(0.1, 0.3)), key=key)
    with pytest.raises(TypeError, match="optimistix minimiser"):
        fit_mle(sim, x, prior=prior, key=key, solver="bfgs")
    with pytest.raises(TypeError, match="diffrax adjoint"):
        fit_mle(sim, x, prior=prior, key=key, adjoint="forward")
    with pytest.raises(ValueError, match="`chunk_size` must be a positive integer"):
        fit_mle(sim, x, prior=prior, key=key, chunk_size=0)
    with pytest.raises(ValueError, match="`optimiser_rtol` and `optimiser_atol` must be positive.*optimiser_atol=0"):
        fit_mle(sim, x, prior=prior, key=key, optimiser_atol=0)
    with pytest.raises(TypeError, match="Pass only `optimiser_rtol`: `rtol` is its deprecated name"):
        fit_mle(sim, x, prior=prior, key=key, rtol=1e-8, optimiser_rtol=1e-8)

    def result(n):
        return MLEResult(
            theta={},
            log_likelihood=jnp.zeros(n),
            n_params=1,
            n_obs=jnp.full(n, 10),
            converged=jnp.ones(n, bool),
            n_starts_at_best=jnp.ones(n, int),
        )

    with pytest.raises(ValueError, match="one of \\('aic', 'aicc', 'bic'\\)"):
        select({"a": result(2)}, "AIC")
    with pytest.raises(ValueError, match="same datasets"):
        select({"a": result(2), "b": result(3)})
    with pytest.raises(ValueError, match="non-empty mapping"):
        select({})
    with pytest.raises(TypeError, match="MLEResult"):
        select({"a": 1.0})
