"""The `sgjax` command line, with tiny budgets."""

import json
import subprocess
import sys

import numpy as np
import pytest

from sgjax._cli import main


def test_simulate_writes_data_plot_summary(tmp_path):
    out = tmp_path / "run"
    assert main(["simulate", "sir", "--n", "64", "--times", "30", "--out", str(out)]) == 0
    data = np.load(out / "simulations.npz")
    assert data["observations"].shape == (64, 30, 1) and data["valid"].all()
    assert {"theta_beta", "theta_gamma"} <= set(data.files)
    assert (out / "simulations.png").read_bytes()[:4] == b"\x89PNG"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["model"] == "SIR" and summary["n_valid"] == 64


def test_simulate_never_overwrites(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    with pytest.raises(SystemExit, match="already exists"):
        main(["simulate", "sir", "--n", "8", "--out", str(out)])
    assert (out / "mine.txt").read_text() == "keep me"


def test_unknown_model_and_help():
    with pytest.raises(SystemExit, match="unknown model 'sri'"):
        main(["simulate", "sri", "--n", "8"])
    res = subprocess.run([sys.executable, "-m", "sgjax._cli", "simulate", "--help"], capture_output=True, text=True)
    assert res.returncode == 0 and "lotkavolterra" in res.stdout


@pytest.mark.parametrize("command", ["train", "infer", "boarding-school"])
def test_every_command_has_help(command):
    res = subprocess.run([sys.executable, "-m", "sgjax._cli", command, "--help"], capture_output=True, text=True)
    assert res.returncode == 0 and "usage: sgjax " + command in res.stdout


def test_train_then_infer_on_a_csv(tmp_path):
    out = tmp_path / "sir"
    args = ["train", "sir", "--steps", "50", "--eval-every", "25", "--times", "20", "--validation-size", "256",
            "--test-size", "200", "--batch-size", "128", "--quiet", "--out", str(out)]
    assert main(args) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["recovery_on_held_out_simulations"]) == {"n", "beta", "gamma"}
    assert 0 <= metrics["recovery_on_held_out_simulations"]["beta"]["coverage_90"] <= 1
    for name in ("estimator.eqx", "estimator.json", "training.png", "recovery.png"):
        assert (out / name).exists()
    with pytest.raises(SystemExit, match="not empty"):
        main(args)  # never overwrites a finished run
    ts = np.linspace(5.0, 100.0, 20)
    csv = tmp_path / "cases.csv"
    csv.write_text("time,cases\n" + "".join(f"{t},{c}\n" for t, c in zip(ts, [1, 2, 4, 8] + [10] * 16)))
    assert main(["infer", str(out), str(csv)]) == 0
    post = json.loads((out / "inference" / "posterior.json").read_text())["posterior"]
    assert set(post) == {"beta", "gamma"} and post["beta"]["quantiles"]["0.05"] < post["beta"]["quantiles"]["0.95"]
    # A CSV on other times than the training grid is refused with the reason.
    csv.write_text("time,cases\n" + "".join(f"{t},1\n" for t in range(1, 21)))
    assert main(["infer", str(out), str(csv), "--out", str(tmp_path / "inf2")]) == 2


def test_main_job_fast(tmp_path):
    out = tmp_path / "flu"
    assert main(["boarding-school", "--fast", "--steps", "100", "--quiet", "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    post = metrics["posterior_boarding_school"]
    assert {"beta", "gamma", "R0", "final_size"} <= set(post)
    lo, hi = post["final_size"]["interval_90"]
    assert 0 < lo <= hi <= 763
    assert (out / "posterior_predictive.png").exists() and (out / "estimator" / "estimator.json").exists()
