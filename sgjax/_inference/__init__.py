"""A trained SGNN as amortized inference: θ at the user boundary (`_theta.py`), the
posterior every estimator returns (`_posterior.py`), the estimator with `infer`,
`log_prob`, `save` and `load` (`_estimator.py`), and ArviZ export (`_arviz.py`)."""

from ._arviz import to_arviz as to_arviz
from ._estimator import (
    check_times as check_times,
    Estimator as Estimator,
    estimator_config as estimator_config,
    infer as infer,
    load as load,
    log_prob as log_prob,
    Posterior as Posterior,
    prepare_observations as prepare_observations,
    save as save,
    skeleton as skeleton,
)
from ._posterior import AbstractPosterior as AbstractPosterior
from ._theta import stack as stack, unstack as unstack
