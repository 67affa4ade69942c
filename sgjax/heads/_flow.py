from typing import Any, cast

import equinox as eqx
import jax
import jax.numpy as jnp

from .base import AbstractHead


# flowjax (and paramax, which it builds on) is a core dependency; it is imported where
# it is used, so that `import sgjax` does not pay for it (~0.1 s) before a flow is built.
# Only flowjax's public names are used here.

_TRANSFORMERS = ("affine", "spline")


class Flow(AbstractHead):
    """Neural posterior estimation with a normalising flow: a masked autoregressive
    flow ([flowjax](https://github.com/danielward27/flowjax)) over the standardised,
    transformed target, conditioned on the network's output — a learned summary of
    the series of `summary_size` numbers. Network and flow are trained together in
    the same fused step, by negative log-likelihood, so the flow approximates the
    full posterior `p(y | x)`: skewed, curved and correlated posteriors included,
    which a Gaussian or a small mixture cannot follow.

    Its posterior samples and log density are in the learning space; `sgjax.infer`
    maps samples back to natural units, and [`sgjax.heads.Flow.log_prob`][] gives the
    density of the standardised target.

    **Arguments:**

    - `summary_size`: how many numbers the network passes to the flow.
    - `flow_layers`: autoregressive layers (each followed by a permutation).
    - `nn_width`, `nn_depth`: the size of each layer's autoregressive network.
    - `transformer`: `"affine"` (a masked autoregressive flow) or `"spline"`
        (rational-quadratic splines on [−`spline_interval`, `spline_interval`], identity
        outside: a neural spline flow, more flexible, slower).
    - `knots`, `spline_interval`: the spline's knots and half-width (standardised
        units), for `transformer="spline"`.
    - `dim`: the target's dimension. Leave it `None`: [`sgjax.fit`][] builds the
        flow once it knows the target (see `build`).
    - `key`: initialises the flow when `dim` is given.
    """

    summary_size: int = eqx.field(static=True)
    flow_layers: int = eqx.field(static=True)
    nn_width: int = eqx.field(static=True)
    nn_depth: int = eqx.field(static=True)
    transformer: str = eqx.field(static=True)
    knots: int = eqx.field(static=True)
    spline_interval: float = eqx.field(static=True)
    dim: int | None = eqx.field(static=True)
    flow: eqx.Module | None

    def __init__(
        self,
        summary_size: int = 32,
        flow_layers: int = 5,
        nn_width: int = 64,
        nn_depth: int = 1,
        transformer: str = "affine",
        knots: int = 8,
        spline_interval: float = 5.0,
        dim: int | None = None,
        *,
        key=None,
    ):
        for name, v in (
            ("summary_size", summary_size),
            ("flow_layers", flow_layers),
            ("nn_width", nn_width),
            ("nn_depth", nn_depth),
            ("knots", knots),
        ):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"`{name}` must be a positive integer, got {v!r}.")
        if transformer not in _TRANSFORMERS:
            raise ValueError(f"`transformer` must be one of {_TRANSFORMERS}, got {transformer!r}.")
        if not spline_interval > 0:
            raise ValueError(f"`spline_interval` must be positive, got {spline_interval!r}.")
        self.summary_size = summary_size
        self.flow_layers = flow_layers
        self.nn_width = nn_width
        self.nn_depth = nn_depth
        self.transformer = transformer
        self.knots = knots
        self.spline_interval = float(spline_interval)
        self.dim = dim
        self.flow = None if dim is None else self._make(dim, jax.random.key(0) if key is None else key)

    def _make(self, dim: int, key):
        from flowjax import flows
        from flowjax.bijections import RationalQuadraticSpline
        from flowjax.distributions import Normal

        config = (self.transformer, self.knots, self.spline_interval)
        if self.transformer == "spline":
            transformer = RationalQuadraticSpline(knots=self.knots, interval=self.spline_interval)
        else:  # flowjax's default; None (flowjax picks it) where it cannot be made here
            transformer = _affine_template()

        def build(key):
            return flows.masked_autoregressive_flow(
                key,
                base_dist=Normal(jnp.zeros(dim)),
                transformer=transformer,
                cond_dim=self.summary_size,
                flow_layers=self.flow_layers,
                nn_width=self.nn_width,
                nn_depth=self.nn_depth,
            )

        flow = None if transformer is None else _host_flow(build, key, transformer, config)
        return _shared_constructors(build(key) if flow is None else flow, config)

    def build(self, k, key):
        if self.dim == k and self.flow is not None:
            return self
        kwargs: dict[str, Any] = {n: v for n, v in self.config().items() if n != "kind"} | {"dim": k}
        return Flow(**kwargs, key=key)

    @property
    def is_density(self):
        return True

    def n_outputs(self, k, n_classes):
        return self.summary_size

    def _ready(self):
        if self.flow is None:
            raise RuntimeError(
                "This Flow head has not been built for a target yet: sgjax.fit builds it (Flow.build(k, key))."
            )
        import paramax

        return paramax.unwrap(self.flow)

    def log_prob(self, out, y):
        """The flow's log density of `y` (standardised space) given the network output."""
        flow = self._ready()
        layers = _scanned_layers(flow)
        if layers is None or jnp.ndim(y) != 1 or jnp.ndim(out) != 1:
            # Another structure than `_make` builds, or batched arguments (flowjax broadcasts).
            return flow.log_prob(y, condition=out)
        return _log_prob_unrolled(flow, layers, y, out)

    def loss(self, out, y):
        return -self.log_prob(out, y)

    def sample(self, key, out, k, n):
        return self._ready().sample(key, (n,), condition=out)

    def summarise(self, out, k, key, n_samples):
        if key is None:
            raise ValueError("A flow's posterior summaries come from its samples: pass a PRNG key.")
        samples = self.sample(key, out, k, n_samples)
        return {"mean": samples.mean(0), "samples": samples}

    def config(self):
        return {
            "kind": "Flow",
            "summary_size": self.summary_size,
            "flow_layers": self.flow_layers,
            "nn_width": self.nn_width,
            "nn_depth": self.nn_depth,
            "transformer": self.transformer,
            "knots": self.knots,
            "spline_interval": self.spline_interval,
            "dim": self.dim,
        }


