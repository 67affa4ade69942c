"""A gated recurrent network run forward over time."""

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, PRNGKeyArray

from .base import AbstractNetwork, check_size, fold_constant_inputs, linear, observed_times, scale_output, split_key


class GRU(AbstractNetwork):
    """A gated recurrent unit run forward over time with one `lax.scan`.

    At each time point the cell reads the values (masked entries set to 0) and the mask
    (as 0/1). Time points with no observed channel leave the hidden state unchanged, so
    trailing missing time points act as a shorter series. The final hidden state (zero
    when nothing was observed) goes through a linear layer to the output.
    """

    in_time: int = eqx.field(static=True)
    in_channels: int = eqx.field(static=True)
    out_size: int = eqx.field(static=True)
    hidden: int = eqx.field(static=True)
    mask_input: bool = eqx.field(static=True)
    cell: eqx.nn.GRUCell
    last: eqx.nn.Linear

    def __init__(
        self,
        in_time: int,
        in_channels: int,
        out_size: int,
        *,
        hidden: int = 64,
        mask_input: bool = True,
        key: PRNGKeyArray,
    ):
        """**Arguments:**

        - `in_time`, `in_channels`: the shape `(time, channels)` of one series.
        - `out_size`: the length of the output vector.
        - `hidden`: size of the hidden state.
        - `mask_input`: feed the mask to the network beside the values (default). `fit`
            turns it off when the task's data are always fully observed, where the mask
            is a constant 1 (the values at masked entries are 0 either way).
        - `key`: a PRNG key for the initial weights.
        """
        self.in_time = check_size(in_time, "in_time")
        self.in_channels = check_size(in_channels, "in_channels")
        self.out_size = check_size(out_size, "out_size")
        self.hidden = check_size(hidden, "hidden")
        self.mask_input = bool(mask_input)
        k1, k2 = split_key(key, 2)
        cell = eqx.nn.GRUCell(2 * self.in_channels, self.hidden, key=k1)
        if not self.mask_input:  # the same initial function as with an all-ones mask
            small = eqx.nn.GRUCell(self.in_channels, self.hidden, key=k1)
            cell = fold_constant_inputs(cell, small, weight="weight_ih")
        self.cell = cell
        self.last = scale_output(linear(self.hidden, self.out_size, key=k2))

    def __call__(
        self,
        x: Float[Array, "time channels"],
        mask: Bool[Array, "time channels"],
        *,
        key: PRNGKeyArray | None = None,
    ) -> Float[Array, " out"]:
        x, mask = self._prepare(x, mask)
        inputs = self._features(x, mask)
        keep = observed_times(mask)

        def step(h, xs):
            u, k = xs
            return jnp.where(k, self.cell(u, h), h), None

        h0 = jnp.zeros(self.hidden, inputs.dtype)
        h, _ = jax.lax.scan(step, h0, (inputs, keep))
        return self.last(h)
