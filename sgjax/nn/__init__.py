"""Networks that map one observed series (values and mask) to a vector, and input
standardisation.

Every network is an `AbstractNetwork`: it takes one series `x` of shape
`(time, channels)` and a boolean mask of the same shape (`True` = observed) and returns
a vector of shape `(out_size,)`; add a batch axis with `jax.vmap`. Save a network with
`eqx.tree_serialise_leaves` and its `config()`, and load it back into
`network_from_config(config, key=...)`.
"""

from ._cnn import CNN as CNN
from ._gru import GRU as GRU
from ._mlp import MLP as MLP
from ._standardise import Standardise as Standardise, StandardiseInputs as StandardiseInputs
from ._transformer import Transformer as Transformer
from .base import (
    AbstractNetwork as AbstractNetwork,
    ACTIVATIONS as ACTIVATIONS,
    append_inputs as append_inputs,
    network_from_config as network_from_config,
)
