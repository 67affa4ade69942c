"""Maximum likelihood with multiple starts, vmapped over datasets, and the information
criteria (AIC, AICc, BIC) and Akaike/Schwarz weights to choose between models."""

import warnings
from collections.abc import Mapping

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optimistix as optx
from jaxtyping import Array, ArrayLike, Bool, Float, Int

from .._custom_types import check_key, Key, Params
from .._simulation import Prior, Simulator
from ._likelihood import _failed, check_data, check_problem, negative_log_likelihood, padded_chunks, Unconstrained


#: Datasets per compiled call. Each dataset runs `n_starts` optimisations, all of them
#: vmapped together, so a chunk holds `chunk_size × n_starts` optimisations in flight.
#: A vmapped optimisation runs until its slowest member finishes, every member paying
#: for every step, so on CPU large chunks do not pay. Measured for SIR (8 starts, 2-core
#: CPU, two runs, benchmarks/RESULTS.md), against a loop over single datasets: chunks of
#: 4 at 0.93–1.01×, chunks of 16 at 0.72–1.04×, one call of 32 datasets at 0.52–0.64×.
#: On an accelerator, where more lanes cost little, pass a larger `chunk_size`.
DEFAULT_CHUNK_SIZE = 4


_CRITERIA = ("aic", "aicc", "bic")

#: A start that finished successfully counts as having reached a dataset's best
#: optimum when its log likelihood is within `AT_BEST_ATOL + AT_BEST_RTOL · |ℓ̂|` of
#: the best, `ℓ̂`, and it stopped within `AT_BEST_UTOL` of the best start in every
#: unconstrained coordinate. 0.01 in `ℓ` is 0.02 in AIC, far below the differences of
#: ~1 that matter when comparing fits, and well above the spread of one optimum's
#: values between starts (BFGS stops when `−ℓ` changes by less than `optimiser_atol +
#: optimiser_rtol · |ℓ|`, 1e-6 by default); the relative part covers float32 rounding
#: of a sum of thousands of log densities (eps 1.2e-7 per term). The distance in `u`
#: (0.1: 10% in a positive parameter) keeps out starts that agree in `ℓ` only because
#: they ran onto the same flat edge of the parameter space: measured with
#: SIRIntervention, three of four starts ran to `effect → 0` (a logit of −67 to −158,
#: where `t_change` no longer matters) at `ℓ` 280 below the optimum that the fourth
#: missed too; between starts at one interior optimum `u` differs by ~1e-4.
AT_BEST_ATOL = 1e-2
AT_BEST_RTOL = 1e-5
AT_BEST_UTOL = 1e-1


class MLEResult(eqx.Module):
    """Maximum-likelihood fits of one model to a batch of `n` datasets.

    **Fields:**

    - `theta`: dict of parameter name → `(n,)`, the best fit of each dataset; fixed
        parameters (a `Delta` prior or a number) are included at their value.
    - `log_likelihood`: `(n,)`, the maximised log likelihood `ℓ(θ̂)`; `-inf` where no
        start gave a finite value.
    - `n_params`: `k`, the number of fitted (free) parameters.
    - `n_obs`: `(n,)`, the number of observed entries (mask `True`) of each dataset.
    - `converged`: `(n,)`, `True` where the returned fit is a start that finished
        successfully (the optimiser's stopping criterion met, finite log likelihood):
        a local optimum, not necessarily the global one; see `n_starts_at_best`.
    - `n_starts_at_best`: `(n,)`, how many of the starts finished successfully
        at the best optimum: within `AT_BEST_ATOL + AT_BEST_RTOL · |ℓ̂|` of the best
        log likelihood `ℓ̂` and within `AT_BEST_UTOL` of the best start in every
        unconstrained coordinate (the best start included; 0 where none finished).
        One means no other start confirmed the optimum: the likelihood may have a
        better one that no start found, or a parameter the data do not determine;
        fit again with more `n_starts` (the `replicated` property is
        `n_starts_at_best ≥ 2`).

    **Properties:** `aic`, `aicc` and `bic`, each `(n,)`, lower is better; and
    `replicated`, `n_starts_at_best ≥ 2`.
    """

    theta: Params
    log_likelihood: Float[Array, " n"]
    n_params: int = eqx.field(static=True)
    n_obs: Int[Array, " n"]
    converged: Bool[Array, " n"]
    n_starts_at_best: Int[Array, " n"]

    def __check_init__(self):
        if not isinstance(self.n_params, int) or self.n_params < 0:
            raise ValueError(f"`n_params` must be a non-negative integer, got {self.n_params!r}.")

    def __len__(self) -> int:
        return self.log_likelihood.shape[0]

    @property
    def replicated(self) -> Bool[Array, " n"]:
        """`True` where at least two starts reached the best optimum
        (`n_starts_at_best ≥ 2`): evidence, not proof, that it is the global one."""
        return self.n_starts_at_best >= 2

    @property
    def aic(self) -> Float[Array, " n"]:
        """Akaike's information criterion, `2k − 2ℓ`."""
        return 2.0 * self.n_params - 2.0 * self.log_likelihood

    @property
    def aicc(self) -> Float[Array, " n"]:
        """AIC with the small-sample correction, `AIC + 2k(k + 1)/(n_obs − k − 1)`;
        `inf` where `n_obs ≤ k + 1` (too few observations for the correction)."""
        k = self.n_params
        denom = self.n_obs - k - 1
        correction = 2.0 * k * (k + 1) / jnp.where(denom > 0, denom, 1)
        return jnp.where(denom > 0, self.aic + correction, jnp.inf)

    @property
    def bic(self) -> Float[Array, " n"]:
        """Schwarz's Bayesian information criterion, `k ln(n_obs) − 2ℓ`."""
        return self.n_params * jnp.log(self.n_obs) - 2.0 * self.log_likelihood