# flowjax gives every MaskedAutoregressive layer a fresh closure that rebuilds its
# transformer from a parameter vector. The closure is a non-array leaf, so jit keys its
# cache on its identity: every new Flow would retrace and recompile `fit`'s training
# step (~9 s on 2 CPU cores, measured). The closure depends only on the transformer's
# configuration, so one per configuration is kept and shared.
_CONSTRUCTORS: dict = {}


def _shared_constructors(flow, config):
    from flowjax.bijections import MaskedAutoregressive

    def is_layer(x):
        return isinstance(x, MaskedAutoregressive)

    layers = [x for x in jax.tree.leaves(flow, is_leaf=is_layer) if is_layer(x)]
    if not layers:
        return flow
    shared = _CONSTRUCTORS.setdefault(config, layers[0].transformer_constructor)
    return eqx.tree_at(lambda f: [x.transformer_constructor for x in jax.tree.leaves(f, is_leaf=is_layer) if is_layer(x)],
                       flow, [shared] * len(layers))  # fmt: skip


#: The smallest scale of flowjax's default transformer for its masked autoregressive
#: flow (`min_scale` of the affine it builds when given no transformer).
_MIN_SCALE = 1e-2


def _softplus_min_scale(x):
    return jax.nn.softplus(x) + _MIN_SCALE


def _affine_min_scale():
    """flowjax's default transformer, built from its public parts: an `Affine` at the
    identity whose scale is `softplus(s) + min_scale` (a test checks it against the
    transformer flowjax picks when given none)."""
    from flowjax.bijections import Affine
    from paramax import Parameterize
    from paramax.utils import inv_softplus

    return eqx.tree_at(lambda a: a.scale, Affine(), Parameterize(_softplus_min_scale, inv_softplus(1 - _MIN_SCALE)))


def _affine_template():
    """`_affine_min_scale` with its two numbers made on the host: built op by op, it
    compiles a handful of small XLA programs (0.42 s cold on 2 CPU cores). It is built
    abstractly and the loc (0) and the scale's argument (`inv_softplus(1 - min_scale)`)
    are filled in; `None` (flowjax then picks its own) where `Affine` has another
    structure."""
    import numpy as np

    try:
        abstract = eqx.filter_eval_shape(_affine_min_scale)
        loc, (arg,) = abstract.loc, abstract.scale.args
    except (AttributeError, TypeError, ValueError):
        return None
    arrays = [leaf for leaf in jax.tree.leaves(abstract) if isinstance(leaf, jax.ShapeDtypeStruct)]
    if len(arrays) != 2 or loc.shape != () or arg.shape != ():
        return None
    # flowjax's formula in float64, rounded once to the argument's dtype: within one
    # rounding of the float32 result built op by op. From a Python float, as flowjax
    # makes it (jax's weak type kept).
    x = 1 - _MIN_SCALE
    value = np.asarray(np.log(-np.expm1(-x)) + x, arg.dtype)
    # `jax.device_put`, not `jnp.asarray`: that compiles a small program per dtype.
    filled = (jax.device_put(np.zeros((), loc.dtype)), jax.device_put(value.item() if arg.weak_type else value))
    return eqx.tree_at(lambda a: (a.loc, a.scale.args[0]), abstract, filled)


