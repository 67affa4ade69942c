"""Saving, loading and applying estimators; bad input."""

import json
import subprocess
import sys

import jax
import numpy as np
import pytest
from exact_tasks import LinearGaussian

import sgjax
from sgjax import _io


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    est, _ = sgjax.fit(
        LinearGaussian(), sgjax.heads.Gaussian(), sgjax.nn.GRU, key=jax.random.key(0), steps=50,
        batch_size=128, validation_size=128, pilot_size=256, steps_per_call=25, eval_every=25, progress=False,
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
        "np.save(sys.argv[2], p.samples)"
    )
    subprocess.run([sys.executable, "-c", code, str(path), str(path / "s.npy")], check=True)
    np.testing.assert_array_equal(np.load(path / "s.npy"), here.samples)
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
    (d / "estimator.json").write_text(json.dumps({**header, "network": {"kind": "os.system", "cmd": "rm -rf /"}}))
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
    b = sgjax.infer(est, x, mask=~np.isnan(np.where(np.arange(10) == 3, np.nan, x)), key=jax.random.key(0), n_samples=20)
    np.testing.assert_array_equal(a.samples, b.samples)
    # Batched: many series in one call.
    assert sgjax.infer(est, np.zeros((5, 10, 1))).samples.shape == (5, 2000, 1)


def test_csv_inference_and_csv_errors(trained, tmp_path):
    est, _ = trained
    good = tmp_path / "good.csv"
    good.write_text("time,y\n" + "".join(f"{t},{0.1 * t}\n" for t in range(10)).replace("3,0.30000000000000004", "3,"))
    times, values, mask = sgjax.read_csv(good)
    assert mask.sum() == 9 and values[3, 0] == 0
    post = sgjax.infer(est, good, key=jax.random.key(0), n_samples=10)
    assert post.samples.shape == (1, 10, 1)
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
    blind = sgjax.nn.GRU(10, 1, est.network.out_size, hidden=est.network.hidden, mask_input=False, key=jax.random.key(2))
    est = eqx.tree_at(lambda e: e.network, est, blind)
    x = np.linspace(-1, 1, 10)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sgjax.infer(est, x, key=jax.random.key(0), n_samples=10)  # complete: no warning
    with pytest.warns(UserWarning, match="1 entries are missing.*does not read the mask"):
        sgjax.infer(est, x, mask=np.arange(10) != 3, key=jax.random.key(0), n_samples=10)