def _objective(simulator, space, adjoint, x, mask):
    """`u ↦ −ℓ(θ(u))` for one dataset, as an optimistix objective `fn(u, args)`."""
    nll = negative_log_likelihood(simulator, space, x, mask, adjoint=adjoint)
    return lambda u, args: nll(u)


def _best_start(u, ll, ok):
    """The best of one dataset's starts: the highest log likelihood among starts that
    finished successfully, or among finite ones if none did; whether it finished
    successfully, and how many successful starts reached the same optimum (its log
    likelihood, at the same place)."""
    finite = jnp.isfinite(ll)
    good = ok & finite
    score = jnp.where(jnp.where(jnp.any(good), good, finite), ll, -jnp.inf)
    i = jnp.argmax(score)
    best = score[i]
    near = jnp.max(jnp.abs(u - u[i]), axis=-1) <= AT_BEST_UTOL
    at_best = good & near & (best - ll <= AT_BEST_ATOL + AT_BEST_RTOL * jnp.abs(best))
    return u[i], best, good[i], jnp.sum(at_best, dtype=jnp.int32)


@eqx.filter_jit
@eqx.debug.assert_max_traces(max_traces=None)  # counts compilations for the tests
def _fit_chunk(simulator, space, solver, adjoint, x, mask, keys, n_starts: int, max_steps: int):
    starts = jax.vmap(lambda k: space.prior.sample(k, n_starts))(keys)  # name -> (m, n_starts)
    u0 = jax.vmap(jax.vmap(space.u))(starts)  # (m, n_starts, k)

    def one_start(u0, x, mask):
        nll = _objective(simulator, space, adjoint, x, mask)
        sol = optx.minimise(nll, solver, u0, max_steps=max_steps, throw=False)
        f = getattr(getattr(sol.state, "f_info", None), "f", None)
        if isinstance(f, jax.Array):
            # Gradient-based optimistix solvers keep the objective at the returned
            # point; reading it saves compiling one more ODE solve.
            ll = -f
        else:
            ll = -nll(sol.value, None)
        ll = jnp.where(ll > -_failed(ll.dtype), ll, -jnp.inf)
        return sol.value, ll, sol.result == optx.RESULTS.successful

    starts_of = jax.vmap(one_start, in_axes=(0, None, None))
    u, ll, ok = jax.vmap(starts_of)(u0, x, mask)
    u, ll, converged, n_at_best = jax.vmap(_best_start)(u, ll, ok)
    theta = jax.vmap(space.theta)(u)
    return theta, ll, converged, n_at_best


def _check_positive_int(value, name):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")
    return int(value)


