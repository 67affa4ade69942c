"""Learning tasks: where training pairs `(x, y)` come from.

A task is a jittable function `key, n → Batch`: it draws `θ` from a prior, simulates,
observes, and computes the target. [`sgjax.fit`][] calls it inside the fused
training step, so no dataset ever exists on disk or on the host.
"""

import abc
from collections.abc import Mapping, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float

from .._custom_types import Key
from .._simulation import AbstractStrategy, observe_batch, Prior, restrictable, SharedStep, Simulator, unwrapped
from ._target import AbstractTarget, Derived, Draw, Parameter, Space


class Batch(eqx.Module):
    """Training pairs, sample first.

    **Fields:**

    - `x`: observations `(n, time, channels)`, 0 where missing.
    - `mask`: `True` where observed, `(n, time, channels)`.
    - `y`: targets in their learning space `(n, k)`; for model selection, the model
        index `(n, 1)`.
    - `weight`: per-sample loss weight `(n,)`: 0 for failed simulations.
    - `inputs`: known per-sample inputs `(n, k_in)` that the network reads beside `x`
        (a population size, a covariate: the task's `inputs`, in natural units), or
        `None` for a task without them.
    """

    x: Float[Array, "n time channels"]
    mask: Bool[Array, "n time channels"]
    y: Float[Array, "n k"]
    weight: Float[Array, " n"]
    inputs: Float[Array, "n k_in"] | None = None


class AbstractTask(eqx.Module):
    """A source of training pairs. Subclass it to learn from any jittable simulator
    (an agent-based model, a toy with an exact posterior): define `sample`, `labels`,
    `spaces`, `in_time`, `in_channels`, and `n_classes` (0 for regression)."""

    @abc.abstractmethod
    def sample(self, key: Key, n: int) -> Batch:
        """`n` fresh training pairs; must be jittable with `n` static."""

    @property
    @abc.abstractmethod
    def labels(self) -> tuple[str, ...]:
        """One name per target component (per class for model selection)."""

    @property
    @abc.abstractmethod
    def spaces(self) -> tuple[Space, ...]:
        """The learning space of each target component (empty for model selection)."""

    @property
    @abc.abstractmethod
    def in_time(self) -> int:
        """How many observation times the network sees."""

    @property
    @abc.abstractmethod
    def in_channels(self) -> int:
        """How many observed channels."""

    @property
    def n_classes(self) -> int:
        """The number of models for model selection; 0 for regression."""
        return 0

    @property
    def inputs(self) -> tuple[str, ...]:
        """The names of the known per-dataset inputs that `sample` returns in
        `Batch.inputs` (one column each, in this order) and that the network reads
        beside the observations; empty for none."""
        return ()

    @property
    def fully_observed(self) -> bool:
        """Whether every series `sample` returns is fully observed (its mask always
        `True`), so that a network need not read the mask; `False` when unknown."""
        return False

    @property
    def nonnegative(self) -> bool | None:
        """`True` where every observation `sample` returns is ≥ 0 (count or log-normal
        noise: `fit` then standardises `log1p(x)`); `None` where unknown (`fit`'s pilot
        batch decides). A task declares it rather than `fit` inspecting its classes."""
        return None

    def describe(self) -> dict:
        """A JSON-serialisable description, saved with a trained estimator."""
        return {"kind": type(self).__name__, "labels": list(self.labels)}


def _counts(simulator: Simulator) -> bool:
    """Whether the simulator's noise gives counts (whole numbers >= 0): recorded in a
    task's description so that a trained estimator refuses other data."""
    return simulator.observation is not None and simulator.observation.noise.is_count


def _nonnegative(simulator: Simulator) -> bool | None:
    """`True` where the simulator's noise declares non-negative observations."""
    return True if simulator.observation is not None and simulator.observation.noise.nonnegative else None


def _fully_observed(simulator: Simulator) -> bool:
    """No missingness in the observation model: every mask is all `True`."""
    return simulator.observation is None or simulator.observation.missing is None


def _as_targets(targets, simulator) -> tuple[AbstractTarget, ...]:
    if isinstance(targets, (AbstractTarget, str)):
        targets = (targets,)
    if not isinstance(targets, Sequence) or not targets:
        raise TypeError("`targets` must be a target (e.g. sgjax.Parameter('beta')) or a non-empty sequence of them.")
    out = []
    for t in targets:
        if isinstance(t, str):
            # A bare name: a parameter if the simulator has one, else a derived quantity.
            t = Parameter(t) if t in simulator.param_names else Derived(t)
        if not isinstance(t, AbstractTarget):
            raise TypeError(f"Targets must be sgjax targets or names, got {t!r}.")
        out.append(t.bind(simulator))
    if sum(t.observed_times(len(simulator.ts)) < len(simulator.ts) for t in out) > 1:
        raise ValueError("At most one Forecast target per task: give one Forecast, after the earliest time you need.")
    return tuple(out)


