"""sgjax: simulation-grounded learning in JAX.

Simulate mechanistic models in batches (`Simulator`, `simulate`), observe them through
noise models (`sgjax.observation`), and learn from the simulations.
"""

import importlib.metadata

from . import models as models, observation as observation
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
from ._simulate import Simulation as Simulation, simulate as simulate
from ._simulator import Simulator as Simulator, solve as solve
from ._strategy import (
    AbstractStrategy as AbstractStrategy,
    PerTrajectory as PerTrajectory,
    SharedStep as SharedStep,
)

__version__ = importlib.metadata.version("sgjax")
