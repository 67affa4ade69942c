"""sgjax: simulation-grounded learning in JAX.

Simulate mechanistic models in batches (`Simulator`, `simulate`), observe them through
noise models (`sgjax.observation`), train networks on a stream of simulations
(`Task`, `fit`), and use them as amortized Bayesian inference (`infer`).

The code is grouped by concept; each private package's `__init__` names what the
others use:

- `_simulation/`: models, observables, priors, strategies, the simulator, `simulate`.
- `_learning/`: learning targets and tasks.
- `_training/`: `fit` and its data sources, initialisation, step, devices, checkpoints.
- `_inference/`: the estimator, its posterior, θ as a name → array mapping.
- `_internal/`: code that exists for speed alone (see its README).
- `_cli/`: the `sgjax` command and the main job.
- Public subpackages: `models`, `observation`, `heads`, `nn`, `baselines`,
  `diagnostics`, `datasets`, `reproduce`, `experimental`.
"""

import importlib.metadata

from . import (
    baselines as baselines,
    datasets as datasets,
    diagnostics as diagnostics,
    experimental as experimental,
    heads as heads,
    models as models,
    nn as nn,
    observation as observation,
)
from ._inference import (
    AbstractPosterior as AbstractPosterior,
    Estimator as Estimator,
    infer as infer,
    load as load,
    log_prob as log_prob,
    Posterior as Posterior,
    save as save,
    stack as stack,
    to_arviz as to_arviz,
    unstack as unstack,
)
from ._io import FileFormatError as FileFormatError, read_csv as read_csv
from ._learning import (
    AbstractTarget as AbstractTarget,
    AbstractTask as AbstractTask,
    Batch as Batch,
    Derived as Derived,
    Forecast as Forecast,
    Hidden as Hidden,
    ModelSelection as ModelSelection,
    Parameter as Parameter,
    Signal as Signal,
    Space as Space,
    Task as Task,
)
from ._simulation import (
    AbstractObservable as AbstractObservable,
    AbstractODEModel as AbstractODEModel,
    AbstractStrategy as AbstractStrategy,
    Decrease as Decrease,
    Increase as Increase,
    ODEModel as ODEModel,
    PerTrajectory as PerTrajectory,
    Prior as Prior,
    Ratio as Ratio,
    SharedStep as SharedStep,
    simulate as simulate,
    Simulation as Simulation,
    Simulator as Simulator,
    solve as solve,
    State as State,
    Total as Total,
)
from ._training import (
    ArrayTask as ArrayTask,
    default_optimiser as default_optimiser,
    fit as fit,
    simulate_batch as simulate_batch,
    TrainingDivergedError as TrainingDivergedError,
)
from .diagnostics import (
    embed as embed,
    evaluate as evaluate,
    MismatchScore as MismatchScore,
    mmd as mmd,
    SimulationBank as SimulationBank,
)


__version__ = importlib.metadata.version("sgjax")


def __getattr__(name: str):
    if name == "Fused":
        raise AttributeError("sgjax.Fused moved to sgjax.experimental.Fused (experimental until it has run on a GPU).")
    raise AttributeError(f"module 'sgjax' has no attribute {name!r}")
