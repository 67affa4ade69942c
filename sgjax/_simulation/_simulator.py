"""A simulator: a mechanistic model, observation times, an observation model and how
to solve it."""

import diffrax as dfx
import equinox as eqx
import jax
import jax.core
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float
from numpyro.distributions import constraints

from .._custom_types import Key, Params
from ..observation import ObservationModel
from ._model import AbstractODEModel


class Simulator(eqx.Module):
    """Everything that turns a parameter draw `θ` into a noisy observation `x`.

    **Arguments:**

    - `model`: an [`sgjax.AbstractODEModel`][] (a built-in or [`sgjax.ODEModel`][]).
    - `ts`: the observation times, strictly increasing; any grid, irregular included.
    - `observation`: an [`sgjax.observation.ObservationModel`][] that adds noise to the
        model's observable; `None` observes the clean signal.
    - `t0`: when the trajectory starts (the time of the initial state); at or before
        `ts[0]`. `ts[0] == t0` observes the initial state itself. Per-interval
        observables (incidence: `Decrease`, `Increase`) use the interval from `t0`
        to `ts[0]` first, so for them `t0` must be before `ts[0]`.
    - `solver`: any `diffrax.AbstractSolver`; default `diffrax.Tsit5()`.
    - `stepsize_controller`: any diffrax controller; default
        `diffrax.PIDController(rtol=1e-4, atol=1e-3)`. Tolerances apply per trajectory
        in either strategy.
    - `dt0`: the first step; `None` lets an adaptive controller choose.
    - `max_steps`: the most steps one solve may take before it is marked failed.
    """

    model: AbstractODEModel
    ts: Float[Array, " time"]
    observation: ObservationModel | None
    t0: float = eqx.field(static=True)
    solver: dfx.AbstractSolver
    stepsize_controller: dfx.AbstractStepSizeController
    dt0: float | None = eqx.field(static=True)
    max_steps: int = eqx.field(static=True)

    def __init__(
        self,
        model: AbstractODEModel,
        ts: ArrayLike,
        observation: ObservationModel | None = None,
        *,
        t0: float = 0.0,
        solver: dfx.AbstractSolver | None = None,
        stepsize_controller: dfx.AbstractStepSizeController | None = None,
        dt0: float | None = None,
        max_steps: int = 4096,
    ):
        if not isinstance(model, AbstractODEModel):
            raise TypeError(
                f"`model` must be an sgjax model (a built-in or sgjax.ODEModel), got {type(model).__name__}."
            )
        ts_np = np.asarray(ts, dtype=float)
        if ts_np.ndim != 1 or ts_np.size == 0:
            raise ValueError(f"`ts` must be a non-empty 1-D array of times, got shape {ts_np.shape}.")
        if not np.all(np.isfinite(ts_np)):
            raise ValueError("`ts` contains NaN or infinite times.")
        if np.any(np.diff(ts_np) <= 0):
            bad = int(np.argmax(np.diff(ts_np) <= 0))
            raise ValueError(
                f"`ts` must be strictly increasing, but ts[{bad}]={ts_np[bad]} is not "
                f"before ts[{bad + 1}]={ts_np[bad + 1]}. Sort the times and drop repeats."
            )
        if not float(t0) <= ts_np[0]:
            raise ValueError(
                f"The start time t0={t0} must be before (or at) the first observation time "
                f"ts[0]={ts_np[0]}: the model cannot be observed before it starts. Pass the time the model's "
                "initial state holds as `t0=`, or drop the earlier observation times."
            )
        if float(t0) == ts_np[0] and getattr(model.observable, "per_interval", False):
            raise ValueError(
                f"The first observation time ts[0]={ts_np[0]} equals t0, but "
                f"{type(model.observable).__name__} observes the change over the interval "
                "ending at each time, and the interval ending at t0 is empty. Observe "
                "from the end of the first interval (drop ts[0]), or, if ts[0] reports "
                "what happened in the interval before it, start the model there (t0 = "
                "the start of that interval), with the initial state at that time."
            )
        if observation is not None and not isinstance(observation, ObservationModel):
            raise TypeError(
                "`observation` must be an sgjax.observation.ObservationModel, e.g. "
                "ObservationModel(Poisson()), or None for the clean signal."
            )
        if solver is None:
            solver = dfx.Tsit5()
        if stepsize_controller is None:
            stepsize_controller = dfx.PIDController(rtol=1e-4, atol=1e-3)
        if dt0 is None and isinstance(stepsize_controller, dfx.ConstantStepSize):
            raise ValueError(
                "A constant step size needs `dt0`: pass e.g. `dt0=0.1`, or use an "
                "adaptive controller such as diffrax.PIDController."
            )
        if not isinstance(max_steps, int) or max_steps < 1:
            raise ValueError(f"`max_steps` must be a positive integer, got {max_steps!r}.")
        self.model = model
        self.ts = jnp.asarray(ts_np, dtype=jnp.result_type(float))
        self.observation = observation
        self.t0 = float(t0)
        self.solver = solver
        self.stepsize_controller = stepsize_controller
        self.dt0 = None if dt0 is None else float(dt0)
        self.max_steps = max_steps
        if observation is not None:
            observation.check(self.ts)
        self._check_shapes()

    def _check_shapes(self) -> None:
        """Trace the model once on abstract values so that a wrong shape is reported
        here, in the model's own terms, not deep inside diffrax."""
        model = self.model
        name = type(model).__name__
        theta = {k: jax.ShapeDtypeStruct((), self.ts.dtype) for k in model.param_names}
        n_state = len(model.state_names)
        y0 = jax.eval_shape(model.initial_state, theta)
        if getattr(y0, "shape", None) != (n_state,):
            raise ValueError(
                f"{name}.initial_state returned shape {getattr(y0, 'shape', type(y0))}, but "
                f"the model has {n_state} states {model.state_names}: return an array of "
                f"shape ({n_state},)."
            )
        t = jax.ShapeDtypeStruct((), self.ts.dtype)
        y = jax.ShapeDtypeStruct((n_state,), self.ts.dtype)
        dy = jax.eval_shape(model.vector_field, t, y, theta)
        if getattr(dy, "shape", None) != (n_state,):
            raise ValueError(
                f"{name}.vector_field returned shape {getattr(dy, 'shape', type(dy))} for a "
                f"state of shape ({n_state},): return one derivative per state, e.g. "
                "jnp.stack([...])."
            )
        ys = jax.ShapeDtypeStruct((len(self.ts) + 1, n_state), self.ts.dtype)
        sig = jax.eval_shape(self.signal, ys)
        if sig.ndim != 2 or sig.shape[0] != len(self.ts):
            raise ValueError(
                f"The observable of {name} returned shape {sig.shape} for {len(self.ts)} "
                f"observation times: it must return shape (time, channels) = "
                f"({len(self.ts)}, channels)."
            )

    def derived(self, theta: Params, states: Float[Array, "n time state"]) -> dict[str, Array]:
        """The model's derived quantities (e.g. `R0`, final size, peak time) for a
        batch, from `θ` and the states at the observation times — e.g.
        `simulator.derived(sims.theta, sims.states)`."""
        return _derived(self, dict(theta), jnp.asarray(states))

    @property
    def derived_names(self) -> tuple[str, ...]:
        """The names of the model's derived quantities (`model.derived`)."""
        theta = {k: jax.ShapeDtypeStruct((), self.ts.dtype) for k in self.param_names}
        ys = jax.ShapeDtypeStruct((len(self.ts), len(self.model.state_names)), self.ts.dtype)
        return tuple(jax.eval_shape(self.model.derived, theta, self.ts, ys))

    def parameters_of(self, theta: Params) -> dict:
        """`θ` with the model's derived quantities (e.g. `R0` from a posterior's samples)
        left out: they follow from the parameters, so a posterior's samples of every
        label can be passed to [`sgjax.simulate`][] as they are. Other unknown names
        are left in, for [`check_theta`][sgjax.Simulator.check_theta] to refuse."""
        derived = [n for n in theta if n not in self.param_names]
        derived = set(derived) & set(self.derived_names) if derived else set()
        return {k: v for k, v in theta.items() if k not in derived}

    @property
    def param_names(self) -> tuple[str, ...]:
        """Every parameter the simulator reads: the model's, then the observation
        model's."""
        extra = () if self.observation is None else self.observation.param_names
        return tuple(self.model.param_names) + tuple(n for n in extra if n not in self.model.param_names)

    def default_prior(self):
        """The model's default prior, extended by the observation model's defaults."""
        prior = self.model.default_prior()
        if self.observation is None:
            return prior
        extra = {k: v for k, v in self.observation.default_priors().items() if k not in prior.names}
        return type(prior)({**prior.distributions, **extra}) if extra else prior

    def signal(self, ys: Float[Array, "time_plus_one state"]) -> Float[Array, "time channels"]:
        """The clean observed signal of one trajectory (the model's observable)."""
        out = self.model.observable(ys, self.model.state_names)
        return out if out.ndim == 2 else out[:, None]

    def observe(self, key: Key, signal: Float[Array, "time channels batch"], theta: Params):
        """Noisy observations and their mask for a batch of clean signals, batch
        last."""
        if self.observation is None:
            return signal, jnp.ones(signal.shape, bool)
        return self.observation.sample(key, signal, theta, self.ts)

    def check_theta(self, theta: Params) -> int:
        """Check a batch of parameters: every name present, one shape `(n,)`."""
        if not hasattr(theta, "keys"):
            raise TypeError(f"θ must be a dict of parameter name -> array, got {type(theta).__name__}.")
        from ._prior import suggest

        missing = [n for n in self.param_names if n not in theta]
        if missing:
            hints = "".join(suggest(m, theta.keys()) for m in missing)
            raise ValueError(f"θ has no value for {missing}; the simulator needs {self.param_names}.{hints}")
        unknown = [n for n in theta if n not in self.param_names]
        if unknown:
            hints = "".join(suggest(u, self.param_names) for u in unknown)
            raise ValueError(
                f"θ has unknown parameters {unknown}; the simulator uses {self.param_names}.{hints} "
                "Pass only those (a task's describe()['parameters'] lists the labels that are "
                "parameters); the model's derived quantities are left out by themselves."
            )
        shapes = {n: jnp.shape(theta[n]) for n in self.param_names}
        if len(set(shapes.values())) != 1 or len(next(iter(shapes.values()))) != 1:
            raise ValueError(
                f"Every entry of θ must have the same shape (n,), got {shapes}. For one "
                "parameter set, wrap each value as [value]."
            )
        for name in self.param_names:
            self._check_support(name, theta[name])
        return next(iter(shapes.values()))[0]

    def parameter_support(self, name: str) -> constraints.Constraint:
        """Where parameter `name` may lie, as a numpyro constraint: the model's
        support for its own parameters; for the observation model's, the support it
        declares through a `parameter_support(name)` method, if it has one (else any
        real value)."""
        if name in self.model.param_names:
            return self.model.parameter_support(name)
        declared = getattr(self.observation, "parameter_support", None)
        return constraints.real if declared is None else declared(name)

    def _check_support(self, name: str, values) -> None:
        """Refuse concrete values of `θ[name]` that are not finite or lie outside the
        parameter's support (what [`sgjax.Prior.check_model`][] requires of a prior's
        support), naming the first offender."""
        if isinstance(values, jax.core.Tracer):
            return
        from ._prior import bounds

        support = self.parameter_support(name)
        v = jnp.asarray(values)
        bad = np.flatnonzero(~np.asarray(jnp.isfinite(v) & support(v)))
        if bad.size:
            owner = type(self.model).__name__ if name in self.model.param_names else "the observation model"
            interval = bounds(support)
            where = str(support) if interval is None else f"{interval}, i.e. {support}"
            raise ValueError(
                f"θ[{name!r}] = {float(np.asarray(v)[bad[0]]):g} at sample {bad[0]} ({bad.size} of {v.size} "
                f"values) is not a finite value in {owner}'s support for {name}, {where}. Pass only "
                "values inside it, e.g. draws from a prior that `Prior.check_model` accepts."
            )


@eqx.filter_jit
def _derived(simulator, theta, states):
    return jax.vmap(simulator.model.derived, in_axes=(0, None, 0))(theta, simulator.ts, states)


@eqx.filter_jit
def _solve(simulator, theta):
    from ._strategy import solve_one

    return solve_one(simulator, theta, simulator.stepsize_controller)


def solve(simulator: Simulator, theta: Params) -> Float[Array, "time state"]:
    """Solve one trajectory (θ a dict of scalars) and return its states at the
    observation times `simulator.ts`. Raises if the solve fails. Handy for checks and
    plots; for batches use [`sgjax.simulate`][]."""
    theta = {k: jnp.asarray(v, dtype=simulator.ts.dtype) for k, v in theta.items()}
    ys, ok = _solve(simulator, theta)
    if not bool(ok):
        raise RuntimeError(
            "The solve failed (diffrax did not return success); try a larger `max_steps` or another solver."
        )
    return ys[1:]