def _check_inputs(inputs, simulator: Simulator, labels) -> tuple[str, ...]:
    """`inputs` as a tuple of names, each a θ entry of the simulator and no target."""
    if isinstance(inputs, str):
        inputs = (inputs,)
    if not isinstance(inputs, Sequence) or not all(isinstance(n, str) for n in inputs):
        raise TypeError(f"`inputs` must be a sequence of θ names (e.g. inputs=('N',)), got {inputs!r}.")
    inputs = tuple(inputs)
    if len(set(inputs)) != len(inputs):
        raise ValueError(f"`inputs` names an entry twice: {inputs}.")
    unknown = [n for n in inputs if n not in simulator.param_names]
    if unknown:
        raise ValueError(
            f"`inputs` {unknown} are not entries of θ: the simulator reads {simulator.param_names}. A known input "
            "is a θ entry the model reads, drawn from the prior in training and given at inference; to make a "
            "model constant one, pass its name to the model (e.g. sgjax.models.SIR(N='N')) and give the prior "
            "a distribution for it."
        )
    both = [n for n in inputs if n in labels]
    if both:
        raise ValueError(f"{both} cannot be both a target and a known input: an input is given, not inferred.")
    return inputs


class Task(AbstractTask):
    """Learn `targets` from a simulator's observations under a prior.

    **Arguments:**

    - `simulator`: an [`sgjax.Simulator`][].
    - `targets`: a target or a sequence of them: [`sgjax.Parameter`][],
        [`sgjax.Derived`][], [`sgjax.Hidden`][], [`sgjax.Signal`][],
        [`sgjax.Forecast`][]; a bare name means a parameter, else a derived quantity.
    - `prior`: an [`sgjax.Prior`][]; default `simulator.default_prior()`.
    - `strategy`: how batches are solved; default [`sgjax.SharedStep`][].
    - `inputs`: names of θ entries that are known for each dataset rather than
        inferred — a population size, a covariate, a number of trials (keyword-only).
        Each is drawn from the prior like any parameter, so that the network learns
        for every value the prior covers; it goes to the network beside the observed
        series (`Batch.inputs`) and is never a target. At inference give its value:
        [`sgjax.infer`][]`(estimator, x, inputs={"N": 763}, key=...)`. For a model
        constant to vary, name it in the model, e.g. `SIR(N="N")`.

    Failed simulations get weight 0 in the loss (they are not resampled inside the
    jitted step). Under `SharedStep` a batch whose shared solve fails as a whole (one
    stiff draw exhausting `max_steps`) is re-solved per trajectory, so only the
    failing draws get weight 0 (see `SharedStep`'s `fallback`).

    **Example:**

    ```python
    task = sgjax.Task(simulator, ["beta", "gamma", "R0"])
    batch = task.sample(jax.random.key(0), 512)   # x (512, time, 1), y (512, 3)
    ```

    A known population size as an input, so one estimator serves every town:

    ```python
    model = sgjax.models.SIR(N="N")                 # N read from θ
    prior = sgjax.Prior({**model.default_prior().distributions, "N": dist.Uniform(200, 5000)})
    task = sgjax.Task(sgjax.Simulator(model, ts), ["beta", "gamma"], prior, inputs=("N",))
    estimator, _ = sgjax.fit(task, sgjax.heads.Flow(), key=key)
    posterior = sgjax.infer(estimator, x, inputs={"N": 763}, key=key)
    ```
    """

    simulator: Simulator
    targets: tuple[AbstractTarget, ...]
    _prior: Prior
    strategy: AbstractStrategy
    _spaces: tuple[Space, ...] = eqx.field(static=True)
    _inputs: tuple[str, ...] = eqx.field(static=True, default=())

    def __init__(
        self,
        simulator: Simulator,
        targets,
        prior: Prior | None = None,
        strategy: AbstractStrategy | None = None,
        *,
        inputs: Sequence[str] = (),
    ):
        if not isinstance(simulator, Simulator):
            raise TypeError(f"`simulator` must be an sgjax.Simulator, got {type(simulator).__name__}.")
        prior = simulator.default_prior() if prior is None else prior
        if not isinstance(prior, Prior):
            raise TypeError(f"`prior` must be an sgjax.Prior, got {type(prior).__name__}.")
        prior.check_model(simulator.model, simulator.param_names, support=simulator.parameter_support)
        self.simulator = simulator
        self.targets = _as_targets(targets, simulator)
        # Held in a form whose restriction changes array values only (see `restrict`).
        self._prior = restrictable(prior)
        self.strategy = SharedStep() if strategy is None else strategy
        self._spaces = tuple(
            s for t in self.targets for s in (t.resolve_space(simulator, prior),) * len(t.labels(simulator))
        )
        self._inputs = _check_inputs(inputs, simulator, self.labels)

    def restrict(self, box) -> "Task":
        """This task with its prior restricted to `box` (see [`sgjax.Prior.restrict`][]),
        for sequential rounds that train where one observation's posterior lies.

        The learning spaces stay this task's, chosen from the whole prior's support. They
        are compiled into [`sgjax.fit`][]'s training step and the prior's bounds are
        not: the task holds its prior so that a restriction changes array values only
        (a log-normal is held as a truncation with bounds at its support from the
        start), so every round after the first reuses the compiled step; a fresh
        `Task(simulator, targets, prior.restrict(box))` would choose logit spaces on the
        box and compile again (~30 s a round for the boarding-school SIR flow, 2 CPU
        cores).
        """
        return eqx.tree_at(lambda t: t._prior, self, self._prior.restrict(box))

    @property
    def prior(self) -> Prior:
        """The task's prior over `θ`: the one given, or its restriction (see
        `restrict`). Held internally so that a restriction changes array values only;
        on the host this gives each distribution as given where nothing is cut off
        (inside a traced function, the held form: the same draws and density)."""
        return unwrapped(self._prior)

    @property
    def labels(self):
        return tuple(label for t in self.targets for label in t.labels(self.simulator))

    @property
    def spaces(self):
        return self._spaces

    @property
    def in_time(self):
        return min(t.observed_times(len(self.simulator.ts)) for t in self.targets)

    @property
    def in_channels(self):
        return _channels(self.simulator)

    @property
    def inputs(self):
        return self._inputs

    @property
    def fully_observed(self):
        return _fully_observed(self.simulator)

    @property
    def nonnegative(self):
        return _nonnegative(self.simulator)

    def sample(self, key: Key, n: int) -> Batch:
        ktheta, knoise = jax.random.split(key)
        o = observe_batch(self.simulator, self._prior.sample(ktheta, n), key=knoise, strategy=self.strategy)
        y = jax.vmap(self._target)(o.theta, o.states, o.signal, o.observations)
        ok = o.valid & jnp.all(jnp.isfinite(y), axis=1)
        t = self.in_time
        inputs = jnp.stack([jnp.asarray(o.theta[n], y.dtype) for n in self._inputs], axis=1) if self._inputs else None
        return Batch(o.observations[:, :t], o.mask[:, :t], jnp.where(ok[:, None], y, 0.0), ok.astype(y.dtype), inputs)

    def _target(self, theta, states, signal, x):
        draw = Draw(theta, self.simulator.ts, states, signal, x)
        parts = [jnp.asarray(t(draw, self.simulator), x.dtype) for t in self.targets]
        y = jnp.concatenate(parts)
        return jnp.stack([s.forward(v) for s, v in zip(self._spaces, y)]) if y.size else y

    def describe(self):
        return {
            "kind": "Task",
            "model": type(self.simulator.model).__name__,
            "targets": [type(t).__name__ for t in self.targets],
            "labels": list(self.labels),
            # The labels that are θ parameters: a posterior's samples of these can be
            # passed to `simulate(theta=...)`.
            "parameters": [t.name for t in self.targets if isinstance(t, Parameter)],
            "ts": np.asarray(self.simulator.ts).tolist(),
            "counts": _counts(self.simulator),
            **({"inputs": list(self._inputs)} if self._inputs else {}),
        }


