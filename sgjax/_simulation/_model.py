"""The mechanistic model: an ODE written once for one trajectory."""

import abc
import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import ClassVar, TYPE_CHECKING

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float
from numpyro.distributions import constraints

from .._custom_types import Params, Scalar, State
from ._observables import AbstractObservable


class AbstractODEModel(eqx.Module):
    """An ordinary differential equation `dy/dt = f(t, y, θ)` with named parameters,
    named states, an initial state that depends on `θ`, and what is observed.

    Subclasses write everything for *one* trajectory: `θ` is a mapping from parameter
    name to a scalar and `y` a vector of shape `(state,)`. Batching over many
    trajectories is done for you by [`sgjax.simulate`][].

    Built-in models subclass this; for your own model, [`sgjax.ODEModel`][] takes
    plain functions.
    """

    if TYPE_CHECKING:
        # Type checkers read an `AbstractVar` as a dataclass field, so a subclass that
        # gives it as a property or a class variable (the built-in models) would seem to
        # take it as an argument (equinox#1123). What they should see is a read-only value.
        @property
        def param_names(self) -> tuple[str, ...]: ...
        @property
        def state_names(self) -> tuple[str, ...]: ...
    else:
        param_names: eqx.AbstractVar[tuple[str, ...]]
        state_names: eqx.AbstractVar[tuple[str, ...]]
    observable: eqx.AbstractVar[AbstractObservable]

    #: Where each parameter may lie, as numpyro constraints; parameters not listed
    #: may take any real value. A prior whose support leaves these is refused.
    support: ClassVar[Mapping[str, constraints.Constraint]] = {}

    @abc.abstractmethod
    def vector_field(self, t: Scalar, y: State, theta: Params) -> State:
        """The right-hand side `f(t, y, θ)` for one trajectory."""

    @abc.abstractmethod
    def initial_state(self, theta: Params) -> State:
        """The state at the start time `t0` for one trajectory."""

    def default_prior(self):
        """A reasonable [`sgjax.Prior`][] over this model's parameters."""
        raise NotImplementedError(
            f"{type(self).__name__} has no default prior: pass `prior=sgjax.Prior(...)`"
            f" with a distribution for each of {self.param_names}."
        )

    def derived(self, theta: Params, ts: Float[Array, " time"], ys: Float[Array, "time state"]) -> dict[str, Scalar]:
        """Quantities computed from `θ` and one trajectory `ys` at times `ts`
        (e.g. `R0`, final size, peak time), for use as learning targets. Empty unless
        a model defines some."""
        return {}

    def parameter_support(self, name: str) -> constraints.Constraint:
        return self.support.get(name, constraints.real)

    def __check_init__(self):
        for what, names in (("param_names", self.param_names), ("state_names", self.state_names)):
            if not isinstance(names, tuple) or not all(isinstance(n, str) for n in names):
                raise TypeError(f"`{what}` must be a tuple of strings, got {names!r}.")
            if len(set(names)) != len(names):
                raise ValueError(f"`{what}` has repeated names: {names!r}.")
        if not self.state_names:
            raise ValueError("A model needs at least one state name.")
        if not isinstance(self.observable, AbstractObservable) and not callable(self.observable):
            raise TypeError(
                "`observable` must be an sgjax observable such as `sgjax.State('I')` "
                f"or a function `(ys, state_names) -> signal`, got {self.observable!r}."
            )
        if isinstance(self.observable, AbstractObservable):
            self.observable.check(self.state_names)


