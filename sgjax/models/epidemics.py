"""Compartmental epidemic models: SIR, SEIR, SIRS and SIR with an intervention.

Every model here counts people (`N` in all, a constructor field: a number, or the
name of a θ entry so that it varies per simulation, e.g. a known population size
given to the network as a task's input — `SIR(N="N")` with
`sgjax.Task(..., inputs=("N",))`), measures time in
days, and observes daily incidence (new infections per interval: `Decrease("S")`, or
for SIRS, whose `S` also gains people, `Increase("C")` of its cumulative infections)
by default. Each defines the derived quantities below; SIR and SEIR also define the
exact asymptotic `final_size`.

| derived quantity  | unit                                                          |
|-------------------|---------------------------------------------------------------|
| `R0`              | none (secondary infections per infection)                     |
| `peak_time`       | the model's time unit (days), on the observation grid         |
| `peak_prevalence` | a fraction of `N`, in [0, 1] (not people)                     |
| `attack_rate`     | a fraction of `N`, in [0, 1] (not people)                     |
| `final_size`      | a fraction of `N`, in [0, 1] (not people)                     |

The fractions are learnt as fractions; for people, scale them:
`sgjax.Derived("final_size", scale=model.N)`.
"""

import math
from typing import Any, cast, ClassVar

import jax
import jax.numpy as jnp
import numpyro.distributions as dist
from numpyro.distributions import constraints

from .._custom_types import Array, ArrayLike, Float, Params, Scalar, State, Times
from .._simulation import AbstractObservable, AbstractODEModel, Decrease, Increase, Prior


#: Newton iterations for the final-size equation. From the start `z = 1` the iterates
#: decrease monotonically onto the root and converge quadratically; even next to the
#: threshold `R0 = 1`, where convergence is at worst linear with ratio 1/2 until close,
#: 64 iterations reach rounding level in float64.
FINAL_SIZE_ITERATIONS = 64


def final_size(
    R0: ArrayLike, s0: ArrayLike = 1.0, r0: ArrayLike = 0.0, iterations: int = FINAL_SIZE_ITERATIONS
) -> Float[Array, "*batch"]:
    """The exact final size of an SIR (or SEIR) epidemic: the fraction `z` of the
    population that has been infected by `t → ∞`, solving

    `z = 1 − s0 · exp(−R0 · (z − r0))`

    where `s0 = S(0)/N` and `r0 = R(0)/N` (for an initial condition with nobody
    recovered and a vanishing number infected this is the classic `z = 1 − exp(−R0 z)`).
    `z` counts everyone not susceptible at the end, initially infected included, so it
    is the limit of the attack rate `(N − S(t))/N`.

    Solved by a fixed number of Newton steps from `z = 1` with `jnp` only, so it can
    be jitted, vmapped and differentiated.

    **Arguments:**

    - `R0`: the basic reproduction number, `β/γ`; any shape.
    - `s0`: the initially susceptible fraction, `S(0)/N`.
    - `r0`: the initially recovered fraction, `R(0)/N`.
    - `iterations`: how many Newton steps.

    **Returns:** `z` in `[1 − s0, 1)`, of the broadcast shape of the arguments.
    """
    R0, s0, r0 = jnp.broadcast_arrays(*map(jnp.asarray, (R0, s0, r0)))
    dtype = jnp.result_type(R0, s0, r0, float)
    R0, s0, r0 = R0.astype(dtype), s0.astype(dtype), r0.astype(dtype)

    # g(z) = 1 − s0 e^{−R0 (z − r0)} − z is concave with g(1 − s0) = s0 (1 − e^{−R0 i0})
    # ≥ 0 > g(1) (i0 = 1 − s0 − r0 ≥ 0), so it has one root in [1 − s0, 1), g' < 0 on
    # [root, 1], and Newton from z = 1 decreases monotonically onto the root.
    def newton(_, z):
        e = s0 * jnp.exp(-R0 * (z - r0))
        return z - (1.0 - e - z) / (R0 * e - 1.0)

    z = jax.lax.fori_loop(0, iterations, newton, jnp.ones_like(R0))
    # The root is at least 1 − s0; clamp away rounding near the threshold R0 = 1,
    # where the root is nearly double and only ~√eps accurate.
    return jnp.maximum(z, 1.0 - s0)


