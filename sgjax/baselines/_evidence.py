"""Marginal likelihoods `p(x | M)` by sequential Monte Carlo on the same simulator,
and the Bayes-optimal choice between models that they give: the reference an SGNN
classifier converges to, as NUTS is the reference for its posteriors.

Adaptive tempered SMC (Del Moral, Doucet & Jasra 2006; Jasra et al. 2011): particles
drawn from the prior are moved through `p(θ) p(x | θ)^β` as `β` goes from 0 to 1, each
increment chosen so that the weights keep a set effective sample size, then
resampled and moved by random-walk Metropolis steps scaled to the particles'
covariance. The product of the mean incremental weights is an unbiased estimate of
`p(x | M)`. Unlike importance sampling around a point estimate, it needs no fit and
copes with skewed posteriors and posteriors piled against a prior's bound, which
maximum-likelihood fits of the wrong mechanism often give. Every likelihood
evaluation integrates all particles of a chunk of datasets as one batch.
"""

from collections.abc import Mapping

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jaxtyping import Array, ArrayLike, Bool, Float, Int

from .._custom_types import check_key, Key
from .._simulation import AbstractStrategy, Prior, SharedStep, Simulator, solve_signal
from ._likelihood import check_data, check_problem, floor_signal, padded_chunks, Unconstrained
from ._mle import _check_positive_int
from ._samples import AbstractSamples


#: Datasets per compiled call. All particles of a chunk's datasets are integrated as
#: one batch (`chunk_size × n_particles` trajectories), with one shared step size.
DEFAULT_CHUNK_SIZE = 8


class Evidence(AbstractSamples):
    """Sequential Monte Carlo estimates of the log marginal likelihood
    `log p(x | M) = log ∫ p(x | θ) p(θ) dθ` of one model for `n` datasets, and the
    posterior samples the sampler ends with.

    **Fields:**

    - `log_evidence`: `(n,)`, the estimate of `log p(x | M)`; `-inf` where no
        particle had a finite likelihood, NaN where the tempering did not reach
        `β = 1` within `max_temperatures`.
    - `temperatures`: `(n,)`, the number of tempering steps taken (more for data
        that are more informative about the parameters).
    - `acceptance`: `(n,)`, the mean acceptance rate of the Metropolis moves.
    - `n_particles`: particles per dataset.
    - `samples`: free parameter name → `(n, n_particles)`, the particles at `β = 1`
        (resampled and moved there, so equally weighted): draws from each dataset's
        posterior, correlated by the resampling (fewer effective draws than
        particles). NaN where `log_evidence` is not finite. Fixed parameters of the
        prior are left out.

    **Methods:** those of every [`sgjax.AbstractPosterior`][] (`mean()`, `std()`,
    `quantile(q)`, `interval(mass)`, `theta(i)`, ...), so an SMC posterior goes into
    every diagnostic as NUTS's does.
    """

    log_evidence: Float[Array, " n"]
    temperatures: Int[Array, " n"]
    acceptance: Float[Array, " n"]
    n_particles: int = eqx.field(static=True)
    samples: dict[str, np.ndarray] | None = None

    def __len__(self) -> int:
        return self.log_evidence.shape[0]


def _log_likelihoods(simulator: Simulator, strategy: AbstractStrategy, space: Unconstrained, u, x, mask):
    """`log p(x_i | θ(u_ij))`, `(m, P)`, for `m` datasets and `P` particles each, all
    `m × P` trajectories integrated as one batch; `-inf` where a solve fails."""
    m, P, k = u.shape
    theta = jax.vmap(space.theta)(u.reshape(m * P, k))
    _, signal, ok = solve_signal(simulator, theta, strategy=strategy)  # signal (time, channels, m P)
    signal = jnp.moveaxis(signal, -1, 0)
    signal = floor_signal(simulator, signal).reshape(m, P, *signal.shape[1:])
    theta = jax.tree.map(lambda a: a.reshape(m, P), theta)

    observation = simulator.observation
    assert observation is not None, "check_problem refuses a simulator with no observation model"

    def one(x, mask, signal, theta):
        return observation.log_prob(x, signal, theta, simulator.ts, mask)

    lp = jax.vmap(jax.vmap(one, in_axes=(None, None, 0, 0)))(x, mask, signal, theta)
    ok = ok.reshape(m, P) & jnp.isfinite(lp)
    return jnp.where(ok, lp, -jnp.inf)


