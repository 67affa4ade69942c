"""The likelihood of one observed series under a simulator, differentiable through
diffrax, and the map between a prior's constrained parameters and an unconstrained
vector that the classical baselines (maximum likelihood, NUTS) work in."""

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import numpyro.distributions as dist
from jaxtyping import Array, Bool, Float

from .._custom_types import Params
from .._simulation import _support as _support, Prior, Simulator, solve_signal_one, support_of


#: The clean signal is floored here before the log density of a noise model whose
#: mean must be positive (counts, log-normal), so that a count observed where the
#: model predicts exactly zero gives a large finite penalty and a finite gradient
#: instead of `-inf` and NaN. Signed (Gaussian) signals are left as they are.
SIGNAL_FLOOR = 1e-6


def floor_signal(simulator: Simulator, signal: Array) -> Array:
    """`signal`, floored at `SIGNAL_FLOOR` where the noise model needs a positive
    mean."""
    assert simulator.observation is not None, "check_problem refuses a simulator with no observation model"
    return jnp.maximum(signal, SIGNAL_FLOOR) if simulator.observation.noise.positive_mean else signal


def log_likelihood(
    simulator: Simulator,
    theta: Params,
    x: Float[Array, "time channels"],
    mask: Bool[Array, "time channels"] | None = None,
    *,
    adjoint: dfx.AbstractAdjoint | None = None,
) -> Float[Array, ""]:
    """`log p(x | θ)` for one series under `simulator`'s observation model, with
    entries where `mask` is `False` left out; `-inf` if the solve fails.

    `θ` is a dict of scalars. Differentiable in `θ`: in reverse mode through
    diffrax's default checkpointed adjoint, or in forward mode (Jacobians, Hessians)
    with `adjoint=diffrax.ForwardMode()`. Written for one series: `jax.vmap` it over
    datasets or parameter sets.
    """
    if simulator.observation is None:
        raise ValueError(
            "The simulator has no observation model, so the data have no likelihood. "
            "Build it with e.g. observation=ObservationModel(Poisson())."
        )
    # Unrolled Runge–Kutta stages: MLE fits 1.5x faster (SIR, 64 datasets x 4 starts).
    _, signal, valid = solve_signal_one(simulator, theta, adjoint=adjoint, unrolled=True)
    lp = simulator.observation.log_prob(x, floor_signal(simulator, signal), theta, simulator.ts, mask)
    return jnp.where(valid & jnp.isfinite(lp), lp, -jnp.inf)


def _failed(dtype):
    """The objective's value where the likelihood or its gradient is not finite."""
    return jnp.asarray(jnp.finfo(dtype).max / 4, dtype)


def negative_log_likelihood(simulator: Simulator, space: "Unconstrained", x, mask, *, adjoint=None):
    """`u ↦ −ℓ(θ(u))` for one dataset, differentiable (`jax.grad`, `jax.jvp`) with
    its derivative computed through `adjoint`: in forward mode, one tangent per free
    parameter, for `diffrax.ForwardMode()`; otherwise in reverse mode.

    Where the value or its gradient is not finite (a failed solve, an overflow) the
    value is a huge finite constant and the gradient zero: an optimiser's line search
    or a sampler's accept step then rejects moves into such regions, and an
    optimiser that starts in one stops at once instead of holding up every other
    member of a vmapped batch.
    """
    # The arrays (data, time grid, prior parameters) are explicit arguments of the
    # custom derivative, not closed over: under an outer jit or vmap they are tracers.
    dynamic, static = eqx.partition((simulator, space, x, mask), eqx.is_array)

    def value_and_grad(u, dynamic):
        simulator, space, x, mask = eqx.combine(dynamic, static)

        def f(u):
            return -log_likelihood(simulator, space.theta(u), x, mask, adjoint=adjoint)

        if isinstance(adjoint, dfx.ForwardMode):
            basis = jnp.eye(u.shape[0], dtype=u.dtype)
            value, grad = jax.vmap(lambda t: jax.jvp(f, (u,), (t,)), out_axes=(None, 0))(basis)
        else:
            value, grad = jax.value_and_grad(f)(u)
        ok = jnp.isfinite(value) & jnp.all(jnp.isfinite(grad))
        return jnp.where(ok, value, _failed(value.dtype)), jnp.where(ok, grad, 0.0)

    @jax.custom_jvp
    def nll(u, dynamic):
        return value_and_grad(u, dynamic)[0]

    @nll.defjvp
    def _(primals, tangents):
        # Optimisers and samplers linearise the objective and transpose that. Neither
        # works on the ODE solve under vmap (a checkpointed solve cannot be linearised
        # there, a forward-mode one cannot be transposed), so the derivative is given
        # as the gradient, and `du ↦ grad · du` transposes trivially. The data are
        # constants: their tangents are ignored.
        (u, dynamic), (du, _) = primals, tangents
        value, grad = value_and_grad(u, dynamic)
        return value, jnp.dot(grad, du)

    return lambda u: nll(u, dynamic)