def _host_flow(build, key, transformer, config):
    """`build(key)` (flowjax's masked autoregressive flow) with its arrays made on the
    host, or `None` where that is not possible (a traced key, another structure).

    Built by flowjax op by op, a 5-layer flow compiles ~80 small XLA programs (random
    draws, masks, stacking), ~6 s cold on 2 CPU cores. Here flowjax builds it
    abstractly (`eqx.filter_eval_shape`, nothing computed) and the arrays are filled
    in: flowjax's own law for the random ones (each autoregressive layer's weights and
    biases uniform on ±1/√fan-in as equinox initialises them, a uniform random
    permutation after each layer), its own formulas for the rest (the rank masks, the
    standard normal base). The same distribution over initial flows as flowjax's
    (tested leaf by leaf against a flow flowjax built)."""
    import numpy as np
    import paramax
    from flowjax.bijections import Chain, Flip, MaskedAutoregressive, Permute
    from flowjax.utils import get_ravelled_pytree_constructor

    from ..nn.base import host_rng

    rng = host_rng(key)
    if rng is None:
        return None
    flow = eqx.filter_eval_shape(build, key)
    layers = _scanned_layers(flow)
    if layers is None:
        return None
    made, *rest = layers.bijections if isinstance(layers, Chain) else (layers,)
    if not (
        isinstance(made, MaskedAutoregressive)
        and made.cond_shape is not None
        and all(isinstance(b, (Permute, Flip)) for b in rest)
    ):
        return None
    # The abstract build holds a constructor closed over traced values: use one built
    # from the concrete transformer (what flowjax builds for every layer).
    constructor, n_params = get_ravelled_pytree_constructor(
        transformer, filter_spec=eqx.is_inexact_array, is_leaf=lambda leaf: isinstance(leaf, paramax.NonTrainable)
    )
    _CONSTRUCTORS.setdefault(config, constructor)
    (dim,), (cond_dim,) = made.shape, made.cond_shape
    mlp = made.masked_autoregressive_mlp
    first_bias = mlp.layers[0].bias
    assert first_bias is not None  # flowjax's MADE layers have biases
    n_layers = first_bias.shape[0]
    width = first_bias.shape[-1]
    # MaskedAutoregressive's ranks: conditioning inputs rank -1 (never masked).
    in_ranks = np.concatenate([np.arange(dim), -np.ones(cond_dim, int)])
    hidden_ranks = np.arange(width) % dim - 1
    out_ranks = np.repeat(np.arange(dim), n_params)
    ranks = [in_ranks, *[hidden_ranks] * (len(mlp.layers) - 1), out_ranks]
    new_layers = []
    for i, linear in enumerate(mlp.layers):
        w = linear.weight  # paramax.Parameterize(jnp.where, mask, weight, 0)
        if not (isinstance(w, paramax.Parameterize) and len(w.args) == 3):
            return None
        last = i == len(mlp.layers) - 1
        mask = ranks[i + 1][:, None] > ranks[i] if last else ranks[i + 1][:, None] >= ranks[i]
        mask = np.broadcast_to(mask, w.args[0].shape)
        lim = 1 / np.sqrt(w.args[1].shape[-1])
        weight = rng.uniform(-lim, lim, w.args[1].shape).astype(w.args[1].dtype)
        assert linear.bias is not None
        bias = rng.uniform(-lim, lim, linear.bias.shape).astype(linear.bias.dtype)
        new_layers.append(
            eqx.tree_at(lambda l: (l.weight.args[0], l.weight.args[1], l.bias), linear, (mask, weight, bias))
        )
    made = eqx.tree_at(lambda m: m.masked_autoregressive_mlp.layers, made, tuple(new_layers))
    parts = [made]
    for b in rest:
        if isinstance(b, Permute):
            if len(b.permutation) != 1:  # a 1-D permutation is a 1-tuple of indices
                return None
            perm = np.stack([rng.permutation(dim) for _ in range(n_layers)]).astype(b.permutation[0].dtype)
            inverse = np.argsort(perm, axis=1).astype(perm.dtype)
            b = eqx.tree_at(lambda p: (p.permutation, p.inverse_permutation), b, ((perm,), (inverse,)))
        parts.append(b)
    layers = eqx.tree_at(lambda c: c.bijections, layers, tuple(parts)) if rest else made
    # The base: Normal(0, 1), its scale stored as flowjax's inverse softplus of 1.
    base = flow.base_dist.bijection
    one = np.ones(base.loc.shape, base.loc.dtype)
    base = eqx.tree_at(lambda b: (b.loc, b.scale.args[0]), base, (0 * one, np.log(-np.expm1(-one)) + one))
    flow = eqx.tree_at(lambda f: (f.base_dist.bijection, f.bijection.bijection.bijection), flow, (base, layers))
    if any(isinstance(leaf, jax.ShapeDtypeStruct) for leaf in jax.tree.leaves(flow)):
        return None  # something this does not know how to fill
    return jax.tree.map(lambda a: jax.device_put(a) if isinstance(a, np.ndarray) else a, flow)