def _deprecated_alias(old_value, old: str, value, default):
    """`value`, or `old_value` with a warning where the caller used the deprecated
    name `old` of `optimiser_{old}`; refuse the old name next to a new name given a
    value other than its `default`."""
    if old_value is None:
        return value
    new = f"optimiser_{old}"
    if value != default:
        raise TypeError(f"Pass only `{new}`: `{old}` is its deprecated name, and both were given.")
    warnings.warn(
        f"fit_mle's `{old}` is deprecated: it is the optimiser's tolerance, not the ODE "
        f"solver's, and is now called `{new}`. Pass `{new}={old_value!r}` instead.",
        FutureWarning,
        stacklevel=3,
    )
    return old_value


def fit_mle(
    simulator: Simulator,
    x: Float[ArrayLike, "*n time channels"],
    mask: Bool[ArrayLike, "*n time channels"] | None = None,
    *,
    prior: Prior,
    key: Key,
    n_starts: int = 8,
    max_steps: int = 256,
    optimiser_rtol: float = 1e-6,
    optimiser_atol: float = 1e-6,
    solver: optx.AbstractMinimiser | None = None,
    adjoint: dfx.AbstractAdjoint = dfx.ForwardMode(),
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    rtol: float | None = None,
    atol: float | None = None,
) -> MLEResult:
    """Maximum-likelihood estimates of the free parameters for each dataset.

    Maximises [`sgjax.baselines.log_likelihood`][] (differentiated through diffrax)
    over the parameters of `prior` that are not fixed, in the unconstrained space of
    [`sgjax.baselines.Unconstrained`][] (log for a positive parameter, a scaled logit
    for an interval), so every estimate lies inside the prior's support. The prior is
    used only to draw the `n_starts` starting points and to define that space; it is
    *not* part of the objective. Each dataset's best start by log likelihood wins;
    starts that fail (solver failure, non-finite likelihood) are ignored. All datasets
    × starts of a chunk run in one compiled, vmapped call, so fitting many datasets
    of one shape compiles once.

    **Arguments:**

    - `simulator`: the [`sgjax.Simulator`][], with an observation model.
    - `x`: one series `(time, channels)` or a batch `(n, time, channels)`.
    - `mask`: `True` where observed, broadcastable to `x`; `None` observes all.
        Masked entries leave the fit unchanged whatever their value.
    - `prior`: an [`sgjax.Prior`][] over every parameter the simulator reads. Fix a
        parameter with a number (or `Delta`) to leave it out of the fit.
    - `key`: a JAX PRNG key for the starting points; dataset `i` starts from draws
        made with `jax.random.fold_in(key, i)`, whatever the chunk size.
    - `n_starts`: optimisations per dataset from independent prior draws.
    - `max_steps`: the most optimiser steps per start.
    - `optimiser_rtol`, `optimiser_atol`: the default optimiser's tolerances on the
        change in the unconstrained parameters and in `−ℓ` between steps. Not the
        ODE solver's: those are the simulator's `stepsize_controller`'s.
    - `solver`: any `optimistix.AbstractMinimiser`; default
        `optimistix.BFGS(optimiser_rtol, optimiser_atol)` (a solver you pass keeps
        its own tolerances).
    - `adjoint`: how the gradient of the ODE solve is computed, any
        `diffrax.AbstractAdjoint`. The default, `diffrax.ForwardMode()`, carries one
        tangent per fitted parameter through the solve; for SIR (2 parameters) it
        fitted 1.3–1.6× faster than reverse mode
        (`diffrax.RecursiveCheckpointAdjoint()`) and compiled in 0.4–0.7× the time
        (CPU, benchmarks/RESULTS.md). Its cost grows with the number of parameters
        and reverse mode's does not: try reverse mode for many parameters.
    - `chunk_size`: datasets per compiled call; the last chunk is padded to it. The
        default suits a CPU (see `DEFAULT_CHUNK_SIZE`); on a GPU try 64–256.
    - `rtol`, `atol`: deprecated names of `optimiser_rtol`, `optimiser_atol`
        (renamed so they cannot be taken for the ODE solver's); they warn.

    **Returns:** an [`sgjax.baselines.MLEResult`][]. Check its `converged` (the best
    start finished) and `n_starts_at_best` (how many starts agree on the best
    optimum) before trusting a fit.

    **Example:**

    ```python
    prior = sgjax.Prior(beta=dist.LogUniform(0.1, 2.0), gamma=dist.LogUniform(0.05, 0.5))
    fit = fit_mle(sim, sims.observations, sims.mask, prior=prior, key=jax.random.key(0))
    fit.theta["beta"], fit.aic
    ```
    """
    check_problem(
        simulator,
        prior,
        "maximise",
        " It defines which parameters are fitted (non-fixed ones) and where the starts are drawn.",
    )
    n_starts = _check_positive_int(n_starts, "n_starts")
    max_steps = _check_positive_int(max_steps, "max_steps")
    chunk_size = _check_positive_int(chunk_size, "chunk_size")
    optimiser_rtol = _deprecated_alias(rtol, "rtol", optimiser_rtol, 1e-6)
    optimiser_atol = _deprecated_alias(atol, "atol", optimiser_atol, 1e-6)
    if solver is None:
        if not (optimiser_rtol > 0 and optimiser_atol > 0):
            raise ValueError(
                f"`optimiser_rtol` and `optimiser_atol` must be positive, got "
                f"optimiser_rtol={optimiser_rtol!r}, optimiser_atol={optimiser_atol!r}."
            )
        solver = optx.BFGS(rtol=optimiser_rtol, atol=optimiser_atol)
    elif not isinstance(solver, optx.AbstractMinimiser):
        raise TypeError(
            f"`solver` must be an optimistix minimiser such as optimistix.BFGS(rtol=1e-6, "
            f"atol=1e-6), got {type(solver).__name__}."
        )
    if not isinstance(adjoint, dfx.AbstractAdjoint):
        raise TypeError(
            f"`adjoint` must be a diffrax adjoint such as diffrax.RecursiveCheckpointAdjoint() "
            f"or diffrax.ForwardMode(), got {type(adjoint).__name__}."
        )
    check_key(key)
    space = Unconstrained(prior)
    x, mask = check_data(simulator, x, mask)
    x = jnp.where(mask, x, 0.0)  # masked values never reach the objective, nor its rounding
    n = x.shape[0]
    size = min(chunk_size, n)
    # One key per dataset, so a dataset's starts do not depend on the chunking.
    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(n))
    outs = [
        _fit_chunk(simulator, space, solver, adjoint, xc, mc, kc, n_starts, max_steps)
        for xc, mc, kc in padded_chunks(size, x, mask, keys)
    ]
    theta, ll, converged, n_at_best = jax.tree.map(lambda *a: jnp.concatenate(a)[:n], *outs)
    return MLEResult(
        theta=theta,
        log_likelihood=ll,
        n_params=space.size,
        n_obs=jnp.sum(mask, axis=(1, 2)),
        converged=converged,
        n_starts_at_best=n_at_best,
    )


