"""Pieces shared by the experiments: training with the experiment's budget, and
predictions on held-out simulations."""

import jax
import numpy as np

from .._inference import infer
from .._training import fit, simulate_batch


def train(task, head, *, key, steps: int, batch_size: int = 512, progress: bool = False, **kwargs):
    """`sgjax.fit` with the experiments' defaults: a validation check every 10% of
    training, early stopping after 4 checks without improvement."""
    eval_every = max(25, steps // 10 // 25 * 25)
    return fit(
        task,
        head,
        key=key,
        steps=steps,
        batch_size=batch_size,
        eval_every=eval_every,
        patience=4,
        validation_size=kwargs.pop("validation_size", 2048),
        pilot_size=kwargs.pop("pilot_size", 2048),
        progress=progress,
        **kwargs,
    )


def held_out(task, key, n: int):
    """`n` fresh simulations as NumPy arrays `(x, mask, y)` (learning space), failed
    ones dropped."""
    batch = simulate_batch(task, key=key, n=n)
    # Shuffled: model-selection batches come stratified by model, and experiments
    # take leading subsets for their costlier baselines.
    order = np.asarray(jax.random.permutation(jax.random.fold_in(key, 1), n))
    ok = np.asarray(batch.weight)[order] > 0
    return tuple(np.asarray(a)[order][ok] for a in (batch.x, batch.mask, batch.y))


def predict(estimator, x, mask, key=None, n_samples: int = 500):
    return infer(estimator, x, mask, key=jax.random.key(0) if key is None else key, n_samples=n_samples)


def loglog_slope(n, err) -> float:
    """The least-squares slope of `log err` against `log n`."""
    return float(np.polyfit(np.log(np.asarray(n, float)), np.log(np.asarray(err, float)), 1)[0])


#: The SIR problem that experiments 5 and 6 share (so that in one process its training
#: step compiles once): N = 1000, 40 days of Poisson-distributed reported incidence.
SIR_DAYS = 40
SIR_PARAMS = ("beta", "gamma", "rho")


def sir_prior():
    import numpyro.distributions as dist

    from .._simulation import Prior

    return Prior(beta=dist.LogUniform(0.3, 1.5), gamma=dist.LogUniform(0.1, 0.5), rho=dist.Uniform(0.3, 1.0))


def sir_reported(model=None):
    """`(simulator, task)`: SIR (or `model`, e.g. SEIR) with Poisson-reported incidence;
    the task learns β, γ, ρ and R0."""
    import jax.numpy as jnp

    from .. import models
    from .._learning import Derived, Parameter, Task
    from .._simulation import Simulator
    from ..observation import ObservationModel, Poisson, Reporting

    model = models.SIR(N=1000.0, I0=5.0) if model is None else model
    sim = Simulator(model, jnp.arange(1.0, SIR_DAYS + 1), ObservationModel(Poisson(), (Reporting("rho"),)))
    return sim, Task(sim, [*(Parameter(p) for p in SIR_PARAMS), Derived("R0")], sir_prior())
