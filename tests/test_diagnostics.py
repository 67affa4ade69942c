"""Diagnostics against exact answers: SBC and expected coverage of exact (conjugate
normal–normal) posteriors and of deliberately wrong ones, ranks against brute force,
the simultaneous ECDF band's level by simulation, C2ST against the Bayes accuracy of
two Gaussians, and posterior predictive checks on a real simulator."""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sgjax
from sgjax import diagnostics as dg
from sgjax.diagnostics import _c2st, _sbc
from sgjax.observation import ObservationModel, Poisson


def conjugate(rng, n, draws, *, scale=1.0, shift=0.0, m=5):
    """θ ~ N(0, 1), x_1..m | θ ~ N(θ, 1): the posterior is N(Σx / (1 + m), 1 / (1 + m)).
    Returns posterior draws `(n, draws)` with their sd multiplied by `scale` and their
    mean moved by `shift` posterior sds, and the true θ `(n,)`."""
    theta = rng.normal(size=n)
    x = theta[:, None] + rng.normal(size=(n, m))
    sd = (1 + m) ** -0.5
    mean = x.sum(1) / (1 + m)
    return mean[:, None] + shift * sd + scale * sd * rng.normal(size=(n, draws)), theta


#: (scale, shift) of each column: exact, overconfident, biased, underconfident.
CASES = ((1.0, 0.0), (0.5, 0.0), (1.0, 0.5), (2.0, 0.0))


@pytest.fixture(scope="module")
def posteriors():
    rng = np.random.default_rng(0)
    cols = [conjugate(rng, 1000, 255, scale=s, shift=b) for s, b in CASES]
    samples = np.stack([c[0] for c in cols], axis=-1).astype(np.float32)
    truth = np.stack([c[1] for c in cols], axis=-1).astype(np.float32)
    return samples, truth


# -- ranks -------------------------------------------------------------------------


def test_ranks_match_brute_force_and_break_ties_uniformly(getkey):
    rng = np.random.default_rng(1)
    samples = rng.normal(size=(40, 30, 3)).astype(np.float32)
    truth = rng.normal(size=(40, 3)).astype(np.float32)
    brute = np.array([[np.sum(samples[i, :, j] < truth[i, j]) for j in range(3)] for i in range(40)])
    np.testing.assert_array_equal(dg.sbc_ranks(samples, truth), brute)
    # One parameter as (n, draws) and (n,).
    np.testing.assert_array_equal(dg.sbc_ranks(samples[..., 0], truth[:, 0]), brute[:, :1])

    # Quantised draws tie with the truth: without a key that is an error (no key is
    # needed without ties, as above); with one the rank is uniform over the tied positions.
    q = np.round(samples * 2) / 2
    t = np.round(truth * 2) / 2
    below = (q < t[:, None]).sum(1)
    ties = (q == t[:, None]).sum(1)
    assert ties.sum() > 0
    with pytest.raises(ValueError, match=f"{ties.sum()} posterior draws equal .* pass `key=`"):
        dg.sbc_ranks(q, t)
    ranks = dg.sbc_ranks(q, t, key=getkey())
    assert np.all((ranks >= below) & (ranks <= below + ties))
    # Every draw equal to the truth: the rank is uniform on 0..S, mean S/2 = 15 with
    # sd sqrt((31² − 1)/12) / sqrt(3000) ≈ 0.16.
    flat = dg.sbc_ranks(np.zeros((1000, 30, 3)), np.zeros((1000, 3)), key=getkey())
    assert flat.min() == 0 and flat.max() == 30 and abs(flat.mean() - 15) < 0.6


# -- SBC ---------------------------------------------------------------------------


