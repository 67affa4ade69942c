"""A NUTS reference posterior: numpyro's No-U-Turn sampler on the exact log posterior
(through diffrax), vmapped over datasets and chains, warmup included, in one compiled
call."""

import warnings

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import ArrayLike, Bool, Float
from numpyro.diagnostics import effective_sample_size, split_gelman_rubin
from numpyro.infer.hmc import hmc

from .._custom_types import check_key, Key
from .._simulation import Prior, Simulator
from ._likelihood import check_data, check_problem, negative_log_likelihood, padded_chunks, Unconstrained
from ._samples import AbstractSamples


#: Datasets per compiled call. Every dataset × chain of a chunk is one member of a
#: vmapped sampler: each NUTS iteration costs as much as the longest trajectory in the
#: chunk, so very large chunks waste work. Measured on a loaded 2-core CPU (SIR, β and
#: γ free, 60 days, 2 chains × (500 + 1000) iterations), seconds per dataset: 6.8
#: alone, 4.0 in chunks of 8, 3.7 of 16, 4.1 of 32.
DEFAULT_CHUNK_SIZE = 16

#: Above this split R-hat, `nuts` warns that the chains have not mixed.
RHAT_WARN = 1.05


class ReferencePosterior(AbstractSamples):
    """NUTS samples of the posterior for a batch of `n` datasets (NumPy arrays,
    dataset first, natural units).

    **Fields:**

    - `samples`: free parameter name → `(n, num_chains × num_samples)`, chain after
        chain (reshape to `(n, num_chains, num_samples)` to separate them). Fixed
        parameters of the prior are left out.
    - `r_hat`: name → `(n,)`, the split Gelman–Rubin statistic; near 1 when the chains
        agree.
    - `ess`: name → `(n,)`, the effective sample size over all chains.
    - `divergences`: `(n,)`, divergent transitions after warmup, all chains.
    - `num_steps`: `(n,)`, the mean number of leapfrog steps (gradient evaluations,
        each an ODE solve and its adjoint) per draw after warmup: the cost per draw.
    - `num_chains`: chains per dataset.

    **Methods:** those of every [`sgjax.AbstractPosterior`][]: `mean()`, `std()`,
    `quantile(q)`, `interval(mass)`, `box(i)`, `theta(i)`, `stacked()`.
    """

    samples: dict[str, np.ndarray]
    r_hat: dict[str, np.ndarray]
    ess: dict[str, np.ndarray]
    divergences: np.ndarray
    num_steps: np.ndarray
    num_chains: int = eqx.field(static=True)


def _initial_point(simulator, space, adjoint, x, mask, key, n_init):
    """The best of `n_init` prior draws by log posterior: a start in the bulk of the
    posterior, away from flat or failing regions of the prior."""
    theta = space.prior.sample(key, n_init)
    u = jax.vmap(space.u)(theta)
    lp = -jax.vmap(lambda u: _potential(simulator, space, adjoint, u, x, mask))(u)
    return u[jnp.argmax(jnp.where(jnp.isnan(lp), -jnp.inf, lp))]


@eqx.filter_jit
def _potential(simulator, space, adjoint, u, x, mask):
    # Its own jit, so that its batched form is built once and reused (JAX caches the
    # batching of a jitted function) while vmap works through the sampler's nested
    # loops, instead of re-batching the ODE solve and its adjoint at every level.
    return -space.log_prior(u) + negative_log_likelihood(simulator, space, x, mask, adjoint=adjoint)(u)


