"""The one map between a parameter's support and the real line (sgjax._support):
numpyro's bijection inside the support, finite at and beyond its bounds, and the
change-of-variables density against closed forms."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import pytest
from numpyro.distributions import constraints
from numpyro.distributions.transforms import biject_to

import sgjax
from sgjax._simulation import _support as _support
from sgjax.baselines import Unconstrained


SUPPORTS = (
    constraints.real,
    constraints.positive,
    constraints.greater_than(1.0),
    constraints.less_than(2.0),
    constraints.unit_interval,
    constraints.interval(0.1, 2.0),
)


@pytest.mark.parametrize("support", SUPPORTS, ids=str)
def test_numpyros_map_inside_and_finite_on_the_bounds(support):
    b = _support.bounds(support)
    lo, hi = b
    # Interior points (well inside any margin): exactly numpyro's map, and back.
    base = np.array([-3.0, -0.5, 0.0, 0.7, 4.0], np.float32)
    inside = np.asarray(biject_to(support)(base))
    u = _support.to_unconstrained(support, inside)
    np.testing.assert_array_equal(u, biject_to(support).inv(jnp.asarray(inside)))
    np.testing.assert_allclose(_support.from_unconstrained(support, u), inside, rtol=1e-6)
    # On a bound, and a rounding step beyond it: finite, and mapped back just inside.
    edges = [v for v in (lo, hi) if np.isfinite(v)]
    for v in edges:
        beyond = np.float32(v - 1e-3) if v == lo else np.float32(v + 1e-3)
        u = _support.to_unconstrained(support, jnp.array([v, beyond], jnp.float32))
        assert np.all(np.isfinite(u)), (support, v, u)
        back = np.asarray(_support.from_unconstrained(support, u))
        assert np.all((back >= lo) & (back <= hi))
    if np.isfinite(lo) and np.isfinite(hi):
        # The margin: the logit of 1e-6 at either end (in float64: in float32 1 − 1e-6
        # rounds by ~6e-8).
        with jax.enable_x64(True):
            u = _support.to_unconstrained(support, jnp.array([lo, hi], jnp.float64))
        np.testing.assert_allclose(np.abs(u), np.log(1e6 - 1), rtol=1e-6)


def test_log_abs_det_jacobian_matches_closed_forms():
    u = jnp.linspace(-5.0, 5.0, 11)
    # θ = exp(u): dθ/du = exp(u).
    np.testing.assert_allclose(_support.log_abs_det_jacobian(constraints.positive, u), u, rtol=1e-6)
    # θ = lo + (hi − lo) σ(u): dθ/du = (hi − lo) σ(u) (1 − σ(u)).
    s = jax.nn.sigmoid(u)
    want = np.log(1.9) + np.log(s) + np.log1p(-s)
    np.testing.assert_allclose(_support.log_abs_det_jacobian(constraints.interval(0.1, 2.0), u), want, rtol=1e-5)
    with pytest.raises(TypeError, match="no map to the real line"):
        _support.transform(constraints.nonnegative_integer)


def test_baselines_space_uses_it_and_is_finite_on_a_bound():
    prior = sgjax.Prior(a=dist.Uniform(0.0, 1.0), b=dist.LogNormal(0.0, 1.0), c=2.0)
    space = Unconstrained(prior)
    assert space.free == ("a", "b")
    # A uniform draw on its lower bound, a log-normal draw of 0 (underflow): finite u.
    u = space.u({"a": jnp.float32(0.0), "b": jnp.float32(0.0)})
    assert np.all(np.isfinite(u))
    theta = space.theta(jnp.array([0.3, -0.2]))
    assert float(theta["c"]) == 2.0
    np.testing.assert_allclose(theta["a"], jax.nn.sigmoid(0.3), rtol=1e-6)
    np.testing.assert_allclose(theta["b"], np.exp(-0.2), rtol=1e-6)
    # The prior's density on u: the standard logistic for U(0, 1), the standard
    # normal for log-normal b (log θ ~ N(0, 1)).
    a, b = 0.3, -0.2
    want = -np.log1p(np.exp(-a)) - np.log1p(np.exp(a)) + (-0.5 * b**2 - 0.5 * np.log(2 * np.pi))
    np.testing.assert_allclose(space.log_prior(jnp.array([a, b])), want, rtol=1e-5)
