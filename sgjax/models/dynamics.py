"""Classic low-dimensional dynamical systems: a damped oscillator, the van der Pol and
FitzHugh–Nagumo oscillators, and the Lorenz system.

Their states are of order 1 (the Lorenz system's of order 10), so the simulator's
default tolerances, `PIDController(rtol=1e-4, atol=1e-3)`, are dominated by `atol`
here: trajectories are accurate to about 1e-3 absolute. Pass e.g.
`stepsize_controller=diffrax.PIDController(rtol=1e-6, atol=1e-6)` to the
[`sgjax.Simulator`][] where that is too coarse.
"""

from typing import ClassVar

import jax.numpy as jnp
import numpyro.distributions as dist
from numpyro.distributions import constraints

from .._custom_types import Array, Float, Params, Scalar, State, Times
from .._simulation import AbstractObservable, AbstractODEModel, Prior, State as StateObs


def _initial(values, theta):
    return jnp.array(values, dtype=jnp.result_type(next(iter(theta.values())), float))


class DampedOscillator(AbstractODEModel):
    """The damped harmonic oscillator `x'' + 2 ζ ω x' + ω² x = 0`, as a first-order
    system:

    ```
    x' = v
    v' = −2 ζ ω v − ω² x
    ```

    Under-damped (`ζ < 1`), with `ω_d = ω √(1 − ζ²)`:
    `x(t) = exp(−ζ ω t) (x0 cos ω_d t + (v0 + ζ ω x0)/ω_d sin ω_d t)` (t from `t0`).

    **Parameters** (in `θ`):

    - `omega`: the undamped angular frequency ω (radians per time unit).
    - `zeta`: the damping ratio ζ ≥ 0 (dimensionless): 0 undamped, < 1 under-damped,
        1 critically damped, > 1 over-damped.

    **States:** `x` the displacement and `v = x'` the velocity (units of `x0`, and
    `x0` per time).

    **Default prior:** `omega ~ Uniform(0.5, 2.0)`, `zeta ~ Uniform(0.0, 0.5)`
    (under-damped; a few visible oscillations over 20 time units).

    **Arguments:**

    - `x0`: the displacement at `t0` (fixed). Default 1.
    - `v0`: the velocity at `t0` (fixed). Default 0.
    - `observable`: default `State("x")`.

    States are O(1): see the module note on tolerances.

    **Derived quantities:** `period = 2π/ω_d` (inf unless under-damped) and
    `decay_time = 1/(ζ ω)`, the e-folding time of the amplitude (inf when ζ = 0).
    """

    param_names: ClassVar[tuple[str, ...]] = ("omega", "zeta")
    state_names: ClassVar[tuple[str, ...]] = ("x", "v")
    support: ClassVar[dict[str, constraints.Constraint]] = {
        "omega": constraints.positive,
        "zeta": constraints.nonnegative,
    }

    x0: float = 1.0
    v0: float = 0.0
    observable: AbstractObservable = StateObs("x")

    def vector_field(self, t: Scalar, y: State, theta: Params) -> State:
        x, v = y
        omega, zeta = theta["omega"], theta["zeta"]
        return jnp.stack([v, -2.0 * zeta * omega * v - omega**2 * x])

    def initial_state(self, theta: Params) -> State:
        return _initial([self.x0, self.v0], theta)

    def default_prior(self) -> Prior:
        return Prior(omega=dist.Uniform(0.5, 2.0), zeta=dist.Uniform(0.0, 0.5))

    def derived(self, theta: Params, ts: Times, ys: Float[Array, "time state"]) -> dict[str, Scalar]:
        omega, zeta = theta["omega"], theta["zeta"]
        under = zeta < 1.0
        omega_d = omega * jnp.sqrt(jnp.where(under, 1.0 - zeta**2, 1.0))
        return {
            "period": jnp.where(under, 2 * jnp.pi / omega_d, jnp.inf),
            "decay_time": 1.0 / (zeta * omega),
        }


class VanDerPol(AbstractODEModel):
    """The van der Pol oscillator `x'' − μ (1 − x²) x' + x = 0`, as a first-order
    system:

    ```
    x' = v
    v' = μ (1 − x²) v − x
    ```

    For `μ > 0` every trajectory approaches a limit cycle of amplitude about 2; for
    `μ = 0` it is the harmonic oscillator `x = x0 cos t + v0 sin t`. Stiff for large
    `μ` (≳ 10): use an implicit solver there.

    **Parameters** (in `θ`):

    - `mu`: the nonlinear damping strength μ ≥ 0 (dimensionless; time is in units of
        the small-amplitude period / 2π).

    **States:** `x` the position and `v = x'` the velocity (dimensionless).

    **Default prior:** `mu ~ Uniform(0.1, 3.0)` (from near-sinusoidal to relaxation
    oscillations, not stiff).

    **Arguments:**

    - `x0`: the position at `t0` (fixed). Default 1.
    - `v0`: the velocity at `t0` (fixed). Default 0.
    - `observable`: default `State("x")`.

    States are O(1): see the module note on tolerances.
    """

    param_names: ClassVar[tuple[str, ...]] = ("mu",)
    state_names: ClassVar[tuple[str, ...]] = ("x", "v")
    support: ClassVar[dict[str, constraints.Constraint]] = {"mu": constraints.nonnegative}

    x0: float = 1.0
    v0: float = 0.0
    observable: AbstractObservable = StateObs("x")

    def vector_field(self, t: Scalar, y: State, theta: Params) -> State:
        x, v = y
        return jnp.stack([v, theta["mu"] * (1.0 - x**2) * v - x])

    def initial_state(self, theta: Params) -> State:
        return _initial([self.x0, self.v0], theta)

    def default_prior(self) -> Prior:
        return Prior(mu=dist.Uniform(0.1, 3.0))