class ODEModel(AbstractODEModel):
    """A user-defined model from plain functions.

    **Arguments:**

    - `vector_field`: `f(t, y, theta) -> dy/dt` for one trajectory, where `theta` maps
        parameter names to scalars and `y` has shape `(state,)`.
    - `initial_state`: `theta -> y0`.
    - `param_names`: the names of the parameters `f` reads from `theta`.
    - `state_names`: one name per state component, in order.
    - `observable`: what is observed, e.g. `sgjax.Decrease("S")` for incidence, or a
        function `(ys, state_names) -> signal` mapping the states at `t0` and every
        observation time, shape `(time + 1, state)`, to shape `(time, channels)`.
    - `support`: optional numpyro constraints per parameter (e.g.
        `{"beta": constraints.positive}`), used to refuse priors outside them.
    - `prior`: optional default [`sgjax.Prior`][].
    - `derived`: optional quantities the model derives from `θ` and its trajectory,
        to learn as targets (`sgjax.Task(simulator, ["beta", "R0"])`, or
        [`sgjax.Derived`][]`("R0")`): a mapping from name to a function of `theta`
        alone, or of `(theta, ts, ys)` where `ys` `(time, state)` holds the states at
        the observation times `ts` (for one trajectory, like `vector_field`); or one
        function `(theta, ts, ys) -> dict` of them all. Each value is a scalar in
        natural units; say its unit (a fraction, or people) in its name or your
        documentation.

    **Example:**

    ```python
    def vector_field(t, y, theta):
        s, i, r = y
        infections = theta["beta"] * s * i / 1000.0
        return jnp.stack([-infections, infections - theta["gamma"] * i, theta["gamma"] * i])

    model = sgjax.ODEModel(
        vector_field,
        initial_state=lambda theta: jnp.array([999.0, 1.0, 0.0]),
        param_names=("beta", "gamma"),
        state_names=("S", "I", "R"),
        observable=sgjax.Decrease("S"),
        derived={
            "R0": lambda theta: theta["beta"] / theta["gamma"],
            "attack_rate": lambda theta, ts, ys: 1.0 - ys[-1, 0] / 1000.0,  # a fraction
        },
    )
    ```
    """

    _vector_field: Callable = eqx.field(static=True)
    _initial_state: Callable = eqx.field(static=True)
    param_names: tuple[str, ...] = eqx.field(static=True)
    state_names: tuple[str, ...] = eqx.field(static=True)
    observable: AbstractObservable | Callable
    _support: Mapping[str, constraints.Constraint] = eqx.field(static=True)
    _prior: object
    _derived: Callable | None = eqx.field(static=True)

    def __init__(
        self,
        vector_field: Callable,
        initial_state: Callable,
        param_names: Sequence[str],
        state_names: Sequence[str],
        observable: AbstractObservable | Callable,
        support: Mapping[str, constraints.Constraint] | None = None,
        prior=None,
        derived: Mapping[str, Callable] | Callable | None = None,
    ):
        if not callable(vector_field) or not callable(initial_state):
            raise TypeError("`vector_field` and `initial_state` must be functions.")
        self._vector_field = vector_field
        self._initial_state = initial_state
        self.param_names = tuple(param_names)
        self.state_names = tuple(state_names)
        self.observable = observable
        support = dict(support or {})
        unknown = set(support) - set(self.param_names)
        if unknown:
            raise ValueError(f"`support` names {sorted(unknown)}, which are not in param_names {self.param_names}.")
        self._support = support
        self._prior = prior
        self._derived = _derived_function(derived, self.param_names)

    def parameter_support(self, name):
        return self._support.get(name, constraints.real)

    def vector_field(self, t, y, theta):
        return self._vector_field(t, y, theta)

    def initial_state(self, theta):
        return jnp.asarray(self._initial_state(theta))

    def default_prior(self):
        if self._prior is None:
            return super().default_prior()
        return self._prior

    def derived(self, theta, ts, ys):
        if self._derived is None:
            return {}
        return self._derived(theta, ts, ys)


def _positional_arity(fn: Callable) -> int | None:
    """How many positional arguments `fn` takes, or `None` if it takes `*args` or
    its signature cannot be read."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return None
    kinds = [p.kind for p in params]
    if inspect.Parameter.VAR_POSITIONAL in kinds:
        return None
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return sum(k in positional and p.default is p.empty for k, p in zip(kinds, params))


class _DerivedTable(eqx.Module):
    """A mapping name → function of `θ` or of `(θ, ts, ys)`, called as one
    `(θ, ts, ys) -> dict`. Hashable (a static field of the model): compared by
    identity of its functions."""

    functions: tuple[tuple[str, Callable, bool], ...] = eqx.field(static=True)

    def __call__(self, theta, ts, ys):
        return {name: (fn(theta) if theta_only else fn(theta, ts, ys)) for name, fn, theta_only in self.functions}


def _derived_function(derived, param_names) -> Callable | None:
    if derived is None:
        return None
    if callable(derived) and not isinstance(derived, Mapping):
        return derived
    if not isinstance(derived, Mapping):
        raise TypeError(
            "`derived` must be a mapping from name to function, e.g. "
            "{'R0': lambda theta: theta['beta'] / theta['gamma']}, or one function "
            f"(theta, ts, ys) -> dict; got {type(derived).__name__}."
        )
    rows = []
    for name, fn in derived.items():
        if not isinstance(name, str) or not callable(fn):
            raise TypeError(f"`derived` must map names (strings) to functions, got {name!r}: {fn!r}.")
        if name in param_names:
            raise ValueError(
                f"The derived quantity {name!r} has the name of a parameter; a name means one "
                "thing in a task's targets. Rename it."
            )
        arity = _positional_arity(fn)
        if arity not in (1, 3, None):
            raise TypeError(
                f"`derived[{name!r}]` takes {arity} positional arguments: write it as a function "
                "of `theta` alone, or of `(theta, ts, ys)`."
            )
        rows.append((name, fn, arity == 1))
    return _DerivedTable(tuple(rows))
