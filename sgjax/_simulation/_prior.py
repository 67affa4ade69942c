"""A joint prior over named scalar parameters, built from numpyro distributions."""

import difflib
import math
from collections.abc import Mapping
from typing import cast

import equinox as eqx
import jax
import jax.core
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
from jaxtyping import Array, Bool, Float
from numpyro.distributions import constraints

from .._custom_types import Key, Params


def bounds(constraint: constraints.Constraint | None) -> tuple[float, float] | None:
    """The interval `(low, high)` a scalar constraint allows, or `None` if it is not
    an interval or there is none (then nothing is checked)."""
    if constraint is constraints.real:
        return -math.inf, math.inf
    low = getattr(constraint, "lower_bound", None)
    high = getattr(constraint, "upper_bound", None)
    if low is None and high is None:
        return None
    try:
        low = -math.inf if low is None else float(low)
        high = math.inf if high is None else float(high)
    except TypeError:  # traced or array-valued bounds: nothing static to check
        return None
    return low, high


def support_of(d: dist.Distribution) -> constraints.Constraint:
    """`d.support`: numpyro types it as optional, but every distribution has one."""
    support = d.support
    assert support is not None, f"{type(d).__name__} has no support"
    return support


def suggest(name: str, names) -> str:
    close = difflib.get_close_matches(name, list(names), n=1)
    return f" Did you mean {close[0]!r}?" if close else ""