def _increment(ll, delta):
    """Incremental log weights `δ ℓ`, with particles of no likelihood at `-inf`."""
    return jnp.where(jnp.isfinite(ll), delta * jnp.where(jnp.isfinite(ll), ll, 0.0), -jnp.inf)


def _ess(ll, delta):
    w = jax.nn.softmax(_increment(ll, delta))
    return 1.0 / jnp.sum(w**2)


def _next_delta(ll, remaining, target):
    """The largest temperature increment `δ ≤ remaining` whose weights keep an
    effective sample size of at least `target` (bisection)."""

    def bisect(_, bounds):
        lo, hi = bounds
        mid = (lo + hi) / 2
        up = _ess(ll, mid) >= target
        return jnp.where(up, mid, lo), jnp.where(up, hi, mid)

    lo, _ = lax.fori_loop(0, 50, bisect, (jnp.zeros_like(remaining), remaining))
    # Never stall: at worst a tiny step, which the next resampling copes with.
    lo = jnp.maximum(lo, jnp.minimum(remaining, 1e-8))
    return jnp.where(_ess(ll, remaining) >= target, remaining, lo)


def _systematic(key, log_w):
    """Indices of a systematic resample of `P` particles with weights `∝ exp(log_w)`."""
    P = log_w.shape[0]
    cdf = jnp.cumsum(jax.nn.softmax(log_w))
    positions = (jnp.arange(P) + jax.random.uniform(key, dtype=cdf.dtype)) / P
    return jnp.minimum(jnp.searchsorted(cdf, positions), P - 1)


@eqx.filter_jit
@eqx.debug.assert_max_traces(max_traces=None)  # counts compilations for the tests
def _smc_chunk(
    simulator, strategy, space, x, mask, keys, n_particles: int, n_moves: int, target_ess: float, max_temperatures: int
):
    m, P, k = x.shape[0], n_particles, space.size
    loglik = lambda u: _log_likelihoods(simulator, strategy, space, u, x, mask)  # noqa: E731
    log_prior = jax.vmap(jax.vmap(space.log_prior))
    init_keys = jax.vmap(lambda key: jax.random.fold_in(key, -1 % 2**32))(keys)
    u = jax.vmap(lambda key: jax.vmap(space.u)(space.prior.sample(key, P)))(init_keys).astype(x.dtype)
    ll = loglik(u)
    dtype = x.dtype
    init = dict(
        u=u,
        ll=ll,
        lp=log_prior(u),
        # A dataset where no particle has a finite likelihood is done before it starts.
        beta=jnp.where(jnp.any(jnp.isfinite(ll), axis=1), 0.0, 1.0).astype(dtype),
        log_z=jnp.zeros(m, dtype),
        scale=jnp.full(m, 2.38 / np.sqrt(k), dtype),
        steps=jnp.zeros(m, jnp.int32),
        accepted=jnp.zeros(m, dtype),
        moves=jnp.zeros(m, dtype),
        t=jnp.asarray(0),
    )

    def cond(c):
        return jnp.any(c["beta"] < 1) & (c["t"] < max_temperatures)

    def body(c):
        step_keys = jax.vmap(lambda key: jax.random.fold_in(key, c["t"]))(keys)
        active = c["beta"] < 1
        delta = jax.vmap(_next_delta, in_axes=(0, 0, None))(c["ll"], 1 - c["beta"], target_ess * P)
        delta = jnp.where(active, delta, 0.0)
        log_w = jax.vmap(_increment)(c["ll"], delta)
        inc = jax.nn.logsumexp(log_w, axis=1) - jnp.log(P)
        log_z = c["log_z"] + jnp.where(active, inc, 0.0)
        beta = jnp.where(active, jnp.where(delta >= 1 - c["beta"], 1.0, c["beta"] + delta), 1.0)
        idx = jax.vmap(_systematic)(jax.vmap(lambda key: jax.random.fold_in(key, 0))(step_keys), log_w)
        idx = jnp.where(active[:, None], idx, jnp.arange(P))
        take = jax.vmap(lambda a, i: a[i])
        u, ll, lp = take(c["u"], idx), take(c["ll"], idx), take(c["lp"], idx)
        # Random-walk Metropolis at the new temperature, scaled to the particles' spread.
        mean = jnp.mean(u, axis=1, keepdims=True)
        cov = jnp.einsum("mpi,mpj->mij", u - mean, u - mean) / P + 1e-6 * jnp.eye(k, dtype=dtype)
        chol = jnp.linalg.cholesky(cov) * c["scale"][:, None, None]

        def move(j, state):
            u, ll, lp, acc = state
            kz, ka = jax.vmap(lambda key: jax.random.split(jax.random.fold_in(key, j + 1)))(step_keys).swapaxes(0, 1)
            z = jax.vmap(lambda key: jax.random.normal(key, (P, k), dtype))(kz)
            u_new = u + jnp.einsum("mij,mpj->mpi", chol, z)
            ll_new, lp_new = loglik(u_new), log_prior(u_new)
            # A proposal without a finite likelihood is never accepted.
            log_ratio = jnp.where(jnp.isfinite(ll_new), beta[:, None] * (ll_new - ll) + lp_new - lp, -jnp.inf)
            uniform = jax.vmap(lambda key: jax.random.uniform(key, (P,), dtype))(ka)
            ok = jnp.log(uniform) < log_ratio
            return (
                jnp.where(ok[..., None], u_new, u),
                jnp.where(ok, ll_new, ll),
                jnp.where(ok, lp_new, lp),
                acc + jnp.mean(ok, axis=1),
            )

        u, ll, lp, acc = lax.fori_loop(0, n_moves, move, (u, ll, lp, jnp.zeros(m, dtype)))
        rate = acc / n_moves
        # Towards the usual random-walk optimum of about a quarter accepted.
        scale = jnp.where(active, c["scale"] * jnp.exp(rate - 0.25), c["scale"])
        return dict(
            u=u, ll=ll, lp=lp, beta=beta, log_z=log_z, scale=scale,
            steps=c["steps"] + active.astype(jnp.int32),
            accepted=c["accepted"] + jnp.where(active, rate, 0.0),
            moves=c["moves"] + active.astype(dtype),
            t=c["t"] + 1,
        )  # fmt: skip

    out = lax.while_loop(cond, body, init)
    no_likelihood = ~jnp.any(jnp.isfinite(ll), axis=1)
    log_z = jnp.where(no_likelihood, -jnp.inf, jnp.where(out["beta"] >= 1, out["log_z"], jnp.nan))
    theta = jax.vmap(jax.vmap(space.theta))(out["u"])
    particles = jnp.stack([theta[name] for name in space.free], axis=-1)  # (m, P, k)
    particles = jnp.where(jnp.isfinite(log_z)[:, None, None], particles, jnp.nan)
    return log_z, out["steps"], out["accepted"] / jnp.maximum(out["moves"], 1), particles


