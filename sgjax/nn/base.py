"""The abstract network, the activation table, and rebuilding a network from its config."""

import abc
import inspect
import math
import operator
from collections.abc import Callable
from typing import Any, TypeVar

import equinox as eqx
import jax
import jax.core
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, PRNGKeyArray


#: Activations by name. Names rather than functions so that a network's config is
#: plain JSON.
ACTIVATIONS: dict[str, Callable[[Array], Array]] = {
    "gelu": jax.nn.gelu,
    "relu": jax.nn.relu,
    "tanh": jnp.tanh,
    "silu": jax.nn.silu,
    "elu": jax.nn.elu,
}

#: Factor applied to the initial weights and bias of every network's output layer, so
#: that outputs start small (of order 0.01 to 0.1 for standardised inputs), never large.
OUTPUT_SCALE = 0.5


class AbstractNetwork(eqx.Module):
    """Maps one observed series to a vector. Batching is added outside with `jax.vmap`.

    A network takes the values `x` of shape `(time, channels)` and the mask of the same
    shape (`True` = observed). Values at masked positions never influence the output
    (they may be anything, even NaN), and a series with no observation at all gives a
    finite output.

    Subclasses store every constructor argument (except `key`) as a field of the same
    name, so that `config()` can describe them and `network_from_config` rebuild them.
    """

    in_time: eqx.AbstractVar[int]
    in_channels: eqx.AbstractVar[int]
    out_size: eqx.AbstractVar[int]

    @abc.abstractmethod
    def __call__(
        self,
        x: Float[Array, "time channels"],
        mask: Bool[Array, "time channels"],
        *,
        key: PRNGKeyArray | None = None,
    ) -> Float[Array, " out"]:
        """**Arguments:**

        - `x`: the values of one series, shape `(in_time, in_channels)`.
        - `mask`: booleans of the same shape, `True` where observed.
        - `key`: unused by the built-in networks (none uses dropout); accepted so that
            every network has the same call signature.

        **Returns:** a vector of shape `(out_size,)`.
        """
        raise NotImplementedError

    def config(self) -> dict[str, Any]:
        """A JSON-serialisable description of this network's structure:
        `{"kind": class name, **constructor arguments except key}`. Rebuild a network of
        the same structure with `network_from_config(config, key=...)`.
        """
        names = [
            name
            for name, p in inspect.signature(type(self).__init__).parameters.items()
            if name not in ("self", "key") and p.kind is not p.VAR_KEYWORD
        ]
        return {"kind": type(self).__name__, **{name: getattr(self, name) for name in names}}

    def _features(self, x: Array, mask: Array) -> Array:
        """The per-time input features `(time, channels)`: the values, and the mask as
        0/1 beside them unless the network was built with `mask_input=False` (for data
        that are always fully observed, where the mask is a constant 1)."""
        if getattr(self, "mask_input", True):
            return jnp.concatenate([x, mask.astype(x.dtype)], axis=-1)
        return x

    def _prepare(self, x: Array, mask: Array) -> tuple[Array, Array]:
        """Check the shapes of one series and return `(x with masked entries set to 0,
        mask as a boolean array)`."""
        x = jnp.asarray(x)
        mask = jnp.asarray(mask)
        expected = (self.in_time, self.in_channels)
        for what, a in (("x", x), ("mask", mask)):
            if a.shape != expected:
                raise ValueError(
                    f"{type(self).__name__} takes one series: `{what}` must have shape "
                    f"(in_time, in_channels) = {expected}, got {a.shape}. For a batch, "
                    "use `jax.vmap(network)(x, mask)`."
                )
        if not jnp.issubdtype(x.dtype, jnp.floating):
            x = x.astype(jnp.result_type(float))
        mask = mask.astype(bool)
        return jnp.where(mask, x, 0), mask


def check_size(value: Any, what: str, minimum: int = 1) -> int:
    """Refuse anything but an integer `>= minimum` (a size, a depth), at construction."""
    try:
        if isinstance(value, bool):
            raise TypeError
        n = operator.index(value)
    except TypeError:
        raise TypeError(f"`{what}` must be an integer, got {value!r}.") from None
    if n < minimum:
        raise ValueError(f"`{what}` must be an integer >= {minimum}, got {n}.")
    return n


def check_activation(name: Any) -> str:
    if not isinstance(name, str) or name not in ACTIVATIONS:
        raise ValueError(
            f"Unknown activation {name!r}. Pass one of the names "
            f"{sorted(ACTIVATIONS)} (a string, so the network's config stays JSON)."
        )
    return name