def _epidemic_summary(model, theta, ts, ys) -> dict[str, Scalar]:
    """`R0` (no unit), `peak_time` (time units), and `peak_prevalence` and
    `attack_rate` as fractions of `N` (not people)."""
    N, I0, E0 = model.sizes(theta)
    names = model.state_names
    s, i = ys[:, names.index("S")], ys[:, names.index("I")]
    peak = jnp.argmax(i)
    return {
        "R0": theta["beta"] / theta["gamma"],
        "peak_time": ts[peak],
        "peak_prevalence": i[peak] / N,
        "attack_rate": (N - s[-1]) / N,
    }


def _beta_gamma_prior():
    return {"beta": dist.LogUniform(0.1, 1.0), "gamma": dist.LogUniform(0.05, 0.5)}


class _Population(AbstractODEModel):
    """An epidemic model of a population: the rates in `rates`, and its size `N` and
    initial numbers (`I0`, and `E0` where the model has it) each a number or the name
    of an entry of θ. A name makes it a parameter: drawn from the prior like any
    other — a known population size for a `Task(..., inputs=("N",))` — so that
    one estimator serves populations of every size."""

    rates: ClassVar[tuple[str, ...]]

    @property
    def param_names(self) -> tuple[str, ...]:
        """The rates, then the sizes given as names."""
        named = (getattr(self, c, None) for c in _SIZES)
        return self.rates + tuple(dict.fromkeys(n for n in named if isinstance(n, str)))

    def parameter_support(self, name: str) -> constraints.Constraint:
        if name in self.rates:
            return super().parameter_support(name)
        # Every concrete model declares its `N` (a field with a default, so not declared here).
        return constraints.positive if name == cast(Any, self).N else constraints.nonnegative

    def sizes(self, theta: Params) -> tuple:
        """`(N, I0, E0)` for one draw: the numbers as given, names read from `θ` (`E0`
        is 0 for a model without it)."""
        return tuple(_value(getattr(self, c, 0.0), theta) for c in _SIZES)

    def __check_init__(self):
        for c in _SIZES:
            v = getattr(self, c, 0.0)
            if isinstance(v, str) and (not v.isidentifier() or v in self.rates):
                raise ValueError(f"`{c}` names a θ entry {v!r}: it must be a new name (not one of {self.rates}).")


#: The constant sizes an epidemic model may take from θ.
_SIZES = ("N", "I0", "E0")


def _value(v, theta: Params):
    """A size as given (a number: the model's program is as it always was), or θ's
    entry for a name."""
    return theta[v] if isinstance(v, str) else v


class SIR(_Population):
    """The susceptible–infected–recovered model with mass-action transmission:

    ```
    S' = −β S I / N
    I' =  β S I / N − γ I
    R' =  γ I
    ```

    with `S(0) = N − I0`, `I(0) = I0`, `R(0) = 0`. `S + I + R = N` at all times.

    **Parameters** (in `θ`):

    - `beta`: transmission rate β, contacts that transmit per infected person per day
        (1/day).
    - `gamma`: recovery rate γ, 1 / mean infectious period (1/day).

    **States** (people): `S` susceptible, `I` infected (and infectious), `R` recovered.

    **Default prior:** `beta ~ LogUniform(0.1, 1.0)`, `gamma ~ LogUniform(0.05, 0.5)`
    (infectious periods 2–20 days, `R0` from 0.2 to 20).

    **Arguments:**

    - `N`: the population size (people), or the name of a θ entry (`N="N"`): then a
        parameter, drawn from the prior, e.g. a known input of a
        [`sgjax.Task`][]`(..., inputs=("N",))`. Default 1000.
    - `I0`: the number infected at `t0`, or the name of a θ entry. Default 1.
    - `observable`: what is observed; default `Decrease("S")`, the number of new
        infections per interval (daily incidence on a daily grid).

    **Derived quantities** ([`sgjax.AbstractODEModel.derived`][]): `R0 = β/γ`;
    `peak_time` (days) and `peak_prevalence` (`max I / N`, a fraction) on the given
    grid; `attack_rate = (N − S(t_end))/N`, the fraction (not people) infected by the
    end of the grid (initially infected included); `final_size`, the exact limit of
    the attack rate as `t → ∞`, a fraction, from [`sgjax.models.final_size`][] with
    the initial condition's correction `s0 = 1 − I0/N`. For people, scale a fraction
    by `N`: `sgjax.Derived("final_size", scale=N)`.
    """

    rates: ClassVar[tuple[str, ...]] = ("beta", "gamma")
    state_names: ClassVar[tuple[str, ...]] = ("S", "I", "R")
    support: ClassVar[dict[str, constraints.Constraint]] = {
        "beta": constraints.positive,
        "gamma": constraints.positive,
    }

    N: float | str = 1000.0
    I0: float | str = 1.0
    observable: AbstractObservable = Decrease("S")

    def vector_field(self, t: Scalar, y: State, theta: Params) -> State:
        N, I0, E0 = self.sizes(theta)
        s, i, r = y
        infection = theta["beta"] * s * i / N
        recovery = theta["gamma"] * i
        return jnp.stack([-infection, infection - recovery, recovery])

    def initial_state(self, theta: Params) -> State:
        N, I0, E0 = self.sizes(theta)
        dtype = jnp.result_type(theta["beta"], float)
        return jnp.array([N - I0, I0, 0.0], dtype=dtype)

    def default_prior(self) -> Prior:
        return Prior(_beta_gamma_prior())

    def derived(self, theta: Params, ts: Times, ys: Float[Array, "time state"]) -> dict[str, Scalar]:
        N, I0, E0 = self.sizes(theta)
        out = _epidemic_summary(self, theta, ts, ys)
        out["final_size"] = final_size(out["R0"], 1.0 - I0 / N)
        return out