@eqx.filter_jit
@eqx.debug.assert_max_traces(max_traces=None)  # counts compilations for the tests
def _nuts_chunk(
    simulator,
    space,
    adjoint,
    x,
    mask,
    key,
    num_chains: int,
    num_warmup: int,
    num_samples: int,
    n_init: int,
    target_accept_prob: float,
    max_tree_depth: int,
    dense_mass: bool,
):

    def one_chain(x, mask, key):
        kinit, krun = jax.random.split(key)
        u0 = _initial_point(simulator, space, adjoint, x, mask, kinit, n_init)

        def potential(u):
            return _potential(simulator, space, adjoint, u, x, mask)

        init_kernel, sample_kernel = hmc(potential_fn=potential, algo="NUTS")
        state = init_kernel(
            u0,
            num_warmup,
            target_accept_prob=target_accept_prob,
            max_tree_depth=max_tree_depth,
            dense_mass=dense_mass,
            rng_key=krun,
        )

        def step(s, _):
            s = sample_kernel(s)
            return s, (s.z, s.diverging, s.num_steps)

        # Warmup and sampling in one loop: the sampler (and the ODE solve and its
        # adjoint inside it) is compiled once, not once per phase.
        _, (u, diverging, steps) = jax.lax.scan(step, state, None, length=num_warmup + num_samples)
        u, diverging, steps = u[num_warmup:], diverging[num_warmup:], steps[num_warmup:]
        return jax.vmap(space.theta)(u), jnp.sum(diverging), jnp.mean(steps)

    # One flat vmap over dataset × chain: vmapping the sampler's nested loops twice
    # doubles the (already long) tracing of their batching rules.
    m = x.shape[0]
    keys = jax.random.split(key, m * num_chains)
    theta, div, steps = jax.vmap(one_chain)(jnp.repeat(x, num_chains, 0), jnp.repeat(mask, num_chains, 0), keys)
    theta = {name: theta[name].reshape(m, num_chains, num_samples) for name in space.free}
    return theta, div.reshape(m, num_chains).sum(axis=1), steps.reshape(m, num_chains).mean(axis=1)


def _check_int(value, name, low=1):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"`{name}` must be an integer >= {low}, got {value!r}.")
    return int(value)


