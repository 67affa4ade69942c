"""Wald intervals for maximum-likelihood fits: the Laplace approximation around θ̂ in
the unconstrained space, pushed to any positive quantity by the delta method."""

import statistics
from collections.abc import Callable

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Bool, Float

from .._custom_types import Params
from .._simulation import Prior, Simulator
from ._likelihood import check_data, log_likelihood, Unconstrained
from ._mle import MLEResult


@eqx.filter_jit
def _covariances(simulator, space, u, x, mask):
    def one(u, x, mask):
        # Forward over forward through diffrax (its reverse-mode adjoint does not
        # support forward-over-reverse): the exact Hessian of a few parameters.
        f = lambda v: log_likelihood(simulator, space.theta(v), x, mask, adjoint=dfx.ForwardMode())  # noqa: E731
        hess = jax.jacfwd(jax.jacfwd(f))(u)
        info = -(hess + hess.T) / 2
        cov = jnp.linalg.inv(info)
        ok = jnp.all(jnp.isfinite(cov)) & jnp.all(jnp.linalg.eigvalsh(info) > 0)
        return jnp.where(ok, cov, jnp.nan), ok

    return jax.vmap(one)(u, x, mask)


class Laplace(eqx.Module):
    """Gaussian approximations `u ~ N(û, I(û)⁻¹)` around maximum-likelihood fits, in
    the unconstrained space of the prior's support, `I` the observed information.

    Build with [`sgjax.baselines.laplace`][]. `ok` is `False` where the information
    matrix is not positive definite (a fit on a boundary or a flat direction); their
    intervals are NaN.
    """

    space: Unconstrained
    u: Float[Array, "n k"]
    cov: Float[Array, "n k k"]
    ok: Bool[Array, " n"]

    def interval(self, quantity: Callable[[Params], Array], mass: float = 0.9, log: bool = True):
        """`(estimate, lower, upper)`, each `(n,)`, for a function of `θ` (a dict of
        scalars → a scalar), by the delta method on `log quantity` (for a positive
        quantity, so the interval stays positive) or on the quantity itself
        (`log=False`)."""
        if not 0 < mass < 1:
            raise ValueError(f"`mass` must be in (0, 1), got {mass}.")
        g = (lambda u: jnp.log(quantity(self.space.theta(u)))) if log else (lambda u: quantity(self.space.theta(u)))
        value = jax.vmap(g)(self.u)
        grad = jax.vmap(jax.grad(g))(self.u)
        se = jnp.sqrt(jnp.einsum("ni,nij,nj->n", grad, self.cov, grad))
        z = statistics.NormalDist().inv_cdf(0.5 + mass / 2)
        lo, hi = value - z * se, value + z * se
        if log:
            value, lo, hi = jnp.exp(value), jnp.exp(lo), jnp.exp(hi)
        return np.asarray(value), np.asarray(lo), np.asarray(hi)


def laplace(
    simulator: Simulator,
    x: Float[ArrayLike, "*n time channels"],
    mask: Bool[ArrayLike, "*n time channels"] | None = None,
    *,
    prior: Prior,
    fit: MLEResult,
) -> Laplace:
    """The Laplace approximation around each fit of [`sgjax.baselines.fit_mle`][] (the
    same data, mask and prior), for Wald intervals with `Laplace.interval`.

    **Arguments:** as for `fit_mle`, plus `fit`, its result. The observed information
    is the exact Hessian of the log likelihood (forward-mode through diffrax).
    """
    x, mask = check_data(simulator, x, mask)
    if not isinstance(fit, MLEResult) or len(fit) != x.shape[0]:
        raise ValueError(f"`fit` must be the MLEResult of fit_mle on these {x.shape[0]} datasets.")
    space = Unconstrained(prior)
    u = jax.vmap(space.u)({n: fit.theta[n] for n in space.free})
    cov, ok = _covariances(simulator, space, u, x, mask)
    return Laplace(space, u, cov, ok)