class SEIR(_Population):
    """The susceptible–exposed–infected–recovered model: SIR with a latent period.

    ```
    S' = −β S I / N
    E' =  β S I / N − σ E
    I' =  σ E − γ I
    R' =  γ I
    ```

    with `S(0) = N − E0 − I0`, `E(0) = E0`, `I(0) = I0`, `R(0) = 0`. `S + E + I + R = N`
    at all times.

    **Parameters** (in `θ`):

    - `beta`: transmission rate β (1/day).
    - `sigma`: incubation rate σ, 1 / mean latent period (1/day).
    - `gamma`: recovery rate γ, 1 / mean infectious period (1/day).

    **States** (people): `S` susceptible, `E` exposed (infected, not yet infectious),
    `I` infectious, `R` recovered.

    **Default prior:** `beta ~ LogUniform(0.1, 1.0)`, `gamma ~ LogUniform(0.05, 0.5)`
    (infectious periods 2–20 days, `R0` from 0.2 to 20), `sigma ~ LogUniform(0.1, 1.0)`
    (latent periods 1–10 days).

    **Arguments:**

    - `N`: the population size (people). Default 1000.
    - `I0`: the number infectious at `t0`. Default 1.
    - `E0`: the number exposed at `t0`. Default 0.
    - `observable`: default `Decrease("S")`, new infections per interval.

    **Derived quantities:** as [`sgjax.models.SIR`][]: `R0 = β/γ` (every exposed person
    becomes infectious), `peak_time` (days) and `peak_prevalence` of `I` (a fraction),
    `attack_rate` (a fraction), and the exact `final_size` (a fraction) with `s0 = 1 − (E0 + I0)/N` (the SIR final-size relation holds
    unchanged for SEIR).
    """

    rates: ClassVar[tuple[str, ...]] = ("beta", "sigma", "gamma")
    state_names: ClassVar[tuple[str, ...]] = ("S", "E", "I", "R")
    support: ClassVar[dict[str, constraints.Constraint]] = {
        "beta": constraints.positive,
        "sigma": constraints.positive,
        "gamma": constraints.positive,
    }

    N: float | str = 1000.0
    I0: float | str = 1.0
    E0: float | str = 0.0
    observable: AbstractObservable = Decrease("S")

    def vector_field(self, t: Scalar, y: State, theta: Params) -> State:
        N, I0, E0 = self.sizes(theta)
        s, e, i, r = y
        infection = theta["beta"] * s * i / N
        onset = theta["sigma"] * e
        recovery = theta["gamma"] * i
        return jnp.stack([-infection, infection - onset, onset - recovery, recovery])

    def initial_state(self, theta: Params) -> State:
        N, I0, E0 = self.sizes(theta)
        dtype = jnp.result_type(theta["beta"], float)
        return jnp.array([N - E0 - I0, E0, I0, 0.0], dtype=dtype)

    def default_prior(self) -> Prior:
        return Prior(
            beta=dist.LogUniform(0.1, 1.0),
            sigma=dist.LogUniform(0.1, 1.0),
            gamma=dist.LogUniform(0.05, 0.5),
        )

    def derived(self, theta: Params, ts: Times, ys: Float[Array, "time state"]) -> dict[str, Scalar]:
        N, I0, E0 = self.sizes(theta)
        out = _epidemic_summary(self, theta, ts, ys)
        out["final_size"] = final_size(out["R0"], 1.0 - (E0 + I0) / N)
        return out


