"""What a network learns: targets `y = T(θ, trajectory)`.

A target maps one simulated draw — its parameters, clean states, clean signal and
noisy observations — to a vector. Every target has a *learning space*: the network
predicts `y` in that space (e.g. `log β` for a positive rate), and estimates are
mapped back to natural units afterwards. Monotone maps commute with quantiles, so
intervals and medians are exact in either space; a point estimate under squared
loss is the posterior mean *in the learning space* (use `space="identity"` for the
posterior mean in natural units).
"""

import abc
import math

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float
from numpyro.distributions import constraints

from ._custom_types import Params

#: Learning spaces: name → (forward, inverse). `logit` maps an interval `(lo, hi)`.
SPACES = ("identity", "log", "log1p", "logit")


class Space(eqx.Module):
    """A monotone map from natural units to the learning space.

    **Arguments:**

    - `kind`: one of `"identity"`, `"log"` (positive values), `"log1p"` (counts,
        `≥ 0`), `"logit"` (values in `(lo, hi)`).
    - `lo`, `hi`: the bounds for `"logit"`.
    """

    kind: str = eqx.field(static=True)
    lo: float = eqx.field(static=True, default=0.0)
    hi: float = eqx.field(static=True, default=1.0)

    def __check_init__(self):
        if self.kind not in SPACES:
            raise ValueError(f"Unknown learning space {self.kind!r}; choose one of {SPACES}.")
        if self.kind == "logit" and not self.lo < self.hi:
            raise ValueError(f"A logit space needs lo < hi, got ({self.lo}, {self.hi}).")

    def forward(self, v):
        # Clipped so that a draw on the boundary of its support (a uniform can return
        # its lower bound in float32) gives a finite label, not ±inf.
        tiny = jnp.finfo(jnp.result_type(v, float)).tiny
        if self.kind == "log":
            return jnp.log(jnp.maximum(v, tiny))
        if self.kind == "log1p":
            return jnp.log1p(jnp.maximum(v, 0.0))
        if self.kind == "logit":
            u = jnp.clip((v - self.lo) / (self.hi - self.lo), 1e-6, 1 - 1e-6)
            return jnp.log(u) - jnp.log1p(-u)
        return v

    def inverse(self, z):
        if self.kind == "log":
            return jnp.exp(z)
        if self.kind == "log1p":
            return jnp.expm1(z)
        if self.kind == "logit":
            return self.lo + (self.hi - self.lo) * jax.nn.sigmoid(z)
        return z

    def config(self) -> dict:
        return {"kind": self.kind, "lo": self.lo, "hi": self.hi}

    @classmethod
    def from_support(cls, support: constraints.Constraint) -> "Space":
        """The natural unconstrained space for a numpyro support: `logit` for a
        bounded interval, `log` for positive values, identity otherwise."""
        from ._prior import bounds

        b = bounds(support)
        if b is None:
            return cls("identity")
        lo, hi = b
        if math.isfinite(lo) and math.isfinite(hi) and lo < hi:
            return cls("logit", lo, hi)
        if lo == 0.0 and hi == math.inf:
            return cls("log")
        return cls("identity")


def as_space(space: "str | Space | None", default: Space) -> Space:
    if space is None:
        return default
    return space if isinstance(space, Space) else Space(space)


class Draw(eqx.Module):
    """One simulated draw, as a target sees it (no batch axis).

    **Fields:** `theta` (dict of scalars), `ts` `(time,)`, `states` `(time, state)`
    at the observation times, `signal` and `observations` `(time, channels)`.
    """

    theta: Params
    ts: Float[Array, " time"]
    states: Float[Array, "time state"]
    signal: Float[Array, "time channels"]
    observations: Float[Array, "time channels"]


