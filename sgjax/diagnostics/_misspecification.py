"""A plot for [`sgjax.MismatchScore`][]: where an observation's score falls among the
scores of simulated series."""

import numpy as np
from jaxtyping import Array, Bool, Float

from .._plots import _pyplot
from . import _common
from ._mismatch import MismatchScore


def plot_mismatch(
    detector: MismatchScore,
    x: Float[Array, "n time channels"] | None = None,
    mask: Bool[Array, "n time channels"] | None = None,
    path=None,
    *,
    level: float = 0.95,
):
    """The distribution of the misspecification score over simulated series, its
    threshold, and where observed series fall.

    **Arguments:**

    - `detector`: a fitted [`sgjax.MismatchScore`][].
    - `x`, `mask`: observed series `(n, time, channels)` to mark (their scores and
        p-values), as passed to `detector.score`; optional.
    - `path`: where to save the figure as a PNG (it is then closed); optional.
    - `level`: the calibration quantile drawn as the threshold (default 0.95, the
        one `detector.score` flags at).

    **Returns:** the matplotlib figure.
    """
    if not isinstance(detector, MismatchScore):
        raise TypeError(f"`detector` must be an sgjax.MismatchScore, got {type(detector).__name__}.")
    level = _common.check_level(level, "level")
    scored = None if x is None else detector.score(x, mask)
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    cal = np.asarray(detector.calibration)
    ax.hist(cal, bins=min(50, max(10, len(cal) // 20)), color="0.7", label=f"simulated series (n={len(cal)})")
    ax.axvline(detector.threshold(level), color="C3", ls="--", label=f"{level:.0%} threshold")
    if scored is not None:
        for i, (s, p) in enumerate(zip(scored["score"], scored["p_value"])):
            label = f"observed {i} (p = {p:.2g})" if i < 8 else None  # keep the legend short
            ax.axvline(s, color=f"C{i % 10}", lw=1.2, label=label)
    ax.set_xlabel("mismatch score (mean distance to nearest simulations)")
    ax.set_ylabel("count")
    ax.set_title("Is the observation inside the simulator's world?")
    ax.legend(fontsize=7)
    return _common.finish(fig, path)
