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


class Posterior(AbstractPosterior):
    """A trained network's posterior for a batch of `n` observed series, in natural
    units (NumPy arrays, series first) — an [`sgjax.AbstractPosterior`][], so every
    diagnostic and plot that takes NUTS's or ABC's samples takes it too.

    **Fields:**

    - `labels`: the target components (or, for model selection, the models).
    - `point`: name → `(n,)`, the point estimate: the head's posterior mean for a
        `Point` head, the mean of the samples for a density head, the median for a
        `Quantile` head; `None` for model selection.
    - `quantiles`: level → (name → `(n,)`): a `Quantile` head's trained levels, or
        the levels 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95 and 0.975 from the
        samples of a density head.
    - `samples`: name → `(n, draws)` for density heads (`Gaussian`, `MixtureDensity`,
        `Flow`), else `None`. [`stacked`][sgjax.AbstractPosterior.stacked]`()` (or
        [`sgjax.stack`][]`(posterior.samples)`) gives the `(n, draws, k)` array.
    - `probabilities`: `(n, models)` for model selection (the models in `labels`),
        else `None`. Such a posterior has no samples, quantiles or intervals: asking
        for them is an error that points here.
    - `parameters`: the labels that are the simulator's parameters (where the task
        recorded them), which [`theta`][sgjax.AbstractPosterior.theta] keeps; `None`
        keeps every label.
    - `inputs`: the known per-dataset inputs the posterior was inferred with
        ([`sgjax.infer`][]`(..., inputs=...)`): name → `(n,)` in natural units, one
        value per series; `None` for an estimator without inputs.
        [`theta`][sgjax.Posterior.theta] adds them to the draws, so that a simulator
        that reads them (e.g. `SIR(N="N")`) can simulate from it directly.

    The summaries [`mean`][sgjax.AbstractPosterior.mean], [`quantile`][sgjax.AbstractPosterior.quantile]
    and [`interval`][sgjax.AbstractPosterior.interval] come from the samples of a
    density head; a `Quantile` head answers at its trained levels only, a `Point` head
    gives its mean only.
    """

    labels: tuple[str, ...]
    point: dict[str, np.ndarray] | None
    quantiles: dict[float, dict[str, np.ndarray]]
    samples: dict[str, np.ndarray] | None
    probabilities: np.ndarray | None
    parameters: tuple[str, ...] | None = None
    inputs: dict[str, np.ndarray] | None = None

    def __check_init__(self):
        for field in ("samples", "point"):
            value = getattr(self, field)
            if value is not None and not isinstance(value, dict):
                raise TypeError(
                    f"`Posterior.{field}` must be a dict mapping each label to an array with the series first "
                    f"(sgjax's one convention for θ), got {type(value).__name__}; for a stacked array "
                    f"use sgjax.unstack(array, labels)."
                )
        if not all(isinstance(v, dict) for v in self.quantiles.values()):
            raise TypeError("`Posterior.quantiles` must map each level to a dict label → (n,).")
        if self.parameters is not None and not set(self.parameters) <= set(self.labels):
            raise ValueError(f"`parameters` {self.parameters} must be among the labels {self.labels}.")
        if self.inputs is not None:
            if not isinstance(self.inputs, dict):
                raise TypeError(
                    f"`Posterior.inputs` must be a dict mapping each known input to its values (n,), one per "
                    f"series, got {type(self.inputs).__name__}."
                )
            both = [k for k in self.inputs if k in self.labels]
            if both:
                raise ValueError(f"{both} cannot be both a label and a known input of the posterior.")
            n = len(self)
            bad = {k: np.shape(v) for k, v in self.inputs.items() if np.shape(v) != (n,)}
            if bad:
                raise ValueError(f"Each entry of `Posterior.inputs` must have shape ({n},), one per series; got {bad}.")

    def _need_samples(self, what: str) -> dict[str, np.ndarray]:
        if self.probabilities is not None:
            raise ValueError(
                f"{what} is not defined here: this posterior is a model-selection classifier's, and holds "
                f"model probabilities, not samples, quantiles or intervals. Read `posterior.probabilities` "
                f"((n, models), the models in posterior.labels: {', '.join(self.labels)})."
            )
        if self.samples is None:
            held = f"quantiles at the levels {sorted(self.quantiles)}" if self.quantiles else "a point estimate"
            raise ValueError(
                f"{what} needs posterior samples, but this posterior holds {held} only: use a density head "
                "(Flow, Gaussian, MixtureDensity) for samples."
            )
        return self.samples

    @property
    def names(self) -> tuple[str, ...]:
        """The target components (or models), in order: `labels`."""
        return self.labels

    def __len__(self) -> int:
        for held in (self.probabilities, self.samples, self.point, next(iter(self.quantiles.values()), None)):
            if held is not None:
                return len(held) if not isinstance(held, dict) else next(iter(held.values())).shape[0]
        return 0

    def mean(self) -> dict[str, np.ndarray]:
        """The posterior mean: name → `(n,)` — `point`, for a `Point` head or a density
        head (the mean of its samples)."""
        if self.probabilities is None and self.point is not None and (self.samples is not None or not self.quantiles):
            return dict(self.point)
        return super().mean()

    def quantile(self, q) -> dict[str, np.ndarray]:
        """Posterior quantiles at level(s) `q`: name → `(n,)` for one level, `(n, len(q))`
        for several. From the samples of a density head; a `Quantile` head answers at
        its trained levels only."""
        if self.samples is not None or self.probabilities is not None or not self.quantiles:
            return super().quantile(q)
        q_np = _levels(q)
        have = np.array(sorted(self.quantiles))
        picked = []
        for level in np.atleast_1d(q_np):
            hit = np.flatnonzero(np.isclose(have, level, rtol=0, atol=1e-9))
            if not len(hit):
                raise ValueError(
                    f"This posterior holds the quantiles of a Quantile head at its trained levels {have.tolist()} "
                    f"only, not {float(level):g}: ask for one of those, or train with those levels "
                    "(heads.Quantile(levels=...)) or a density head."
                )
            picked.append(self.quantiles[float(have[hit[0]])])
        if q_np.ndim == 0:
            return dict(picked[0])
        return {k: np.stack([p[k] for p in picked], axis=-1) for k in self.labels}

    def interval(self, mass: float = 0.9) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """The central credible interval holding `mass`: `(lower, upper)`, each name →
        `(n,)`. A `Quantile` head gives it where it was trained at both ends' levels."""
        if self.samples is None and self.probabilities is None and self.quantiles and 0 < mass < 1:
            lo, hi = round((1 - mass) / 2, 6), round((1 + mass) / 2, 6)
            if lo not in self.quantiles or hi not in self.quantiles:
                have = sorted(self.quantiles)
                raise ValueError(
                    f"A {mass:.0%} interval needs the {lo} and {hi} quantiles; available: {have}. Train a "
                    "Quantile head with those levels, or a density head (Flow, Gaussian, MixtureDensity)."
                )
        return super().interval(mass)

    def theta(self, i: int = 0) -> dict[str, np.ndarray]:
        """The posterior draws for series `i`: name → `(draws,)`, for the simulator's
        parameters only where the task recorded them (derived quantities such as R0
        are left out), with each known input (`inputs`) repeated for every draw, so
        that [`sgjax.simulate`][]`(simulator, theta=posterior.theta(i), key=...)` is a
        posterior predictive draw — also for a simulator that reads a known input,
        such as `SIR(N="N")`."""
        draws = super().theta(i)
        draws = draws if self.parameters is None else {k: draws[k] for k in self.parameters}
        if self.inputs:
            size = next(iter(draws.values())).shape[0] if draws else 1
            draws.update({k: np.full(size, np.asarray(v)[i]) for k, v in self.inputs.items()})
        return draws

    def summary(self, i: int = 0) -> dict:
        """A JSON-friendly dict of the summaries for series `i`: per label its point
        estimate and quantiles; for model selection the model probabilities."""
        if self.probabilities is not None:
            return {"probabilities": dict(zip(self.labels, map(float, self.probabilities[i])))}
        out = {}
        for label in self.labels:
            entry = {}
            if self.point is not None:
                entry["point"] = float(self.point[label][i])
            entry["quantiles"] = {str(q): float(v[label][i]) for q, v in sorted(self.quantiles.items())}
            out[label] = entry
        return out


#: Quantile levels reported from samples of a density head.
SAMPLE_LEVELS = (0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.975)