def evidence(
    simulator: Simulator,
    x: Float[ArrayLike, "*n time channels"],
    mask: Bool[ArrayLike, "*n time channels"] | None = None,
    *,
    prior: Prior,
    key: Key,
    n_particles: int = 512,
    n_moves: int = 5,
    target_ess: float = 0.5,
    max_temperatures: int = 200,
    strategy: AbstractStrategy = SharedStep(),
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> Evidence:
    """The marginal likelihood `p(x | M)` of each dataset under one model (`simulator`
    with `prior`), by adaptive tempered sequential Monte Carlo.

    With equal prior model probabilities, choosing the model with the largest
    evidence ([`sgjax.baselines.model_posterior`][]) is the Bayes-optimal choice for
    data drawn from these priors: no method, an SGNN classifier included, makes fewer
    errors on average. Use it as the reference for model selection.

    **Arguments:**

    - `simulator`, `x`, `mask`, `prior`: as for [`sgjax.baselines.fit_mle`][]; the
        prior is integrated over (fixed parameters stay fixed).
    - `key`: a JAX PRNG key; dataset `i` uses `jax.random.fold_in(key, i)`, whatever
        the chunk size.
    - `n_particles`: particles per dataset. The estimate's spread falls as
        `1/√n_particles`.
    - `n_moves`: random-walk Metropolis moves per temperature.
    - `target_ess`: each temperature step keeps this share of `n_particles` as the
        weights' effective sample size; higher means more, smaller steps.
    - `max_temperatures`: the most tempering steps; a dataset that has not reached
        `β = 1` by then gets a NaN estimate.
    - `strategy`: how the particles' trajectories are integrated:
        [`sgjax.SharedStep`][] (default), one batch per chunk, or
        [`sgjax.PerTrajectory`][]. A chunk in which some dataset ends with no finite
        likelihood is run again per trajectory, in case one failed solve took the
        shared batch down with it.
    - `chunk_size`: datasets per compiled call; the last chunk is padded to it. The
        chunk runs until its slowest dataset reaches `β = 1`.

    **Returns:** an [`sgjax.baselines.Evidence`][]: the log evidence per dataset, and
    the posterior samples the sampler ends with.

    **Example:**

    ```python
    ev = {name: evidence(sim, x, prior=p, key=key) for name, (sim, p) in candidates.items()}
    index, probabilities = model_posterior(ev)
    ```
    """
    check_problem(simulator, prior, "integrate", " Its non-fixed parameters are integrated over.")
    check_key(key)
    n_particles = _check_positive_int(n_particles, "n_particles")
    if n_particles < 2:
        raise ValueError(f"`n_particles` must be at least 2, got {n_particles}.")
    n_moves = _check_positive_int(n_moves, "n_moves")
    max_temperatures = _check_positive_int(max_temperatures, "max_temperatures")
    chunk_size = _check_positive_int(chunk_size, "chunk_size")
    if not 0 < target_ess < 1:
        raise ValueError(f"`target_ess` (a share of the particles) must be in (0, 1), got {target_ess!r}.")
    if not isinstance(strategy, AbstractStrategy):
        raise TypeError(
            f"`strategy` must be sgjax.SharedStep() or sgjax.PerTrajectory(), got {type(strategy).__name__}."
        )
    space = Unconstrained(prior)
    x, mask = check_data(simulator, x, mask)
    x = jnp.where(mask, x, 0.0)
    n = x.shape[0]
    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(n))
    size = min(chunk_size, n)
    outs = []
    for x_chunk, mask_chunk, keys_chunk in padded_chunks(size, x, mask, keys):
        args = (space, x_chunk, mask_chunk, keys_chunk, n_particles, n_moves, float(target_ess), max_temperatures)
        out = [np.asarray(a) for a in _smc_chunk(simulator, strategy, *args)]
        if np.any(out[0] == -np.inf) and strategy.rescue() is not None:
            # A shared solve fails for the whole batch if one trajectory fails: solve
            # each particle on its own instead (compiled only if ever needed).
            out = [np.asarray(a) for a in _smc_chunk(simulator, strategy.rescue(), *args)]
        outs.append(out)
    log_z, steps, acceptance, particles = (np.concatenate(a)[:n] for a in zip(*outs))
    samples = {name: particles[..., j] for j, name in enumerate(space.free)}
    return Evidence(
        log_evidence=jnp.asarray(log_z),
        temperatures=jnp.asarray(steps),
        acceptance=jnp.asarray(acceptance),
        n_particles=n_particles,
        samples=samples,
    )


