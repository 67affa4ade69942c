"""Training an SGNN: the code lives in `sgjax._training` (one module per concern);
this module keeps the names other modules, tests and benchmarks import from
`sgjax._train` until they import from there."""

from ._training._arrays import ArrayTask as ArrayTask
from ._training._checkpoint import (
    KEEP_CHECKPOINTS as KEEP_CHECKPOINTS,
    TrainingDivergedError as TrainingDivergedError,
)
from ._training._fit import fit as fit
from ._training._sources import _sample as _sample, simulate_batch as simulate_batch
from ._training._step import (
    default_optimiser as default_optimiser,
)

