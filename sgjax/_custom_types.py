"""Shared type aliases for sgjax's public signatures."""

from collections.abc import Mapping
from typing import TypeAlias

import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Bool, Float, PRNGKeyArray, Shaped


#: A parameter draw: a mapping from parameter name to an array. A single draw holds
#: scalars; a batch holds arrays of shape `(n,)`.
Params: TypeAlias = Mapping[str, Array]
Key: TypeAlias = PRNGKeyArray
Scalar: TypeAlias = Float[Array, ""]
State: TypeAlias = Float[Array, " state"]
Times: TypeAlias = Float[Array, " time"]


def check_key(key, name: str = "key") -> None:
    """Raise a `TypeError` that names the fix unless `key` is one JAX PRNG key: a typed
    key (`jax.random.key(0)`) or a raw one (`jax.random.PRNGKey(0)`). An integer seed
    or a batch of keys is refused here rather than deep inside `jax.random`."""
    if isinstance(key, jax.Array) and jnp.issubdtype(key.dtype, jax.dtypes.prng_key) and key.shape == ():
        return
    if isinstance(key, jax.Array) and key.dtype == jnp.uint32 and key.shape == (2,):
        return
    got = f"an array of shape {key.shape} and dtype {key.dtype}" if hasattr(key, "dtype") else repr(key)
    raise TypeError(f"`{name}` must be one JAX PRNG key, e.g. {name}=jax.random.key(0), got {got}.")


__all__ = [
    "Array",
    "ArrayLike",
    "Bool",
    "check_key",
    "Float",
    "Key",
    "Params",
    "Scalar",
    "Shaped",
    "State",
    "Times",
]
