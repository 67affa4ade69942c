"""θ at the user boundary: a mapping from parameter name to an array, everywhere.

Every posterior (an SGNN's, NUTS, ABC, SMC), every prior draw and every diagnostic
speaks this one convention. Where a stacked array is wanted (a plot, a classifier
two-sample test), [`sgjax.stack`][] builds it and [`sgjax.unstack`][] undoes it.
"""

from collections.abc import Mapping, Sequence

import numpy as np
from jaxtyping import ArrayLike


def stack(theta: Mapping[str, ArrayLike], names: Sequence[str] | None = None) -> np.ndarray:
    """Stack θ (name → array, all of one shape `s`) into one array of shape `(*s, k)`,
    components in the order of `names` (default: the mapping's order).

    **Example:** `stack(posterior.samples)` is `(n, draws, k)`.
    """
    if not isinstance(theta, Mapping) or not theta:
        raise TypeError(
            f"`theta` must be a non-empty mapping from parameter name to array, got {type(theta).__name__}."
        )
    names = tuple(theta) if names is None else tuple(names)
    missing = [n for n in names if n not in theta]
    if missing:
        raise KeyError(f"θ has no entry {missing[0]!r}; it has {sorted(theta)}.")
    arrays = [np.asarray(theta[n]) for n in names]
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        got = ", ".join(f"{n}: {a.shape}" for n, a in zip(names, arrays))
        raise ValueError(f"Every entry of θ must have one shape to be stacked; got {got}.")
    return np.stack(arrays, axis=-1)


def unstack(array: ArrayLike, names: Sequence[str]) -> dict[str, np.ndarray]:
    """The inverse of [`sgjax.stack`][]: an array `(..., k)` → name → `(...)`."""
    a = np.asarray(array)
    names = tuple(names)
    if a.ndim == 0 or a.shape[-1] != len(names):
        raise ValueError(f"The last axis must have one entry per name ({len(names)}: {names}), got shape {a.shape}.")
    return {n: a[..., i] for i, n in enumerate(names)}