# The log density that training differentiates, evaluated from flowjax's own layers
# but written out layer by layer, each autoregressive network applied as `h @ W.T`
# (a row vector times the transposed weight) instead of eqx.nn.Linear's `W @ h`. Once
# vmapped over the batch, XLA:CPU runs these small products and their gradients with
# fewer, faster kernels: a 5-layer flow's network step took 1.42–1.47 ms against
# 1.84–2.18 ms through flowjax's scanned layers (2026-12-02, 2 CPU cores, batch 512).
# The same function as flowjax's `Transformed.log_prob` (tested to float rounding);
# sampling still goes through flowjax.


def _scanned_layers(flow):
    """The stacked layers of a flow as `_make` builds it — `Transformed(base,
    Invert(Scan(layer)))`, each layer a `MaskedAutoregressive`, alone or chained with
    a permutation — or `None` for any other structure."""
    from flowjax.bijections import Chain, Invert, MaskedAutoregressive, Scan
    from flowjax.distributions import Transformed

    if not (
        isinstance(flow, Transformed)
        and isinstance(flow.bijection, Invert)
        and isinstance(flow.bijection.bijection, Scan)
    ):
        return None
    layers = flow.bijection.bijection.bijection
    parts = layers.bijections if isinstance(layers, Chain) else (layers,)
    if not isinstance(parts[0], MaskedAutoregressive) or any(isinstance(b, MaskedAutoregressive) for b in parts[1:]):
        return None
    if not callable(getattr(parts[0], "transformer_constructor", None)):
        return None
    return layers


def _made_transform(made, x, condition):
    """`MaskedAutoregressive.transform_and_log_det`, its network applied as `h @ W.T`.

    The network's outputs are grouped by dimension (`dim` consecutive blocks of the
    transformer's parameters: the rank of output `j` is `j // n_params` in the layer's
    masks), and the transformer of each dimension is built from its block by the
    layer's public `transformer_constructor`, vectorised as flowjax does."""
    from flowjax.bijections import Vmap

    mlp = made.masked_autoregressive_mlp
    h = jnp.concatenate([x, condition])
    for i, linear in enumerate(mlp.layers):
        h = h @ linear.weight.T + linear.bias
        h = mlp.activation(h) if i < len(mlp.layers) - 1 else mlp.final_activation(h)
    params = jnp.reshape(h, (made.shape[-1], -1))
    transformer = Vmap(eqx.filter_vmap(made.transformer_constructor)(params), in_axes=eqx.if_array(0))
    return transformer.transform_and_log_det(x)


def _log_prob_unrolled(flow, layers, y, condition):
    from flowjax.bijections import AbstractBijection, Chain

    arrays, static = eqx.partition(layers, eqx.is_array)
    n_layers = jax.tree.leaves(arrays)[0].shape[0]
    x, log_det = y, jnp.zeros((), y.dtype)
    for i in range(n_layers):  # Scan.transform_and_log_det, in the same order
        layer = eqx.combine(jax.tree.map(lambda a, i=i: a[i], arrays), static)
        made, *rest = layer.bijections if isinstance(layer, Chain) else (layer,)
        x, ld = _made_transform(made, x, condition)
        log_det = log_det + ld.sum()
        for b in rest:  # the permutation (or flip) after the layer
            # The flow is unwrapped (`_ready`): a Chain holds bijections, not wrappers.
            x, ld = cast(AbstractBijection, b).transform_and_log_det(x, condition)
            log_det = log_det + ld.sum()
    log_p = flow.base_dist.log_prob(x) + log_det
    return jnp.where(jnp.isnan(log_p), -jnp.inf, log_p)