class ModelSelection(AbstractTask):
    """Learn which mechanism produced the data: a prior over models, each with its
    own simulator and prior over `θ`. With cross-entropy the network learns the
    posterior model probabilities.

    **Arguments:**

    - `simulators`: a mapping from model name to a [`sgjax.Simulator`][] or a
        `(simulator, prior)` pair. All must share observation times and channels.
    - `probabilities`: prior model probabilities (default uniform).
    - `strategy`: how batches are solved; default [`sgjax.SharedStep`][].
    - `inputs`: names of θ entries known for each dataset rather than inferred, as
        for [`sgjax.Task`][] (keyword-only): every model must read each of them (e.g.
        `SIR(N="N")` and `SEIR(N="N")`) and its prior must draw it. They go to the
        network beside the series (`Batch.inputs`); at inference give their values,
        `sgjax.infer(classifier, x, inputs={"N": 763})`.

    Each batch holds a fixed share of every model (stratified, so every model is in
    every batch); per-sample weights correct the shares to exactly the prior model
    probabilities.
    """

    simulators: tuple[Simulator, ...]
    priors: tuple[Prior, ...]
    probabilities: tuple[float, ...] = eqx.field(static=True)
    names: tuple[str, ...] = eqx.field(static=True)
    strategy: AbstractStrategy
    _inputs: tuple[str, ...] = eqx.field(static=True, default=())

    def __init__(
        self,
        simulators: Mapping,
        probabilities=None,
        strategy: AbstractStrategy | None = None,
        *,
        inputs: Sequence[str] = (),
    ):
        if not isinstance(simulators, Mapping) or len(simulators) < 2:
            raise TypeError("`simulators` must map at least two model names to simulators.")
        sims, priors = [], []
        for name, s in simulators.items():
            sim, prior = s if isinstance(s, tuple) else (s, None)
            if not isinstance(sim, Simulator):
                raise TypeError(f"Model {name!r}: expected an sgjax.Simulator or (simulator, prior), got {s!r}.")
            prior = sim.default_prior() if prior is None else prior
            prior.check_model(sim.model, sim.param_names, support=sim.parameter_support)
            sims.append(sim)
            priors.append(prior)
        ts0 = np.asarray(sims[0].ts)
        for name, sim in zip(simulators, sims):
            if sim.ts.shape != ts0.shape or not np.allclose(np.asarray(sim.ts), ts0):
                raise ValueError(f"Model {name!r} observes at other times than the first; all must share `ts`.")
        k = len(sims)
        p = np.full(k, 1.0 / k) if probabilities is None else np.asarray(probabilities, float)
        if p.shape != (k,) or np.any(p <= 0) or not np.isclose(p.sum(), 1.0):
            raise ValueError(f"`probabilities` must be {k} positive numbers summing to 1, got {probabilities!r}.")
        self.simulators = tuple(sims)
        self.priors = tuple(priors)
        self.probabilities = tuple(float(v) for v in p)
        self.names = tuple(str(n) for n in simulators)
        self.strategy = SharedStep() if strategy is None else strategy
        channels = {_channels(s) for s in sims}
        if len(channels) != 1:
            raise ValueError(f"Every model must observe the same number of channels, got {sorted(channels)}.")
        checked = ()
        for name, sim in zip(self.names, sims):
            try:
                checked = _check_inputs(inputs, sim, ())
            except ValueError as e:
                raise ValueError(f"Model {name!r}: {e}") from None
        self._inputs = checked

    @property
    def labels(self):
        return self.names

    @property
    def spaces(self):
        return ()

    @property
    def in_time(self):
        return len(self.simulators[0].ts)

    @property
    def in_channels(self):
        return _channels(self.simulators[0])

    @property
    def fully_observed(self):
        return all(_fully_observed(s) for s in self.simulators)

    @property
    def nonnegative(self):
        return True if all(_nonnegative(s) for s in self.simulators) else None

    @property
    def n_classes(self):
        return len(self.names)

    @property
    def inputs(self):
        return self._inputs

    def counts(self, n: int) -> tuple[int, ...]:
        """How many of `n` samples each model contributes (largest remainders)."""
        p = np.asarray(self.probabilities)
        base = np.floor(p * n).astype(int)
        order = np.argsort(-(p * n - base))
        base[order[: n - base.sum()]] += 1
        if np.any(base == 0):
            raise ValueError(f"A batch of {n} is too small to hold every model; use at least {len(p)} per batch.")
        return tuple(int(c) for c in base)

    def sample(self, key, n):
        parts = []
        for i, (sim, prior, m) in enumerate(zip(self.simulators, self.priors, self.counts(n))):
            ktheta, knoise = jax.random.split(jax.random.fold_in(key, i))
            o = observe_batch(sim, prior.sample(ktheta, m), key=knoise, strategy=self.strategy, keep_states=False)
            x, w = o.observations, self.probabilities[i] * n / m
            inputs = (
                jnp.stack([jnp.asarray(o.theta[k], x.dtype) for k in self._inputs], axis=1) if self._inputs else None
            )
            y, weight = jnp.full((m, 1), i, x.dtype), jnp.where(o.valid, w, 0.0).astype(x.dtype)
            parts.append(Batch(x, o.mask, y, weight, inputs))
        return jax.tree.map(lambda *a: jnp.concatenate(a), *parts)

    def describe(self):
        return {
            "kind": "ModelSelection",
            "models": [type(s.model).__name__ for s in self.simulators],
            "labels": list(self.names),
            "probabilities": list(self.probabilities),
            "ts": np.asarray(self.simulators[0].ts).tolist(),
            "counts": all(_counts(s) for s in self.simulators),
            **({"inputs": list(self._inputs)} if self._inputs else {}),
        }


def _channels(simulator: Simulator) -> int:
    ys = jax.ShapeDtypeStruct((len(simulator.ts) + 1, len(simulator.model.state_names)), simulator.ts.dtype)
    return jax.eval_shape(simulator.signal, ys).shape[1]
