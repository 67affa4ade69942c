"""One map between a scalar parameter's support and the real line, for learning
targets and the classical baselines alike.

The map is numpyro's `biject_to(support)`: the identity on the real line, `log` for a
positive value (`log(v − lo)` above a lower bound `lo`), a scaled logit on an interval
`(lo, hi)`. What numpyro leaves out, and every user of the map needs, is what to do
with a value *on* the boundary of its support: a uniform prior in float32 returns its
lower bound now and then, an optimiser's fit can end on it, rounding can put a value a
hair outside. `to_unconstrained` first moves such a value just inside:

- on an interval, into `[lo + margin·(hi − lo), hi − margin·(hi − lo)]` (with the
  default `margin = 1e-6`, the logit stays within ±13.8);
- beyond a single bound, at least the smallest normal number (or one rounding step,
  whichever is larger) away from it (`log` stays above `log(tiny)` ≈ −87 in float32).

So the unconstrained value is always finite, and a value inside those limits maps
exactly as numpyro maps it. `from_unconstrained` is numpyro's forward map.
"""

import jax.numpy as jnp
from jaxtyping import Array, ArrayLike
from numpyro.distributions import constraints
from numpyro.distributions.transforms import biject_to, Transform

from ._prior import bounds


#: How far inside an interval `(lo, hi)` a value is moved, as a share of `hi − lo`.
MARGIN = 1e-6


def transform(support: constraints.Constraint) -> Transform:
    """numpyro's bijection from the real line onto `support`, with an error that
    says what to do where there is none (a discrete support, say)."""
    try:
        return biject_to(support)
    except NotImplementedError:
        raise TypeError(
            f"A parameter with support {support} has no map to the real line: give it a "
            "continuous prior (Uniform, LogUniform, LogNormal, Normal, TruncatedNormal, Gamma, ...)."
        ) from None


def clip_to_support(support: constraints.Constraint, value: ArrayLike, *, margin: float = MARGIN) -> Array:
    """`value` moved just inside `support` where it lies on (or beyond) a bound; see
    the module's description. Values with no static bounds pass unchanged."""
    value = jnp.asarray(value, jnp.result_type(value, float))
    b = bounds(support)
    if b is None:
        return value
    lo, hi = b
    finfo = jnp.finfo(value.dtype)
    if lo > -float("inf") and hi < float("inf"):
        step = margin * (hi - lo)
        return jnp.clip(value, lo + step, hi - step)
    if lo > -float("inf"):
        return jnp.maximum(value, lo + max(abs(lo) * float(finfo.eps), float(finfo.tiny)))
    if hi < float("inf"):
        return jnp.minimum(value, hi - max(abs(hi) * float(finfo.eps), float(finfo.tiny)))
    return value


def to_unconstrained(support: constraints.Constraint, value: ArrayLike, *, margin: float = MARGIN) -> Array:
    """The unconstrained coordinate of `value` (elementwise): numpyro's
    `biject_to(support).inv` after `clip_to_support`. Always finite for finite
    `value`."""
    value = clip_to_support(support, value, margin=margin)
    u = jnp.asarray(transform(support).inv(value))
    # An interval so narrow against its bounds that the margin rounds away: the
    # logit of the margin itself.
    edge = -jnp.log(jnp.asarray(margin, u.dtype)) + jnp.log1p(-jnp.asarray(margin, u.dtype))
    return jnp.where(jnp.isinf(u), jnp.sign(u) * edge, u)


def from_unconstrained(support: constraints.Constraint, u: ArrayLike) -> Array:
    """The value in `support` of the unconstrained coordinate `u` (elementwise)."""
    return jnp.asarray(transform(support)(jnp.asarray(u)))


def log_abs_det_jacobian(support: constraints.Constraint, u: ArrayLike) -> Array:
    """`log |dθ/du|` at `u`, for a density on the unconstrained coordinate:
    `log p_u(u) = log p_θ(θ(u)) + log_abs_det_jacobian(support, u)`."""
    t = transform(support)
    u = jnp.asarray(u)
    return jnp.asarray(t.log_abs_det_jacobian(u, t(u)))
