"""Saving, loading and applying estimators; bad input."""

import dataclasses
import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from exact_tasks import LinearGaussian, PoissonGamma

import sgjax
from sgjax import _io
from sgjax._inference import check_times
from sgjax.observation import ObservationModel, Poisson


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    est, _ = sgjax.fit(
        LinearGaussian(),
        sgjax.heads.Gaussian(),
        sgjax.nn.GRU,
        key=jax.random.key(0),
        steps=50,
        batch_size=128,
        validation_size=128,
        pilot_size=256,
        steps_per_call=25,
        eval_every=25,
        progress=False,
    )
    path = tmp_path_factory.mktemp("est")
    sgjax.save(path, est)
    return est, path


def test_round_trip_in_a_fresh_process(trained):
    est, path = trained
    x = np.linspace(-1, 1, 10)
    here = sgjax.infer(est, x, key=jax.random.key(1), n_samples=50)
    code = (
        "import sys, jax, numpy as np, sgjax; e = sgjax.load(sys.argv[1]); "
        "p = sgjax.infer(e, np.linspace(-1, 1, 10), key=jax.random.key(1), n_samples=50); "
        "np.save(sys.argv[2], p.stacked())"
    )
    subprocess.run([sys.executable, "-c", code, str(path), str(path / "s.npy")], check=True)
    np.testing.assert_array_equal(np.load(path / "s.npy"), here.stacked())
    loaded = sgjax.load(path)
    assert loaded.labels == est.labels and loaded.spaces == est.spaces
    config = json.loads((path / "estimator.json").read_text())
    assert config["versions"]["sgjax"] == sgjax.__version__ and config["network"]["kind"] == "GRU"


def test_save_never_overwrites(trained):
    est, path = trained
    before = (path / "estimator.eqx").read_bytes()
    with pytest.raises(FileExistsError, match="overwrite=True"):
        sgjax.save(path, est)
    assert (path / "estimator.eqx").read_bytes() == before


def _copy(path, tmp_path):
    for name in ("estimator.eqx", "estimator.json"):
        (tmp_path / name).write_bytes((path / name).read_bytes())
    return tmp_path


def _rehashed(header):
    """`header` with its own checksum recomputed: a deliberate, consistent forgery."""
    return {**header, "header_sha256": _io.header_sha256(header)}


