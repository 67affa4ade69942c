"""Training an SGNN: the code lives in `sgjax._training` (one module per concern);
this module keeps the names other modules, tests and benchmarks import from
`sgjax._train` until they import from there."""

from collections.abc import Mapping

import equinox as eqx

from ._training._arrays import ArrayTask as ArrayTask
from ._training._checkpoint import (
    KEEP_CHECKPOINTS as KEEP_CHECKPOINTS,
    TrainingDivergedError as TrainingDivergedError,
    check_finite as _check_finite,
    checkpoints as _checkpoints,
    latest_checkpoint as _latest_checkpoint,
    save_checkpoint as _save_checkpoint,
)
from ._training._fit import fit as fit
from ._training._init import (
    all_failed as _all_failed,
    initial_estimator as _initial_estimator,
    log1p_guess as _log1p_known,
    make_network as _make_network,
    modules as _modules,
    pilot_scaling as _pilot_scaling,
)
from ._training._parallel import copy as _copy
from ._training._sources import _sample as _sample, simulate_batch as simulate_batch
from ._training._step import (
    assemble as _assemble,
    batch_loss as _batch_loss,
    default_optimiser as default_optimiser,
    draw as _draw,
    eval_loss as _eval_loss,
    mode as _mode,
    split as _split,
    steps_body as _steps_body,
    train_call as _train_call,
    validation_loss as _validation_loss,
)


class _Traces(Mapping):
    """`_TRACES["train"]`: the training call's traces, read from
    `eqx.debug.get_num_traces` (for tests not yet rewired to it)."""

    def __getitem__(self, name):
        if name != "train":
            raise KeyError(name)
        return eqx.debug.get_num_traces(_steps_body)

    def __iter__(self):
        return iter(("train",))

    def __len__(self):
        return 1


_TRACES = _Traces()