def nuts(
    simulator: Simulator,
    x: Float[ArrayLike, "*n time channels"],
    mask: Bool[ArrayLike, "*n time channels"] | None = None,
    *,
    prior: Prior,
    key: Key,
    num_warmup: int = 500,
    num_samples: int = 1000,
    num_chains: int = 2,
    n_init: int = 16,
    target_accept_prob: float = 0.8,
    max_tree_depth: int = 10,
    dense_mass: bool = True,
    adjoint: dfx.AbstractAdjoint = dfx.ForwardMode(),
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> ReferencePosterior:
    """A reference posterior for each dataset by the No-U-Turn sampler.

    Runs numpyro's NUTS on the potential `−log p(u | x)`
    ([`sgjax.baselines.log_posterior`][]: prior, Jacobian and the likelihood through
    diffrax) in the unconstrained space of [`sgjax.baselines.Unconstrained`][], and
    maps the draws back to natural units. Each chain starts at the best of `n_init`
    prior draws by log posterior, so that a flat or failing region of the prior does
    not strand it; step size and a mass matrix are adapted during warmup. Every
    dataset × chain of a chunk is one member of a single vmapped, compiled sampler
    (warmup included), so many datasets of one shape compile once.

    **Arguments:**

    - `simulator`: the [`sgjax.Simulator`][], with an observation model.
    - `x`: one series `(time, channels)` or a batch `(n, time, channels)`.
    - `mask`: `True` where observed, broadcastable to `x`; `None` observes all.
        Masked entries leave the posterior unchanged whatever their value.
    - `prior`: an [`sgjax.Prior`][] over every parameter the simulator reads; fix a
        parameter with a number to leave it out of the sampling.
    - `key`: a JAX PRNG key.
    - `num_warmup`, `num_samples`: iterations per chain for adaptation (discarded)
        and for the draws kept.
    - `num_chains`: independent chains per dataset (≥ 2 for a meaningful R-hat).
    - `n_init`: prior draws per chain to choose its starting point from.
    - `target_accept_prob`, `max_tree_depth`: passed to numpyro's NUTS; raise
        `target_accept_prob` (e.g. 0.95) if there are divergences.
    - `dense_mass`: adapt a full mass matrix (default) rather than a diagonal one.
        The parameters of ODE models are typically strongly correlated (β and γ
        through R0); on SIR a dense matrix took 3.4× fewer leapfrog steps per draw
        and gave twice the effective samples. With many parameters (≳ 50) a
        diagonal one may be cheaper.
    - `adjoint`: how the gradient of the ODE solve is computed, as in
        [`sgjax.baselines.fit_mle`][]. The default, `diffrax.ForwardMode()`, carries
        one tangent per free parameter. On SIR with reporting and negative-binomial
        noise (4 free parameters, 50 days, 8 datasets × 2 chains × 400 iterations,
        2-core CPU) it sampled about as fast as reverse mode (156 s against 146 s);
        reverse mode scales better to many parameters.
    - `chunk_size`: datasets per compiled call (fewer if there are fewer datasets);
        the last chunk is padded to it.

    Compiling the sampler takes ~15–30 s on a CPU (NUTS around an ODE solve and its
    adjoint); it happens once per shape and configuration. Sampling SIR with β and γ
    free (60 days, 2 chains × (500 + 1000) iterations) then took ~4 s per dataset in
    chunks of 16 on a loaded 2-core CPU, ~7 s alone.

    **Returns:** a [`sgjax.baselines.ReferencePosterior`][]. Warns if any split
    R-hat exceeds 1.05 or any transition diverged.

    **Example:**

    ```python
    prior = sgjax.Prior(beta=dist.LogUniform(0.1, 2.0), gamma=dist.LogUniform(0.05, 0.5))
    post = nuts(sim, sims.observations[:4], prior=prior, key=jax.random.key(0))
    post.mean()["beta"], post.quantile([0.05, 0.95])["gamma"]
    ```
    """
    check_problem(simulator, prior, "sample from", " NUTS samples its non-fixed parameters.")
    check_key(key)
    num_warmup = _check_int(num_warmup, "num_warmup", low=0)
    num_samples = _check_int(num_samples, "num_samples", low=4)  # split R-hat halves each chain
    num_chains = _check_int(num_chains, "num_chains")
    n_init = _check_int(n_init, "n_init")
    max_tree_depth = _check_int(max_tree_depth, "max_tree_depth")
    chunk_size = _check_int(chunk_size, "chunk_size")
    if not isinstance(adjoint, dfx.AbstractAdjoint):
        raise TypeError(
            "`adjoint` must be a diffrax adjoint such as diffrax.ForwardMode() or "
            f"diffrax.RecursiveCheckpointAdjoint(), got {type(adjoint).__name__}."
        )
    if not 0.0 < target_accept_prob < 1.0:
        raise ValueError(f"`target_accept_prob` must be in (0, 1), got {target_accept_prob!r}.")
    space = Unconstrained(prior)
    x, mask = check_data(simulator, x, mask)
    x = jnp.where(mask, x, 0.0)  # masked values never reach the potential, nor its gradient
    n = x.shape[0]
    size = min(chunk_size, n)
    keys = jax.random.split(key, -(-n // size))
    outs = []
    for i, (xc, mc) in enumerate(padded_chunks(size, x, mask)):
        outs.append(
            _nuts_chunk(
                simulator,
                space,
                adjoint,
                xc,
                mc,
                keys[i],
                num_chains,
                num_warmup,
                num_samples,
                n_init,
                float(target_accept_prob),
                max_tree_depth,
                bool(dense_mass),
            )
        )
    draws, div, steps = jax.tree.map(lambda *a: np.concatenate([np.asarray(b) for b in a])[:n], *outs)
    # numpyro's diagnostics take (chains, draws, ...): datasets ride along behind.
    r_hat = {k: split_gelman_rubin(np.moveaxis(v, 0, -1)) for k, v in draws.items()}
    ess = {k: effective_sample_size(np.moveaxis(v, 0, -1)) for k, v in draws.items()}
    samples = {k: v.reshape(n, num_chains * num_samples) for k, v in draws.items()}
    _warn(r_hat, div, n)
    return ReferencePosterior(
        samples=samples, r_hat=r_hat, ess=ess, divergences=div, num_steps=steps, num_chains=num_chains
    )


def _warn(r_hat, div, n):
    worst = np.max(np.stack([np.nan_to_num(v, nan=np.inf) for v in r_hat.values()]), axis=0)
    bad = int(np.sum(worst > RHAT_WARN))
    if bad:
        warnings.warn(
            f"NUTS chains have not mixed for {bad} of {n} datasets (split R-hat up to "
            f"{float(np.max(worst)):.3g} > {RHAT_WARN}; see `ReferencePosterior.r_hat`). "
            "Raise `num_warmup` and `num_samples`, add chains, or check for a multimodal "
            "posterior.",
            stacklevel=3,
        )
    n_div = int(np.sum(div))
    if n_div:
        warnings.warn(
            f"{n_div} divergent transitions after warmup in {int(np.sum(div > 0))} of {n} "
            "datasets (see `ReferencePosterior.divergences`); those posteriors may be "
            "biased. Raise `target_accept_prob` (e.g. 0.95) or reparametrise the prior.",
            stacklevel=3,
        )
