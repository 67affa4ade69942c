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
