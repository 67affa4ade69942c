"""Two-species population models: predator–prey and competition (Lotka–Volterra)."""

from typing import ClassVar

import jax.numpy as jnp
import numpyro.distributions as dist
from numpyro.distributions import constraints

from .._custom_types import Array, Float, Params, Scalar, State, Times
from .._simulation import AbstractObservable, AbstractODEModel, Prior, State as StateObs


def _initial(values, theta):
    return jnp.array(values, dtype=jnp.result_type(next(iter(theta.values())), float))


class LotkaVolterra(AbstractODEModel):
    """The Lotka–Volterra predator–prey model:

    ```
    x' = α x − β x y
    y' = δ x y − γ y
    ```

    Every solution with `x, y > 0` is a closed orbit around the equilibrium
    `(γ/δ, α/β)`, along which `V = δ x − γ log x + β y − α log y` is constant.

    **Parameters** (in `θ`):

    - `alpha`: the prey's growth rate without predators (1/time).
    - `beta`: the predation rate (1/(predator · time)).
    - `delta`: the predators' growth per prey eaten (1/(prey · time)).
    - `gamma`: the predators' death rate without prey (1/time).

    **States** (individuals, or densities): `prey` (x) and `predator` (y).

    **Default prior:** `alpha ~ Uniform(0.5, 1.5)`, `beta ~ Uniform(0.02, 0.05)`,
    `delta ~ Uniform(0.02, 0.05)`, `gamma ~ Uniform(0.5, 1.5)`: equilibria between 10
    and 75 of each species and periods of roughly 4–13 time units. From the default
    initial state the orbits stay between about 0.5 and 200, so the default tolerances
    resolve them.

    **Arguments:**

    - `prey0`: the prey population at `t0` (fixed). Default 20.
    - `predator0`: the predator population at `t0` (fixed). Default 20.
    - `observable`: default `State("prey", "predator")`, two channels.

    **Derived quantities:** `prey_equilibrium = γ/δ`, `predator_equilibrium = α/β`, and
    `period_linear = 2π/√(αγ)`, the period of small oscillations about the equilibrium
    (large orbits are slower).
    """

    param_names: ClassVar[tuple[str, ...]] = ("alpha", "beta", "delta", "gamma")
    state_names: ClassVar[tuple[str, ...]] = ("prey", "predator")
    support: ClassVar[dict[str, constraints.Constraint]] = {
        name: constraints.positive for name in ("alpha", "beta", "delta", "gamma")
    }

    prey0: float = 20.0
    predator0: float = 20.0
    observable: AbstractObservable = StateObs("prey", "predator")

    def vector_field(self, t: Scalar, y: State, theta: Params) -> State:
        x, z = y
        return jnp.stack(
            [
                theta["alpha"] * x - theta["beta"] * x * z,
                theta["delta"] * x * z - theta["gamma"] * z,
            ]
        )

    def initial_state(self, theta: Params) -> State:
        return _initial([self.prey0, self.predator0], theta)

    def default_prior(self) -> Prior:
        return Prior(
            alpha=dist.Uniform(0.5, 1.5),
            beta=dist.Uniform(0.02, 0.05),
            delta=dist.Uniform(0.02, 0.05),
            gamma=dist.Uniform(0.5, 1.5),
        )

    def derived(self, theta: Params, ts: Times, ys: Float[Array, "time state"]) -> dict[str, Scalar]:
        return {
            "prey_equilibrium": theta["gamma"] / theta["delta"],
            "predator_equilibrium": theta["alpha"] / theta["beta"],
            "period_linear": 2 * jnp.pi / jnp.sqrt(theta["alpha"] * theta["gamma"]),
        }