class Prior(eqx.Module):
    """Independent priors over named scalar parameters.

    **Arguments:** a mapping (or keyword arguments) from parameter name to a scalar
    numpyro distribution — `Uniform`, `LogUniform`, `Normal`, `LogNormal`,
    `TruncatedNormal`, `Gamma`, ... — or a number to fix a parameter.

    **Example:**

    ```python
    import numpyro.distributions as dist
    prior = sgjax.Prior(beta=dist.LogUniform(0.1, 2.0), gamma=dist.Uniform(0.05, 0.5))
    theta = prior.sample(jax.random.key(0), 1000)   # {"beta": (1000,), "gamma": (1000,)}
    ```
    """

    distributions: dict[str, dist.Distribution]

    def __init__(self, distributions: Mapping | None = None, /, **kwargs):
        items = dict(distributions or {})
        overlap = set(items) & set(kwargs)
        if overlap:
            raise ValueError(f"Parameters {sorted(overlap)} are given twice.")
        items.update(kwargs)
        if not items:
            raise ValueError("A prior needs at least one parameter.")
        out = {}
        for name, d in items.items():
            if not isinstance(name, str):
                raise TypeError(f"Parameter names must be strings, got {name!r}.")
            if isinstance(d, (int, float)):
                d = dist.Delta(jnp.asarray(float(d)))
            if not isinstance(d, dist.Distribution):
                raise TypeError(
                    f"The prior for {name!r} must be a numpyro distribution or a number, got {type(d).__name__}."
                )
            if d.batch_shape != () or d.event_shape != ():
                raise ValueError(
                    f"The prior for {name!r} must be a scalar distribution, but has "
                    f"batch shape {d.batch_shape} and event shape {d.event_shape}. Give "
                    "each parameter its own scalar distribution."
                )
            _validate(name, d)
            # numpyro keeps Python numbers as pytree leaves; as arrays, a prior with new
            # values reuses compiled code instead of retracing.
            out[name] = jax.tree.map(lambda x: jnp.asarray(x) if isinstance(x, (int, float)) else x, d)
        self.distributions = out

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.distributions)

    def sample(self, key: Key, n: int | None = None) -> Params:
        """Draw `n` joint samples (a dict of arrays of shape `(n,)`), or one if `n` is
        `None` (a dict of scalars)."""
        # One key per name in sorted order: a prior that crosses a `jit` boundary comes
        # back with its dict sorted (JAX flattens dicts by sorted key), so the draws
        # are the same inside and outside `jit` whatever order the names were given in.
        keys = dict(zip(sorted(self.distributions), jax.random.split(key, len(self.distributions))))
        shape = () if n is None else (n,)
        return {
            name: jnp.asarray(d.sample(keys[name], shape), dtype=jnp.result_type(float))
            for name, d in self.distributions.items()
        }

    def log_prob(self, theta: Params) -> Float[Array, "*batch"]:
        """The joint log density of `θ` (`-inf` outside the support)."""
        self._check_names(theta)
        total = 0.0
        for name, d in self.distributions.items():
            x = jnp.asarray(theta[name])
            inside = support_of(d)(x)
            lp = d.log_prob(jnp.where(inside, x, d.mean if _finite_mean(d) else 0.0))
            total = total + jnp.where(inside, lp, -jnp.inf)
        return jnp.asarray(total)

    def in_support(self, theta: Params) -> Bool[Array, "*batch"]:
        """Whether each draw of `θ` lies inside the prior's support."""
        self._check_names(theta)
        ok = jnp.asarray(True)
        for name, d in self.distributions.items():
            ok = ok & jnp.asarray(support_of(d)(jnp.asarray(theta[name])))
        return ok

    def check_model(self, model, extra_names=(), *, support=None) -> None:
        """Raise a clear `ValueError` unless this prior covers exactly the parameters
        that `model` (and the observation model's `extra_names`) use, each within its
        support: `support(name)` (a simulator's `parameter_support`, which knows the
        observation model's parameters too), or the model's own for its parameters."""
        needed = tuple(model.param_names) + tuple(n for n in extra_names if n not in model.param_names)
        missing = [n for n in needed if n not in self.distributions]
        if missing:
            unknown = [n for n in self.distributions if n not in needed]
            hints = "".join(suggest(n, missing) for n in unknown)  # a misspelt name
            raise ValueError(
                f"The prior has no distribution for {missing}, which the simulator "
                f"needs (it uses {needed}). Add them to the prior.{hints}"
            )
        unknown = [n for n in self.distributions if n not in needed]
        if unknown:
            hints = "".join(suggest(n, needed) for n in unknown)
            raise ValueError(
                f"The prior has parameters {unknown} that nothing in the simulator uses (it uses {needed}).{hints}"
            )
        for name in needed if support is not None else model.param_names:
            want = bounds(support(name) if support is not None else model.parameter_support(name))
            have = bounds(self.distributions[name].support)
            if want is None or have is None:
                continue
            if have[0] < want[0] or have[1] > want[1]:
                owner = type(model).__name__ if name in model.param_names else "the observation model"
                interval = lambda b: f"({b[0]:.6g}, {b[1]:.6g})"  # noqa: E731 (float32 bounds, shortest form)
                raise ValueError(
                    f"The prior for {name!r} ({type(self.distributions[name]).__name__})"
                    f" has support {interval(have)}, but {owner} needs {name} in "
                    f"{interval(want)}. Use a distribution inside that range, e.g. "
                    "LogNormal/LogUniform for a positive parameter, Uniform, or "
                    "TruncatedNormal(low=..., high=...)."
                )

    def restrict(self, box: Mapping[str, tuple[float, float]]) -> "Prior":
        """This prior conditioned on a box: each named parameter truncated to its
        interval `(low, high)` (intersected with its support), the others unchanged.

        Training on a restricted prior is *truncated* sequential neural posterior
        estimation: if the box holds (nearly) all of the posterior mass for an
        observation, the posterior under the restricted prior is the same posterior,
        and the network spends its capacity where that observation's posterior lives.
        The estimator is then valid only for observations whose posterior lies inside
        the box. [`sgjax.Posterior.box`][] gives a box from a first round's samples, and
        [`sgjax.Task.restrict`][] restricts a task's prior this way while keeping its
        compiled training step.

        `Uniform` and `LogUniform` stay in their family with the new bounds (so a
        restricted prior reuses compiled code); any other distribution is truncated
        through its CDF and inverse CDF, which numpyro provides for most scalar
        families (not `Gamma`, whose inverse CDF needs TensorFlow Probability).
        """
        unknown = [n for n in box if n not in self.distributions]
        if unknown:
            hints = "".join(suggest(n, self.names) for n in unknown)
            raise ValueError(f"The box names parameters {unknown} that the prior does not have ({self.names}).{hints}")
        out = dict(self.distributions)
        for name, interval in box.items():
            try:
                low, high = (float(v) for v in interval)
            except (TypeError, ValueError):
                raise ValueError(
                    f"The box for {name!r} must be a pair (low, high) of numbers, got {interval!r}."
                ) from None
            d = out[name]
            if isinstance(d, dist.Delta):
                continue
            support = bounds(d.support) or (-math.inf, math.inf)
            low, high = max(low, support[0]), min(high, support[1])
            if not low < high:
                raise ValueError(
                    f"The box for {name!r} {tuple(interval)} does not overlap the prior's support {support}: "
                    "widen it, or check that it was computed for this prior's parameters."
                )
            out[name] = _truncate(name, d, low, high)
        return Prior(out)

    def _check_names(self, theta):
        missing = [n for n in self.distributions if n not in theta]
        if missing:
            raise ValueError(f"θ has no value for {missing}; it has {list(theta)}.")


