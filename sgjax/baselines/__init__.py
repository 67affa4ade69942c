"""Classical baselines on the same differentiable simulator: maximum likelihood with
information criteria, a NUTS reference posterior, and rejection ABC."""

from ._likelihood import (
    log_likelihood as log_likelihood,
    log_posterior as log_posterior,
    Unconstrained as Unconstrained,
)