class Competition(AbstractODEModel):
    """Two species competing for resources (Lotka–Volterra competition):

    ```
    N1' = r1 N1 (1 − (N1 + a12 N2) / K1)
    N2' = r2 N2 (1 − (N2 + a21 N1) / K2)
    ```

    The species coexist stably when `a12 < K1/K2` and `a21 < K2/K1`; otherwise one
    excludes the other (or which one wins depends on the start).

    **Parameters** (in `θ`):

    - `r1`, `r2`: the intrinsic growth rates (1/time).
    - `K1`, `K2`: the carrying capacities alone (individuals).
    - `a12`: the effect of one individual of species 2 on species 1, in units of
        species-1 individuals (dimensionless, ≥ 0); `a21` the reverse.

    **States** (individuals): `N1`, `N2`.

    **Default prior:** `r1, r2 ~ LogUniform(0.1, 1.0)`, `K1, K2 ~ Uniform(50, 150)`,
    `a12, a21 ~ Uniform(0, 1.5)` (both coexistence and exclusion occur).

    **Arguments:**

    - `N1_0`, `N2_0`: the populations at `t0` (fixed). Default 10 each.
    - `observable`: default `State("N1", "N2")`, two channels.

    **Derived quantities:** `coexistence`, 1.0 where the interior equilibrium is
    stable (`a12 < K1/K2` and `a21 < K2/K1`), else 0.0; and `N1_equilibrium`,
    `N2_equilibrium`, the stable equilibrium the populations approach: the interior
    one `(K1 − a12 K2, K2 − a21 K1) / (1 − a12 a21)` under coexistence, `(K1, 0)` or
    `(0, K2)` when one species excludes the other, and in the bistable case (both
    inequalities reversed) the one whose species is ahead, relative to its carrying
    capacity, at the end of the grid.
    """

    param_names: ClassVar[tuple[str, ...]] = ("r1", "r2", "K1", "K2", "a12", "a21")
    state_names: ClassVar[tuple[str, ...]] = ("N1", "N2")
    support: ClassVar[dict[str, constraints.Constraint]] = {
        "r1": constraints.positive,
        "r2": constraints.positive,
        "K1": constraints.positive,
        "K2": constraints.positive,
        "a12": constraints.nonnegative,
        "a21": constraints.nonnegative,
    }

    N1_0: float = 10.0
    N2_0: float = 10.0
    observable: AbstractObservable = StateObs("N1", "N2")

    def vector_field(self, t: Scalar, y: State, theta: Params) -> State:
        n1, n2 = y
        return jnp.stack(
            [
                theta["r1"] * n1 * (1.0 - (n1 + theta["a12"] * n2) / theta["K1"]),
                theta["r2"] * n2 * (1.0 - (n2 + theta["a21"] * n1) / theta["K2"]),
            ]
        )

    def initial_state(self, theta: Params) -> State:
        return _initial([self.N1_0, self.N2_0], theta)

    def default_prior(self) -> Prior:
        return Prior(
            r1=dist.LogUniform(0.1, 1.0),
            r2=dist.LogUniform(0.1, 1.0),
            K1=dist.Uniform(50.0, 150.0),
            K2=dist.Uniform(50.0, 150.0),
            a12=dist.Uniform(0.0, 1.5),
            a21=dist.Uniform(0.0, 1.5),
        )

    def derived(self, theta: Params, ts: Times, ys: Float[Array, "time state"]) -> dict[str, Scalar]:
        k1, k2, a12, a21 = theta["K1"], theta["K2"], theta["a12"], theta["a21"]
        stable1 = a21 > k2 / k1  # species 1 can exclude species 2 ...
        stable2 = a12 > k1 / k2  # ... and species 2 species 1
        coexist = ~stable1 & ~stable2
        # In the bistable case, the species ahead at the end of the grid wins.
        ahead1 = ys[-1, 0] / k1 >= ys[-1, 1] / k2
        wins1 = stable1 & (~stable2 | ahead1)
        det = jnp.where(coexist, 1.0 - a12 * a21, 1.0)  # > 0 under coexistence
        n1 = jnp.where(coexist, (k1 - a12 * k2) / det, jnp.where(wins1, k1, 0.0))
        n2 = jnp.where(coexist, (k2 - a21 * k1) / det, jnp.where(wins1, 0.0, k2))
        return {
            "coexistence": coexist.astype(jnp.result_type(k1, float)),
            "N1_equilibrium": n1,
            "N2_equilibrium": n2,
        }