def _concrete(*arrays) -> bool:
    return not any(isinstance(a, jax.core.Tracer) for a in arrays)


def _on_host(fn: Callable, *arrays):
    """`fn(*arrays)` in NumPy when every array is concrete (back as jax arrays), else in
    jax. Construction-time arithmetic on weights then compiles nothing: each eager jax
    op compiles an XLA program per new shape (~0.1 s each on a 2-core CPU)."""
    if not _concrete(*arrays):
        return fn(jnp, *arrays)
    out = fn(np, *(np.asarray(a) for a in arrays))
    return jax.device_put(out)


def host_rng(key: PRNGKeyArray) -> np.random.Generator | None:
    """A NumPy generator seeded by the data of a concrete PRNG key (typed or raw
    `uint32`); `None` for a traced key (under `jit` or `vmap`)."""
    if not _concrete(key):
        return None
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        key = jax.random.key_data(key)
    return np.random.default_rng(np.asarray(key, np.uint32).ravel().tolist())


def split_key(key: PRNGKeyArray, n: int) -> list:
    """`n` keys from `key`: `jax.random.split` for a traced key; for a concrete one,
    raw `uint32[2]` keys drawn by `host_rng` (no eager split to compile)."""
    rng = host_rng(key)
    if rng is None:
        return list(jax.random.split(key, n))
    return [rng.integers(0, 2**32, 2, dtype=np.uint32) for _ in range(n)]


def linear(in_features: int, out_features: int, *, key: PRNGKeyArray) -> eqx.nn.Linear:
    """An `eqx.nn.Linear` with equinox's initialisation: weight and bias uniform on
    `±1/√in_features`.

    For a concrete key the values are drawn on the host by NumPy, seeded by the key:
    the same law, and nothing to compile. Eager `jax.random.uniform` compiles an XLA
    program for every new shape, 0.1–0.5 s each on a 2-core CPU (a 3-layer MLP took
    3.6 s to build). Under a trace (a traced key) equinox draws them, as usual."""
    rng = host_rng(key)
    if rng is None:
        return eqx.nn.Linear(in_features, out_features, key=key)
    dtype, lim = jnp.result_type(float), 1 / math.sqrt(in_features)
    weight = rng.uniform(-lim, lim, (out_features, in_features)).astype(dtype)
    bias = rng.uniform(-lim, lim, (out_features,)).astype(dtype)
    skeleton = eqx.filter_eval_shape(eqx.nn.Linear, in_features, out_features, key=key)
    return eqx.tree_at(lambda l: (l.weight, l.bias), skeleton, jax.device_put((weight, bias)))


def scale_output(layer: eqx.nn.Linear, factor: float = OUTPUT_SCALE) -> eqx.nn.Linear:
    """Scale an output layer's initial weight and bias by `factor`."""
    scaled = _on_host(lambda xp, w, b: (w * factor, b * factor), layer.weight, layer.bias)
    return eqx.tree_at(lambda l: (l.weight, l.bias), layer, scaled)


def fold_constant_inputs(full, small, weight: str = "weight", bias: str = "bias"):
    """`small` (a layer built for the first inputs of `full` only) with `full`'s
    weights, the weights of `full`'s remaining inputs, taken as constant 1, added to
    the bias: the same function of the kept inputs. With `mask_input=False` a
    network starts as the same function as with an all-ones mask, at the same initial
    scale (dropping the mask's weights instead changed how a flow SGNN trained)."""
    n = getattr(small, weight).shape[1]
    folded = _on_host(lambda xp, w, b: (w[:, :n], b + w[:, n:].sum(axis=1)), getattr(full, weight), getattr(full, bias))
    return eqx.tree_at(lambda l: (getattr(l, weight), getattr(l, bias)), small, folded)


_Layer = TypeVar("_Layer", bound=eqx.Module)


def stack_layers(make: Callable[[PRNGKeyArray], _Layer], n: int, key: PRNGKeyArray) -> _Layer | None:
    """`n` independently initialised copies of a layer, stacked along a leading axis of
    every array leaf (run them with `scan_layers`). `None` when `n == 0`.

    The copies are built one by one and then stacked: on CPU this initialises several
    times faster than `eqx.filter_vmap(make)(keys)`, whose batched random draws take
    seconds to compile.
    """
    if n == 0:
        return None
    layers = [make(k) for k in split_key(key, n)]
    params = [eqx.filter(layer, eqx.is_array) for layer in layers]
    stacked = jax.tree.map(lambda *leaves: _on_host(lambda xp, *ls: xp.stack(ls), *leaves), *params)
    return eqx.combine(stacked, eqx.filter(layers[0], eqx.is_array, inverse=True))


