"""What the sampling baselines (NUTS, rejection ABC) return in common: posterior
samples of each free parameter for a batch of datasets, and their summaries."""

import equinox as eqx
import numpy as np
from jaxtyping import ArrayLike


class AbstractSamples(eqx.Module):
    """Posterior samples for a batch of `n` datasets, in natural units (NumPy arrays,
    dataset first).

    `samples` maps each *free* parameter of the prior (fixed parameters, given as
    numbers or `Delta`, are left out: they have no posterior) to an array of shape
    `(n, draws)`.
    """

    samples: eqx.AbstractVar[dict[str, np.ndarray]]

    def __len__(self) -> int:
        return next(iter(self.samples.values())).shape[0]

    @property
    def names(self) -> tuple[str, ...]:
        """The parameters sampled, in the prior's order."""
        return tuple(self.samples)

    def mean(self) -> dict[str, np.ndarray]:
        """The posterior mean of each parameter: name → `(n,)`."""
        return {k: v.mean(axis=-1) for k, v in self.samples.items()}

    def std(self) -> dict[str, np.ndarray]:
        """The posterior standard deviation of each parameter: name → `(n,)`."""
        return {k: v.std(axis=-1, ddof=1) for k, v in self.samples.items()}

    def quantile(self, q: float | ArrayLike) -> dict[str, np.ndarray]:
        """Posterior quantiles at level(s) `q` in [0, 1]: name → `(n,)` for one
        level, `(n, len(q))` for several."""
        q_np = np.asarray(q, dtype=float)
        if q_np.ndim > 1 or not np.all((q_np >= 0) & (q_np <= 1)):
            raise ValueError(f"`q` must be a level or a 1-D array of levels in [0, 1], got {q!r}.")
        out = {}
        for k, v in self.samples.items():
            r = np.quantile(v, q_np, axis=-1)
            out[k] = r if q_np.ndim == 0 else np.moveaxis(r, 0, -1)
        return out
