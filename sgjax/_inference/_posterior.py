"""What every posterior over named quantities has in common (an SGNN's, NUTS, ABC,
SMC): samples as a mapping name → `(n, draws)` for a batch of `n` datasets, and the
summaries every diagnostic and plot reads from them."""

import equinox as eqx
import numpy as np
from jaxtyping import ArrayLike

from ._theta import stack


class AbstractPosterior(eqx.Module):
    """A posterior over named quantities for a batch of `n` datasets, in natural units
    (NumPy arrays, dataset first).

    Every posterior in sgjax subclasses it — [`sgjax.Posterior`][] (a trained
    network's), [`sgjax.baselines.ReferencePosterior`][] (NUTS),
    [`sgjax.baselines.ABCPosterior`][] — so each is accepted by every diagnostic and
    plot, and the summaries below mean the same for all of them.

    **Fields:**

    - `samples`: name → `(n, draws)`, or `None` where the posterior has no samples
        (e.g. a network with a point or quantile head).

    **Example:**

    ```python
    lower, upper = posterior.interval(0.9)     # name -> (n,) each
    sim = sgjax.simulate(simulator, theta=posterior.theta(0), key=key)  # posterior predictive
    array = posterior.stacked()                # (n, draws, k), in `names` order
    ```
    """

    samples: eqx.AbstractVar[dict[str, np.ndarray] | None]

    # What is missing, for the message of a summary that needs samples. Subclasses
    # without samples say why and what to use instead.
    def _need_samples(self, what: str) -> dict[str, np.ndarray]:
        if self.samples is None:
            raise ValueError(f"{what} needs posterior samples, and this {type(self).__name__} holds none.")
        return self.samples

    @property
    def names(self) -> tuple[str, ...]:
        """The quantities the posterior is over, in order."""
        return tuple(self._need_samples("`names`"))

    def __len__(self) -> int:
        """`n`, the number of datasets."""
        return next(iter(self._need_samples("`len`").values())).shape[0]

    def mean(self) -> dict[str, np.ndarray]:
        """The posterior mean of each quantity: name → `(n,)`."""
        return {k: v.mean(axis=-1) for k, v in self._need_samples("The posterior mean").items()}

    def std(self) -> dict[str, np.ndarray]:
        """The posterior standard deviation of each quantity (`ddof=1`): name → `(n,)`."""
        return {k: v.std(axis=-1, ddof=1) for k, v in self._need_samples("The posterior std").items()}

    def quantile(self, q: float | ArrayLike) -> dict[str, np.ndarray]:
        """Posterior quantiles at level(s) `q` in [0, 1].

        **Returns:** name → `(n,)` for one level, `(n, len(q))` for several.
        """
        q_np = _levels(q)
        out = {}
        for k, v in self._need_samples("A posterior quantile").items():
            r = np.quantile(v, q_np, axis=-1)
            out[k] = r if q_np.ndim == 0 else np.moveaxis(r, 0, -1)
        return out

    def interval(self, mass: float = 0.9) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """The central credible interval holding `mass` (in (0, 1)).

        **Returns:** `(lower, upper)`, each name → `(n,)`: the `(1 - mass) / 2` and
        `(1 + mass) / 2` quantiles.
        """
        if not 0 < mass < 1:
            raise ValueError(f"`mass` must be in (0, 1), got {mass!r}.")
        lo, hi = round((1 - mass) / 2, 6), round((1 + mass) / 2, 6)
        return self.quantile(lo), self.quantile(hi)

    def box(self, i: int = 0, mass: float = 0.996, widen: float = 0.2) -> dict[str, tuple[float, float]]:
        """A box holding this posterior (dataset `i`), to restrict a prior to for a
        further, truncated round of training ([`sgjax.Prior.restrict`][]).

        Per quantity, the central interval of its samples holding `mass`, widened on
        each side by `widen` times its width — on the log scale when every sample is
        positive. A flow trained on the whole prior tends to be too wide, so the box
        errs on the wide side; a box that cut into the posterior would bias it.

        **Returns:** name → `(low, high)`, plain floats.
        """
        samples = self._need_samples("A box")
        if not 0 < mass < 1 or widen < 0:
            raise ValueError(f"`mass` must be in (0, 1) and `widen` ≥ 0, got mass={mass}, widen={widen}.")
        out = {}
        for label, v in samples.items():
            s = np.asarray(v[i], dtype=float)
            s = s[np.isfinite(s)]
            log = bool(np.all(s > 0))
            v = np.log(s) if log else s
            lo, hi = np.quantile(v, [(1 - mass) / 2, (1 + mass) / 2])
            lo, hi = lo - widen * (hi - lo), hi + widen * (hi - lo)
            out[label] = (float(np.exp(lo)), float(np.exp(hi))) if log else (float(lo), float(hi))
        return out

    def theta(self, i: int = 0) -> dict[str, np.ndarray]:
        """The posterior draws for dataset `i`: name → `(draws,)` — θ as
        [`sgjax.simulate`][]`(theta=...)` takes it, for a posterior predictive check.
        """
        samples = self._need_samples("`theta`")
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"Dataset {i} does not exist: the posterior is for {n} dataset(s).")
        return {k: np.asarray(v[i]) for k, v in samples.items()}

    def stacked(self) -> np.ndarray:
        """The samples as one array `(n, draws, k)`, components in `names` order —
        [`sgjax.stack`][]`(posterior.samples)`."""
        return stack(self._need_samples("`stacked`"), self.names)


def _levels(q) -> np.ndarray:
    q_np = np.asarray(q, dtype=float)
    if q_np.ndim > 1 or not np.all((q_np >= 0) & (q_np <= 1)):
        raise ValueError(f"`q` must be a level or a 1-D array of levels in [0, 1], got {q!r}.")
    return q_np