class Unconstrained(eqx.Module):
    """The free parameters of a prior as one unconstrained vector `u`.

    Each non-degenerate prior is mapped through the one map between a support and
    the real line that sgjax's learning targets use too (numpyro's
    `biject_to(support)`: log for a positive parameter, a scaled logit for an
    interval; a value on a bound is moved just inside, so `u` is finite); parameters
    fixed by a `Delta` prior keep their value and are not part of `u`.

    **Arguments:** `prior`, an [`sgjax.Prior`][].
    """

    prior: Prior
    free: tuple[str, ...] = eqx.field(static=True)

    def __init__(self, prior: Prior):
        if not isinstance(prior, Prior):
            raise TypeError(f"`prior` must be an sgjax.Prior, got {type(prior).__name__}.")
        self.prior = prior
        self.free = tuple(n for n, d in prior.distributions.items() if not isinstance(d, dist.Delta))
        if not self.free:
            raise ValueError("Every parameter of the prior is fixed; there is nothing to fit.")

    @property
    def size(self) -> int:
        return len(self.free)

    def theta(self, u: Float[Array, " k"]) -> Params:
        """`θ` (a dict of scalars, fixed parameters included) for one `u`."""
        out = {n: jnp.asarray(d.v) for n, d in self.prior.distributions.items() if isinstance(d, dist.Delta)}
        for i, name in enumerate(self.free):
            out[name] = _support.from_unconstrained(support_of(self.prior.distributions[name]), u[i])
        return out

    def u(self, theta: Params) -> Float[Array, " k"]:
        """The unconstrained vector for one `θ` (a dict of scalars)."""
        return jnp.stack(
            [_support.to_unconstrained(support_of(self.prior.distributions[n]), theta[n]) for n in self.free]
        )

    def log_prior(self, u: Float[Array, " k"]) -> Float[Array, ""]:
        """The prior's log density of `u`: `log p(θ(u)) + log |dθ/du|`."""
        total = 0.0
        for i, name in enumerate(self.free):
            d = self.prior.distributions[name]
            value = _support.from_unconstrained(support_of(d), u[i])
            total = total + d.log_prob(value) + _support.log_abs_det_jacobian(support_of(d), u[i])
        return jnp.asarray(total)


def log_posterior(
    simulator: Simulator,
    space: Unconstrained,
    u: Float[Array, " k"],
    x: Float[Array, "time channels"],
    mask: Bool[Array, "time channels"] | None = None,
) -> Float[Array, ""]:
    """The unnormalised log posterior density of `u` (prior, Jacobian and
    likelihood), as NUTS needs it."""
    return space.log_prior(u) + log_likelihood(simulator, space.theta(u), x, mask)


def check_problem(simulator: Simulator, prior: Prior, action: str, prior_hint: str = "") -> None:
    """Refuse a simulator without a likelihood or a prior that does not fit it;
    `action` says what the baseline does with the likelihood ("maximise"), and
    `prior_hint` what it does with the prior."""
    if not isinstance(simulator, Simulator):
        raise TypeError(f"`simulator` must be an sgjax.Simulator, got {type(simulator).__name__}.")
    if simulator.observation is None:
        raise ValueError(
            f"The simulator has no observation model, so the data have no likelihood to "
            f"{action}. Build it with e.g. observation=ObservationModel(Poisson())."
        )
    if not isinstance(prior, Prior):
        raise TypeError(f"`prior` must be an sgjax.Prior, got {type(prior).__name__}.{prior_hint}")
    prior.check_model(simulator.model, simulator.param_names, support=simulator.parameter_support)


def padded_chunks(size: int, *arrays):
    """Chunks `(a[i:i + size], b[i:i + size], ...)` over the leading axis of
    `arrays`, the last one padded by repeating its final entry, so that every call of
    a compiled chunk function has one shape."""
    n = arrays[0].shape[0]
    for start in range(0, n, size):
        parts = [a[start : start + size] for a in arrays]
        short = size - parts[0].shape[0]
        if short:
            parts = [jnp.concatenate([a, jnp.repeat(a[-1:], short, axis=0)]) for a in parts]
        yield tuple(parts)


def check_data(simulator: Simulator, x, mask) -> tuple[Array, Array]:
    """Observations as a batch `(n, time, channels)` with a matching mask, checked
    against the simulator: right shape, valid for its noise model."""
    x = jnp.asarray(x, dtype=simulator.ts.dtype)
    n_time = len(simulator.ts)
    n_ch = jax.eval_shape(
        simulator.signal, jax.ShapeDtypeStruct((n_time + 1, len(simulator.model.state_names)), x.dtype)
    ).shape[1]
    if x.ndim == 2:
        x = x[None]
    if x.ndim != 3 or x.shape[1:] != (n_time, n_ch):
        raise ValueError(
            f"The observations must have shape (n, time, channels) = (n, {n_time}, {n_ch}) "
            f"for this simulator, or ({n_time}, {n_ch}) for one series; got {x.shape}."
        )
    if mask is None:
        mask = jnp.ones(x.shape, bool)
    else:
        mask = jnp.broadcast_to(jnp.asarray(mask, bool), x.shape)
    if simulator.observation is not None:
        simulator.observation.check_data(jnp.where(mask, x, 0.0))
    return x, mask
