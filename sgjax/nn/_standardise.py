"""Input standardisation fitted on a pilot batch and stored with the model."""

from typing import Any

import equinox as eqx
import jax
import jax.core
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Bool, Float

from .base import check_size


#: The std of a (time, channel) column is floored at this fraction of the std of its
#: whole channel (all times pooled), so a column that is constant in the pilot batch
#: (zero counts before an epidemic starts) does not blow up later inputs.
MIN_STD_FRACTION = 0.1


def _namespace(*arrays):
    # NumPy where the arrays are concrete (a pilot batch): op by op in jax, each
    # operation is one more small XLA program to compile (~3 s of a cold `sgjax.fit`
    # on 2 CPU cores). jax.numpy under a trace.
    return jnp if any(isinstance(a, jax.core.Tracer) for a in arrays) else np


def _on_device(a):
    # `jax.device_put` for a NumPy array: `jnp.asarray` compiles a small program per
    # shape and dtype to stage it.
    return jax.device_put(a) if isinstance(a, np.ndarray) else a


def moments(x: Float[ArrayLike, "n time channels"], mask: Bool[ArrayLike, "n time channels"], log1p: bool):
    """`(n, mean, m2)` of `log1p(x)` (or `x`) over the observed entries of a batch, per
    (time, channel): the count, the mean and the sum of squared deviations from it
    (two passes: no cancellation). Masked entries may hold anything, even NaN."""
    xp = _namespace(x, mask)
    x, mask = xp.asarray(x), xp.asarray(mask)
    if x.ndim != 3 or mask.shape != x.shape:
        raise ValueError(
            "Standardise.fit takes a batch `x` of shape (n, time, channels) and a "
            f"mask of the same shape, got {x.shape} and {mask.shape}. For a single "
            "series add a batch axis: `x[None]`."
        )
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.result_type(float))
    dtype = x.dtype
    mask = mask.astype(bool)
    with np.errstate(invalid="ignore", divide="ignore"):
        y = xp.where(mask, xp.log1p(x) if log1p else x, 0).astype(dtype)
    n = xp.sum(mask, axis=0)
    mean = xp.sum(y, axis=0) / xp.maximum(n, 1).astype(dtype)
    m2 = xp.sum(xp.where(mask, y - mean, 0) ** 2, axis=0)
    return n, mean, m2


def pool_moments(n, mean, m2, *, axis: int = 0):
    """The moments (`moments`) of several groups pooled along `axis` (Chan et al.'s
    formula: exact, no second pass over the data)."""
    xp = _namespace(n, mean, m2)
    n, mean, m2 = xp.asarray(n), xp.asarray(mean), xp.asarray(m2)
    total = xp.sum(n, axis=axis)
    weights = n.astype(mean.dtype)
    pooled = xp.sum(weights * mean, axis=axis) / xp.maximum(total, 1).astype(mean.dtype)
    spread = xp.sum(weights * (mean - xp.expand_dims(pooled, axis)) ** 2, axis=axis)
    return total, pooled, xp.sum(m2, axis=axis) + spread