def test_sbc_passes_exact_posteriors_and_flags_wrong_ones(posteriors):
    samples, truth = posteriors
    result = dg.sbc(samples, truth, key=jax.random.key(0), labels=["exact", "narrow", "biased", "wide"])
    n, k = truth.shape
    assert result.ranks.shape == (n, k) and result.ranks.max() <= 255
    np.testing.assert_array_equal(result.ranks, dg.sbc_ranks(samples, truth))
    assert result.histogram.shape == (k, 20) and np.all(result.histogram.sum(1) == n)
    np.testing.assert_allclose(result.expected.sum(), n)
    g = result.grid.size
    assert result.ecdf_diff.shape == (k, g) and result.band.shape == (2, g)
    assert np.all(result.band[0] <= 0) and np.all(result.band[1] >= 0)

    exact = result.summary()["exact"]
    # The exact posterior passes both tests (fixed seed; under uniformity each
    # p-value is uniform, so these thresholds fail 1% and 5% of seeds).
    assert exact["chi2_p_value"] > 0.01 and exact["ecdf_p_value"] > 0.05 and exact["inside_band"]
    # Too narrow, biased by half a posterior sd, or twice too wide: all leave the band.
    for label in ("narrow", "biased", "wide"):
        s = result.summary()[label]
        assert not s["inside_band"] and s["ecdf_p_value"] < 0.01 and s["chi2_p_value"] < 1e-4, label
    # The shapes the ECDF-difference plot teaches: an overconfident posterior's ranks
    # pile at both ends (ECDF above zero early, below late), a biased-high one's at
    # the bottom (ECDF above zero), an underconfident one's in the middle.
    d = dict(zip(result.labels, result.ecdf_diff))
    z = result.grid
    assert d["narrow"][z < 0.2].max() > 0.05 and d["narrow"][z > 0.8].min() < -0.05
    assert d["biased"][np.abs(z - 0.5) < 0.1].min() > 0.05
    assert d["wide"][z < 0.3].min() < -0.05 and d["wide"][z > 0.7].max() > 0.05


def test_sbc_band_is_simultaneous_at_its_level():
    """The band holds a whole ECDF curve of uniform ranks with probability 1 − α:
    checked on 2000 fresh curves, independent of the 1000 the band was set with
    (sd of the estimate 0.005; of the band's own coverage ≈ 0.007)."""
    n, draws = 100, 99
    cuts, z, lower, upper, sim_tails = _sbc._cached_band(jax.random.key(0), n, draws, 100, 0.05, 1000)
    ranks = np.random.default_rng(2).integers(0, draws + 1, size=(2000, n))
    counts = (ranks[:, :, None] < cuts).sum(1)
    inside = np.all((counts >= lower) & (counts <= upper), axis=1)
    assert abs(inside.mean() - 0.95) < 0.025
    # Simultaneous, so wider than the pointwise 95% band (±1.96 sd) in the middle.
    mid = np.argmin(np.abs(z - 0.5))
    assert (upper[mid] - lower[mid]) / n > 2 * 1.96 * 0.5 / math.sqrt(n)
    # The ECDF test's p-values are uniform under uniformity.
    p = (1 + np.searchsorted(sim_tails, _sbc._min_tail(counts, n, z), side="right")) / (len(sim_tails) + 1)
    assert abs(np.mean(p <= 0.05) - 0.05) < 0.015 and abs(np.mean(p <= 0.5) - 0.5) < 0.04


