"""sgjax: simulation-grounded learning in JAX.

Simulate mechanistic models in batches (`Simulator`, `simulate`), observe them through
noise models (`sgjax.observation`), train networks on a stream of simulations
(`Task`, `fit`), and use them as amortized Bayesian inference (`infer`).
"""

import importlib.metadata

from . import datasets as datasets, heads as heads, models as models, nn as nn, observation as observation
from ._estimator import (
    Estimator as Estimator,
    infer as infer,
    load as load,
    log_prob as log_prob,
    Posterior as Posterior,
    save as save,
)
from ._arviz import to_arviz as to_arviz
from ._evaluate import evaluate as evaluate
from . import experimental as experimental
from ._io import FileFormatError as FileFormatError, read_csv as read_csv
from ._mismatch import embed as embed, MismatchScore as MismatchScore, mmd as mmd, SimulationBank as SimulationBank
from ._model import AbstractODEModel as AbstractODEModel, ODEModel as ODEModel
from ._observables import (
    AbstractObservable as AbstractObservable,
    Decrease as Decrease,
    Increase as Increase,
    Ratio as Ratio,
    State as State,
    Total as Total,
)
from ._prior import Prior as Prior
from ._theta import stack as stack, unstack as unstack
from ._posterior import AbstractPosterior as AbstractPosterior
from ._simulate import Simulation as Simulation, simulate as simulate
from ._simulator import Simulator as Simulator, solve as solve
from ._target import (
    AbstractTarget as AbstractTarget,
    Derived as Derived,
    Forecast as Forecast,
    Hidden as Hidden,
    Parameter as Parameter,
    Signal as Signal,
    Space as Space,
)
from ._task import AbstractTask as AbstractTask, Batch as Batch, ModelSelection as ModelSelection, Task as Task
from ._train import (
    ArrayTask as ArrayTask,
    default_optimiser as default_optimiser,
    fit as fit,
    simulate_batch as simulate_batch,
    TrainingDivergedError as TrainingDivergedError,
)
from ._strategy import (
    AbstractStrategy as AbstractStrategy,
    PerTrajectory as PerTrajectory,
    SharedStep as SharedStep,
)
from . import diagnostics as diagnostics

__version__ = importlib.metadata.version("sgjax")