class AbstractTarget(eqx.Module):
    """A quantity to learn. Subclasses define `labels` (one name per output
    component), `space`, `__call__(draw, simulator)` returning the components in
    natural units, and optionally `check(simulator)`."""

    @abc.abstractmethod
    def labels(self, simulator) -> tuple[str, ...]:
        """One name per component of the target."""

    @abc.abstractmethod
    def __call__(self, draw: Draw, simulator) -> Float[Array, " k"]:
        """The target in natural units for one draw."""

    @property
    @abc.abstractmethod
    def space(self) -> Space | None:
        """The learning space, or `None` to choose from the simulator."""

    def resolve_space(self, simulator, prior) -> Space:
        """The learning space: the one given, else a default for the target."""
        return Space("identity") if self.space is None else self.space

    def check(self, simulator) -> None:
        """Raise a clear error if the target does not fit the simulator."""

    def observed_times(self, n_times: int) -> int:
        """How many of the simulator's times the network sees (all but a forecast
        horizon)."""
        return n_times


class Parameter(AbstractTarget):
    """A model or observation parameter, e.g. `Parameter("beta")`.

    **Arguments:**

    - `name`: the parameter's name in `θ`.
    - `space`: the learning space; by default chosen from the prior's support
        (`logit` on a bounded interval, `log` for a positive rate, else identity).
    """

    name: str = eqx.field(static=True)
    space: Space | None = None

    def __init__(self, name: str, space: "str | Space | None" = None):
        self.name = name
        self.space = None if space is None else as_space(space, None)

    def labels(self, simulator):
        return (self.name,)

    def __call__(self, draw, simulator):
        return jnp.atleast_1d(draw.theta[self.name])

    def check(self, simulator):
        if self.name not in simulator.param_names:
            from ._prior import suggest

            raise ValueError(
                f"Parameter({self.name!r}): the simulator has no parameter {self.name!r}; it "
                f"has {simulator.param_names}.{suggest(self.name, simulator.param_names)}"
            )

    def resolve_space(self, simulator, prior):
        # The prior's support is the tightest statement of where θ lives.
        if self.space is not None:
            return self.space
        if prior is not None and self.name in prior.distributions:
            return Space.from_support(prior.distributions[self.name].support)
        if self.name in simulator.model.param_names:
            return Space.from_support(simulator.model.parameter_support(self.name))
        return Space("identity")


class Derived(AbstractTarget):
    """A quantity the model derives from `θ` and its trajectory, e.g. `R0`,
    `final_size`, `peak_time` (see each model's `derived`).

    **Arguments:**

    - `name`: the key in `model.derived(θ, ts, states)`.
    - `space`: the learning space; default identity.
    - `scale`: a factor applied in natural units (e.g. `N` to turn a final-size
        fraction into people).
    """

    name: str = eqx.field(static=True)
    space: Space | None = None
    scale: float = eqx.field(static=True, default=1.0)

    def __init__(self, name: str, space: "str | Space | None" = None, scale: float = 1.0):
        self.name = name
        self.space = None if space is None else as_space(space, None)
        self.scale = float(scale)

    def labels(self, simulator):
        return (self.name,)

    def __call__(self, draw, simulator):
        return self.scale * jnp.atleast_1d(simulator.model.derived(draw.theta, draw.ts, draw.states)[self.name])

    def check(self, simulator):
        theta = {k: jax.ShapeDtypeStruct((), simulator.ts.dtype) for k in simulator.param_names}
        ys = jax.ShapeDtypeStruct((len(simulator.ts), len(simulator.model.state_names)), simulator.ts.dtype)
        names = tuple(jax.eval_shape(simulator.model.derived, theta, simulator.ts, ys))
        if self.name not in names:
            from ._prior import suggest

            # A bare name that is neither: the user may have meant a parameter or a
            # derived quantity, so both lists are shown and both searched.
            known = (*simulator.param_names, *names)
            raise ValueError(
                f"{self.name!r} is neither a parameter nor a derived quantity of "
                f"{type(simulator.model).__name__}: its parameters are {simulator.param_names} "
                f"and it derives {names or 'nothing'}.{suggest(self.name, known)}"
            )