def test_sbc_with_a_key_and_bad_input(getkey):
    rng = np.random.default_rng(3)
    samples, truth = conjugate(rng, 200, 99)
    result = dg.sbc(samples, truth, key=getkey(), bins=10, points=50)
    assert result.histogram.shape == (1, 10) and result.grid.size == 49 and result.labels == ("θ[0]",)
    assert result.inside_band[0]
    key = getkey()
    with pytest.raises(ValueError, match=r"`truth` must have shape \(200, 1\)"):
        dg.sbc(samples[..., None], truth[:150, None], key=key)
    with pytest.raises(ValueError, match=r"\(n, draws, k\)"):
        dg.sbc(samples[..., None, None], truth, key=key)
    with pytest.raises(ValueError, match="NaN"):
        dg.sbc(np.full((5, 4), np.nan), np.zeros(5), key=key)
    with pytest.raises(ValueError, match="`bins`"):
        dg.sbc(samples, truth, key=key, bins=1)
    with pytest.raises(ValueError, match="one label per parameter"):
        dg.sbc(samples, truth, key=key, labels=["a", "b"])
    with pytest.raises(TypeError, match="missing 1 required keyword-only argument: 'key'"):
        dg.sbc(samples, truth)
    with pytest.raises(TypeError, match="one JAX PRNG key"):
        dg.sbc(samples, truth, key=0)
    # Named samples: truth must be named too, and name every parameter.
    with pytest.raises(TypeError, match="`truth` must name its values"):
        dg.sbc({"a": samples}, truth, key=key)
    with pytest.raises(ValueError, match=r"`truth` has no entry for \['a'\]"):
        dg.sbc({"a": samples}, {"b": truth}, key=key)
    with pytest.raises(TypeError, match="labels from the names"):
        dg.sbc({"a": samples}, {"a": truth}, key=key, labels=["a"])
    with pytest.raises(ValueError, match="needs posterior draws"):
        dg.sbc(_NoSamples(), {"a": truth}, key=key)
    with pytest.raises(ValueError, match="pass `labels=`"):
        dg.sbc(samples, {"a": truth}, key=key)
    # A dict of truths with stacked samples and their labels.
    same = dg.sbc(samples, {"a": truth, "fixed": np.ones(200)}, key=key, labels=["a"], bins=10, points=50)
    np.testing.assert_array_equal(same.ranks, result.ranks)


class _NoSamples:
    samples = None


# -- expected coverage ---------------------------------------------------------------


def test_expected_coverage_is_nominal_for_exact_posteriors_and_low_for_narrow_ones(posteriors):
    samples, truth = posteriors
    levels = (0.5, 0.8, 0.9, 0.95)
    cov = dg.expected_coverage(samples, truth, levels)
    assert cov.coverage.shape == (4, 4) and cov.band.shape == (2, 4)
    # Brute force: np.quantile per observation.
    lo = np.quantile(samples, [(1 - lv) / 2 for lv in levels], axis=1)
    hi = np.quantile(samples, [(1 + lv) / 2 for lv in levels], axis=1)
    brute = ((lo <= truth) & (truth <= hi)).mean(1)
    np.testing.assert_allclose(cov.coverage, brute, atol=2e-3)  # float32 interpolation at the edges
    # Exact: nominal within 0.045 (binomial sd at n = 1000 is ≤ 0.016, plus the
    # draws' own quantile error). Narrow (sd halved): the 90% interval covers
    # P(|Z| < 0.82) = 59%. Wide (sd doubled): P(|Z| < 3.29) = 99.9%.
    np.testing.assert_allclose(cov.coverage[:, 0], levels, atol=0.045)
    assert abs(cov.coverage[2, 1] - 0.59) < 0.05
    assert np.all(cov.coverage[:, 1] < np.asarray(levels) - 0.1)
    assert np.all(cov.coverage[:, 3] > np.asarray(levels))
    assert np.all((cov.band[0] < levels) & (levels < cov.band[1]))
    for bad in ([0.0, 0.5], [0.5, 1.0], [1.5], [[0.5]], []):
        with pytest.raises(ValueError, match="strictly between 0 and 1"):
            dg.expected_coverage(samples, truth, bad)
    with pytest.raises(ValueError, match="`truth` must have shape"):
        dg.expected_coverage(samples, truth[:10])


# -- C2ST --------------------------------------------------------------------------


def _phi(x):
    return 0.5 * (1 + math.erf(x / math.sqrt(2)))


def test_c2st_matches_the_bayes_accuracy_and_compiles_once(getkey):
    rng = np.random.default_rng(4)
    a = rng.normal(size=(1000, 1))
    before = eqx.debug.get_num_traces(_c2st._cross_validate)
    # One distribution: chance. Held-out accuracy over 2000 points has sd ≈ 0.011.
    assert abs(dg.c2st(a, rng.normal(size=(1000, 1)), key=getkey()) - 0.5) < 0.05
    # Fully separated (δ = 6: Bayes accuracy 0.9987).
    assert dg.c2st(a, rng.normal(size=(1000, 1)) + 6.0, key=getkey()) > 0.95
    # In between, the Bayes accuracy Φ(δ/2) of a unit-variance shift.
    for delta in (0.5, 1.0, 2.0):
        acc = dg.c2st(a, rng.normal(size=(1000, 1)) + delta, key=getkey())
        assert abs(acc - _phi(delta / 2)) < 0.05, (delta, acc)
    assert eqx.debug.get_num_traces(_c2st._cross_validate) - before <= 1  # same shapes: compiled once
    with pytest.raises(ValueError, match="same dimension"):
        dg.c2st(np.zeros((100, 2)), np.zeros((100, 3)), key=getkey())
    with pytest.raises(ValueError, match="per fold"):
        dg.c2st(np.zeros((3, 2)), np.zeros((3, 2)), key=getkey())