class Truncated(dist.Distribution):
    """A scalar distribution conditioned on `[low, high]`: sampled by inverse CDF,
    density renormalised by the mass the interval holds. See [`sgjax.Prior.restrict`][].

    Bounds that hold all of the base's mass (`low`, `high` at or beyond its support)
    leave it unchanged: draws are the base's own draws, bit for bit, and the density
    is the base's. [`sgjax.Task`][] holds its prior in this form from the start, so
    that restricting it changes array values only, never the pytree's structure, and
    a compiled training step is reused."""

    arg_constraints = {}
    pytree_data_fields = ("base", "low", "high")

    def __init__(self, base: dist.Distribution, low, high):
        dtype = jnp.result_type(float)
        self.base, self.low, self.high = base, jnp.asarray(low, dtype), jnp.asarray(high, dtype)
        super().__init__(batch_shape=(), event_shape=())

    def _whole(self) -> bool | None:
        """Whether the bounds cover the base's support, if known on the host."""
        if isinstance(self.low, jax.core.Tracer) or isinstance(self.high, jax.core.Tracer):
            return None
        b = bounds(self.base.support) or (-math.inf, math.inf)
        return bool(float(self.low) <= b[0] and float(self.high) >= b[1])

    # numpyro leaves these keyword arguments unannotated (their default is NotImplemented).
    @constraints.dependent_property(is_discrete=False, event_dim=0)  # pyright: ignore[reportArgumentType]
    def support(self):
        # The base's own support when nothing is cut off, so that a support-driven
        # map (numpyro's `biject_to`, a learning space) is the base's: an interval
        # with an infinite end has no such map.
        if self._whole():
            return self.base.support
        return constraints.interval(self.low, self.high)

    def _mass(self):
        return self.base.cdf(self.low), self.base.cdf(self.high)

    def sample(self, key: Key, sample_shape=()):
        lo, hi = self._mass()
        u = jax.random.uniform(key, sample_shape, minval=lo, maxval=hi)
        cut = jnp.clip(self.base.icdf(u), self.low, self.high)
        # Both are computed (the bounds are array values, so one traced program
        # serves every box); where nothing is cut off, the base's own draws.
        return jnp.where((lo <= 0) & (hi >= 1), self.base.sample(key, sample_shape), cut)

    def log_prob(self, value):
        lo, hi = self._mass()
        inside = (value >= self.low) & (value <= self.high)
        return jnp.where(inside, self.base.log_prob(value) - jnp.log(hi - lo), -jnp.inf)

    def cdf(self, value):
        lo, hi = self._mass()
        return jnp.clip((self.base.cdf(jnp.clip(value, self.low, self.high)) - lo) / (hi - lo), 0.0, 1.0)

    def icdf(self, q):
        lo, hi = self._mass()
        return jnp.clip(self.base.icdf(lo + q * (hi - lo)), self.low, self.high)

    @property
    def mean(self):  # only used as a safe in-support point
        return jnp.clip(self.base.mean, self.low, self.high)