class Hidden(AbstractTarget):
    """An unobserved compartment: the clean state `state` at the given observation
    time indices (default: the last), e.g. `Hidden("R")` for everyone ever
    recovered, or `Hidden("E", times=range(10))` for a latent trajectory.

    **Arguments:**

    - `state`: the state's name.
    - `times`: indices into the observation times (negative counts from the end).
    - `space`: the learning space; default identity.
    """

    state: str = eqx.field(static=True)
    times: tuple[int, ...] = eqx.field(static=True)
    space: Space | None = None

    def __init__(self, state: str, times=(-1,), space: "str | Space | None" = None):
        self.state = state
        self.times = tuple(int(t) for t in (times if hasattr(times, "__iter__") else (times,)))
        self.space = None if space is None else as_space(space, None)

    def labels(self, simulator):
        n = len(simulator.ts)
        return tuple(f"{self.state}[{t % n}]" for t in self.times)

    def __call__(self, draw, simulator):
        i = simulator.model.state_names.index(self.state)
        return draw.states[jnp.asarray(self.times), i]

    def check(self, simulator):
        names = simulator.model.state_names
        if self.state not in names:
            raise ValueError(f"Hidden({self.state!r}): the model's states are {names}.")
        n = len(simulator.ts)
        bad = [t for t in self.times if not -n <= t < n]
        if bad or not self.times:
            raise ValueError(f"Hidden times {self.times} must be indices into the {n} observation times.")


class Signal(AbstractTarget):
    """The clean observed quantity before noise and under-reporting — e.g. the true
    daily infections behind reported cases — at every observation time.

    **Arguments:**

    - `space`: the learning space; `"log1p"` suits counts. Default identity.
    """

    space: Space | None = None

    def __init__(self, space: "str | Space | None" = None):
        self.space = None if space is None else as_space(space, None)

    def labels(self, simulator):
        return tuple(f"signal[{i}]" for i in range(len(simulator.ts)))

    def __call__(self, draw, simulator):
        return draw.signal.reshape(-1)

    def check(self, simulator):
        ys = jax.ShapeDtypeStruct((len(simulator.ts) + 1, len(simulator.model.state_names)), simulator.ts.dtype)
        if jax.eval_shape(simulator.signal, ys).shape[1] != 1:
            raise ValueError("Signal() supports one observed channel; use Hidden(...) for others.")


class Forecast(AbstractTarget):
    """Future noisy observations: the network sees all but the last `horizon`
    observation times and predicts those. Under squared loss this is the posterior
    predictive mean; with quantiles, predictive intervals.

    **Arguments:**

    - `horizon`: how many of the simulator's last observation times to forecast.
    - `space`: the learning space; `"log1p"` suits counts. Default identity.
    """

    horizon: int = eqx.field(static=True)
    space: Space | None = None

    def __init__(self, horizon: int, space: "str | Space | None" = None):
        if not isinstance(horizon, int) or horizon < 1:
            raise ValueError(f"`horizon` must be a positive integer, got {horizon!r}.")
        self.horizon = horizon
        self.space = None if space is None else as_space(space, None)

    def labels(self, simulator):
        n = len(simulator.ts)
        return tuple(f"x[{i}]" for i in range(n - self.horizon, n))

    def __call__(self, draw, simulator):
        return draw.observations[-self.horizon :].reshape(-1)

    def check(self, simulator):
        n = len(simulator.ts)
        if self.horizon >= n:
            raise ValueError(
                f"Forecast(horizon={self.horizon}) leaves no observed times: the simulator has "
                f"{n}. Extend the simulator's `ts` to cover the observed window plus the horizon."
            )
        if simulator.observation is not None and simulator.observation.missing is not None:
            raise ValueError("Forecast targets need complete future observations: drop `missing=`.")

    def observed_times(self, n_times):
        return n_times - self.horizon
