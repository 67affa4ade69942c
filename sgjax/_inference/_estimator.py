"""The trained estimator: input standardisation, network, head and target scaling,
applied to one series."""

import json

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float

from .._learning import Space
from ..heads import AbstractHead
from ..nn import AbstractNetwork, append_inputs, Standardise, StandardiseInputs


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
    - `inputs`: the names of the known per-dataset inputs the network reads beside
        the series (the task's `inputs`; empty for none). [`sgjax.infer`][] then
        needs a value for each: `inputs={"N": 763}`.
    - `input_standardise`: their standardisation (an
        [`sgjax.nn.StandardiseInputs`][] fitted on the pilot), `None` without inputs.
        The standardised inputs go to the network as extra channels, constant over
        time ([`sgjax.nn.append_inputs`][]), so every network takes them.
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
    inputs: tuple[str, ...] = eqx.field(static=True, default=())
    input_standardise: StandardiseInputs | None = None

    def __check_init__(self):
        if bool(self.inputs) != (self.input_standardise is not None):
            raise ValueError("An Estimator with `inputs` needs their `input_standardise`, and one without none.")

    @property
    def in_time(self) -> int:
        return self.network.in_time

    @property
    def in_channels(self) -> int:
        """The observed channels (the network reads `len(inputs)` more)."""
        return self.standardise.in_channels

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

    def __call__(
        self,
        x: Float[Array, "time channels"],
        mask: Bool[Array, "time channels"],
        inputs: Float[Array, " k_in"] | None = None,
    ) -> Float[Array, " m"]:
        """The head's raw output for one series, with its known inputs `(k_in,)` in
        natural units where the estimator has them."""
        h = self.standardise(x, mask)
        if self.input_standardise is not None:
            if inputs is None:
                raise ValueError(f"This estimator reads the known inputs {self.inputs}: pass their values.")
            h, mask = append_inputs(h, mask, self.input_standardise(inputs))
        return self.network(h, mask)

    def loss(self, x, mask, y, inputs=None) -> Float[Array, ""]:
        """The head's loss for one sample, `y` in the learning space."""
        return self.head.loss(self(x, mask, inputs), (y - self.y_mean) / self.y_std)

    def to_natural(self, z: Float[Array, "... k"]) -> Float[Array, "... k"]:
        """Map standardised learning-space values back to natural units."""
        y = self.y_mean + self.y_std * z
        return jnp.stack([s.inverse(y[..., i]) for i, s in enumerate(self.spaces)], axis=-1)
