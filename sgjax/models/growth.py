"""Single-population growth models: exponential, logistic, Gompertz and Richards.

Each has one state `N` (the population size, in whatever unit the data use: cells,
individuals, biomass, cumulative cases), starts from the constructor field `N0`, and
observes `State("N")` by default. Rates are per unit of time of `ts`. All four have
closed-form solutions, given in the docstrings and used by the tests.
"""

from typing import ClassVar

import jax.numpy as jnp
import numpyro.distributions as dist
from numpyro.distributions import constraints

from .._custom_types import Array, Float, Params, Scalar, State, Times
from .._simulation import AbstractObservable, AbstractODEModel, Prior, State as StateObs


def _initial(n0, theta) -> State:
    return jnp.array([n0], dtype=jnp.result_type(next(iter(theta.values())), float))


class Exponential(AbstractODEModel):
    """Unbounded exponential growth (or decay):

    ```
    N' = r N,   N(t) = N0 exp(r (t − t0))
    ```

    **Parameters** (in `θ`):

    - `r`: the per-capita growth rate (1/time); negative for decay, so any real value
        is allowed.

    **States:** `N`, the population size (units of `N0`).

    **Default prior:** `r ~ Uniform(0.05, 0.3)`: over a horizon of 20 time units the
    population grows by a factor between e and 400.

    **Arguments:**

    - `N0`: the population at `t0` (a fixed constant, not inferred). Default 10.
    - `observable`: default `State("N")`.

    **Derived quantities:** `doubling_time = log(2)/r` (negative for decay).
    """

    param_names: ClassVar[tuple[str, ...]] = ("r",)
    state_names: ClassVar[tuple[str, ...]] = ("N",)
    support: ClassVar[dict[str, constraints.Constraint]] = {}

    N0: float = 10.0
    observable: AbstractObservable = StateObs("N")

    def vector_field(self, t: Scalar, y: State, theta: Params) -> State:
        (n,) = y
        return jnp.stack([theta["r"] * n])

    def initial_state(self, theta: Params) -> State:
        return _initial(self.N0, theta)

    def default_prior(self) -> Prior:
        return Prior(r=dist.Uniform(0.05, 0.3))

    def derived(self, theta: Params, ts: Times, ys: Float[Array, "time state"]) -> dict[str, Scalar]:
        return {"doubling_time": jnp.log(2.0) / theta["r"]}


class Logistic(AbstractODEModel):
    """Logistic growth to a carrying capacity:

    ```
    N' = r N (1 − N/K),   N(t) = K / (1 + (K/N0 − 1) exp(−r (t − t0)))
    ```

    **Parameters** (in `θ`):

    - `r`: the intrinsic (low-density) growth rate (1/time).
    - `K`: the carrying capacity (units of `N0`).

    **States:** `N`, the population size.

    **Default prior:** `r ~ LogUniform(0.1, 1.0)`, `K ~ LogUniform(100, 1000)`; with
    `N0 = 10` most trajectories reach `K` within 50 time units.

    **Arguments:**

    - `N0`: the population at `t0` (fixed). Default 10.
    - `observable`: default `State("N")`.

    **Derived quantities:** `doubling_time = log(2)/r` (early, low-density), and
    `half_time = log(K/N0 − 1)/r`, the time after `t0` at which `N = K/2` (the
    inflection; negative if `N0 > K/2`).
    """

    param_names: ClassVar[tuple[str, ...]] = ("r", "K")
    state_names: ClassVar[tuple[str, ...]] = ("N",)
    support: ClassVar[dict[str, constraints.Constraint]] = {
        "r": constraints.positive,
        "K": constraints.positive,
    }

    N0: float = 10.0
    observable: AbstractObservable = StateObs("N")

    def vector_field(self, t: Scalar, y: State, theta: Params) -> State:
        (n,) = y
        return jnp.stack([theta["r"] * n * (1.0 - n / theta["K"])])

    def initial_state(self, theta: Params) -> State:
        return _initial(self.N0, theta)

    def default_prior(self) -> Prior:
        return Prior(r=dist.LogUniform(0.1, 1.0), K=dist.LogUniform(100.0, 1000.0))

    def derived(self, theta: Params, ts: Times, ys: Float[Array, "time state"]) -> dict[str, Scalar]:
        return {
            "doubling_time": jnp.log(2.0) / theta["r"],
            "half_time": jnp.log(theta["K"] / self.N0 - 1.0) / theta["r"],
        }


