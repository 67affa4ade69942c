"""Abstract pieces of an observation model and their shared plumbing."""

import abc
import dataclasses
from collections.abc import Mapping
from typing import ClassVar

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float
from numpyro.distributions import constraints

from .._custom_types import Key, Params


#: A fixed number, or the name of a parameter in `θ` (so it can have a prior).
ParamLike = float | str


def get(value: ParamLike, theta: Params) -> Array:
    """Resolve a parameter that is either a number or the name of an entry of `θ`."""
    if isinstance(value, str):
        return theta[value]
    return jnp.asarray(value)


def names_of(*values: ParamLike) -> tuple[str, ...]:
    return tuple(v for v in values if isinstance(v, str))


def check_param(value, what: str, low: float | None = None, high: float | None = None) -> None:
    """Refuse a fixed parameter outside `[low, high]` at construction."""
    if isinstance(value, str):
        return
    v = float(value)
    if (low is not None and not v >= low) or (high is not None and not v <= high):
        raise ValueError(
            f"{what} must lie in [{low}, {high}], got {v}. Pass a valid number, or a "
            "parameter name (a string) to give it a prior."
        )


class _Piece(eqx.Module):
    #: Where each parameter field may lie (field name → numpyro constraint), for a
    #: field given as a parameter name: a prior for that name must stay inside it
    #: ([`sgjax.Prior.check_model`][]). Fields not listed may be any real number.
    supports: ClassVar[Mapping[str, constraints.Constraint]] = {}

    def parameter_support(self, name: str) -> constraints.Constraint:
        """Where the `θ` entry `name` may lie for this piece: the support of the
        field that names it, any real value if none does."""
        for field, support in self.supports.items():
            if getattr(self, field, None) == name:
                return support
        return constraints.real

    @property
    def param_names(self) -> tuple[str, ...]:
        """The names of the `θ` entries this piece reads: its parameter fields given as
        strings (static fields such as a method switch are structure, not parameters)."""
        fields = dataclasses.fields(self)
        return names_of(*(getattr(self, f.name) for f in fields if not f.metadata.get("static", False)))

    def default_priors(self) -> Mapping:
        """Default priors for the parameters this piece names (used by
        `Simulator.default_prior`)."""
        return {}

    def check(self, ts: Float[Array, " time"]) -> None:
        """Raise a `ValueError` now if this piece cannot apply on the grid `ts`."""


class AbstractTransform(_Piece):
    """A deterministic map of one trajectory's clean signal `(time, channels)` to the
    expected observation: reporting, delays, day-of-week effects."""

    @abc.abstractmethod
    def __call__(
        self, signal: Float[Array, "time channels"], theta: Params, ts: Float[Array, " time"]
    ) -> Float[Array, "time channels"]:
        raise NotImplementedError


class AbstractNoise(_Piece):
    """An elementwise noise distribution around the expected observation.

    `sample` and `log_prob` work on arrays of any shape; parameters taken from `θ`
    broadcast against `mean` (a batch is laid out batch last, `θ` entries `(batch,)`).

    **Writing your own.** Subclass it (an `eqx.Module`: fields are declared as class
    annotations) and define:

    - `sample(self, key, mean, theta) -> x`: draws of the shape of `mean`, jittable.
    - `log_prob(self, x, mean, theta) -> array`: the elementwise log density (or mass)
        of `x`, of the shape of `x`; used by the likelihood baselines (MLE, NUTS,
        evidence) and posterior predictive checks.
    - `is_count: ClassVar[bool]`: whether observations are whole numbers ≥ 0 (then
        [`sgjax.observation.ObservationModel.check_data`][] refuses negative or
        fractional data, and a trained estimator records it).
    - `nonnegative: ClassVar[bool]` (default `False`): whether every observation is
        ≥ 0; `fit` then standardises `log1p(x)` — the same path as the built-in count
        and log-normal noises, read from this flag and not from the class.
    - `positive_mean: ClassVar[bool]` (default `True`): whether the expected
        observation must be positive (a rate, a log-scale median); the likelihood
        baselines then floor the clean signal at a tiny positive value. Set `False`
        for signed data.

    A parameter given as a string is read from `θ` with `get(value, theta)` (from
    `sgjax.observation.base`), so it joins the simulator's parameters and can have a
    prior; define `default_priors()` to give it one by default, and `check(ts)` to
    refuse a grid the noise cannot apply to.

    **Example:** Student-t noise with a scale read from `θ`.

    ```python
    from typing import ClassVar
    import jax, jax.numpy as jnp, numpyro.distributions as dist
    from sgjax.observation import AbstractNoise
    from sgjax.observation.base import get

    class StudentT(AbstractNoise):
        scale: float | str
        df: float = 4.0
        is_count: ClassVar[bool] = False
        positive_mean: ClassVar[bool] = False

        def sample(self, key, mean, theta):
            return mean + get(self.scale, theta) * jax.random.t(key, self.df, mean.shape, mean.dtype)

        def log_prob(self, x, mean, theta):
            return dist.StudentT(self.df, mean, get(self.scale, theta)).log_prob(x)

    observation = sgjax.observation.ObservationModel(StudentT("tau"))
    ```
    """

    #: Whether observations are counts (non-negative integers).
    is_count: eqx.AbstractClassVar[bool]
    #: Whether the expected observation must be positive (a rate, a median on the
    #: log scale). The likelihood baselines floor the clean signal of such models at a
    #: tiny positive value; a model of signed data (Gaussian) sets this `False`.
    positive_mean: ClassVar[bool] = True
    #: Whether every observation is ≥ 0 (counts, log-normal values). `fit` reads this
    #: (through [`sgjax.AbstractTask.nonnegative`][]) to standardise `log1p(x)`
    #: without inspecting the noise's class, so a user's own noise model declares it.
    nonnegative: ClassVar[bool] = False

    @abc.abstractmethod
    def sample(self, key: Key, mean: Array, theta: Params) -> Array:
        raise NotImplementedError

    @abc.abstractmethod
    def log_prob(self, x: Array, mean: Array, theta: Params) -> Array:
        raise NotImplementedError


class AbstractMissing(_Piece):
    """Which observations are missing: returns a boolean mask of the given shape,
    `(time, channels, batch)`, `True` = observed."""

    @abc.abstractmethod
    def sample(self, key: Key, shape: tuple[int, ...], theta: Params, ts: Array) -> Array:
        raise NotImplementedError
