"""Training an SGNN, one concern per module:

- `_fit.py`: [`sgjax.fit`][] itself, a short orchestration of the others.
- `_settings.py`: argument checks and their normalisation.
- `_sources.py`: where batches come from — a task's stream of fresh simulations, a
  fixed budget of them, or arrays a user already has (`_arrays.py`,
  [`sgjax.ArrayTask`][]), which stream from host memory or disk.
- `_init.py`: the estimator before training: network, head, and the one path that
  fits input standardisation and target scaling from a pilot, or a warm start.
- `_step.py`: the scanned, jitted training step and the optimiser.
- `_parallel.py`: data parallelism over devices and processes.
- `_loop.py`: the training loop: validation, early stopping, callback, time limit.
- `_checkpoint.py`: checkpoints, resume and divergence.
"""

from ._arrays import ArrayTask as ArrayTask
from ._checkpoint import KEEP_CHECKPOINTS as KEEP_CHECKPOINTS, TrainingDivergedError as TrainingDivergedError
from ._fit import fit as fit
from ._sources import simulate_batch as simulate_batch
from ._step import default_optimiser as default_optimiser
