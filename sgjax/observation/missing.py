"""Missing observations, as masks (`True` = observed)."""

from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Bool
from numpyro.distributions import constraints

from .base import AbstractMissing, check_param, get, ParamLike


class MissingAtRandom(AbstractMissing):
    """Each observation is missing independently with `probability` (a number or a
    parameter name)."""

    probability: ParamLike
    supports: ClassVar = {"probability": constraints.unit_interval}

    def __check_init__(self):
        check_param(self.probability, "Missing probability", low=0.0, high=1.0)

    def sample(self, key, shape, theta, ts):
        return jax.random.uniform(key, shape) >= get(self.probability, theta)


class FixedMask(AbstractMissing):
    """A fixed pattern of missing observations, e.g. no reports on weekends.

    **Arguments:** `mask`, booleans of shape `(time,)` or `(time, channels)`, `True`
    where observed.
    """

    mask: Bool[Array, "time ..."]

    def __init__(self, mask: ArrayLike):
        self.mask = jnp.asarray(np.asarray(mask, dtype=bool))

    def check(self, ts):
        if self.mask.shape[0] != np.shape(ts)[0]:
            raise ValueError(
                f"The mask has {self.mask.shape[0]} rows but there are {np.shape(ts)[0]} "
                "observation times; give one row per time."
            )

    def sample(self, key, shape, theta, ts):
        m = self.mask if self.mask.ndim == 2 else self.mask[:, None]
        return jnp.broadcast_to(m[..., None], shape)  # (time, channels, batch)