def select(fits: Mapping[str, MLEResult], criterion: str = "aic") -> tuple[Int[Array, " n"], Float[Array, "n models"]]:
    """Choose between models fitted to the same datasets by an information criterion.

    **Arguments:**

    - `fits`: model name → [`sgjax.baselines.MLEResult`][], each fitted to the same
        `n` datasets.
    - `criterion`: `"aic"`, `"aicc"` or `"bic"`.

    **Returns:** `(index, weights)`: `index` `(n,)`, the position (in the mapping's
    order) of the model with the lowest criterion for each dataset, and `weights`
    `(n, models)`, the Akaike (or Schwarz) weights `softmax(−criterion/2)` over
    models. A model whose fit failed (`ℓ = −inf`) gets weight 0; where every model
    failed, the weights are NaN.
    """
    if criterion not in _CRITERIA:
        raise ValueError(f"`criterion` must be one of {_CRITERIA}, got {criterion!r}.")
    if not isinstance(fits, Mapping) or not fits:
        raise ValueError("`fits` must be a non-empty mapping of model name -> MLEResult.")
    for name, fit in fits.items():
        if not isinstance(fit, MLEResult):
            raise TypeError(f"fits[{name!r}] must be an MLEResult from fit_mle, got {type(fit).__name__}.")
    sizes = {name: len(fit) for name, fit in fits.items()}
    if len(set(sizes.values())) != 1:
        raise ValueError(
            f"Every fit must be to the same datasets, but they hold different numbers of "
            f"datasets: {sizes}. Fit each model to the same batch of data."
        )
    values = jnp.stack([getattr(fit, criterion) for fit in fits.values()], axis=1)
    index = jnp.argmin(jnp.where(jnp.isnan(values), jnp.inf, values), axis=1)
    weights = jax.nn.softmax(jnp.where(jnp.isnan(values), -jnp.inf, -0.5 * values), axis=1)
    return index, weights
