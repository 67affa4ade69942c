"""A multilayer perceptron on the flattened series."""

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, PRNGKeyArray

from .base import (
    AbstractNetwork,
    ACTIVATIONS,
    check_activation,
    check_size,
    fold_constant_inputs,
    linear,
    scale_output,
    scan_layers,
    split_key,
    stack_layers,
)


class MLP(AbstractNetwork):
    """A multilayer perceptron on the whole series at once.

    The values (masked entries set to 0) and the mask (as 0/1) are flattened into one
    vector of length `2 * in_time * in_channels` (`in_time * in_channels` with
    `mask_input=False`), followed by `depth` hidden layers of
    `width` units and a linear output layer. Cheap: a few matrix products per batch.
    """

    in_time: int = eqx.field(static=True)
    in_channels: int = eqx.field(static=True)
    out_size: int = eqx.field(static=True)
    width: int = eqx.field(static=True)
    depth: int = eqx.field(static=True)
    activation: str = eqx.field(static=True)
    mask_input: bool = eqx.field(static=True)
    first: eqx.nn.Linear
    hidden: eqx.nn.Linear | None  # `depth - 1` stacked width-to-width layers
    last: eqx.nn.Linear

    def __init__(
        self,
        in_time: int,
        in_channels: int,
        out_size: int,
        *,
        width: int = 256,
        depth: int = 2,
        activation: str = "gelu",
        mask_input: bool = True,
        key: PRNGKeyArray,
    ):
        """**Arguments:**

        - `in_time`, `in_channels`: the shape `(time, channels)` of one series.
        - `out_size`: the length of the output vector.
        - `width`: units per hidden layer.
        - `depth`: number of hidden layers (at least 1).
        - `activation`: one of `"gelu"`, `"relu"`, `"tanh"`, `"silu"`, `"elu"`.
        - `mask_input`: feed the mask to the network beside the values (default). `fit`
            turns it off when the task's data are always fully observed, where the mask
            is a constant 1 (the values at masked entries are 0 either way).
        - `key`: a PRNG key for the initial weights.
        """
        self.in_time = check_size(in_time, "in_time")
        self.in_channels = check_size(in_channels, "in_channels")
        self.out_size = check_size(out_size, "out_size")
        self.width = check_size(width, "width")
        self.depth = check_size(depth, "depth")
        self.activation = check_activation(activation)
        self.mask_input = bool(mask_input)
        k1, k2, k3 = split_key(key, 3)
        n_values = self.in_time * self.in_channels
        first = linear(2 * n_values, self.width, key=k1)
        if not self.mask_input:  # the same initial function as with an all-ones mask
            first = fold_constant_inputs(first, linear(n_values, self.width, key=k1))
        self.first = first
        self.hidden = stack_layers(lambda k: linear(self.width, self.width, key=k), self.depth - 1, k2)
        self.last = scale_output(linear(self.width, self.out_size, key=k3))

    def __call__(
        self,
        x: Float[Array, "time channels"],
        mask: Bool[Array, "time channels"],
        *,
        key: PRNGKeyArray | None = None,
    ) -> Float[Array, " out"]:
        x, mask = self._prepare(x, mask)
        act = ACTIVATIONS[self.activation]
        h = x.reshape(-1)
        if self.mask_input:  # all values, then all mask bits (the layout saved models have)
            h = jnp.concatenate([h, mask.reshape(-1).astype(x.dtype)])
        h = act(self.first(h))
        h = scan_layers(lambda layer, h: act(layer(h)), self.hidden, h)
        return self.last(h)