def test_truncated_tampered_or_foreign_files_are_refused(trained, tmp_path):
    _, path = trained
    d = _copy(path, tmp_path)
    payload = (d / "estimator.eqx").read_bytes()
    (d / "estimator.eqx").write_bytes(payload[: len(payload) // 2])
    with pytest.raises(sgjax.FileFormatError, match="truncated, corrupted or was modified"):
        sgjax.load(d)
    flipped = bytearray(payload)
    flipped[-3] ^= 1
    (d / "estimator.eqx").write_bytes(bytes(flipped))
    with pytest.raises(sgjax.FileFormatError, match="checksum"):
        sgjax.load(d)
    (d / "estimator.eqx").write_bytes(payload)
    header = json.loads((d / "estimator.json").read_text())
    (d / "estimator.json").write_text(json.dumps({**header, "format_version": 99}))
    with pytest.raises(sgjax.FileFormatError, match="file format 99"):
        sgjax.load(d)
    (d / "estimator.json").write_text(
        json.dumps(_rehashed({**header, "network": {"kind": "os.system", "cmd": "rm -rf /"}}))
    )
    with pytest.raises(ValueError, match="kind"):
        sgjax.load(d)
    (d / "estimator.json").write_text("{not json")
    with pytest.raises(sgjax.FileFormatError, match="bad JSON"):
        sgjax.load(d)
    with pytest.raises(FileNotFoundError):
        sgjax.load(tmp_path / "nowhere")


def test_bad_observations_say_how_to_fix(trained):
    est, _ = trained
    with pytest.raises(ValueError, match="10 times.*mask"):
        sgjax.infer(est, np.ones(7))
    x = np.ones(10)
    x[3] = np.nan
    with pytest.raises(ValueError, match="mask = ~np.isnan"):
        sgjax.infer(est, x)
    # With a mask the NaN is ignored, and its value cannot matter.
    a = sgjax.infer(est, x, mask=~np.isnan(x), key=jax.random.key(0), n_samples=20)
    x[3] = 1e6
    b = sgjax.infer(
        est, x, mask=~np.isnan(np.where(np.arange(10) == 3, np.nan, x)), key=jax.random.key(0), n_samples=20
    )
    np.testing.assert_array_equal(a.samples["theta"], b.samples["theta"])
    # Batched: many series in one call.
    assert sgjax.infer(est, np.zeros((5, 10, 1)), key=jax.random.key(0)).samples["theta"].shape == (5, 2000)


def test_csv_inference_and_csv_errors(trained, tmp_path):
    est, _ = trained
    good = tmp_path / "good.csv"
    good.write_text("time,y\n" + "".join(f"{t},{0.1 * t}\n" for t in range(10)).replace("3,0.30000000000000004", "3,"))
    times, values, mask = sgjax.read_csv(good)
    assert mask.sum() == 9 and values[3, 0] == 0
    post = sgjax.infer(est, good, key=jax.random.key(0), n_samples=10)
    assert post.samples["theta"].shape == (1, 10)
    bad = tmp_path / "bad.csv"
    bad.write_text("day,y\n1,2\n")
    with pytest.raises(ValueError, match="no time column 'time'.*\\['day', 'y'\\]"):
        sgjax.read_csv(bad)
    with pytest.raises(ValueError, match="cannot find \\['cases'\\]"):
        sgjax.read_csv(bad, columns=["cases"], time_column="day")
    bad.write_text("time,y\n1,2\n2,abc\n")
    with pytest.raises(ValueError, match="line 3: y='abc' is not a number"):
        sgjax.read_csv(bad)
    bad.write_text("time,y\n2,2\n1,3\n")
    with pytest.raises(ValueError, match="strictly increasing"):
        sgjax.read_csv(bad)


def test_the_boarding_school_data_ship_with_the_package():
    data = sgjax.datasets.boarding_school()
    np.testing.assert_array_equal(data.values[:, 0], [3, 8, 26, 76, 225, 298, 258, 233, 189, 128, 68, 29, 14, 4])
    assert data.population == 763 and str(data.start) == "1978-01-22" and "British Medical Journal" in data.source
    both = sgjax.datasets.boarding_school(columns=("confined", "convalescent"))
    np.testing.assert_array_equal(both.values[:, 1], [0, 0, 0, 0, 9, 17, 105, 162, 176, 166, 150, 85, 47, 20])
    pelts = sgjax.datasets.hudson_bay()
    assert pelts.values.shape == (21, 2) and pelts.times[0] == 1900 and pelts.times[-1] == 1920
    np.testing.assert_allclose(pelts.values[[0, 3, 20]], [[30, 4], [77.4, 35.2], [24.7, 8.6]])
    with pytest.raises(ValueError, match="Unknown column"):
        sgjax.datasets.hudson_bay(columns=("wolf",))


def test_atomic_write_replaces_whole_files(tmp_path):
    p = tmp_path / "f"
    _io.atomic_write(p, b"one")
    _io.atomic_write(p, b"two")
    assert p.read_bytes() == b"two" and [q.name for q in tmp_path.iterdir()] == ["f"]


def test_missing_entries_warn_when_the_network_ignores_the_mask(trained):
    # Trained on fully observed simulations, `fit` builds networks without the mask
    # input; then incomplete data are worth a warning.
    import warnings

    import equinox as eqx

    est, _ = trained
    blind = sgjax.nn.GRU(
        10, 1, est.network.out_size, hidden=est.network.hidden, mask_input=False, key=jax.random.key(2)
    )
    est = eqx.tree_at(lambda e: e.network, est, blind)
    x = np.linspace(-1, 1, 10)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sgjax.infer(est, x, key=jax.random.key(0), n_samples=10)  # complete: no warning
    with pytest.warns(UserWarning, match="1 entries are missing.*does not read the mask"):
        sgjax.infer(est, x, mask=np.arange(10) != 3, key=jax.random.key(0), n_samples=10)


def test_a_modified_header_is_refused(trained, tmp_path):
    # One character of the JSON changes the posterior (a label, a bound, a scale):
    # the header's own checksum refuses it.
    _, path = trained
    d = _copy(path, tmp_path)
    text = (d / "estimator.json").read_text()
    header = json.loads(text)
    assert header["format_version"] == _io.FORMAT_VERSION == 2 and header["header_sha256"] == _io.header_sha256(header)
    tampered = [
        {**header, "labels": ["beta"]},
        {**header, "spaces": [{**header["spaces"][0], "kind": "log"}]},
        {**header, "standardise": {**header["standardise"], "log1p": True}},
        {k: v for k, v in header.items() if k != "header_sha256"},
    ]
    for bad in tampered:
        (d / "estimator.json").write_text(json.dumps(bad))
        with pytest.raises(sgjax.FileFormatError, match="the header was modified"):
            sgjax.load(d)
    # A file of format 1 (no header checksum) cannot be verified: refused by version.
    (d / "estimator.json").write_text(json.dumps(_rehashed({**header, "format_version": 1})))
    with pytest.raises(sgjax.FileFormatError, match="saved in file format 1.*reads format 2"):
        sgjax.load(d)


def test_declared_sizes_are_checked_before_anything_is_allocated(trained, tmp_path):
    # A consistent header (checksum recomputed) declaring a 20,000-wide GRU: 4.8 GB
    # of weights. Refused from the sizes alone: the payload holds a few kB.
    _, path = trained
    d = _copy(path, tmp_path)
    header = json.loads((d / "estimator.json").read_text())
    (d / "estimator.json").write_text(
        json.dumps(_rehashed({**header, "network": {**header["network"], "hidden": 20_000}}))
    )
    with pytest.raises(sgjax.FileFormatError, match=r"declares arrays of [\d,]+ bytes, but .* holds [\d,]+"):
        sgjax.load(d)


def test_save_to_a_file_path_is_refused(trained, tmp_path):
    est, _ = trained
    (tmp_path / "file").write_text("x")
    for bad in (tmp_path / "file", tmp_path / "file" / "sub"):
        with pytest.raises(ValueError, match="is a file. `path` names a directory"):
            sgjax.save(bad, est)
    assert (tmp_path / "file").read_text() == "x"


def _with_info(est, **info):
    """`est` as if trained on a task described by `info`."""
    return dataclasses.replace(est, info=json.dumps({**json.loads(est.info), **info}))


DAYS = [float(t) for t in range(1, 11)]


def test_csv_and_dataset_times_are_checked_against_the_training_grid(trained, tmp_path):
    est = _with_info(trained[0], ts=DAYS)
    np.testing.assert_array_equal(est.times, DAYS)

    def csv(times, name):
        (tmp_path / name).write_text("time,y\n" + "".join(f"{t:g},{0.1 * i}\n" for i, t in enumerate(times)))
        return tmp_path / name

    right = sgjax.infer(est, csv(DAYS, "right.csv"), key=jax.random.key(0), n_samples=10)
    cases = {
        "shifted.csv": (np.add(DAYS, 1), r"row 1 is at time 2 where the training grid has 1"),
        "weekly.csv": (np.multiply(DAYS, 7), r"row 1 is at time 7 where the training grid has 1"),
        "short.csv": (DAYS[:9], r"has 9 rows, not 10"),
    }
    for name, (times, message) in cases.items():
        with pytest.raises(
            ValueError, match=message + r".*trained on observations at 10 times 1, 2, \.\.\., 10 \(every 1\)"
        ):
            sgjax.infer(est, csv(times, name))
    # A Dataset is checked too, and carries its own mask.
    values = np.linspace(0, 0.9, 10)[:, None]
    data = sgjax.datasets.Dataset(
        np.asarray(DAYS), values, np.ones((10, 1), bool), ("y",), None, None, "", tmp_path / "d.csv"
    )
    np.testing.assert_array_equal(
        sgjax.infer(est, data, key=jax.random.key(0), n_samples=10).stacked(), right.stacked()
    )
    with pytest.raises(ValueError, match="The dataset from d.csv has 9 rows"):
        sgjax.infer(est, dataclasses.replace(data, times=data.times[:9], observations=values[:9], mask=data.mask[:9]))
    with pytest.raises(ValueError, match="carries its own missing entries"):
        sgjax.infer(est, data, mask=data.mask)
    with pytest.raises(ValueError, match="row 3 is at time 4.5"):  # the check the CLI shares
        check_times(est, [1, 2, 4.5, 4, 5, 6, 7, 8, 9, 10], "data.csv")


def test_impossible_counts_and_non_finite_entries_are_refused(trained):
    # Trained on count noise: negative or fractional counts would give a NaN or
    # meaningless posterior. Masked entries may hold anything.
    counts = _with_info(trained[0], ts=DAYS, counts=True)
    x = np.arange(10.0)
    for value, entry in ((-2.0, "is -2"), (2.5, "is 2.5")):
        bad = np.where(np.arange(10) == 3, value, x)
        with pytest.raises(ValueError, match=rf"x\[0, 3, 0\] \(series 0, channel 0 at time 4\) {entry}, .*count noise"):
            sgjax.infer(counts, bad)
        sgjax.infer(counts, bad, mask=np.arange(10) != 3, key=jax.random.key(0), n_samples=5)
    # Standardised on the log scale (fit's choice for non-negative data), whatever the
    # noise: log1p(x) is -inf or NaN at or below -1.
    est = trained[0]
    logged = dataclasses.replace(est, standardise=dataclasses.replace(est.standardise, log1p=True))
    for value in (-1.0, -3.0):
        with pytest.raises(
            ValueError, match=rf"x\[1, 0, 0\] \(series 1, channel 0\) is {value:g}, .*log1p.*at or below -1"
        ):
            sgjax.infer(logged, np.stack([x, np.where(x == 0, value, x)])[..., None])
    for value in (np.inf, -np.inf, np.nan):
        bad = np.where(np.arange(10) == 7, value, x)
        with pytest.raises(ValueError, match=r"x\[0, 7, 0\].*observed entries must be finite"):
            sgjax.infer(est, bad, mask=np.ones(10, bool))
        sgjax.infer(est, bad, mask=np.arange(10) != 7, key=jax.random.key(0), n_samples=5)
    with pytest.raises(ValueError, match=r"x\[0, 7, 0\] \(series 0, channel 0\) is inf"):
        sgjax.infer(est, np.where(np.arange(10) == 7, np.inf, x))


def test_bad_sample_counts_and_integer_keys_are_refused(trained):
    est, _ = trained
    x = np.zeros(10)
    for n in (0, -3):
        with pytest.raises(ValueError, match=f"`n_samples` must be an integer >= 1, got {n}"):
            sgjax.infer(est, x, n_samples=n)
    with pytest.raises(TypeError, match="`n_samples` must be an integer, got 2.5"):
        sgjax.infer(est, x, n_samples=2.5)
    with pytest.raises(TypeError, match=r"`key` must be one JAX PRNG key, e.g. key=jax.random.key\(0\), got 0"):
        sgjax.infer(est, x, key=0)
    with pytest.raises(TypeError, match="`key` must be one JAX PRNG key"):
        sgjax.evaluate(est, LinearGaussian(), 10, key=0)
    with pytest.raises(ValueError, match="`n` must be an integer >= 1, got 0"):
        sgjax.evaluate(est, LinearGaussian(), 0, key=jax.random.key(0))


def test_evaluate_refuses_another_task(trained):
    est, _ = trained
    metrics = sgjax.evaluate(est, LinearGaussian(), 64, key=jax.random.key(3))
    assert metrics["n"] == 64 and set(metrics) == {"n", "theta"}
    with pytest.raises(
        ValueError,
        match=r"not the task the estimator was trained on: the estimator learned theta of "
        r"LinearGaussian from 10 times x 1 channel\(s\); the task gives lam of PoissonGamma",
    ):
        sgjax.evaluate(est, PoissonGamma(), 64, key=jax.random.key(3))
    with pytest.raises(ValueError, match="from 10 times .*; the task gives theta of LinearGaussian from 12 times"):
        sgjax.evaluate(est, LinearGaussian(T=12), 64, key=jax.random.key(3))
    # Same labels and sizes, another model or other times: the descriptions differ.
    sir = sgjax.Task(sgjax.Simulator(sgjax.models.SIR(), jnp.asarray(DAYS), ObservationModel(Poisson())), ["beta"])
    est_sir = dataclasses.replace(est, labels=("beta",), info=json.dumps(sir.describe()))
    other = sgjax.Task(
        sgjax.Simulator(sgjax.models.SIR(), jnp.asarray(DAYS) * 7, ObservationModel(Poisson())), ["beta"]
    )
    with pytest.raises(
        ValueError,
        match=r"beta of SIR from 10 times x 1 channel\(s\) at 10 times 1..10; "
        r"the task gives beta of SIR from 10 times x 1 channel\(s\) at 10 times 7..70",
    ):
        sgjax.evaluate(est_sir, other, 64, key=jax.random.key(3))


def test_a_forged_task_description_is_refused(trained, tmp_path):
    # Even with its checksum recomputed, a `task` entry inference cannot read is a
    # clear error at load, not an AttributeError at inference.
    _, path = trained
    d = _copy(path, tmp_path)
    header = json.loads((d / "estimator.json").read_text())
    for task in (["not", "a", "dict"], {**header["task"], "ts": "1..10"}, {**header["task"], "counts": "yes"}):
        (d / "estimator.json").write_text(json.dumps(_rehashed({**header, "task": task})))
        with pytest.raises(sgjax.FileFormatError, match="its `task` entry does not describe a task"):
            sgjax.load(d)


# --- One data convention (issue 25 §1): θ and posteriors as name → array ----------


def _untrained(head, labels=("a", "b"), n_classes=0):
    """An estimator with a random network (no training: these tests check bookkeeping,
    not accuracy) over 6 times, 1 channel; targets `a` (identity) and `b` (log)."""
    k = 1 if n_classes else len(labels)
    net = sgjax.nn.MLP(6, 1, head.n_outputs(len(labels), n_classes), width=16, depth=1, key=jax.random.key(5))
    return sgjax.Estimator(
        sgjax.nn.Standardise(jnp.zeros((6, 1)), jnp.ones((6, 1)), False),
        net,
        head,
        jnp.asarray([0.1, -0.2][:k]),
        jnp.asarray([1.5, 0.7][:k]),
        tuple(labels),
        (sgjax.Space("identity"), sgjax.Space("log"))[:k] if not n_classes else (sgjax.Space("identity"),),
        n_classes,
    )


X6 = np.linspace(0.0, 1.0, 18).reshape(3, 6, 1)


def test_density_posterior_is_a_mapping_of_name_to_draws():
    post = sgjax.infer(_untrained(sgjax.heads.MixtureDensity(2)), X6, key=jax.random.key(0), n_samples=300)
    assert isinstance(post, sgjax.AbstractPosterior) and post.names == ("a", "b") and len(post) == 3
    assert {k: v.shape for k, v in post.samples.items()} == {"a": (3, 300), "b": (3, 300)}
    stacked = post.stacked()
    assert stacked.shape == (3, 300, 2)
    np.testing.assert_array_equal(stacked, sgjax.stack(post.samples))
    np.testing.assert_array_equal(stacked[..., 1], post.samples["b"])
    lower, upper = post.interval(0.9)
    for name in ("a", "b"):
        np.testing.assert_array_equal(lower[name], np.quantile(post.samples[name], [0.05], axis=1)[0])
        np.testing.assert_array_equal(upper[name], np.quantile(post.samples[name], [0.95], axis=1)[0])
        np.testing.assert_allclose(post.mean()[name], post.samples[name].mean(1), rtol=1e-6, atol=1e-7)  # float32 sums
        np.testing.assert_array_equal(post.point[name], post.mean()[name])
        np.testing.assert_array_equal(post.std()[name], post.samples[name].std(1, ddof=1))
        np.testing.assert_array_equal(post.quantiles[0.5][name], post.quantile(0.5)[name])
        assert post.quantile([0.1, 0.9])[name].shape == (3, 2)
    assert np.all(post.samples["b"] > 0)  # the log space maps back to positive values
    theta = post.theta(2)
    assert set(theta) == {"a", "b"} and theta["a"].shape == (300,)
    np.testing.assert_array_equal(theta["b"], post.samples["b"][2])
    summary = post.summary(1)
    assert json.loads(json.dumps(summary)) == summary and summary["a"]["point"] == float(post.point["a"][1])
    with pytest.raises(IndexError, match="3 dataset"):
        post.theta(3)


def test_infer_needs_a_key_for_samples_and_each_key_gives_its_own():
    est = _untrained(sgjax.heads.Gaussian())
    with pytest.raises(TypeError, match=r"Gaussian head draws posterior samples.*key=jax.random.key\(seed\)"):
        sgjax.infer(est, X6)
    a = sgjax.infer(est, X6, key=jax.random.key(1), n_samples=50)
    b = sgjax.infer(est, X6, key=jax.random.key(2), n_samples=50)
    again = sgjax.infer(est, X6, key=jax.random.key(1), n_samples=50)
    assert not np.any(a.samples["a"] == b.samples["a"])
    np.testing.assert_array_equal(a.samples["a"], again.samples["a"])
    # Heads that draw nothing need no key.
    point = sgjax.infer(_untrained(sgjax.heads.Point()), X6)
    assert point.samples is None and point.point["b"].shape == (3,)
    np.testing.assert_array_equal(point.mean()["a"], point.point["a"])
    with pytest.raises(ValueError, match="holds a point estimate only: use a density head"):
        point.interval(0.9)


def test_quantile_posterior_answers_at_its_trained_levels():
    head = sgjax.heads.Quantile(levels=(0.05, 0.25, 0.5, 0.75, 0.95))
    post = sgjax.infer(_untrained(head), X6)
    assert post.samples is None and sorted(post.quantiles) == [0.05, 0.25, 0.5, 0.75, 0.95]
    lower, upper = post.interval(0.9)
    np.testing.assert_array_equal(lower["b"], post.quantiles[0.05]["b"])
    np.testing.assert_array_equal(upper["a"], post.quantiles[0.95]["a"])
    np.testing.assert_array_equal(post.quantile(0.5)["a"], post.point["a"])
    np.testing.assert_array_equal(post.quantile([0.25, 0.75])["b"][:, 1], post.quantiles[0.75]["b"])
    with pytest.raises(ValueError, match=r"trained levels \[0.05, 0.25, 0.5, 0.75, 0.95\] only, not 0.3"):
        post.quantile(0.3)
    with pytest.raises(ValueError, match=r"A 80% interval needs the 0.1 and 0.9 quantiles; available"):
        post.interval(0.8)
    with pytest.raises(ValueError, match="needs posterior samples.*quantiles at the levels"):
        post.mean()


def test_a_model_selection_posterior_says_it_holds_probabilities():
    post = sgjax.infer(_untrained(sgjax.heads.Classifier(), labels=("SIR", "SEIR"), n_classes=2), X6)
    assert post.probabilities.shape == (3, 2) and len(post) == 3
    np.testing.assert_allclose(post.probabilities.sum(1), 1, rtol=1e-6)
    assert set(post.summary(0)["probabilities"]) == {"SIR", "SEIR"}
    for ask in (
        lambda: post.interval(0.9),
        lambda: post.quantile(0.5),
        lambda: post.mean(),
        lambda: post.std(),
        lambda: post.box(),
        lambda: post.theta(0),
        lambda: post.stacked(),
    ):
        with pytest.raises(
            ValueError, match=r"model probabilities, not samples, quantiles or intervals.*posterior\.probabilities"
        ):
            ask()


def test_log_prob_takes_theta_by_name_and_matches_the_stacked_computation():
    from sgjax._inference._infer import _log_prob

    est = _untrained(sgjax.heads.MixtureDensity(2))
    post = sgjax.infer(est, X6, key=jax.random.key(0), n_samples=7)
    x, mask = jnp.asarray(X6), jnp.ones(X6.shape, bool)
    # The stacked computation (the old `log_prob(est, (n, m, k), x)`), exactly.
    want = np.asarray(_log_prob(est, x, mask, None, jnp.asarray(post.stacked())))
    np.testing.assert_array_equal(sgjax.log_prob(est, post.samples, X6), want)
    # One value per series (a true θ): (n,).
    truth = {"a": np.array([0.0, 0.5, -1.0]), "b": np.array([1.0, 2.0, 0.5])}
    one_each = np.asarray(_log_prob(est, x, mask, None, jnp.asarray(sgjax.stack(truth))[:, None, :]))[:, 0]
    np.testing.assert_array_equal(sgjax.log_prob(est, truth, X6), one_each)
    # Scalars broadcast over series, (1, m) over series, mixed with (n, m).
    same = sgjax.log_prob(est, {"a": 0.5, "b": 2.0}, X6)
    np.testing.assert_array_equal(same[1], one_each[1])
    assert same.shape == (3,)
    mixed = sgjax.log_prob(est, {"a": post.samples["a"][:1], "b": post.samples["b"]}, X6)
    assert mixed.shape == (3, 7)
    np.testing.assert_array_equal(mixed[0], want[0])
    # One series: θ scalars or (m,).
    one = sgjax.log_prob(est, sgjax.unstack(post.stacked()[2], ("a", "b")), X6[2])
    np.testing.assert_array_equal(one, want[2])
    assert sgjax.log_prob(est, {"a": 0.5, "b": 2.0}, X6[1]).shape == ()
    assert sgjax.log_prob(est, {"a": 0.5, "b": -1.0}, X6[1]) == -np.inf  # b is positive
    # Anything else is refused with the fix.
    with pytest.raises(TypeError, match=r"stacked array.*sgjax.unstack\(array, estimator.labels\)"):
        sgjax.log_prob(est, post.stacked(), X6)
    with pytest.raises(ValueError, match=r"exactly one entry per target of the estimator \(a, b\); missing \['b'\]"):
        sgjax.log_prob(est, {"a": 0.5}, X6)
    with pytest.raises(ValueError, match=r"not targets: \['R0'\]"):
        sgjax.log_prob(est, {"a": 0.5, "b": 1.0, "R0": 2.0}, X6)
    with pytest.raises(ValueError, match=r"\(n, m\) or \(1, m\) with n = 3 series first.*a: \(7,\)"):
        sgjax.log_prob(est, {"a": np.zeros(7), "b": np.ones(7)}, X6)
    with pytest.raises(ValueError, match=r"scalars or \(m,\)"):
        sgjax.log_prob(est, {"a": np.zeros((2, 7)), "b": np.ones(7)}, X6[0])


def test_posterior_draws_feed_simulate_for_a_posterior_predictive():
    sim = sgjax.Simulator(sgjax.models.SIR(), jnp.asarray(DAYS), ObservationModel(Poisson()))
    rng = np.random.default_rng(0)
    beta, gamma = rng.uniform(0.5, 1.0, (2, 30)).astype(np.float32), rng.uniform(0.1, 0.3, (2, 30)).astype(np.float32)
    samples = {"beta": beta, "gamma": gamma, "R0": beta / gamma}
    post = sgjax.Posterior(("beta", "gamma", "R0"), None, {}, samples, None, parameters=("beta", "gamma"))
    assert set(post.theta(1)) == {"beta", "gamma"}  # R0 is derived, not the simulator's
    predictive = sgjax.simulate(sim, key=jax.random.key(0), theta=post.theta(1))
    np.testing.assert_array_equal(np.asarray(predictive.theta["gamma"]), gamma[1])
    assert predictive.observations.shape == (30, 10, 1)
    # `infer` keeps the parameters the task recorded, where it recorded them.
    est = _untrained(sgjax.heads.Gaussian())
    recorded = sgjax.infer(_with_info(est, parameters=["b", "c"]), X6, key=jax.random.key(0), n_samples=5)
    assert recorded.parameters == ("b",) and set(recorded.theta(0)) == {"b"}
    assert sgjax.infer(est, X6, key=jax.random.key(0), n_samples=5).parameters is None


def test_posterior_fields_keep_the_convention():
    with pytest.raises(TypeError, match=r"dict mapping each label.*sgjax.unstack\(array, labels\)"):
        sgjax.Posterior(("a",), None, {}, np.zeros((2, 5, 1)), None)
