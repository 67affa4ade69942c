"""A 1-D convolutional network over time."""

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, PRNGKeyArray

from .base import (
    AbstractNetwork,
    ACTIVATIONS,
    check_activation,
    check_size,
    linear,
    masked_mean,
    observed_times,
    scale_output,
    split_key,
)


class CNN(AbstractNetwork):
    """A 1-D convolutional network over time.

    The input channels are the values (masked entries set to 0) and the mask (as 0/1),
    `2 * in_channels` in all (the values alone with `mask_input=False`). `depth`
    convolutions of `kernel_size` with `"SAME"` padding (so every layer keeps `in_time`
    points) and `width` channels follow, each but the first with a residual connection.
    The features are then pooled over the time points with at least one observed
    channel, by mean and by max, and a linear layer maps the `2 * width` pooled
    features to the output.
    """

    in_time: int = eqx.field(static=True)
    in_channels: int = eqx.field(static=True)
    out_size: int = eqx.field(static=True)
    width: int = eqx.field(static=True)
    depth: int = eqx.field(static=True)
    kernel_size: int = eqx.field(static=True)
    activation: str = eqx.field(static=True)
    mask_input: bool = eqx.field(static=True)
    first: eqx.nn.Conv1d
    # A tuple run by a Python loop, not stacked layers run by `lax.scan`: XLA:CPU runs a
    # convolution inside a loop body about 15 times slower (measured: batch 512, 100
    # time points, width 64), and a CNN is never deep enough for compile time to matter.
    hidden: tuple[eqx.nn.Conv1d, ...]  # `depth - 1` width-to-width convolutions
    last: eqx.nn.Linear

    def __init__(
        self,
        in_time: int,
        in_channels: int,
        out_size: int,
        *,
        width: int = 64,
        depth: int = 3,
        kernel_size: int = 5,
        activation: str = "gelu",
        mask_input: bool = True,
        key: PRNGKeyArray,
    ):
        """**Arguments:**

        - `in_time`, `in_channels`: the shape `(time, channels)` of one series.
        - `out_size`: the length of the output vector.
        - `width`: channels of every convolution.
        - `depth`: number of convolutions (at least 1).
        - `kernel_size`: width of each convolution's window, in time points.
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
        self.kernel_size = check_size(kernel_size, "kernel_size")
        self.activation = check_activation(activation)
        self.mask_input = bool(mask_input)
        k1, k2, k3 = split_key(key, 3)
        self.first = eqx.nn.Conv1d(
            (2 if self.mask_input else 1) * self.in_channels, self.width, self.kernel_size, padding="SAME", key=k1
        )
        self.hidden = tuple(
            eqx.nn.Conv1d(self.width, self.width, self.kernel_size, padding="SAME", key=k)
            for k in split_key(k2, self.depth - 1)
        )
        self.last = scale_output(linear(2 * self.width, self.out_size, key=k3))

    def __call__(
        self,
        x: Float[Array, "time channels"],
        mask: Bool[Array, "time channels"],
        *,
        key: PRNGKeyArray | None = None,
    ) -> Float[Array, " out"]:
        x, mask = self._prepare(x, mask)
        act = ACTIVATIONS[self.activation]
        h = self._features(x, mask).T  # (channels, time)
        h = act(self.first(h))
        for conv in self.hidden:
            h = h + act(conv(h))
        h = h.T  # (time, width)
        keep = observed_times(mask)
        mean = masked_mean(h, keep)
        low = jnp.finfo(h.dtype).min
        peak = jnp.where(jnp.any(keep), jnp.max(jnp.where(keep[:, None], h, low), axis=0), 0)
        return self.last(jnp.concatenate([mean, peak]))
