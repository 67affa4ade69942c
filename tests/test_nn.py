"""Networks and input standardisation: shapes, masking, batching and compilation,
saving and rebuilding, learning a simple target, and Standardise against numpy."""

import collections
import json

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from sgjax import nn


T, C, OUT, BATCH = 12, 2, 3, 4

#: `(network class, small constructor arguments)` for every network; the generic tests
#: parametrize over this, so a new network is tested by adding one line.
all_networks = (
    (nn.MLP, dict(width=32, depth=2)),
    (nn.CNN, dict(width=16, depth=2, kernel_size=3)),
    (nn.GRU, dict(hidden=16)),
    (nn.Transformer, dict(dim=16, depth=2, heads=2)),
)
networks = pytest.mark.parametrize("cls, kwargs", all_networks, ids=[cls.__name__ for cls, _ in all_networks])

# Compiled once per network structure and shared by the tests (compilation is most of
# their time): always called with a batch of shape (BATCH, T, C), or one series.
traces = collections.Counter()


@eqx.filter_jit
def apply(net, x, mask):
    traces[type(net).__name__] += 1
    return jax.vmap(net)(x, mask)


@eqx.filter_jit
def apply_one(net, x, mask):
    return net(x, mask)


@eqx.filter_jit
@eqx.filter_grad
def weight_grad(net, x, mask):
    return jnp.sum(jax.vmap(net)(x, mask) ** 2)