def restrictable(prior: Prior) -> Prior:
    """`prior` with each distribution that [`sgjax.Prior.restrict`][] would truncate
    already held as a `Truncated` with bounds at its
    support (the same distribution: the same draws and density), so that restricting
    it to any box changes array values only — the pytree's structure, and so a
    compiled function of it, stays. `Uniform`, `LogUniform` and fixed values restrict
    within their family already; a family with no inverse CDF (`Gamma`) stays as it
    is (it cannot be restricted)."""
    out = {}
    for name, d in prior.distributions.items():
        if not isinstance(d, (dist.Uniform, dist.LogUniform, dist.Delta, Truncated)) and _has_icdf(d):
            support = bounds(d.support) or (-math.inf, math.inf)
            d = Truncated(d, *support)
        out[name] = d
    return Prior(out)


def unwrapped(prior: Prior) -> Prior:
    """`prior` with each `Truncated` that cuts nothing off
    (known on the host) replaced by its base: the inverse of `restrictable` where
    nothing is restricted, so that a user sees the distributions given."""
    out = {n: d.base if isinstance(d, Truncated) and d._whole() else d for n, d in prior.distributions.items()}
    if all(out[n] is d for n, d in prior.distributions.items()):
        return prior
    return Prior(out)


def _has_icdf(d) -> bool:
    try:
        d.cdf(jnp.asarray(d.mean))
        d.icdf(jnp.asarray(0.5))
    except (NotImplementedError, ImportError, AttributeError):
        return False
    return True


def _truncate(name, d, low, high):
    if isinstance(d, (dist.Uniform, dist.LogUniform)):
        # `full_like` keeps each bound's dtype and weak type: the same pytree of
        # arrays, so compiled code is reused.
        return type(d)(jnp.full_like(cast(Array, d.low), low), jnp.full_like(cast(Array, d.high), high))
    if isinstance(d, Truncated):
        low, high = max(low, float(d.low)), min(high, float(d.high))
        d = d.base
    try:
        mass = float(d.cdf(jnp.asarray(high)) - d.cdf(jnp.asarray(low)))
        d.icdf(jnp.asarray(0.5))
    except (NotImplementedError, ImportError, AttributeError) as e:
        raise ValueError(
            f"The prior for {name!r} ({type(d).__name__}) cannot be truncated: numpyro gives it no CDF and "
            f"inverse CDF here ({type(e).__name__}). Use a family that has them (Uniform, LogUniform, "
            "Normal, LogNormal, TruncatedNormal, ...)."
        ) from None
    if not mass > 0:
        raise ValueError(f"The prior for {name!r} puts no mass on ({low}, {high}): the box misses it.")
    return Truncated(d, low, high)


def _finite_mean(d) -> bool:
    try:
        return bool(np.all(np.isfinite(np.asarray(d.mean))))
    except Exception:
        return False


def _validate(name: str, d: dist.Distribution) -> None:
    """Check the distribution's own arguments eagerly, so that e.g. `Uniform(1, 0)` is
    refused when the prior is built rather than producing NaNs later."""
    for arg, constraint in d.arg_constraints.items():
        value = getattr(d, arg, None)
        if value is None or isinstance(value, jax.core.Tracer):
            continue
        if isinstance(constraint, constraints._Dependent):
            continue
        if not bool(np.all(np.asarray(constraint(value)))):
            raise ValueError(
                f"The prior for {name!r} ({type(d).__name__}) has an invalid argument "
                f"{arg}={np.asarray(value)}: it must satisfy {constraint}."
            )
    support = d.support
    if isinstance(support, constraints._Dependent):
        return
    b = bounds(support)
    if b is not None and not b[0] < b[1] and not isinstance(d, dist.Delta):
        raise ValueError(
            f"The prior for {name!r} ({type(d).__name__}) has an empty support {b}: "
            "its lower bound must be below its upper bound."
        )
