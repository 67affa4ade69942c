"""Observation models: how a clean simulated signal becomes noisy, incomplete data.

Compose them: `ObservationModel(NegativeBinomial("phi"), (Reporting("rho"), Delay(k)),
MissingAtRandom(0.05))`.
"""

from ._model import ObservationModel as ObservationModel
from .base import (
    AbstractMissing as AbstractMissing,
    AbstractNoise as AbstractNoise,
    AbstractTransform as AbstractTransform,
)
from .missing import FixedMask as FixedMask, MissingAtRandom as MissingAtRandom
from .noise import (
    Binomial as Binomial,
    Gaussian as Gaussian,
    LogNormal as LogNormal,
    NegativeBinomial as NegativeBinomial,
    Poisson as Poisson,
)
from .transforms import Clamp as Clamp, DayOfWeek as DayOfWeek, Delay as Delay, Reporting as Reporting, Scale as Scale