def model_posterior(
    evidences: Mapping[str, Evidence], prior: Mapping[str, float] | None = None
) -> tuple[Int[Array, " n"], Float[Array, "n models"]]:
    """Posterior model probabilities from each model's [`sgjax.baselines.evidence`][]
    on the same datasets: `p(M | x) ∝ p(x | M) p(M)`.

    **Arguments:**

    - `evidences`: model name → `Evidence`, each for the same `n` datasets.
    - `prior`: model name → prior probability (normalised here); `None` for equal
        probabilities.

    **Returns:** `(index, probabilities)`: `index` `(n,)`, the position (in the
    mapping's order) of the most probable model, the Bayes-optimal choice under 0–1
    loss; `probabilities` `(n, models)`.
    """
    if not isinstance(evidences, Mapping) or not evidences:
        raise ValueError("`evidences` must be a non-empty mapping of model name -> Evidence.")
    for name, ev in evidences.items():
        if not isinstance(ev, Evidence):
            raise TypeError(f"evidences[{name!r}] must be an Evidence from evidence(), got {type(ev).__name__}.")
    sizes = {name: len(ev) for name, ev in evidences.items()}
    if len(set(sizes.values())) != 1:
        raise ValueError(f"Every evidence must be for the same datasets, but their sizes differ: {sizes}.")
    if prior is None:
        log_prior = jnp.zeros(len(evidences))
    else:
        if set(prior) != set(evidences):
            raise ValueError(f"`prior` must give a probability for each model {list(evidences)}, got {list(prior)}.")
        p = np.array([prior[name] for name in evidences], dtype=float)
        if np.any(p < 0) or not p.sum() > 0:
            raise ValueError(f"Prior model probabilities must be non-negative and not all zero, got {dict(prior)}.")
        log_prior = jnp.log(jnp.asarray(p / p.sum()))
    log_z = jnp.stack([ev.log_evidence for ev in evidences.values()], axis=1) + log_prior
    probabilities = jax.nn.softmax(log_z, axis=1)
    return jnp.argmax(log_z, axis=1), probabilities