def scan_layers(apply: Callable[[Any, Array], Array], stacked, h: Array) -> Array:
    """Apply stacked layers in turn, `h = apply(layer, h)`, with one `lax.scan`, so the
    compiled graph holds one layer whatever the depth."""
    if stacked is None:
        return h
    params, static = eqx.partition(stacked, eqx.is_array)

    def body(h, p):
        return apply(eqx.combine(p, static), h), None

    h, _ = jax.lax.scan(body, h, params)
    return h


def observed_times(mask: Bool[Array, "time channels"]) -> Bool[Array, " time"]:
    """Time points at which at least one channel is observed."""
    return jnp.any(mask, axis=-1)


def masked_mean(h: Float[Array, "time feat"], keep: Bool[Array, " time"]) -> Float[Array, " feat"]:
    """Mean of the rows of `h` where `keep`; zeros when no row is kept."""
    w = keep.astype(h.dtype)
    return jnp.sum(jnp.where(keep[:, None], h, 0), axis=0) / jnp.maximum(jnp.sum(w), 1)


def append_inputs(
    x: Float[Array, "time channels"], mask: Bool[Array, "time channels"], u: Float[Array, " k_in"]
) -> tuple[Float[Array, "time channels+k_in"], Bool[Array, "time channels+k_in"]]:
    """A series with known per-dataset inputs `u` (standardised) beside it, for any
    network: each input becomes one more channel, constant over time, observed at the
    times where the series is (so that masked pooling and attention see the same
    times). A network built with `in_channels + k_in` channels then reads them, with
    no change to its architecture."""
    t = x.shape[0]
    u = jnp.broadcast_to(jnp.asarray(u, x.dtype), (t, u.shape[0]))
    seen = jnp.broadcast_to(observed_times(mask)[:, None], u.shape)
    return jnp.concatenate([x, jnp.where(seen, u, 0)], axis=-1), jnp.concatenate([mask, seen], axis=-1)


def network_from_config(config: dict[str, Any], *, key: PRNGKeyArray) -> AbstractNetwork:
    """Rebuild a network of the structure described by `config` (from
    `AbstractNetwork.config`), with freshly initialised weights.

    Use it as the skeleton to load saved weights into:
    ```python
    net = sgjax.nn.network_from_config(config, key=jax.random.key(0))
    net = eqx.tree_deserialise_leaves(path, net)
    ```

    Only sgjax's own networks (`MLP`, `CNN`, `GRU`, `Transformer`) are accepted: the
    `"kind"` is looked up in a fixed table, never imported or evaluated.

    **Arguments:**

    - `config`: a dict `{"kind": class name, **constructor arguments except key}`.
    - `key`: a PRNG key for the (random) initial weights.

    **Returns:** the network.
    """
    from ._cnn import CNN
    from ._gru import GRU
    from ._mlp import MLP
    from ._transformer import Transformer

    kinds: dict[str, Callable[..., AbstractNetwork]] = {  # each takes its own arguments and `key`
        "MLP": MLP,
        "CNN": CNN,
        "GRU": GRU,
        "Transformer": Transformer,
    }
    if not isinstance(config, dict) or "kind" not in config:
        raise ValueError(
            "A network config must be a dict with a 'kind' entry (one of "
            f"{list(kinds)}) and the constructor arguments, as returned by "
            f"`network.config()`; got {config!r}."
        )
    kwargs = dict(config)
    kind = kwargs.pop("kind")
    if not isinstance(kind, str) or kind not in kinds:
        raise ValueError(
            f"Unknown network kind {kind!r}; expected one of {list(kinds)}. Only sgjax's "
            "own networks can be rebuilt from a config."
        )
    cls = kinds[kind]
    signature = inspect.signature(cls.__init__)
    accepted = [n for n in signature.parameters if n not in ("self", "key")]
    try:
        signature.bind(None, **kwargs, key=key)
    except TypeError as e:
        raise ValueError(f"Bad arguments for {kind} in the config {config!r}: {e}. {kind} takes {accepted}.") from None
    try:
        return cls(**kwargs, key=key)
    except TypeError as e:  # a value of the wrong type, e.g. a width given as a string
        raise ValueError(f"Bad arguments for {kind} in the config {config!r}: {e}") from e
