"""A trained SGNN as amortized inference: θ at the user boundary (`_theta.py`), the
estimator (`_estimator.py`), the posterior every estimator returns (`_posterior.py`),
`infer` and `log_prob` (`_infer.py`), `save` and `load` (`_saving.py`), and ArviZ
export (`_arviz.py`)."""

from ._arviz import to_arviz as to_arviz
from ._estimator import Estimator as Estimator
from ._infer import (
    check_times as check_times,
    infer as infer,
    known_inputs as known_inputs,
    log_prob as log_prob,
    prepare_observations as prepare_observations,
)
from ._posterior import AbstractPosterior as AbstractPosterior, Posterior as Posterior, SAMPLE_LEVELS as SAMPLE_LEVELS
from ._saving import estimator_config as estimator_config, load as load, save as save, skeleton as skeleton
from ._theta import stack as stack, unstack as unstack