def _series(seed, shape=(BATCH, T, C), p_observed=0.7):
    """Standard-normal values and a random mask (numpy: no compilation), with time
    point 0 observed in every channel and time points 1 and 4 in none."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(np.float32)
    mask = rng.uniform(size=shape) < p_observed
    mask[..., 0, :] = True
    mask[..., (1, 4), :] = False
    return jnp.asarray(x), jnp.asarray(mask)


def _all_finite(tree):
    return all(bool(jnp.all(jnp.isfinite(a))) for a in jax.tree.leaves(eqx.filter(tree, eqx.is_array)))


@networks
def test_shape_batching_jit_gradient(cls, kwargs, getkey):
    net = cls(T, C, OUT, **kwargs, key=getkey())
    assert isinstance(net, nn.AbstractNetwork)
    x, mask = _series(0)
    y = apply_one(net, x[0], mask[0])
    assert y.shape == (OUT,) and bool(jnp.all(jnp.isfinite(y)))
    yb = apply(net, x, mask)
    assert yb.shape == (BATCH, OUT) and bool(jnp.all(jnp.isfinite(yb)))
    np.testing.assert_allclose(yb[0], y, rtol=1e-5, atol=1e-6)  # batching changes rounding only

    # Other weights and values of the same shapes reuse the compiled code.
    n = traces[cls.__name__]
    apply(cls(T, C, OUT, **kwargs, key=getkey()), *_series(1))
    assert traces[cls.__name__] == n

    grads = weight_grad(net, x, mask)
    assert _all_finite(grads)
    assert all(bool(jnp.any(g != 0)) for g in jax.tree.leaves(eqx.filter(grads, eqx.is_array)))


@networks
def test_masked_values_do_not_matter(cls, kwargs, getkey):
    net = cls(T, C, OUT, **kwargs, key=getkey())
    x, mask = _series(2)
    y = apply(net, x, mask)
    for fill in (1e4 * _series(3)[0], jnp.full(x.shape, jnp.nan)):
        # Exactly equal: masked values are replaced before they reach any arithmetic.
        np.testing.assert_array_equal(apply(net, jnp.where(mask, x, fill), mask), y)


@networks
def test_all_masked_is_finite(cls, kwargs, getkey):
    net = cls(T, C, OUT, **kwargs, key=getkey())
    x, mask = _series(4)
    mask = mask.at[1:3].set(False)  # two series with no observation at all
    x = jnp.where(mask, x, jnp.nan)
    assert bool(jnp.all(jnp.isfinite(apply(net, x, mask))))
    assert _all_finite(weight_grad(net, x, mask))


@networks
def test_wrong_shape(cls, kwargs, getkey):
    net = cls(T, C, OUT, **kwargs, key=getkey())
    x, mask = _series(5)
    with pytest.raises(ValueError, match="jax.vmap"):
        net(x, mask)
    with pytest.raises(ValueError, match=r"\(12, 2\)"):
        net(x[0, :5], mask[0, :5])


def test_gru_skips_missing_time_points(getkey):
    """The GRU's output is the output layer applied to the hidden state after the
    observed time points only, computed here by hand with a Python loop."""
    net = nn.GRU(T, C, OUT, hidden=16, key=getkey())
    x, mask = _series(6)
    x, mask = x[0], mask.at[0, 6].set(False).at[0, 7, 1].set(False).at[0, 9:].set(False)[0]
    observed = [t for t in range(T) if mask[t].any()]
    assert observed[-1] == 8 and 6 not in observed and 7 in observed

    @eqx.filter_jit
    def by_hand(net, x, mask):
        h = jnp.zeros(16)
        for t in observed:  # the time points missing in every channel are skipped
            u = jnp.concatenate([jnp.where(mask[t], x[t], 0.0), mask[t].astype(float)])
            h = net.cell(u, h)
        return net.last(h)

    # Tolerance: a scan and an unrolled loop may round differently.
    np.testing.assert_allclose(apply_one(net, x, mask), by_hand(net, x, mask), rtol=1e-6, atol=1e-6)
    # An observed time point after them does change the output.
    assert not np.allclose(apply_one(net, x, mask.at[10, 0].set(True)), apply_one(net, x, mask))


@networks
def test_config_round_trip(cls, kwargs, getkey, tmp_path):
    net = cls(T, C, OUT, **kwargs, key=getkey())
    config = json.loads(json.dumps(net.config()))
    assert config == {**config, "kind": cls.__name__, "in_time": T, "in_channels": C, "out_size": OUT}
    assert {k: config[k] for k in kwargs} == kwargs
    skeleton = nn.network_from_config(config, key=getkey())
    assert type(skeleton) is cls
    assert jax.tree.structure(skeleton) == jax.tree.structure(net)
    shapes = lambda net: [a.shape for a in jax.tree.leaves(eqx.filter(net, eqx.is_array))]
    assert shapes(skeleton) == shapes(net)

    path = tmp_path / "net.eqx"
    eqx.tree_serialise_leaves(path, net)
    loaded = eqx.tree_deserialise_leaves(path, skeleton)
    x, mask = _series(7)
    np.testing.assert_array_equal(apply(loaded, x, mask), apply(net, x, mask))
    assert not np.array_equal(apply(skeleton, x, mask), apply(net, x, mask))


def test_bad_configs(getkey):
    good = nn.MLP(T, C, OUT, width=8, key=getkey()).config()
    with pytest.raises(ValueError, match="Unknown network kind 'os.system'"):
        nn.network_from_config({**good, "kind": "os.system"}, key=getkey())
    with pytest.raises(ValueError, match="'kind'"):
        nn.network_from_config({k: v for k, v in good.items() if k != "kind"}, key=getkey())
    with pytest.raises(ValueError, match="MLP takes"):
        nn.network_from_config({**good, "hidden": 3}, key=getkey())
    with pytest.raises(ValueError, match="MLP takes"):
        nn.network_from_config({k: v for k, v in good.items() if k != "out_size"}, key=getkey())
    with pytest.raises(ValueError, match="MLP takes"):
        nn.network_from_config({**good, "key": 0}, key=getkey())
    with pytest.raises(ValueError, match="`width` must be an integer >= 1"):
        nn.network_from_config({**good, "width": 0}, key=getkey())
    with pytest.raises(ValueError, match="`width` must be an integer, got 'wide'"):
        nn.network_from_config({**good, "width": "wide"}, key=getkey())


def test_bad_arguments(getkey):
    with pytest.raises(ValueError, match="`in_time` must be an integer >= 1"):
        nn.MLP(0, C, OUT, key=getkey())
    with pytest.raises(TypeError, match="`width` must be an integer"):
        nn.MLP(T, C, OUT, width=2.5, key=getkey())
    with pytest.raises(TypeError, match="`hidden` must be an integer"):
        nn.GRU(T, C, OUT, hidden=True, key=getkey())
    with pytest.raises(ValueError, match="`depth` must be an integer >= 1"):
        nn.CNN(T, C, OUT, depth=0, key=getkey())
    with pytest.raises(ValueError, match=r"Unknown activation 'swish'.*'elu', 'gelu'"):
        nn.CNN(T, C, OUT, activation="swish", key=getkey())
    with pytest.raises(ValueError, match="`heads` must divide `dim`"):
        nn.Transformer(T, C, OUT, dim=10, heads=4, key=getkey())
    # numpy integers are accepted and stored as plain ints (the config stays JSON).
    net = nn.MLP(np.int64(T), C, OUT, width=8, key=getkey())
    assert type(net.in_time) is int and json.dumps(net.config())


@pytest.mark.parametrize("name", sorted(nn.ACTIVATIONS))
def test_activations(name, getkey):
    net = nn.MLP(T, C, OUT, width=8, depth=1, activation=name, key=getkey())
    x, mask = _series(8)
    features = jnp.concatenate([jnp.where(mask[0], x[0], 0).ravel(), mask[0].ravel().astype(float)])
    expected = net.last(nn.ACTIVATIONS[name](net.first(features)))
    np.testing.assert_allclose(net(x[0], mask[0]), expected, rtol=1e-6)


# Learning the Transformer is slow on CPU (its shapes, masks and gradients are tested
# in CI above); run it with `pytest -m slow`.
@pytest.mark.parametrize(
    "cls, kwargs",
    [
        pytest.param(cls, kw, id=cls.__name__, marks=[pytest.mark.slow] if cls is nn.Transformer else [])
        for cls, kw in all_networks
    ],
)
def test_learns_the_mean(cls, kwargs, getkey):
    """Regress the mean of the observed entries of a noisy constant series. The target
    has variance about 1; 200 Adam steps on fresh batches bring the held-out error
    below a tenth of it."""
    time, steps, batch = 16, 200, 64
    rng = np.random.default_rng(9)

    def data(*n):
        mu = rng.standard_normal((*n, 1, 1))
        x = (mu + 0.5 * rng.standard_normal((*n, time, 1))).astype(np.float32)
        mask = rng.uniform(size=x.shape) < 0.8
        target = np.sum(np.where(mask, x, 0), axis=(-2, -1)) / np.maximum(np.sum(mask, axis=(-2, -1)), 1)
        return jnp.asarray(x), jnp.asarray(mask), jnp.asarray(target, dtype=jnp.float32)

    def loss(net, x, mask, target):
        return jnp.mean((jax.vmap(net)(x, mask)[:, 0] - target) ** 2)

    optimiser = optax.adam(3e-3)

    @eqx.filter_jit
    def train(net, batches):
        params, static = eqx.partition(net, eqx.is_array)

        def step(carry, batch):
            params, state = carry
            grads = jax.grad(lambda p: loss(eqx.combine(p, static), *batch))(params)
            updates, state = optimiser.update(grads, state, params)
            return (optax.apply_updates(params, updates), state), None

        (params, _), _ = jax.lax.scan(step, (params, optimiser.init(params)), batches)
        return eqx.combine(params, static)

    net = cls(time, 1, 1, **kwargs, key=getkey())
    test = data(1024)
    variance = float(jnp.var(test[2]))
    evaluate = eqx.filter_jit(loss)  # compiled once: much faster than op by op
    before = float(evaluate(net, *test))
    net = train(net, data(steps, batch))
    after = float(evaluate(net, *test))
    assert 0.5 < variance < 2.0 and before > 0.5 * variance
    print(f"{cls.__name__}: loss {before:.3f} -> {after:.4f}, target variance {variance:.3f}")
    assert after < 0.1 * variance, (before, after, variance)


def _pilot(seed, n=200):
    """Counts with a mean varying over (time, channel); column (0, 1) constant, column
    (2, 0) never observed, column (3, 1) observed once."""
    rng = np.random.default_rng(seed)
    x = rng.poisson(np.exp(rng.uniform(0.0, 4.0, (1, 5, 2))), (n, 5, 2)).astype(float)
    x[:, 0, 1] = 7.0
    mask = rng.uniform(size=(n, 5, 2)) < 0.7
    mask[:, 2, 0] = False
    mask[:, 3, 1] = False
    mask[0, 3, 1] = True
    return x, mask


@pytest.mark.parametrize("log1p", [True, False])
def test_standardise_fit_exact(log1p):
    x, mask = _pilot(10)
    if not log1p:
        x = x - 20.0  # real-valued data may be negative
    y = np.log1p(x) if log1p else x
    with jax.enable_x64(True):  # float64, to compare with numpy to 1e-12
        s = nn.Standardise.fit(np.where(mask, x, np.nan), mask, log1p=log1p)
        z = np.asarray(jax.vmap(s)(np.where(mask, x, np.nan), mask))
    assert s.log1p is log1p and s.mean.shape == s.std.shape == (5, 2)
    mean, std = np.asarray(s.mean), np.asarray(s.std)
    ordinary = 0
    for c in range(2):
        floor = 0.1 * np.std(y[:, :, c][mask[:, :, c]])
        for t in range(5):
            observed = y[mask[:, t, c], t, c]
            if len(observed) == 0:
                assert mean[t, c] == 0.0 and std[t, c] == 1.0
                continue
            np.testing.assert_allclose(mean[t, c], observed.mean(), rtol=1e-12)
            np.testing.assert_allclose(std[t, c], max(observed.std(), floor), rtol=1e-12)
            if observed.std() > floor:  # the pilot batch is standardised to mean 0, std 1
                ordinary += 1
                np.testing.assert_allclose(z[mask[:, t, c], t, c].mean(), 0.0, atol=1e-12)
                np.testing.assert_allclose(z[mask[:, t, c], t, c].std(), 1.0, rtol=1e-12)
    assert ordinary >= 3
    # The constant column and the one observed once get the floor.
    assert std[0, 1] == std[3, 1] == pytest.approx(0.1 * np.std(y[:, :, 1][mask[:, :, 1]]), rel=1e-12)
    assert np.all(z[~mask] == 0.0)


def test_standardise_round_trip_and_errors(tmp_path):
    x, mask = _pilot(11)
    x, mask = jnp.asarray(x, dtype=jnp.float32), jnp.asarray(mask)
    s = nn.Standardise.fit(x, mask)
    config = json.loads(json.dumps(s.config()))
    assert config == {"log1p": True, "in_time": 5, "in_channels": 2}
    path = tmp_path / "standardise.eqx"
    eqx.tree_serialise_leaves(path, s)
    loaded = eqx.tree_deserialise_leaves(path, nn.Standardise.skeleton(**config))
    np.testing.assert_array_equal(jax.vmap(loaded)(x, mask), jax.vmap(s)(x, mask))

    # Gradients through the module stay finite even with NaN at masked entries.
    def total(s):
        return jnp.sum(jax.vmap(s)(jnp.where(mask, x, jnp.nan), mask))

    grads = eqx.filter_jit(eqx.filter_grad(total))(s)
    assert _all_finite(grads)

    with pytest.raises(ValueError, match=r"x\[None\]"):
        nn.Standardise.fit(x[0], mask[0])
    with pytest.raises(ValueError, match="same shape"):
        nn.Standardise.fit(x, mask[:, :3])
    with pytest.raises(ValueError, match="jax.vmap"):
        s(x, mask)
    with pytest.raises(TypeError, match="log1p"):
        nn.Standardise.fit(x, mask, log1p="yes")


@networks
def test_without_the_mask_input(cls, kwargs, getkey):
    # For fully observed data `fit` builds networks that do not read the mask (a
    # constant 1 there): fewer weights, the same output whatever the mask says at
    # observed entries, and the option kept in the config. Old configs without it
    # rebuild networks that read the mask.
    net = cls(T, C, OUT, **kwargs, mask_input=False, key=getkey())
    full = cls(T, C, OUT, **kwargs, key=getkey())
    size = lambda n: sum(a.size for a in jax.tree.leaves(eqx.filter(n, eqx.is_array)))  # noqa: E731
    first = {nn.MLP: T * C, nn.CNN: C * kwargs.get("kernel_size", 0), nn.GRU: 3 * kwargs.get("hidden", 0) * C,
             nn.Transformer: C * kwargs.get("dim", 0)}[cls]  # fmt: skip
    assert size(full) - size(net) == first * (kwargs.get("width", 1) if cls in (nn.MLP, nn.CNN) else 1)
    x, _ = _series(8)
    ones = jnp.ones(x.shape, bool)
    y = apply(net, x, ones)
    assert y.shape == (BATCH, OUT) and bool(jnp.all(jnp.isfinite(y)))
    config = json.loads(json.dumps(net.config()))
    assert config["mask_input"] is False
    rebuilt = nn.network_from_config(config, key=getkey())
    assert size(rebuilt) == size(net) and rebuilt.mask_input is False
    legacy = {k: v for k, v in full.config().items() if k != "mask_input"}
    assert nn.network_from_config(legacy, key=getkey()).mask_input is True


@pytest.mark.parametrize(
    "cls, kwargs", [n for n in all_networks if n[0] is not nn.CNN], ids=lambda v: getattr(v, "__name__", "")
)
def test_mask_free_network_starts_as_the_same_function(cls, kwargs, getkey):
    # Built without the mask input, MLP, GRU and Transformer fold the would-be mask
    # weights into the first layer's bias: with the same key, the same initial function
    # on complete data. (A CNN's zero padding makes the mask channel position-dependent.)
    key = getkey()
    full = cls(T, C, OUT, **kwargs, key=key)
    blind = cls(T, C, OUT, **kwargs, mask_input=False, key=key)
    x, _ = _series(9)
    ones = jnp.ones(x.shape, bool)
    np.testing.assert_allclose(apply(blind, x, ones), apply(full, x, ones), rtol=1e-5, atol=1e-6)


def test_host_initialisation_law_and_determinism():
    """`linear` with a concrete key draws equinox's law (uniform on ±1/√in) on the
    host, deterministically in the key; a traced key goes to equinox itself."""
    n_in, n_out = 400, 256
    a = nn.base.linear(n_in, n_out, key=jax.random.key(3))
    b = nn.base.linear(n_in, n_out, key=jax.random.key(3))
    c = nn.base.linear(n_in, n_out, key=jax.random.key(4))
    ref = eqx.nn.Linear(n_in, n_out, key=jax.random.key(3))
    assert jax.tree.structure(a) == jax.tree.structure(ref)
    lim = 1 / np.sqrt(n_in)
    for got, want in ((a.weight, ref.weight), (a.bias, ref.bias)):
        assert got.shape == want.shape and got.dtype == want.dtype
        g = np.asarray(got)
        assert np.abs(g).max() <= lim
        # Uniform(-lim, lim): mean 0 and variance lim²/3, within ~5 standard errors.
        se = lim / np.sqrt(3 * g.size)
        assert abs(g.mean()) < 5 * se
        assert abs(g.var() / (lim**2 / 3) - 1) < 5 * np.sqrt(0.8 / g.size)
    np.testing.assert_array_equal(a.weight, b.weight)
    assert not np.allclose(a.weight, c.weight)
    # Raw uint32 keys (what split_key hands out) work too, and differ from each other.
    k1, k2 = nn.base.split_key(jax.random.key(3), 2)
    assert not np.allclose(nn.base.linear(8, 4, key=k1).weight, nn.base.linear(8, 4, key=k2).weight)
    # Under a trace the key is abstract: equinox draws the weights, bit for bit.
    traced = eqx.filter_jit(lambda k: nn.base.linear(n_in, n_out, key=k))(jax.random.key(3))
    np.testing.assert_array_equal(traced.weight, ref.weight)


def test_building_an_mlp_compiles_nothing():
    """With a concrete key, building a network runs no XLA compilation: the weights
    are drawn and folded on the host (eager jax.random compiles a program per shape,
    seconds for a network on 2 CPU cores). Built under vmap (an ensemble) it still works."""
    cls, kwargs = nn.MLP, dict(width=32, depth=2)
    compiled = []

    def listen(event, duration, **kw):
        if event.endswith("backend_compile_duration"):
            compiled.append(kw.get("fun_name"))

    key = jax.random.key(11)
    nn.base.host_rng(key)  # reading a key's data compiles once per process
    jax.monitoring.register_event_duration_secs_listener(listen)
    try:
        # Sizes no other test uses, so that nothing is already compiled.
        net = cls(T + 1, C, OUT + 2, key=key, **kwargs)
    finally:
        jax.monitoring.unregister_event_duration_listener(listen)
    assert compiled == []
    keys = jax.random.split(jax.random.key(0), 2)
    ensemble = eqx.filter_vmap(lambda k: cls(T, C, OUT, key=k, **kwargs))(keys)
    x, mask = jnp.ones((BATCH, T, C)), jnp.ones((BATCH, T, C), bool)
    out = eqx.filter_vmap(lambda n: jax.vmap(n)(x, mask))(ensemble)
    assert out.shape == (2, BATCH, OUT) and np.all(np.isfinite(out)) and not np.allclose(out[0], out[1])
    assert np.all(np.isfinite(apply(net, jnp.ones((BATCH, T + 1, C)), jnp.ones((BATCH, T + 1, C), bool))))