class SIRS(_Population):
    """SIR with waning immunity: recovered people become susceptible again.

    ```
    S' = −β S I / N + ω R
    I' =  β S I / N − γ I
    R' =  γ I − ω R
    C' =  β S I / N
    ```

    with `S(0) = N − I0`, `I(0) = I0`, `R(0) = 0`, `C(0) = 0`. `S + I + R = N` at all
    times; for `R0 > 1` the solution tends to an endemic equilibrium. `C` counts the
    infections so far (reinfections included), so that incidence can be observed:
    with waning, `S` also gains people, and its decrease is new infections minus
    people losing immunity. `C(t) = S(0) − S(t) + ∫₀ᵗ ω R`.

    **Parameters** (in `θ`):

    - `beta`: transmission rate β (1/day).
    - `gamma`: recovery rate γ (1/day).
    - `omega`: waning rate ω, 1 / mean duration of immunity (1/day).

    **States** (people): `S` susceptible, `I` infected, `R` recovered and immune, `C`
    cumulative infections.

    **Default prior:** `beta ~ LogUniform(0.1, 1.0)`, `gamma ~ LogUniform(0.05, 0.5)`
    (infectious periods 2–20 days, `R0` from 0.2 to 20), `omega ~ LogUniform(0.005, 0.05)`
    (immunity lasting 20–200 days).

    **Arguments:**

    - `N`: the population size (people). Default 1000.
    - `I0`: the number infected at `t0`. Default 1.
    - `observable`: default `Increase("C")`, the number of new infections per
        interval (daily incidence on a daily grid), as for the other epidemic models.

    **Derived quantities:** `R0 = β/γ`, `peak_time` (days), `peak_prevalence`
    (`max I / N`, a fraction), and `attack_rate = (N − S(t_end))/N`, a fraction, which
    with waning is the fraction *not
    susceptible* at the end of the grid rather than the fraction ever infected (`C`
    counts infections, reinfections included). No `final_size`: the epidemic does not
    burn out.
    """

    rates: ClassVar[tuple[str, ...]] = ("beta", "gamma", "omega")
    state_names: ClassVar[tuple[str, ...]] = ("S", "I", "R", "C")
    support: ClassVar[dict[str, constraints.Constraint]] = {
        "beta": constraints.positive,
        "gamma": constraints.positive,
        "omega": constraints.positive,
    }

    N: float | str = 1000.0
    I0: float | str = 1.0
    observable: AbstractObservable = Increase("C")

    def vector_field(self, t: Scalar, y: State, theta: Params) -> State:
        N, I0, E0 = self.sizes(theta)
        s, i, r, _ = y
        infection = theta["beta"] * s * i / N
        recovery = theta["gamma"] * i
        waning = theta["omega"] * r
        return jnp.stack([waning - infection, infection - recovery, recovery - waning, infection])

    def initial_state(self, theta: Params) -> State:
        N, I0, E0 = self.sizes(theta)
        dtype = jnp.result_type(theta["beta"], float)
        return jnp.array([N - I0, I0, 0.0, 0.0], dtype=dtype)

    def default_prior(self) -> Prior:
        return Prior(_beta_gamma_prior(), omega=dist.LogUniform(0.005, 0.05))

    def derived(self, theta: Params, ts: Times, ys: Float[Array, "time state"]) -> dict[str, Scalar]:
        return _epidemic_summary(self, theta, ts, ys)


