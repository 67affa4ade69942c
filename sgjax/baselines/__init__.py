"""Classical baselines on the same differentiable simulator: maximum likelihood with
information criteria, a NUTS reference posterior, rejection ABC, and importance-sampled
marginal likelihoods for Bayes-optimal model selection."""

from ._abc import ABCPosterior as ABCPosterior, rejection_abc as rejection_abc
from ._evidence import Evidence as Evidence, evidence as evidence, model_posterior as model_posterior
from ._laplace import Laplace as Laplace, laplace as laplace
from ._likelihood import (
    log_likelihood as log_likelihood,
    log_posterior as log_posterior,
    Unconstrained as Unconstrained,
)
from ._mle import fit_mle as fit_mle, MLEResult as MLEResult, select as select
from ._nuts import nuts as nuts, ReferencePosterior as ReferencePosterior
from ._samples import AbstractSamples as AbstractSamples
