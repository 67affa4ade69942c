"""Neural posterior estimation with a normalising flow head, trained in the same fused
step as every head, against an exact posterior: a linear-Gaussian model whose two
parameters are strongly correlated a posteriori."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats
from exact_tasks import CorrelatedGaussian, PoissonGamma

import sgjax
from sgjax.heads import Flow


@pytest.fixture(scope="module")
def trained():
    task = CorrelatedGaussian()
    est, hist = sgjax.fit(
        task,
        Flow(summary_size=16, flow_layers=3, nn_width=32),
        key=jax.random.key(0),
        steps=1000,
        batch_size=512,
        progress=False,
    )
    return task, est, hist


def test_flow_learns_the_exact_correlated_posterior(trained):
    task, est, _ = trained
    b = task.sample(jax.random.key(3), 200)
    mean, cov = task.posterior(b.x)
    post = sgjax.infer(est, b.x, b.mask, key=jax.random.key(1), n_samples=2000)
    s = post.stacked()  # (datasets, draws, 2)
    assert s.shape == (200, 2000, 2)
    sd = np.sqrt(np.diag(cov))
    # Means within a tenth of a posterior sd; sds within 5%; the correlation (−0.73)
    # within 0.05: a diagonal or independent approximation would miss it entirely.
    np.testing.assert_array_less(np.abs(s.mean(1) - mean).mean(0), 0.1 * sd)
    np.testing.assert_allclose(s.std(1).mean(0), sd, rtol=0.05)
    corr = np.mean([np.corrcoef(si.T)[0, 1] for si in s])
    exact_corr = cov[0, 1] / np.sqrt(cov[0, 0] * cov[1, 1])
    assert exact_corr < -0.7 and abs(corr - exact_corr) < 0.05


def test_log_density_matches_the_exact_posterior(trained):
    task, est, _ = trained
    b = task.sample(jax.random.key(4), 20)
    mean, cov = task.posterior(b.x)
    theta = mean[:, None, :] + np.random.default_rng(0).normal(size=(20, 50, 2)) @ np.linalg.cholesky(cov).T
    lp = sgjax.log_prob(est, sgjax.unstack(theta, est.labels), b.x, b.mask)
    assert lp.shape == (20, 50)
    exact = np.stack([scipy.stats.multivariate_normal(m, cov).logpdf(t) for m, t in zip(mean, theta)])
    # The flow's density tracks the exact one over the bulk of the posterior.
    assert np.corrcoef(lp.ravel(), exact.ravel())[0, 1] > 0.95
    assert np.median(np.abs(lp - exact)) < 0.15
    one = sgjax.log_prob(est, sgjax.unstack(theta[0], est.labels), b.x[0], b.mask[0])
    np.testing.assert_allclose(one, lp[0], rtol=1e-5, atol=1e-5)


def test_log_density_is_in_natural_units():
    # A log-space target: q(λ | x) = q_learn(log λ | x) / λ, so the density integrates
    # to one over λ and is −inf at λ ≤ 0.
    task = PoissonGamma()
    est, _ = sgjax.fit(
        task, sgjax.heads.Gaussian(), key=jax.random.key(0), steps=100, batch_size=256, eval_every=50, progress=False
    )
    x = task.sample(jax.random.key(1), 1).x[0]
    grid = np.linspace(1e-3, 30.0, 20_000)[:, None]
    lp = sgjax.log_prob(est, sgjax.unstack(grid, est.labels), x)
    assert abs(np.trapezoid(np.exp(lp), grid[:, 0]) - 1.0) < 0.01
    assert np.all(sgjax.log_prob(est, sgjax.unstack(np.array([[-1.0], [0.0]]), est.labels), x) == -np.inf)


def test_log_density_of_a_csv_series(trained, tmp_path):
    # Observations as a CSV with a time column, as sgjax.infer takes them.
    task, est, _ = trained
    x = np.asarray(task.sample(jax.random.key(9), 1).x[0])
    path = tmp_path / "obs.csv"
    path.write_text("time,x\n" + "".join(f"{t + 1},{v!r}\n" for t, v in enumerate(x[:, 0].tolist())))
    theta = sgjax.unstack(np.zeros((4, 2)), est.labels)
    np.testing.assert_allclose(sgjax.log_prob(est, theta, str(path)), sgjax.log_prob(est, theta, x), rtol=1e-5)


def test_saved_flow_loads_with_its_parameters(trained, tmp_path):
    # The flow is rebuilt from the saved configuration and its trained arrays read
    # into it (a fresh process is checked for every head in test_estimator.py).
    task, est, _ = trained
    sgjax.save(tmp_path / "flow", est)
    x = np.asarray(task.sample(jax.random.key(5), 3).x)
    want = sgjax.infer(est, x, key=jax.random.key(2), n_samples=100).stacked()
    got = sgjax.infer(sgjax.load(tmp_path / "flow"), x, key=jax.random.key(2), n_samples=100).stacked()
    np.testing.assert_array_equal(got, want)


def test_flow_head_arguments_and_errors(trained):
    _, est, _ = trained
    assert est.head.dim == 2 and est.head.config()["kind"] == "Flow"
    assert sgjax.heads.head_from_config(est.head.config()).dim == 2
    with pytest.raises(ValueError, match="transformer"):
        Flow(transformer="planar")
    with pytest.raises(ValueError, match="summary_size"):
        Flow(summary_size=0)
    with pytest.raises(RuntimeError, match="not been built"):
        Flow().loss(np.zeros(32), np.zeros(2))
    point, _ = sgjax.fit(CorrelatedGaussian(), key=jax.random.key(0), steps=25, batch_size=64, progress=False)
    with pytest.raises(ValueError, match="gives no density"):
        sgjax.log_prob(point, np.zeros((1, 2)), np.zeros((8, 1)))
    with pytest.raises(ValueError, match=r"\(n, m\) or \(1, m\) with n = 2 series first"):
        sgjax.log_prob(est, sgjax.unstack(np.zeros((3, 5, 2)), est.labels), np.zeros((2, 8, 1)))


@pytest.mark.slow
def test_spline_flow_trains(getkey):
    # The neural-spline variant: the loss falls and samples stay finite.
    task = CorrelatedGaussian()
    est, hist = sgjax.fit(
        task,
        Flow(transformer="spline", flow_layers=2, nn_width=16, summary_size=8),
        key=getkey(),
        steps=150,
        batch_size=256,
        eval_every=50,
        progress=False,
    )
    assert hist["val_loss"][-1] < hist["val_loss"][0]
    s = sgjax.infer(est, task.sample(getkey(), 4).x, key=getkey(), n_samples=50).stacked()
    assert np.all(np.isfinite(s))


def test_flow_passes_c2st_and_sbc_against_the_exact_posterior(trained):
    # The bar: C2ST ≤ 0.6 against exact posterior draws, and calibrated ranks.
    from sgjax.diagnostics import c2st, sbc

    task, est, _ = trained
    b = task.sample(jax.random.key(6), 500)
    mean, cov = task.posterior(b.x)
    post = sgjax.infer(est, b.x, b.mask, key=jax.random.key(7), n_samples=1000).stacked()
    rng = np.random.default_rng(0)
    for i in range(3):
        exact = rng.multivariate_normal(mean[i], cov, size=1000)
        assert c2st(post[i], exact, key=jax.random.key(i)) <= 0.6
    result = sbc(post[:, :200], np.asarray(b.y), key=jax.random.key(8))
    assert np.all(result.inside_band) and np.all(result.chi2_p_value > 1e-3)


def test_a_second_fit_with_a_new_flow_compiles_nothing(trained):
    # flowjax builds a fresh closure per layer and optax one per optimiser; jit keys on
    # their identity, so without sharing them every fit recompiled its training step.
    from sgjax._training import _step

    task = trained[0]
    head = lambda: Flow(summary_size=16, flow_layers=3, nn_width=32)  # noqa: E731
    sgjax.fit(
        task,
        head(),
        key=jax.random.key(1),
        steps=50,
        batch_size=128,
        eval_every=50,
        validation_size=256,
        progress=False,
    )
    before = eqx.debug.get_num_traces(_step.steps_body)
    sgjax.fit(
        task,
        head(),
        key=jax.random.key(2),
        steps=50,
        batch_size=128,
        eval_every=50,
        validation_size=256,
        progress=False,
    )
    assert eqx.debug.get_num_traces(_step.steps_body) == before


@pytest.mark.parametrize(
    ("dim", "transformer"), [pytest.param(1, "spline", marks=pytest.mark.slow), (2, "affine"), (3, "affine")]
)
def test_unrolled_log_density_is_flowjaxs(dim, transformer):
    # Flow.log_prob evaluates flowjax's layers written out (the network as h @ W.T);
    # it must be flowjax's own log density, for each layer structure flowjax builds
    # (dim 1: no permutation, 2: a flip, 3+: a permutation), far from the identity.
    import equinox as eqx
    import jax.numpy as jnp

    from sgjax.heads import _flow

    head = Flow(
        summary_size=5,
        flow_layers=3,
        nn_width=16,
        nn_depth=2,
        dim=dim,
        transformer=transformer,
        key=jax.random.key(dim),
    )
    keys = iter(jax.random.split(jax.random.key(7), 1000))
    head = jax.tree.map(
        lambda a: a + 0.3 * jax.random.normal(next(keys), a.shape) if eqx.is_inexact_array(a) else a, head
    )
    assert _flow._scanned_layers(head._ready()) is not None  # the unrolled path is the one tested
    out = jax.random.normal(jax.random.key(1), (64, 5))
    y = 2.0 * jax.random.normal(jax.random.key(2), (64, dim))
    ours = jax.vmap(head.log_prob)(out, y)
    theirs = jax.vmap(lambda o, v: head._ready().log_prob(v, condition=o))(out, y)
    assert np.all(np.isfinite(ours))
    np.testing.assert_allclose(ours, theirs, rtol=2e-6, atol=2e-5 * float(jnp.max(jnp.abs(theirs))))
    # Batched arguments go to flowjax, which broadcasts them.
    np.testing.assert_allclose(head.log_prob(out, y), theirs, rtol=1e-6)


@pytest.mark.parametrize(
    ("dim", "transformer"),
    [
        (1, "affine"),
        pytest.param(2, "spline", marks=pytest.mark.slow),
        pytest.param(3, "affine", marks=pytest.mark.slow),
    ],
)
def test_host_built_flow_is_flowjaxs_initial_flow(dim, transformer, monkeypatch):
    # With a concrete key the flow's arrays are made on the host (nothing compiled);
    # it must be the flow flowjax builds but for the random draws: the same structure,
    # shapes and dtypes, the same masks and base distribution, weights and biases on
    # equinox's ±1/√fan-in, valid permutations, and the same log density as flowjax's
    # flow carrying its arrays.
    import equinox as eqx

    from sgjax.heads import _flow

    kw = dict(summary_size=4, flow_layers=3, nn_width=8, nn_depth=2, dim=dim, transformer=transformer)
    host = Flow(**kw, key=jax.random.key(5))
    again = Flow(**kw, key=jax.random.key(5))
    other = Flow(**kw, key=jax.random.key(6))
    with monkeypatch.context() as m:
        m.setattr(_flow, "_host_flow", lambda *a: None)  # flowjax builds it, op by op
        ref = Flow(**kw, key=jax.random.key(5))
    assert jax.tree.structure(host) == jax.tree.structure(ref)
    arrays = lambda head: {
        jax.tree_util.keystr(p): np.asarray(a)
        for p, a in jax.tree_util.tree_leaves_with_path(eqx.filter(head, eqx.is_array))
    }  # noqa: E731
    ours, theirs, again, other = arrays(host), arrays(ref), arrays(again), arrays(other)
    assert ours.keys() == theirs.keys()
    random = [w for w, a in ours.items() if "masked_autoregressive_mlp" in w and a.dtype.kind == "f"]
    assert len(random) == 2 * (kw["nn_depth"] + 1)  # a weight and a bias per layer
    for where, a in ours.items():
        r = theirs[where]
        assert a.shape == r.shape and a.dtype == r.dtype, where
        if where in random:
            fan_in = ours[where.replace(".bias", ".weight.args[1]")].shape[-1]
            assert np.abs(a).max() <= 1 / np.sqrt(fan_in) and np.abs(r).max() <= 1 / np.sqrt(fan_in), where
        elif "permutation" in where:
            np.testing.assert_array_equal(np.sort(a, axis=-1), np.broadcast_to(np.arange(dim), a.shape))
        else:  # the masks and the base distribution: flowjax's values
            np.testing.assert_allclose(a, r, rtol=1e-6, err_msg=where)
    assert all(np.array_equal(ours[w], again[w]) for w in ours)  # a function of the key
    assert not any(np.allclose(ours[w], other[w]) for w in random)
    # flowjax's flow carrying the host-made arrays has the host flow's density.
    swapped = eqx.combine(eqx.filter(host, eqx.is_array), eqx.filter(ref, eqx.is_array, inverse=True))
    out = jax.random.normal(jax.random.key(1), (16, 4))
    y = jax.random.normal(jax.random.key(2), (16, dim))
    np.testing.assert_allclose(jax.vmap(host.log_prob)(out, y), jax.vmap(swapped.log_prob)(out, y), rtol=1e-6)


def test_host_built_affine_template_is_flowjaxs():
    # flowjax's default transformer (an Affine at the identity, scale softplus(s) +
    # min_scale), rebuilt from flowjax's public parts with its numbers made on the
    # host: no XLA program compiled, the identity map, the correctly rounded
    # inv_softplus(0.99), and the same transformer as the one flowjax picks when given
    # none: a flow built with it has flowjax's default flow's arrays and density.
    import equinox as eqx
    import paramax
    from flowjax import flows
    from flowjax.distributions import Normal

    from sgjax.heads import _flow

    compiles = []

    def listen(event, duration, **kw):
        if event.endswith("backend_compile_duration"):
            compiles.append(kw.get("fun_name"))

    jax.monitoring.register_event_duration_secs_listener(listen)
    try:
        ours = _flow._affine_template()
    finally:
        jax.monitoring.unregister_event_duration_listener(listen)
    assert compiles == []
    assert ours is not None
    np.testing.assert_allclose(
        np.asarray(ours.scale.args[0], np.float64), np.log(np.expm1(0.99)), rtol=np.finfo(np.float32).eps
    )
    x = jnp.array(1.7)
    np.testing.assert_allclose(ours.transform_and_log_det(x)[0], x, rtol=1e-6)
    np.testing.assert_allclose(ours.transform_and_log_det(x)[1], 0.0, atol=1e-6)
    # Built op by op it is the same bijection as the template (values, weak types).
    concrete = _flow._affine_min_scale()
    assert jax.tree.structure(ours) == jax.tree.structure(concrete)
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(concrete)):
        if isinstance(b, jax.Array):
            assert a.dtype == b.dtype and a.shape == b.shape and a.weak_type == b.weak_type
            np.testing.assert_allclose(a, b, rtol=2 * np.finfo(np.float32).eps)

    def build(transformer):
        flow = flows.masked_autoregressive_flow(
            jax.random.key(0),
            base_dist=Normal(jnp.zeros(3)),
            transformer=transformer,
            cond_dim=2,
            flow_layers=2,
            nn_width=8,
        )
        return paramax.unwrap(flow)

    default, with_ours = build(None), build(ours)
    for a, b in zip(
        jax.tree.leaves(eqx.filter(with_ours, eqx.is_array)),
        jax.tree.leaves(eqx.filter(default, eqx.is_array)),
        strict=True,
    ):
        np.testing.assert_array_equal(a, b)
    # Random conditioner outputs exercise the scale's parameterisation (min_scale
    # included) through each layer's transformer constructor, which flowjax made.
    layer = jax.tree.map(lambda a: a[0], eqx.filter(default.bijection.bijection.bijection, eqx.is_array))
    made = eqx.combine(layer, eqx.filter(default.bijection.bijection.bijection, eqx.is_array, inverse=True)).bijections[
        0
    ]
    ours_made = eqx.combine(
        layer, eqx.filter(with_ours.bijection.bijection.bijection, eqx.is_array, inverse=True)
    ).bijections[0]
    params = 3.0 * jax.random.normal(jax.random.key(1), (5, 2))
    for p in params:
        a, b = paramax.unwrap(made.transformer_constructor(p)), paramax.unwrap(ours_made.transformer_constructor(p))
        np.testing.assert_allclose(
            a.transform_and_log_det(jnp.array(0.3)), b.transform_and_log_det(jnp.array(0.3)), rtol=1e-6
        )
    y, cond = jax.random.normal(jax.random.key(2), (16, 3)), jax.random.normal(jax.random.key(3), (16, 2))
    np.testing.assert_allclose(with_ours.log_prob(y, cond), default.log_prob(y, cond), rtol=1e-6)
