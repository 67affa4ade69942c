"""A small pre-norm Transformer encoder over time."""

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, PRNGKeyArray

from .base import (
    AbstractNetwork,
    check_size,
    fold_constant_inputs,
    linear,
    masked_mean,
    observed_times,
    scale_output,
    scan_layers,
    split_key,
    stack_layers,
)


def _sinusoidal(time: int, dim: int, dtype) -> Float[Array, "time dim"]:
    """The fixed sinusoidal position encoding of Vaswani et al. (2017)."""
    t = jnp.arange(time, dtype=dtype)[:, None]
    j = jnp.arange(dim)
    freq = 10000.0 ** (-(2 * (j // 2)).astype(dtype) / dim)
    return jnp.sin(t * freq + (j % 2) * (jnp.pi / 2))


class _Block(eqx.Module):
    """One pre-norm encoder block: attention then a feed-forward layer, each added to
    the residual stream after a LayerNorm."""

    norm1: eqx.nn.LayerNorm
    attention: eqx.nn.MultiheadAttention
    norm2: eqx.nn.LayerNorm
    up: eqx.nn.Linear
    down: eqx.nn.Linear

    def __init__(self, dim: int, heads: int, *, key: PRNGKeyArray):
        k1, k2, k3 = split_key(key, 3)
        self.norm1 = eqx.nn.LayerNorm(dim)
        self.attention = eqx.nn.MultiheadAttention(heads, dim, key=k1)
        self.norm2 = eqx.nn.LayerNorm(dim)
        self.up = linear(dim, 2 * dim, key=k2)
        self.down = linear(2 * dim, dim, key=k3)

    def __call__(self, h: Float[Array, "time dim"], attend: Bool[Array, "time time"]):
        a = jax.vmap(self.norm1)(h)
        h = h + self.attention(a, a, a, mask=attend)
        b = jax.vmap(self.norm2)(h)
        return h + jax.vmap(lambda v: self.down(jax.nn.gelu(self.up(v))))(b)


class Transformer(AbstractNetwork):
    """A small pre-norm Transformer encoder over time.

    Each time point's values (masked entries set to 0) and mask (as 0/1) are embedded
    linearly into `dim` features, and a fixed sinusoidal position encoding is added.
    `depth` blocks of multi-head self-attention and a feed-forward layer (hidden size
    `2 * dim`, GELU), each with a LayerNorm before it and a residual connection, follow,
    run with one `lax.scan`. Time points with no observed channel are never attended
    to and are left out of the final mean over time, which a linear layer maps to the
    output. A series with no observation at all gives the output layer's bias.
    """

    in_time: int = eqx.field(static=True)
    in_channels: int = eqx.field(static=True)
    out_size: int = eqx.field(static=True)
    dim: int = eqx.field(static=True)
    depth: int = eqx.field(static=True)
    heads: int = eqx.field(static=True)
    mask_input: bool = eqx.field(static=True)
    embed: eqx.nn.Linear
    blocks: _Block  # `depth` stacked blocks
    norm: eqx.nn.LayerNorm
    last: eqx.nn.Linear

    def __init__(
        self,
        in_time: int,
        in_channels: int,
        out_size: int,
        *,
        dim: int = 64,
        depth: int = 2,
        heads: int = 4,
        mask_input: bool = True,
        key: PRNGKeyArray,
    ):
        """**Arguments:**

        - `in_time`, `in_channels`: the shape `(time, channels)` of one series.
        - `out_size`: the length of the output vector.
        - `dim`: features per time point inside the encoder.
        - `depth`: number of encoder blocks (at least 1).
        - `heads`: attention heads; must divide `dim`.
        - `mask_input`: feed the mask to the network beside the values (default). `fit`
            turns it off when the task's data are always fully observed, where the mask
            is a constant 1 (the values at masked entries are 0 either way).
        - `key`: a PRNG key for the initial weights.
        """
        self.in_time = check_size(in_time, "in_time")
        self.in_channels = check_size(in_channels, "in_channels")
        self.out_size = check_size(out_size, "out_size")
        self.dim = check_size(dim, "dim")
        self.depth = check_size(depth, "depth")
        self.heads = check_size(heads, "heads")
        self.mask_input = bool(mask_input)
        if self.dim % self.heads:
            raise ValueError(
                f"`heads` must divide `dim`, got dim={self.dim} and heads={self.heads}. "
                "Choose e.g. dim=64 with heads=4."
            )
        k1, k2, k3 = split_key(key, 3)
        embed = linear(2 * self.in_channels, self.dim, key=k1)
        if not self.mask_input:  # the same initial function as with an all-ones mask
            embed = fold_constant_inputs(embed, linear(self.in_channels, self.dim, key=k1))
        self.embed = embed
        blocks = stack_layers(lambda k: _Block(self.dim, self.heads, key=k), self.depth, k2)
        assert blocks is not None  # depth ≥ 1
        self.blocks = blocks
        self.norm = eqx.nn.LayerNorm(self.dim)
        self.last = scale_output(linear(self.dim, self.out_size, key=k3))

    def __call__(
        self,
        x: Float[Array, "time channels"],
        mask: Bool[Array, "time channels"],
        *,
        key: PRNGKeyArray | None = None,
    ) -> Float[Array, " out"]:
        x, mask = self._prepare(x, mask)
        keep = observed_times(mask)
        # Attend only to observed time points; when there are none, attend to all (the
        # result is discarded by the pooling) so that no softmax is taken over nothing.
        attend_to = keep | ~jnp.any(keep)
        attend = jnp.broadcast_to(attend_to[None, :], (self.in_time, self.in_time))
        h = jax.vmap(self.embed)(self._features(x, mask))
        h = h + _sinusoidal(self.in_time, self.dim, h.dtype)
        h = scan_layers(lambda block, h: block(h, attend), self.blocks, h)
        h = jax.vmap(self.norm)(h)
        return self.last(masked_mean(h, keep))