class FitzHughNagumo(AbstractODEModel):
    """The FitzHugh–Nagumo model of an excitable neuron:

    ```
    v' = v − v³/3 − w + I_ext
    w' = (v + a − b w) / τ
    ```

    With the classic values `a = 0.7, b = 0.8, τ = 12.5`, a constant current
    `I_ext ≳ 0.33` makes it spike periodically (a limit cycle); below that it rests.

    **Parameters** (in `θ`):

    - `a`, `b`: the shape of the recovery nullcline `w = (v + a)/b` (dimensionless).
    - `tau`: the time scale of the recovery variable relative to `v` (dimensionless).
    - `I_ext`: the external stimulus current (dimensionless).

    **States** (dimensionless): `v` the membrane potential, `w` the recovery variable.

    **Default prior:** `a ~ Uniform(0.6, 0.8)`, `b ~ Uniform(0.7, 0.9)`,
    `tau ~ Uniform(10, 15)`, `I_ext ~ Uniform(0.2, 0.8)` (resting and spiking).

    **Arguments:**

    - `v0`, `w0`: the state at `t0` (fixed). Default `v0 = −1`, `w0 = 1`.
    - `observable`: default `State("v")`.

    States are O(1): see the module note on tolerances.
    """

    param_names: ClassVar[tuple[str, ...]] = ("a", "b", "tau", "I_ext")
    state_names: ClassVar[tuple[str, ...]] = ("v", "w")
    support: ClassVar[dict[str, constraints.Constraint]] = {"tau": constraints.positive}

    v0: float = -1.0
    w0: float = 1.0
    observable: AbstractObservable = StateObs("v")

    def vector_field(self, t: Scalar, y: State, theta: Params) -> State:
        v, w = y
        dv = v - v**3 / 3.0 - w + theta["I_ext"]
        dw = (v + theta["a"] - theta["b"] * w) / theta["tau"]
        return jnp.stack([dv, dw])

    def initial_state(self, theta: Params) -> State:
        return _initial([self.v0, self.w0], theta)

    def default_prior(self) -> Prior:
        return Prior(
            a=dist.Uniform(0.6, 0.8),
            b=dist.Uniform(0.7, 0.9),
            tau=dist.Uniform(10.0, 15.0),
            I_ext=dist.Uniform(0.2, 0.8),
        )


class Lorenz(AbstractODEModel):
    """The Lorenz system, a model of convection and the classic chaotic ODE:

    ```
    x' = σ (y − x)
    y' = x (ρ − z) − y
    z' = x y − β z
    ```

    Chaotic near the classic `σ = 10, ρ = 28, β = 8/3`: nearby trajectories separate
    like `exp(0.9 t)`, so only short horizons (a few time units) are predictable, and
    any two solvers or tolerances disagree after that.

    **Parameters** (in `θ`):

    - `sigma`: the Prandtl number σ (dimensionless).
    - `rho`: the Rayleigh number ρ, relative to its critical value (dimensionless).
    - `beta`: the geometric factor β (dimensionless).

    **States** (dimensionless): `x` the convection intensity, `y` and `z` the
    horizontal and vertical temperature variations.

    **Default prior:** `sigma ~ Uniform(8, 12)`, `rho ~ Uniform(24, 32)`,
    `beta ~ Uniform(2, 3)`, around the chaotic regime.

    **Arguments:**

    - `x0`, `y0`, `z0`: the state at `t0` (fixed). Default `(1, 1, 1)`.
    - `observable`: default `State("x", "y", "z")`.

    **Derived quantities:** `fixed_point = √(β (ρ − 1))`, the `|x| = |y|` of the two
    non-trivial fixed points (0 for `ρ ≤ 1`, where only the origin exists).
    """

    param_names: ClassVar[tuple[str, ...]] = ("sigma", "rho", "beta")
    state_names: ClassVar[tuple[str, ...]] = ("x", "y", "z")
    support: ClassVar[dict[str, constraints.Constraint]] = {
        "sigma": constraints.positive,
        "beta": constraints.positive,
    }

    x0: float = 1.0
    y0: float = 1.0
    z0: float = 1.0
    observable: AbstractObservable = StateObs("x", "y", "z")

    def vector_field(self, t: Scalar, y: State, theta: Params) -> State:
        x, yy, z = y
        return jnp.stack(
            [
                theta["sigma"] * (yy - x),
                x * (theta["rho"] - z) - yy,
                x * yy - theta["beta"] * z,
            ]
        )

    def initial_state(self, theta: Params) -> State:
        return _initial([self.x0, self.y0, self.z0], theta)

    def default_prior(self) -> Prior:
        return Prior(sigma=dist.Uniform(8.0, 12.0), rho=dist.Uniform(24.0, 32.0), beta=dist.Uniform(2.0, 3.0))

    def derived(self, theta: Params, ts: Times, ys: Float[Array, "time state"]) -> dict[str, Scalar]:
        return {"fixed_point": jnp.sqrt(theta["beta"] * jnp.maximum(theta["rho"] - 1.0, 0.0))}
