"""The trained estimator: input standardisation, network, head and target scaling,
applied to one series."""

import json

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float

from .._learning import Space
from ..heads import AbstractHead
from ..nn import AbstractNetwork, Standardise


class Estimator(eqx.Module):
    """A trained network with everything needed to apply it: input standardisation,
    the network, the head, and the target's scaling and learning spaces.

    Built by [`sgjax.fit`][]; apply it with [`sgjax.infer`][]; save and load it with
    [`sgjax.save`][] and [`sgjax.load`][].

    **Fields:**

    - `standardise`: the input standardisation fitted on a pilot batch.
    - `network`: the network (an [`sgjax.nn.AbstractNetwork`][]).
    - `head`: the head (an [`sgjax.heads.AbstractHead`][]).
    - `y_mean`, `y_std`: the target's pilot mean and std in its learning space.
    - `labels`: one name per target component (per model for model selection).
    - `spaces`: the learning space of each component.
    - `n_classes`: the number of models for model selection, else 0.
    - `info`: a JSON string describing the task that trained it (`task.describe()`):
        its observation times `ts` and whether its noise gives counts, where the task
        records them, are checked against the data given to [`sgjax.infer`][].
    """

    standardise: Standardise
    network: AbstractNetwork
    head: AbstractHead
    y_mean: Float[Array, " k"]
    y_std: Float[Array, " k"]
    labels: tuple[str, ...] = eqx.field(static=True)
    spaces: tuple[Space, ...] = eqx.field(static=True)
    n_classes: int = eqx.field(static=True, default=0)
    info: str = eqx.field(static=True, default="{}")

    @property
    def in_time(self) -> int:
        return self.network.in_time

    @property
    def in_channels(self) -> int:
        return self.network.in_channels

    @property
    def times(self) -> np.ndarray | None:
        """The observation times the network reads (the first `in_time` of the task's
        grid), or `None` where the task's description does not record them."""
        ts = json.loads(self.info).get("ts")
        return None if ts is None or len(ts) < self.in_time else np.asarray(ts[: self.in_time], float)

    @property
    def counts(self) -> bool:
        """Whether the task's noise gives counts (whole numbers ≥ 0), as its
        description records it."""
        return bool(json.loads(self.info).get("counts", False))

    def __call__(self, x: Float[Array, "time channels"], mask: Bool[Array, "time channels"]) -> Float[Array, " m"]:
        """The head's raw output for one series."""
        return self.network(self.standardise(x, mask), mask)

    def loss(self, x, mask, y) -> Float[Array, ""]:
        """The head's loss for one sample, `y` in the learning space."""
        return self.head.loss(self(x, mask), (y - self.y_mean) / self.y_std)

    def to_natural(self, z: Float[Array, "... k"]) -> Float[Array, "... k"]:
        """Map standardised learning-space values back to natural units."""
        y = self.y_mean + self.y_std * z
        return jnp.stack([s.inverse(y[..., i]) for i, s in enumerate(self.spaces)], axis=-1)
