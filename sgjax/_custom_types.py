"""Shared type aliases for sgjax's public signatures."""

from collections.abc import Mapping
from typing import TypeAlias

from jaxtyping import Array, ArrayLike, Bool, Float, PRNGKeyArray, Shaped

#: A parameter draw: a mapping from parameter name to an array. A single draw holds
#: scalars; a batch holds arrays of shape `(n,)`.
Params: TypeAlias = Mapping[str, Array]
Key: TypeAlias = PRNGKeyArray
Scalar: TypeAlias = Float[Array, ""]
State: TypeAlias = Float[Array, " state"]
Times: TypeAlias = Float[Array, " time"]

__all__ = [
    "Array",
    "ArrayLike",
    "Bool",
    "Float",
    "Key",
    "Params",
    "Scalar",
    "Shaped",
    "State",
    "Times",
]
