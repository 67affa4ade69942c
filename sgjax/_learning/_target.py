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
import numpy as np
from jaxtyping import Array, Float
from numpyro.distributions import constraints

from .._custom_types import Params
from .._simulation import from_unconstrained, to_unconstrained


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

    @property
    def support(self) -> constraints.Constraint | None:
        """The support this space maps to ℝ (through `sgjax/_support.py`, the one map
        the baselines use too); `None` for `"log1p"`, a variance-stabilising map of
        counts rather than a support's bijection."""
        if self.kind == "logit":
            return constraints.interval(self.lo, self.hi)
        return {"identity": constraints.real, "log": constraints.positive}.get(self.kind)

    def forward(self, v):
        # A draw on the boundary of its support (a uniform can return its lower bound
        # in float32) is moved just inside, so its label is finite, not ±inf.
        if self.kind == "log1p":
            return jnp.log1p(jnp.maximum(v, 0.0))
        support = self.support
        assert support is not None  # every space but log1p maps a support
        return to_unconstrained(support, v)

    def inverse(self, z):
        if self.kind == "log1p":
            return jnp.expm1(z)
        support = self.support
        assert support is not None  # every space but log1p maps a support
        return from_unconstrained(support, z)

    def config(self) -> dict:
        return {"kind": self.kind, "lo": self.lo, "hi": self.hi}

    @classmethod
    def from_support(cls, support: constraints.Constraint) -> "Space":
        """The natural unconstrained space for a numpyro support: `logit` for a
        bounded interval, `log` for positive values, identity otherwise."""
        from .._simulation import bounds

        b = bounds(support)
        if b is None:
            return cls("identity")
        lo, hi = b
        if math.isfinite(lo) and math.isfinite(hi) and lo < hi:
            return cls("logit", lo, hi)
        if lo == 0.0 and hi == math.inf:
            return cls("log")
        return cls("identity")


