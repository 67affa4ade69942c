"""Shared test data: every built-in model with a typical parameter set and observation
grid, and a PRNG-key helper."""

import itertools
from collections.abc import Callable

import jax
import numpy as np

from sgjax import models


_days = np.arange(1.0, 101.0)  # 100 daily observations

#: `(model, typical θ as a dict of scalars, observation times)` for every built-in
#: model; generic tests parametrize over this, so a new model is tested by adding one
#: line. Horizons are each model's typical one; Lorenz's is short because it is
#: chaotic (differences grow like exp(0.9 t)).
all_models = (
    (models.SIR(), dict(beta=0.5, gamma=0.2), _days),
    (models.SEIR(), dict(beta=0.6, sigma=0.3, gamma=0.2), _days),
    (models.SIRS(), dict(beta=0.5, gamma=0.2, omega=0.02), _days),
    (models.SIRIntervention(), dict(beta=0.5, gamma=0.2, t_change=25.0, effect=0.6), _days),
    (models.Exponential(), dict(r=0.2), np.arange(1.0, 21.0)),
    (models.Logistic(), dict(r=0.4, K=500.0), np.arange(1.0, 51.0)),
    (models.Gompertz(), dict(r=0.15, K=500.0), np.arange(1.0, 51.0)),
    (models.Richards(), dict(r=0.4, K=500.0, nu=2.0), np.arange(1.0, 51.0)),
    (models.LotkaVolterra(), dict(alpha=1.0, beta=0.03, delta=0.03, gamma=1.0), np.linspace(0.5, 30.0, 60)),
    (
        models.Competition(),
        dict(r1=0.5, r2=0.3, K1=100.0, K2=80.0, a12=0.5, a21=0.6),
        np.arange(1.0, 51.0),
    ),
    (models.DampedOscillator(), dict(omega=1.5, zeta=0.1), np.linspace(0.2, 20.0, 100)),
    (models.VanDerPol(), dict(mu=1.0), np.linspace(0.2, 20.0, 100)),
    (models.FitzHughNagumo(), dict(a=0.7, b=0.8, tau=12.5, I_ext=0.5), np.linspace(1.0, 100.0, 100)),
    (models.Lorenz(), dict(sigma=10.0, rho=28.0, beta=8.0 / 3.0), np.linspace(0.05, 2.0, 40)),
)

#: Families whose default prior must simulate without a single failure at the default
#: tolerances over the typical horizon.
robust_families = ("sgjax.models.epidemics", "sgjax.models.growth", "sgjax.models.ecology")


def getkey(seed: int = 0) -> Callable[[], jax.Array]:
    """A function returning a fresh PRNG key on every call, from a fixed sequence, so
    tests are reproducible and never reuse a key by accident."""
    counter = itertools.count()
    base = jax.random.key(seed)
    return lambda: jax.random.fold_in(base, next(counter))


def with_compiles(fn, *args, **kwargs):
    """`(fn(*args, **kwargs), names)`: the result, and the name of every XLA program
    compiled during the call (JAX's compile events, e.g. `"jit(_steps)"`)."""
    compiles = []

    def listen(event, duration, **kw):
        if event.endswith("backend_compile_duration"):
            compiles.append(kw.get("fun_name"))

    jax.monitoring.register_event_duration_secs_listener(listen)
    try:
        return fn(*args, **kwargs), compiles
    finally:
        jax.monitoring.unregister_event_duration_listener(listen)