class Standardise(eqx.Module):
    """Standardise one series per (time, channel): `(f(x) - mean) / std` with
    `f = log1p` (for counts, which are >= 0) or the identity (for real-valued data),
    and masked entries set to 0.

    Fit it on a pilot batch with `Standardise.fit`, keep it with the network, and apply
    it to each series before the network (`jax.vmap` it for a batch).

    **Fields:**

    - `mean`, `std`: arrays of shape `(time, channels)`.
    - `log1p`: whether values go through `log1p` first (static).
    """

    #: The batch statistics it is fitted from, for code that fits it in pieces.
    moments = staticmethod(moments)
    pool_moments = staticmethod(pool_moments)

    mean: Float[Array, "time channels"]
    std: Float[Array, "time channels"]
    log1p: bool = eqx.field(static=True)

    def __check_init__(self):
        if jnp.ndim(self.mean) != 2 or jnp.shape(self.mean) != jnp.shape(self.std):
            raise ValueError(
                "Standardise needs `mean` and `std` of the same shape (time, channels), "
                f"got {jnp.shape(self.mean)} and {jnp.shape(self.std)}. Build it with "
                "`Standardise.fit` or `Standardise.skeleton`."
            )
        if not isinstance(self.log1p, bool):
            raise TypeError(f"`log1p` must be True or False, got {self.log1p!r}.")

    @property
    def in_time(self) -> int:
        return self.mean.shape[0]

    @property
    def in_channels(self) -> int:
        return self.mean.shape[1]

    @classmethod
    def fit(
        cls,
        x: Float[ArrayLike, "n time channels"],
        mask: Bool[ArrayLike, "n time channels"],
        *,
        log1p: bool = True,
    ) -> "Standardise":
        """Fit the mean and std of each (time, channel) over the observed entries of a
        pilot batch.

        The std is the population std (dividing by the number of observed entries),
        floored at `MIN_STD_FRACTION` (0.1) times the std of the whole channel over all
        times, or set to 1 when the whole channel is constant. A column never observed
        gets mean 0 and std 1.

        **Arguments:**

        - `x`: a batch of series, shape `(n, time, channels)`; masked entries may hold
            anything, even NaN.
        - `mask`: booleans of the same shape, `True` where observed.
        - `log1p`: standardise `log1p(x)` (for counts) rather than `x` (pass `False`
            for real-valued data, which may be negative).

        **Returns:** the fitted `Standardise`.
        """
        if not isinstance(log1p, bool):
            raise TypeError(f"`log1p` must be True or False, got {log1p!r}.")
        return cls.from_moments(*moments(x, mask, log1p), log1p=log1p)

    @classmethod
    def from_moments(cls, n, mean, m2, *, log1p: bool) -> "Standardise":
        """`Standardise.fit` from the moments of its batch (`moments`), or of several
        batches pooled (`pool_moments`): `n` observed entries, `mean` and sum of squared
        deviations `m2` per (time, channel). `fit` is `from_moments(*moments(x, mask,
        log1p), log1p=log1p)`; `sgjax.fit` gets its pilot's moments from the training
        call itself."""
        if not isinstance(log1p, bool):
            raise TypeError(f"`log1p` must be True or False, got {log1p!r}.")
        xp = _namespace(n, mean, m2)
        n, mean, m2 = xp.asarray(n), xp.asarray(mean), xp.asarray(m2)
        if mean.ndim != 2 or n.shape != mean.shape or m2.shape != mean.shape:
            raise ValueError(
                "Standardise.from_moments takes `n`, `mean` and `m2` of one shape (time, channels), "
                f"got {n.shape}, {mean.shape} and {m2.shape}."
            )
        dtype = mean.dtype
        std = xp.sqrt(m2 / xp.maximum(n, 1).astype(dtype))
        n_c, _, m2_c = pool_moments(n, mean, m2, axis=0)  # (channels,): all times pooled
        channel_std = xp.sqrt(m2_c / xp.maximum(n_c, 1).astype(dtype))
        floor = xp.where(channel_std > 0, MIN_STD_FRACTION * channel_std, 1.0).astype(dtype)
        std = xp.maximum(std, floor)
        seen = n > 0
        mean, std = xp.where(seen, mean, 0.0).astype(dtype), xp.where(seen, std, 1.0).astype(dtype)
        return cls(_on_device(mean), _on_device(std), log1p)

    @classmethod
    def skeleton(cls, in_time: int, in_channels: int, log1p: bool) -> "Standardise":
        """A `Standardise` of the given shape (mean 0, std 1), to load saved leaves into
        with `eqx.tree_deserialise_leaves`. `Standardise.skeleton(**s.config())` matches
        `s`."""
        shape = (check_size(in_time, "in_time"), check_size(in_channels, "in_channels"))
        dtype = jnp.result_type(float)
        return cls(_on_device(np.zeros(shape, dtype)), _on_device(np.ones(shape, dtype)), log1p)

    def config(self) -> dict[str, Any]:
        """A JSON-serialisable description of this module's structure, the arguments of
        `Standardise.skeleton`."""
        return {"log1p": self.log1p, "in_time": self.in_time, "in_channels": self.in_channels}

    def __call__(
        self, x: Float[Array, "time channels"], mask: Bool[Array, "time channels"]
    ) -> Float[Array, "time channels"]:
        """**Arguments:**

        - `x`: the values of one series, shape `(time, channels)`.
        - `mask`: booleans of the same shape, `True` where observed.

        **Returns:** the standardised values, shape `(time, channels)`, 0 where masked.
        """
        x = jnp.asarray(x)
        mask = jnp.asarray(mask)
        if x.shape != self.mean.shape or mask.shape != self.mean.shape:
            raise ValueError(
                f"Standardise was fitted for series of shape (time, channels) = "
                f"{self.mean.shape}, got x {x.shape} and mask {mask.shape}. For a batch "
                "use `jax.vmap(standardise)(x, mask)`."
            )
        mask = mask.astype(bool)
        x = jnp.where(mask, x, 0)  # so NaN at masked entries reaches no gradient either
        y = jnp.log1p(x) if self.log1p else x
        return jnp.where(mask, (y - self.mean) / self.std, 0)


class StandardiseInputs(eqx.Module):
    """Standardise known per-dataset inputs (a population size, a covariate):
    `(f(u) - mean) / std` per input, `f = log` for an input that was positive
    throughout the pilot batch, else the identity. Fitted on a pilot batch by
    [`sgjax.fit`][] and kept with the estimator.

    **Fields** (arrays of shape `(k_in,)`, so that the choice of `log` is a value, not
    a constant of the compiled training step):

    - `mean`, `std`: the mean and std of `f(u)` over the pilot.
    - `log`: booleans, `True` where `f = log`.
    """

    mean: Float[Array, " k_in"]
    std: Float[Array, " k_in"]
    log: Bool[Array, " k_in"]

    @classmethod
    def skeleton(cls, k: int) -> "StandardiseInputs":
        """Mean 0, std 1, no log, for `k` inputs: a placeholder of the right shapes."""
        dtype = jnp.result_type(float)
        k = check_size(k, "the number of inputs")
        return cls(*(_on_device(a) for a in (np.zeros(k, dtype), np.ones(k, dtype), np.zeros(k, bool))))

    @classmethod
    def from_moments(cls, least, raw, logged) -> "StandardiseInputs":
        """From a pilot's statistics: `least` the smallest value of each input `(k,)`,
        `raw` and `logged` the moments `(n, mean, m2)` (`moments`) of the inputs and of
        their logs, each `(k,)`. A constant input gets std 1."""
        least = np.asarray(least)
        log = least > 0
        pick = lambda a, b: np.where(log, np.asarray(b), np.asarray(a))  # noqa: E731
        n, mean, m2 = (pick(a, b) for a, b in zip(raw, logged))
        dtype = jnp.result_type(float)
        std = np.sqrt(m2 / np.maximum(n, 1))
        std = np.where(std > 1e-8 * np.maximum(np.abs(mean), 1.0), std, 1.0)
        return cls(*(_on_device(np.asarray(a, t)) for a, t in ((mean, dtype), (std, dtype), (log, bool))))

    def __call__(self, u: Float[Array, " k_in"]) -> Float[Array, " k_in"]:
        u = jnp.asarray(u, self.mean.dtype)
        f = jnp.where(self.log, jnp.log(jnp.where(self.log, u, 1.0)), u)
        return (f - self.mean) / self.std
