"""Maximum likelihood with multiple starts, vmapped over datasets, and the information
criteria (AIC, AICc, BIC) and Akaike/Schwarz weights to choose between models."""

from collections.abc import Mapping

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optimistix as optx
from jaxtyping import Array, Bool, Float, Int

from .._custom_types import Key, Params
from .._prior import Prior
from .._simulator import Simulator
from ._likelihood import _failed, check_data, check_key, check_problem, negative_log_likelihood, padded_chunks, Unconstrained

#: Datasets per compiled call. Each dataset runs `n_starts` optimisations, all of them
#: vmapped together, so a chunk holds `chunk_size × n_starts` optimisations in flight.
#: A vmapped optimisation runs until its slowest member finishes, every member paying
#: for every step, so on CPU large chunks do not pay. Measured for SIR (8 starts, 2-core
#: CPU, two runs, benchmarks/RESULTS.md), against a loop over single datasets: chunks of
#: 4 at 0.93–1.01×, chunks of 16 at 0.72–1.04×, one call of 32 datasets at 0.52–0.64×.
#: On an accelerator, where more lanes cost little, pass a larger `chunk_size`.
DEFAULT_CHUNK_SIZE = 4

# Incremented whenever a chunk function is traced, so tests can assert that repeated
# calls with data of the same shape compile once.
_TRACES = {"fit": 0}

_CRITERIA = ("aic", "aicc", "bic")


class MLEResult(eqx.Module):
    """Maximum-likelihood fits of one model to a batch of `n` datasets.

    **Fields:**

    - `theta`: dict of parameter name → `(n,)`, the best fit of each dataset; fixed
        parameters (a `Delta` prior or a number) are included at their value.
    - `log_likelihood`: `(n,)`, the maximised log likelihood `ℓ(θ̂)`; `-inf` where no
        start gave a finite value.
    - `n_params`: `k`, the number of fitted (free) parameters.
    - `n_obs`: `(n,)`, the number of observed entries (mask `True`) of each dataset.
    - `converged`: `(n,)`, `True` where at least one start finished successfully
        with a finite log likelihood.

    **Properties:** `aic`, `aicc` and `bic`, each `(n,)`; lower is better.
    """

    theta: Params
    log_likelihood: Float[Array, " n"]
    n_params: int = eqx.field(static=True)
    n_obs: Int[Array, " n"]
    converged: Bool[Array, " n"]

    def __check_init__(self):
        if not isinstance(self.n_params, int) or self.n_params < 0:
            raise ValueError(f"`n_params` must be a non-negative integer, got {self.n_params!r}.")

    def __len__(self) -> int:
        return self.log_likelihood.shape[0]

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
    finished successfully, or among finite ones if none did."""
    finite = jnp.isfinite(ll)
    good = ok & finite
    score = jnp.where(jnp.where(jnp.any(good), good, finite), ll, -jnp.inf)
    i = jnp.argmax(score)
    return u[i], score[i], jnp.any(good)


@eqx.filter_jit
def _fit_chunk(simulator, space, solver, adjoint, x, mask, keys, n_starts: int, max_steps: int):
    _TRACES["fit"] += 1
    starts = jax.vmap(lambda k: space.prior.sample(k, n_starts))(keys)  # name -> (m, n_starts)
    u0 = jax.vmap(jax.vmap(space.u))(starts)  # (m, n_starts, k)

    def one_start(u0, x, mask):
        nll = _objective(simulator, space, adjoint, x, mask)
        sol = optx.minimise(nll, solver, u0, max_steps=max_steps, throw=False)
        f_info = getattr(sol.state, "f_info", None)
        if isinstance(getattr(f_info, "f", None), jax.Array):
            # Gradient-based optimistix solvers keep the objective at the returned
            # point; reading it saves compiling one more ODE solve.
            ll = -f_info.f
        else:
            ll = -nll(sol.value, None)
        ll = jnp.where(ll > -_failed(ll.dtype), ll, -jnp.inf)
        return sol.value, ll, sol.result == optx.RESULTS.successful

    starts_of = jax.vmap(one_start, in_axes=(0, None, None))
    u, ll, ok = jax.vmap(starts_of)(u0, x, mask)
    u, ll, converged = jax.vmap(_best_start)(u, ll, ok)
    theta = jax.vmap(space.theta)(u)
    return theta, ll, converged


def _check_positive_int(value, name):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")
    return int(value)


def fit_mle(
    simulator: Simulator,
    x: Float[Array, "*n time channels"],
    mask: Bool[Array, "*n time channels"] | None = None,
    *,
    prior: Prior,
    key: Key,
    n_starts: int = 8,
    max_steps: int = 256,
    rtol: float = 1e-6,
    atol: float = 1e-6,
    solver: optx.AbstractMinimiser | None = None,
    adjoint: dfx.AbstractAdjoint = dfx.ForwardMode(),
    chunk_size: int = DEFAULT_CHUNK_SIZE,
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
    - `rtol`, `atol`: the default solver's tolerances on the change in the
        unconstrained parameters and in `−ℓ` between steps.
    - `solver`: any `optimistix.AbstractMinimiser`; default
        `optimistix.BFGS(rtol, atol)` (then `rtol`, `atol` are its tolerances).
    - `adjoint`: how the gradient of the ODE solve is computed, any
        `diffrax.AbstractAdjoint`. The default, `diffrax.ForwardMode()`, carries one
        tangent per fitted parameter through the solve; for SIR (2 parameters) it
        fitted 1.3–1.6× faster than reverse mode
        (`diffrax.RecursiveCheckpointAdjoint()`) and compiled in 0.4–0.7× the time
        (CPU, benchmarks/RESULTS.md). Its cost grows with the number of parameters
        and reverse mode's does not: try reverse mode for many parameters.
    - `chunk_size`: datasets per compiled call; the last chunk is padded to it. The
        default suits a CPU (see `DEFAULT_CHUNK_SIZE`); on a GPU try 64–256.

    **Returns:** an [`sgjax.baselines.MLEResult`][].

    **Example:**

    ```python
    prior = sgjax.Prior(beta=dist.LogUniform(0.1, 2.0), gamma=dist.LogUniform(0.05, 0.5))
    fit = fit_mle(sim, sims.observations, sims.mask, prior=prior, key=jax.random.key(0))
    fit.theta["beta"], fit.aic
    ```
    """
    check_problem(
        simulator, prior, "maximise", " It defines which parameters are fitted (non-fixed ones) and where the starts are drawn."
    )
    n_starts = _check_positive_int(n_starts, "n_starts")
    max_steps = _check_positive_int(max_steps, "max_steps")
    chunk_size = _check_positive_int(chunk_size, "chunk_size")
    if solver is None:
        if not (rtol > 0 and atol > 0):
            raise ValueError(f"`rtol` and `atol` must be positive, got rtol={rtol!r}, atol={atol!r}.")
        solver = optx.BFGS(rtol=rtol, atol=atol)
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
    theta, ll, converged = jax.tree.map(lambda *a: jnp.concatenate(a)[:n], *outs)
    return MLEResult(
        theta=theta,
        log_likelihood=ll,
        n_params=space.size,
        n_obs=jnp.sum(mask, axis=(1, 2)),
        converged=converged,
    )


def select(
    fits: Mapping[str, MLEResult], criterion: str = "aic"
) -> tuple[Int[Array, " n"], Float[Array, "n models"]]:
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