class SIRIntervention(_Population):
    """SIR whose transmission rate drops around an unknown time, e.g. when a lockdown
    starts:

    ```
    β(t) = β (1 − effect · σ((t − t_change) / w)),   σ(u) = 1 / (1 + e^{−u})
    S' = −β(t) S I / N,   I' = β(t) S I / N − γ I,   R' = γ I
    ```

    with `S(0) = N − I0`, `I(0) = I0`, `R(0) = 0`. Transmission falls from `β` to
    `β (1 − effect)` along a logistic ramp centred on `t_change`: half the cut is in
    place at `t_change`, and it goes from 10% to 90% of the cut over `2 ln 9 · w ≈
    4.4 w` days. Long before `t_change` the model is [`sgjax.models.SIR`][] (β differs
    by a fraction `effect · e^{(t − t_change)/w}` of itself); as `w → 0` the ramp
    becomes a step at `t_change`.

    Why a ramp and not a step: with a step, the solution moves with `t_change` but the
    vector field at every time the solver evaluates does not, so the derivative of the
    solution (and of a likelihood) with respect to `t_change` computed through the
    solver is exactly zero, and gradient-based fits (`fit_mle`, `laplace`, NUTS)
    never move `t_change`. Solving in two pieces with the switch as an event would be
    exact, but the switch time differs per trajectory, which a batch sharing one time
    grid and one step sequence cannot stop at. The logistic ramp is smooth (every
    derivative exists), so the derivative through the solver is the true one and the
    adaptive controller's error estimate holds across the switch, as it did not for
    the step.

    **Parameters** (in `θ`):

    - `beta`: transmission rate before the intervention (1/day).
    - `gamma`: recovery rate (1/day).
    - `t_change`: when the intervention is half in place (days, on the same clock as
        `ts`).
    - `effect`: the fraction by which transmission is cut, in `[0, 1]`.

    **States** (people): `S`, `I`, `R` as in SIR.

    **Default prior:** `beta ~ LogUniform(0.1, 1.0)`, `gamma ~ LogUniform(0.05, 0.5)`
    (infectious periods 2–20 days, `R0` from 0.2 to 20), `t_change ~ Uniform(10, 60)`
    days, `effect ~ Uniform(0, 1)`.

    **Arguments:**

    - `N`: the population size (people). Default 1000.
    - `I0`: the number infected at `t0`. Default 1.
    - `ramp_width`: `w`, the time scale of the ramp (days), positive. Default 1 day:
        the cut takes about 4.4 days to go from 10% to 90% in place, about how long
        behaviour takes to change, and still short against the weeks an epidemic
        lasts. Smaller values approach a step; an adaptive solver then takes more,
        smaller steps around `t_change` to resolve the ramp (and without them, as
        with a fixed step larger than `w`, the derivative in `t_change` is lost again).
    - `observable`: default `Decrease("S")`, new infections per interval.

    **Derived quantities:** `R0 = β/γ` (before the intervention), `peak_time` (days),
    `peak_prevalence` (`max I / N`, a fraction) and `attack_rate = (N − S(t_end))/N`
    (a fraction) on the grid.
    No closed-form final size: it depends on when and how hard the intervention hits.
    """

    rates: ClassVar[tuple[str, ...]] = ("beta", "gamma", "t_change", "effect")
    state_names: ClassVar[tuple[str, ...]] = ("S", "I", "R")
    support: ClassVar[dict[str, constraints.Constraint]] = {
        "beta": constraints.positive,
        "gamma": constraints.positive,
        "effect": constraints.unit_interval,
    }

    N: float | str = 1000.0
    I0: float | str = 1.0
    ramp_width: float = 1.0
    observable: AbstractObservable = Decrease("S")

    def __check_init__(self):
        w = self.ramp_width
        if isinstance(w, (int, float)) and not (w > 0 and math.isfinite(w)):
            raise ValueError(
                f"`ramp_width` must be a positive number of days (the time scale over "
                f"which transmission falls around t_change), got {w!r}. For a near-step "
                f"use a small value such as 0.1."
            )

    def vector_field(self, t: Scalar, y: State, theta: Params) -> State:
        N, I0, E0 = self.sizes(theta)
        s, i, r = y
        cut = theta["effect"] * jax.nn.sigmoid((t - theta["t_change"]) / self.ramp_width)
        infection = theta["beta"] * (1.0 - cut) * s * i / N
        recovery = theta["gamma"] * i
        return jnp.stack([-infection, infection - recovery, recovery])

    def initial_state(self, theta: Params) -> State:
        N, I0, E0 = self.sizes(theta)
        dtype = jnp.result_type(theta["beta"], float)
        return jnp.array([N - I0, I0, 0.0], dtype=dtype)

    def default_prior(self) -> Prior:
        return Prior(_beta_gamma_prior(), t_change=dist.Uniform(10.0, 60.0), effect=dist.Uniform(0.0, 1.0))

    def derived(self, theta: Params, ts: Times, ys: Float[Array, "time state"]) -> dict[str, Scalar]:
        return _epidemic_summary(self, theta, ts, ys)
