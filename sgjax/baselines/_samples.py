"""What the sampling baselines (NUTS, rejection ABC, SMC) return in common: posterior
samples of each free parameter for a batch of datasets — an
[`sgjax.AbstractPosterior`][], like an SGNN's, so every diagnostic and plot takes
them alike."""

import equinox as eqx
import numpy as np

from .._inference import AbstractPosterior


class AbstractSamples(AbstractPosterior):
    """Posterior samples for a batch of `n` datasets, in natural units (NumPy arrays,
    dataset first).

    `samples` maps each *free* parameter of the prior (fixed parameters, given as
    numbers or `Delta`, are left out: they have no posterior) to an array of shape
    `(n, draws)`. The summaries (`mean`, `std`, `quantile`, `interval`, `box`,
    `theta(i)`, `stacked()`) are [`sgjax.AbstractPosterior`][]'s.
    """

    samples: eqx.AbstractVar[dict[str, np.ndarray]]