# -- posterior predictive ------------------------------------------------------------


S = 400  # posterior draws


@pytest.fixture(scope="module")
def growth():
    simulator = sgjax.Simulator(sgjax.models.Exponential(), jnp.arange(1.0, 16.0), ObservationModel(Poisson()))
    # Simulated in a batch of the size, and with the settings, posterior_predictive
    # uses below, so that the simulator compiles once for the whole test.
    sims = sgjax.simulate(simulator, key=jax.random.key(0), theta={"r": jnp.full(S, 0.2)}, keep_states=False)
    return simulator, np.asarray(sims.observations[0])


def test_posterior_predictive_covers_data_from_the_truth_and_rejects_a_wrong_fit(growth, getkey, tmp_path):
    simulator, observed = growth
    res = dg.posterior_predictive(simulator, {"r": jnp.full(S, 0.2)}, observed, key=getkey())
    assert res.observations.shape == res.signal.shape == res.mask.shape == (S, 15, 1)
    assert res.lower.shape == res.median.shape == res.upper.shape == (15, 1)
    assert np.all(res.lower <= res.median) and np.all(res.median <= res.upper) and res.n_failed == 0
    # Draws at the truth: the observation is one more draw from the predictive, so each
    # of its 15 points falls in the 90% band with probability ≥ 0.9 (13.5 expected).
    assert res.inside >= 0.7
    assert set(res.p_values) == {"sum", "max"} and res.predictive_statistics["sum"].shape == (S,)
    assert all(0.02 < p < 0.98 for p in res.p_values.values())
    assert res.statistics["sum"] == pytest.approx(observed.sum())
    # The clean signal is the exact solution N0 exp(r t): the predictive median of
    # Poisson counts sits within a count of it.
    np.testing.assert_allclose(res.median[:, 0], 10 * np.exp(0.2 * np.arange(1.0, 16.0)), atol=1.0)

    # A fit with too fast a growth rate: the data are far below, in both statistics.
    wrong = dg.posterior_predictive(simulator, {"r": jnp.full(S, 0.3)}, observed[:, 0], key=getkey())
    assert wrong.inside < 0.5 and wrong.p_values["sum"] > 0.99 and wrong.p_values["max"] > 0.99

    # A custom statistic, and a masked observation (only the first 10 days observed).
    mask = np.arange(15)[:, None] < 10
    last = dg.posterior_predictive(
        simulator, {"r": jnp.full(S, 0.2)}, observed, mask, key=getkey(), statistics={"first": lambda x, m: x[0, 0]}
    )
    assert set(last.p_values) == {"first"} and last.observed_mask.sum() == 10
    assert dg.plot_posterior_predictive(last, tmp_path / "ppc.png") is not None
    assert (tmp_path / "ppc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # Without an observation: only the predictive.
    alone = dg.posterior_predictive(simulator, {"r": jnp.full(S, 0.2)}, key=getkey())
    assert alone.inside is None and alone.observed is None and alone.p_values == {}

    with pytest.raises(ValueError, match="no value"):
        dg.posterior_predictive(simulator, {"beta": jnp.ones(S)}, key=getkey())
    with pytest.raises(ValueError, match="`observed` must be one series"):
        dg.posterior_predictive(simulator, {"r": jnp.full(S, 0.2)}, observed[:10], key=getkey())
    with pytest.raises(ValueError, match="same number of draws"):
        dg.posterior_predictive(
            sgjax.Simulator(sgjax.models.Logistic(), jnp.arange(1.0, 16.0)),
            {"r": jnp.ones(3), "K": jnp.ones(4)},
            key=getkey(),
        )
    with pytest.raises(TypeError, match="keyword-only"):
        dg.posterior_predictive(simulator, {"r": jnp.full(S, 0.2)}, getkey(), observed)


# -- one convention: every posterior is interchangeable ------------------------------


def _baseline_posteriors(samples, truth):
    """The same draws as a NUTS posterior, an ABC posterior, a plain dict and a stacked
    array with labels, and the truth as a dict (with a fixed parameter the posteriors
    leave out) and as an array."""
    from sgjax.baselines import ABCPosterior, ReferencePosterior

    names = ("exact", "narrow")
    draws = {name: np.asarray(samples[..., j]) for j, name in enumerate(names)}
    n = samples.shape[0]
    nuts = ReferencePosterior(
        samples=draws,
        r_hat={k: np.ones(n) for k in names},
        ess={k: np.full(n, 100.0) for k in names},
        divergences=np.zeros(n, int),
        num_steps=np.ones(n),
        num_chains=1,
    )
    abc = ABCPosterior(
        samples=draws, distance=np.zeros(samples.shape[:2]), epsilon=np.zeros(n), n_simulations=1, n_failed=0
    )
    truth_dict = {"fixed": np.ones(n), **{name: np.asarray(truth[:, j]) for j, name in enumerate(names)}}
    return nuts, abc, dict(draws), truth_dict, names


def test_posteriors_dicts_and_stacked_arrays_give_identical_diagnostics(posteriors, getkey):
    samples, truth = posteriors
    samples, truth = samples[:200, :, :2], truth[:200, :2]
    nuts, abc, draws, truth_dict, names = _baseline_posteriors(samples, truth)
    assert isinstance(nuts, sgjax.AbstractPosterior) and isinstance(abc, sgjax.AbstractPosterior)
    key = getkey()
    ref = dg.sbc(samples, truth, key=key, labels=names)
    cov_ref = dg.expected_coverage(samples, truth, labels=names)
    for post in (nuts, abc, draws):
        result = dg.sbc(post, truth_dict, key=key)
        assert result.labels == names
        np.testing.assert_array_equal(result.ranks, ref.ranks)
        np.testing.assert_array_equal(result.ecdf_p_value, ref.ecdf_p_value)
        np.testing.assert_array_equal(result.chi2, ref.chi2)
        assert result.summary() == ref.summary()
        np.testing.assert_array_equal(dg.sbc_ranks(post, truth_dict), ref.ranks)
        cov = dg.expected_coverage(post, truth_dict)
        assert cov.labels == names
        np.testing.assert_array_equal(cov.coverage, cov_ref.coverage)
    # The stacked form a posterior gives back, with its names as labels.
    np.testing.assert_array_equal(dg.sbc(nuts.stacked(), truth, key=key, labels=nuts.names).ranks, ref.ranks)
    # C2ST of one dataset's draws: a posterior's theta(i), its one-dataset form, and
    # the arrays give one score; named samples are matched by name, not position.
    one = type(nuts)(
        samples={k: v[:1] for k, v in nuts.samples.items()}, r_hat=nuts.r_hat, ess=nuts.ess,
        divergences=nuts.divergences, num_steps=nuts.num_steps, num_chains=1,
    )  # fmt: skip
    other = {"narrow": samples[1, :, 1], "exact": samples[1, :, 0]}
    key = getkey()
    expected = dg.c2st(samples[0], samples[1], key=key, epochs=5)
    for a in (nuts.theta(0), abc.theta(0), one):
        assert dg.c2st(a, other, key=key, epochs=5) == expected
    with pytest.raises(ValueError, match="holds draws for 200 datasets"):
        dg.c2st(nuts, other, key=key)
    with pytest.raises(TypeError, match="one named sample"):
        dg.c2st(nuts.theta(0), samples[1], key=key)
    with pytest.raises(ValueError, match="same parameters"):
        dg.c2st(nuts.theta(0), {"exact": samples[1, :, 0]}, key=key)


def test_posterior_predictive_takes_a_posterior_of_one_dataset(growth, getkey):
    from sgjax.baselines import ABCPosterior

    simulator, observed = growth
    draws = {"r": np.full((1, S), 0.2), "R0": np.ones((1, S))}  # R0: not a simulator input
    post = ABCPosterior(samples=draws, distance=np.zeros((1, S)), epsilon=np.zeros(1), n_simulations=S, n_failed=0)
    key = getkey()
    a = dg.posterior_predictive(simulator, post, observed, key=key)
    b = dg.posterior_predictive(simulator, {"r": np.full(S, 0.2)}, observed, key=key)
    np.testing.assert_array_equal(a.observations, b.observations)
    assert a.p_values == b.p_values
    two = ABCPosterior(
        samples={"r": np.full((2, S), 0.2)}, distance=np.zeros((2, S)), epsilon=np.zeros(2), n_simulations=S, n_failed=0
    )
    with pytest.raises(ValueError, match=r"posterior.theta\(i\)"):
        dg.posterior_predictive(simulator, two, observed, key=key)
    logistic = sgjax.Simulator(sgjax.models.Logistic(), jnp.arange(1.0, 16.0))
    with pytest.raises(ValueError, match=r"no draws of \['K'\]"):
        dg.posterior_predictive(logistic, post, key=key)


# -- all at once --------------------------------------------------------------------


def test_diagnosis_of_exact_and_overconfident_posteriors(posteriors, getkey, tmp_path):
    samples, truth = posteriors
    names = ("exact", "narrow")
    draws = {name: samples[..., j] for j, name in enumerate(names)}
    true = {name: truth[:, j] for j, name in enumerate(names)}
    key = getkey()
    d = dg.Diagnosis.from_samples(draws, true, key=key)
    assert d.labels == names and len(d) == 1000 and d.n_samples == 255
    # The exact posterior's mean is E[θ | x], with R² = 1 − E Var(θ | x) / Var θ =
    # 1 − 1/6 and RMSE √(1/6) (m = 5; sampling sd over 1000 datasets ≈ 0.01 and 0.01).
    assert abs(d.r2["exact"] - 5 / 6) < 0.03 and abs(d.rmse["exact"] - 6**-0.5) < 0.02
    # The narrow one has the same mean: the same recovery, but bad coverage and SBC.
    assert abs(d.r2["narrow"] - 5 / 6) < 0.03
    np.testing.assert_allclose(d.estimate["exact"], samples[..., 0].mean(1), rtol=1e-5)
    np.testing.assert_allclose(d.lower["exact"], np.quantile(samples[..., 0].astype(float), 0.05, axis=1), rtol=1e-5)
    # The same numbers as the single diagnostics.
    np.testing.assert_array_equal(d.coverage.coverage, dg.expected_coverage(draws, true).coverage)
    np.testing.assert_array_equal(d.sbc.ranks, dg.sbc(draws, true, key=key).ranks)
    summary = d.summary()
    assert summary["n"] == 1000
    exact, narrow = summary["exact"], summary["narrow"]
    assert abs(exact["coverage_90"] - 0.9) < 0.03 and exact["sbc_inside_band"]
    assert narrow["coverage_90"] < 0.7 and not narrow["sbc_inside_band"] and narrow["max_coverage_shortfall"] > 0.2
    fig = d.plot(tmp_path / "diagnostics.png")
    assert fig is not None and _is_png(tmp_path / "diagnostics.png")


def test_diagnose_a_trained_estimator(getkey, tmp_path):
    """A Gaussian head on the linear-Gaussian task (exact posterior N(Σx/(1 + T),
    1/(1 + T)), T = 10), trained briefly: R² near the exact 10/11, calibrated."""
    from exact_tasks import LinearGaussian

    task = LinearGaussian()
    est, _ = sgjax.fit(
        task, sgjax.heads.Gaussian(), key=getkey(), steps=150, batch_size=256, validation_size=256, pilot_size=256,
        progress=False,
    )  # fmt: skip
    d = dg.diagnose(est, task, key=getkey(), n=300, n_samples=63)
    assert d.labels == ("theta",) and len(d) == 300 and d.n_samples == 63
    assert d.truth["theta"].shape == (300,)
    # Sampling sd of R² over 300 datasets ≈ 0.01; so short a training adds a little.
    assert abs(d.r2["theta"] - 10 / 11) < 0.05 and abs(d.rmse["theta"] - 11**-0.5) < 0.05
    assert abs(d.summary()["theta"]["coverage_90"] - 0.9) < 0.07
    d.plot(tmp_path / "d.png")
    assert _is_png(tmp_path / "d.png")
    with pytest.raises(TypeError, match="sgjax.Estimator"):
        dg.diagnose(object(), task, key=getkey())


# -- plots -------------------------------------------------------------------------


def _is_png(path):
    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plots_save_pngs(posteriors, tmp_path):
    samples, truth = posteriors
    result = dg.sbc(samples[:, :, :2], truth[:, :2], key=jax.random.key(0))
    cov = dg.expected_coverage(samples[:, :, :2], truth[:, :2])
    for name, fn, arg in (
        ("hist.png", dg.plot_sbc_histogram, result),
        ("ecdf.png", dg.plot_sbc_ecdf, result),
        ("coverage.png", dg.plot_coverage, cov),
    ):
        fig = fn(arg, tmp_path / name)
        assert fig is not None and _is_png(tmp_path / name)
    # Without a path the figure is returned, to be adjusted and saved by the caller.
    fig = dg.plot_sbc_ecdf(result)
    fig.savefig(tmp_path / "own.png")
    assert _is_png(tmp_path / "own.png")

    # The mismatch plot needs only the calibration scores when no series is marked.
    assert dg.MismatchScore is sgjax.MismatchScore
    detector = sgjax.MismatchScore(None, np.sort(np.random.default_rng(5).gamma(2.0, size=500)), 10)
    dg.plot_mismatch(detector, path=tmp_path / "mismatch.png")
    assert _is_png(tmp_path / "mismatch.png")
    with pytest.raises(TypeError, match="MismatchScore"):
        dg.plot_mismatch(object())


@pytest.mark.slow
def test_plot_mismatch_marks_observed_series(tmp_path):
    from exact_tasks import LinearGaussian

    task = LinearGaussian()
    est, _ = sgjax.fit(
        task, key=jax.random.key(0), steps=50, batch_size=256, validation_size=512, pilot_size=512, progress=False
    )
    detector = sgjax.MismatchScore.fit(est, task, key=jax.random.key(1), n_reference=512, n_calibration=256)
    fresh = task.sample(jax.random.key(2), 3)
    dg.plot_mismatch(detector, np.asarray(fresh.x) + np.array([0.0, 0.0, 5.0])[:, None, None], path=tmp_path / "m.png")
    assert _is_png(tmp_path / "m.png")


def test_held_out_gives_a_classifiers_model_index_as_integers():
    # The model index indexes arrays (a confusion matrix), so it is an integer.
    noisy = sgjax.observation.ObservationModel(sgjax.observation.Gaussian(1.0))
    ts = jnp.arange(1.0, 11.0)
    task = sgjax.ModelSelection(
        {
            "a": sgjax.Simulator(sgjax.models.SIR(), ts, noisy),
            "b": sgjax.Simulator(sgjax.models.SIR(N=500.0), ts, noisy),
        }
    )
    head = sgjax.heads.Classifier()
    net = sgjax.nn.MLP(10, 1, head.n_outputs(0, 2), width=8, depth=1, key=jax.random.key(0))
    std = sgjax.nn.Standardise(jnp.zeros((10, 1)), jnp.ones((10, 1)), False)
    estimator = sgjax.Estimator(std, net, head, jnp.zeros(1), jnp.ones(1), ("a", "b"), (), n_classes=2)
    post, index = sgjax.diagnostics.held_out(estimator, task, 32, key=jax.random.key(1))
    assert index.dtype.kind == "i" and set(index.tolist()) == {0, 1}
    assert post.probabilities.shape == (32, 2)
