"""The mechanistic side: a model written once for one trajectory (`_model.py`), what it
exposes to observation (`_observables.py`), the prior over its parameters (`_prior.py`)
and the one map between a support and ℝ (`_support.py`), how a batch is integrated
(`_strategy.py`), the simulator (`_simulator.py`) and batched simulation — the one
definition of a simulated observation (`_simulate.py`)."""

from ._model import AbstractODEModel as AbstractODEModel, ODEModel as ODEModel
from ._observables import (
    AbstractObservable as AbstractObservable,
    Decrease as Decrease,
    Increase as Increase,
    Ratio as Ratio,
    State as State,
    Total as Total,
)
from ._prior import (
    bounds as bounds,
    Prior as Prior,
    restrictable as restrictable,
    suggest as suggest,
    support_of as support_of,
    unwrapped as unwrapped,
)
from ._simulate import (
    observe_batch as observe_batch,
    simulate as simulate,
    Simulation as Simulation,
    solve_signal as solve_signal,
    solve_signal_one as solve_signal_one,
)
from ._simulator import Simulator as Simulator, solve as solve
from ._strategy import (
    AbstractStrategy as AbstractStrategy,
    PerTrajectory as PerTrajectory,
    SharedStep as SharedStep,
    solve_or_rescue as solve_or_rescue,
)
from ._support import from_unconstrained as from_unconstrained, to_unconstrained as to_unconstrained