class Gompertz(AbstractODEModel):
    """Gompertz growth, common for tumours and epidemic curves: growth slows as
    `log N` approaches `log K`.

    ```
    N' = r N log(K/N),   N(t) = K exp(log(N0/K) exp(−r (t − t0)))
    ```

    **Parameters** (in `θ`):

    - `r`: the rate at which `log(N/K)` decays to zero (1/time).
    - `K`: the asymptotic size (units of `N0`).

    **States:** `N`, the population size (must stay positive; it does for `N0 > 0`).

    **Default prior:** `r ~ LogUniform(0.05, 0.5)`, `K ~ LogUniform(100, 1000)`.

    **Arguments:**

    - `N0`: the population at `t0` (fixed, positive). Default 10.
    - `observable`: default `State("N")`.

    **Derived quantities:** `inflection_time = log(log(K/N0))/r`, the time after `t0`
    at which `N = K/e`, where the growth `N'` peaks (negative if `N0 > K/e`).
    """

    param_names: ClassVar[tuple[str, ...]] = ("r", "K")
    state_names: ClassVar[tuple[str, ...]] = ("N",)
    support: ClassVar[dict[str, constraints.Constraint]] = {
        "r": constraints.positive,
        "K": constraints.positive,
    }

    N0: float = 10.0
    observable: AbstractObservable = StateObs("N")

    def vector_field(self, t: Scalar, y: State, theta: Params) -> State:
        (n,) = y
        return jnp.stack([theta["r"] * n * jnp.log(theta["K"] / n)])

    def initial_state(self, theta: Params) -> State:
        return _initial(self.N0, theta)

    def default_prior(self) -> Prior:
        return Prior(r=dist.LogUniform(0.05, 0.5), K=dist.LogUniform(100.0, 1000.0))

    def derived(self, theta: Params, ts: Times, ys: Float[Array, "time state"]) -> dict[str, Scalar]:
        return {"inflection_time": jnp.log(jnp.log(theta["K"] / self.N0)) / theta["r"]}


class Richards(AbstractODEModel):
    """Richards' generalised logistic growth, in the form that contains the logistic
    (`ν = 1`) and, as `ν → 0`, the Gompertz model:

    ```
    N' = (r/ν) N (1 − (N/K)^ν)
    N(t) = K (1 + ((K/N0)^ν − 1) exp(−r (t − t0)))^(−1/ν)
    ```

    (the closed form follows because `u = (N/K)^ν` obeys the logistic equation
    `u' = r u (1 − u)`). Note the `1/ν`: in the other common form,
    `N' = r N (1 − (N/K)^ν)`, the rate is `r ν` in this one.

    **Parameters** (in `θ`):

    - `r`: the growth rate (1/time); for `ν = 1` the logistic rate.
    - `K`: the carrying capacity (units of `N0`).
    - `nu`: the shape ν > 0; the inflection is at `N = K (1 + ν)^(−1/ν)`, below `K/2`
        for `ν < 1` and above it for `ν > 1`.

    **States:** `N`, the population size.

    **Default prior:** `r ~ LogUniform(0.1, 1.0)`, `K ~ LogUniform(100, 1000)`,
    `nu ~ LogUniform(0.2, 5)`.

    **Arguments:**

    - `N0`: the population at `t0` (fixed). Default 10.
    - `observable`: default `State("N")`.

    **Derived quantities:** `half_time = log(((K/N0)^ν − 1)/(2^ν − 1))/r`, the time
    after `t0` at which `N = K/2` (negative if `N0 > K/2`).
    """

    param_names: ClassVar[tuple[str, ...]] = ("r", "K", "nu")
    state_names: ClassVar[tuple[str, ...]] = ("N",)
    support: ClassVar[dict[str, constraints.Constraint]] = {
        "r": constraints.positive,
        "K": constraints.positive,
        "nu": constraints.positive,
    }

    N0: float = 10.0
    observable: AbstractObservable = StateObs("N")

    def vector_field(self, t: Scalar, y: State, theta: Params) -> State:
        (n,) = y
        nu = theta["nu"]
        return jnp.stack([theta["r"] / nu * n * (1.0 - (n / theta["K"]) ** nu)])

    def initial_state(self, theta: Params) -> State:
        return _initial(self.N0, theta)

    def default_prior(self) -> Prior:
        return Prior(r=dist.LogUniform(0.1, 1.0), K=dist.LogUniform(100.0, 1000.0), nu=dist.LogUniform(0.2, 5.0))

    def derived(self, theta: Params, ts: Times, ys: Float[Array, "time state"]) -> dict[str, Scalar]:
        nu = theta["nu"]
        return {"half_time": jnp.log(((theta["K"] / self.N0) ** nu - 1.0) / (2.0**nu - 1.0)) / theta["r"]}