def as_space(space: "str | Space | None", default: Space | None) -> Space | None:
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

    def bind(self, simulator) -> "AbstractTarget":
        """This target checked against `simulator`, with anything it reads from the
        simulator's concrete values (observation times → indices) fixed; what
        [`sgjax.Task`][] holds. The default checks and returns `self`."""
        self.check(simulator)
        return self

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
            from .._simulation import suggest

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
    - `scale`: a factor applied in natural units: a number (e.g. `1000.0` to turn a
        final-size fraction into people), or the name of a θ entry whose value in
        each draw multiplies it — `Derived("final_size", scale="N")`, or
        `scale=model.N` for a model built with `SIR(N="N")`, where the population
        size is drawn from the prior (a known input, say).

    **Example:**

    ```python
    model = sgjax.models.SIR(N="N")
    target = sgjax.Derived("final_size", scale=model.N)   # people: fraction × θ["N"]
    ```
    """

    name: str = eqx.field(static=True)
    space: Space | None = None
    scale: float | str = eqx.field(static=True, default=1.0)

    def __init__(self, name: str, space: "str | Space | None" = None, scale: float | str = 1.0):
        self.name = name
        self.space = None if space is None else as_space(space, None)
        if isinstance(scale, str):
            self.scale = scale
        else:
            try:
                self.scale = float(scale)
            except (TypeError, ValueError):
                raise TypeError(
                    f"Derived({name!r}, scale=...): `scale` must be a number or the name of a θ entry "
                    f"(e.g. scale='N'), got {scale!r}."
                ) from None

    def labels(self, simulator):
        return (self.name,)

    def __call__(self, draw, simulator):
        value = jnp.atleast_1d(simulator.model.derived(draw.theta, draw.ts, draw.states)[self.name])
        factor = draw.theta[self.scale] if isinstance(self.scale, str) else self.scale
        return factor * value

    def check(self, simulator):
        if isinstance(self.scale, str) and self.scale not in simulator.param_names:
            from .._simulation import suggest

            raise ValueError(
                f"Derived({self.name!r}, scale={self.scale!r}): the scale names no θ entry of the simulator, "
                f"which reads {simulator.param_names}. Give a number, or name an entry the model reads — for "
                f"a population size, build the model with it named (e.g. sgjax.models.SIR(N='N')) and give "
                f"the prior a distribution for it.{suggest(self.scale, simulator.param_names)}"
            )
        names = simulator.derived_names
        if self.name not in names:
            from .._simulation import suggest

            # A bare name that is neither: the user may have meant a parameter or a
            # derived quantity, so both lists are shown and both searched.
            known = (*simulator.param_names, *names)
            raise ValueError(
                f"{self.name!r} is neither a parameter nor a derived quantity of "
                f"{type(simulator.model).__name__}: its parameters are {simulator.param_names} "
                f"and it derives {names or 'nothing'}.{suggest(self.name, known)}"
            )


def _match_times(times, ts, who: str) -> tuple[int, ...]:
    """The indices of the observation times `ts` that `times` name, refusing any that
    is not one of them (with the old index-based usage in mind)."""
    ts = np.asarray(ts, dtype=float)
    out = []
    for t in times:
        if isinstance(t, (bool, np.bool_)) or not isinstance(t, (int, float, np.integer, np.floating)):
            raise TypeError(f"{who}: times must be numbers (observation times), got {t!r}.")
        hit = np.flatnonzero(np.isclose(ts, float(t), rtol=1e-6, atol=1e-9 * max(1.0, float(np.abs(ts).max()))))
        if hit.size == 0:
            old = (
                " Times are observation times, not indices into them (as before sgjax 0.x): for the "
                f"last time write {who.split('(')[0]}(...) without times, or pass values of "
                "`simulator.ts`, e.g. times=simulator.ts[-3:]."
                if isinstance(t, (int, np.integer))
                else ""
            )
            raise ValueError(
                f"{who}: {t!r} is not one of the simulator's observation times "
                f"({ts[0]:g} … {ts[-1]:g}, {ts.size} times).{old}"
            )
        out.append(int(hit[0]))
    return tuple(out)


class Hidden(AbstractTarget):
    """An unobserved compartment: the clean state `state` at the given observation
    times (default: the last), e.g. `Hidden("R")` for everyone ever recovered, or
    `Hidden("E", times=simulator.ts[:10])` for a latent trajectory.

    **Arguments:**

    - `state`: the state's name.
    - `times`: observation times (values of `simulator.ts`, not indices into it);
        default: the last observation time.
    - `space`: the learning space; default identity.

    Labels read `"E(t=10)"`.
    """

    state: str = eqx.field(static=True)
    times: tuple[float, ...] | None = eqx.field(static=True)
    space: Space | None = None
    _indices: tuple[int, ...] | None = eqx.field(static=True, default=None)

    def __init__(self, state: str, times=None, space: "str | Space | None" = None, *, _indices=None):
        self.state = state
        if times is not None:
            times = tuple(np.atleast_1d(np.asarray(times)).tolist())
            if not times:
                raise ValueError(f"Hidden({state!r}): `times` is empty; leave it out for the last time.")
        self.times = times
        self.space = None if space is None else as_space(space, None)
        self._indices = _indices

    def bind(self, simulator) -> "Hidden":
        self.check(simulator)
        n = len(simulator.ts)
        idx = (n - 1,) if self.times is None else _match_times(self.times, simulator.ts, f"Hidden({self.state!r})")
        return Hidden(self.state, self.times, self.space, _indices=idx)

    def labels(self, simulator):
        bound = self if self._indices is not None else self.bind(simulator)
        assert bound._indices is not None  # bind sets them
        ts = np.asarray(simulator.ts, dtype=float)
        return tuple(f"{self.state}(t={ts[i]:g})" for i in bound._indices)

    def __call__(self, draw, simulator):
        if self._indices is None:
            raise RuntimeError("Hidden targets are bound to a simulator's times by sgjax.Task; use one there.")
        i = simulator.model.state_names.index(self.state)
        return jnp.stack([draw.states[t, i] for t in self._indices])

    def check(self, simulator):
        names = simulator.model.state_names
        if self.state not in names:
            raise ValueError(f"Hidden({self.state!r}): the model's states are {names}.")


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
    """Future noisy observations: the network sees the observations up to time `after`
    and predicts those at every later observation time. Under squared loss this is
    the posterior predictive mean; with quantiles, predictive intervals.

    **Arguments:**

    - `after`: the last observed time (keyword-only): a value of `simulator.ts`
        before its last; the times after it are forecast.
    - `space`: the learning space; `"log1p"` suits counts. Default identity.

    Labels read `"x(t=30)"`.
    """

    after: float = eqx.field(static=True)
    space: Space | None = None
    _horizon: int | None = eqx.field(static=True, default=None)

    def __init__(self, *args, after: float | None = None, space: "str | Space | None" = None, _horizon=None):
        if args or after is None:
            raise TypeError(
                "Forecast takes the last observed time as a keyword, Forecast(after=t): the "
                "observations after time t are forecast. (Before, Forecast(h) counted the last h "
                "times; for those write Forecast(after=simulator.ts[-h - 1]).)"
            )
        if (
            isinstance(after, bool)
            or not isinstance(after, (int, float, np.integer, np.floating))
            and not (hasattr(after, "shape") and np.shape(after) == ())
        ):
            raise TypeError(f"Forecast(after=...) must be one observation time, got {after!r}.")
        self.after = float(after)
        self.space = None if space is None else as_space(space, None)
        self._horizon = _horizon

    def bind(self, simulator) -> "Forecast":
        self.check(simulator)
        (i,) = _match_times((self.after,), simulator.ts, "Forecast(after=...)")
        return Forecast(after=self.after, space=self.space, _horizon=len(simulator.ts) - 1 - i)

    @property
    def horizon(self) -> int:
        """How many of the simulator's last observation times are forecast."""
        if self._horizon is None:
            raise RuntimeError("Forecast targets are bound to a simulator's times by sgjax.Task; use one there.")
        return self._horizon

    def labels(self, simulator):
        bound = self if self._horizon is not None else self.bind(simulator)
        ts = np.asarray(simulator.ts, dtype=float)
        return tuple(f"x(t={t:g})" for t in ts[len(ts) - bound.horizon :])

    def __call__(self, draw, simulator):
        return draw.observations[-self.horizon :].reshape(-1)

    def check(self, simulator):
        ts = np.asarray(simulator.ts, dtype=float)
        if not self.after < ts[-1]:
            raise ValueError(
                f"Forecast(after={self.after:g}) leaves nothing to forecast: the simulator's last "
                f"observation time is {ts[-1]:g}. Extend the simulator's `ts` to cover the observed "
                "window plus the horizon."
            )
        if self.after < ts[0]:
            raise ValueError(f"Forecast(after={self.after:g}) leaves no observed times: the first is {ts[0]:g}.")
        if simulator.observation is not None and simulator.observation.missing is not None:
            raise ValueError("Forecast targets need complete future observations: drop `missing=`.")

    def observed_times(self, n_times):
        return n_times - self.horizon
