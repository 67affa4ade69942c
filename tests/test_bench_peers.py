"""The peer benchmark's shared parts: its validation loss against exact densities, and
clean skips when sbi or BayesFlow is not installed (no training, no network)."""

import math
import pathlib
import sys

import jax
import numpy as np
import pytest
import scipy.stats

import sgjax


sys.path.insert(0, str(pathlib.Path(__file__).parents[1] / "benchmarks"))
import bench_peers  # noqa: E402


def test_natural_nll_log_space_is_lognormal():
    # u = log θ with u ~ N(0, 1) means θ ~ LogNormal(0, 1): the change of variables
    # must give scipy's log-normal density exactly (float32 Jacobian: 1e-5).
    theta = np.array([[0.2], [1.0], [3.5]])
    log_q_u = scipy.stats.norm.logpdf(np.log(theta[:, 0]))
    got = bench_peers.natural_nll(log_q_u, theta, (sgjax.Space("log"),))
    want = -np.mean(scipy.stats.lognorm(s=1.0).logpdf(theta[:, 0]))
    assert got == pytest.approx(want, abs=1e-5)


def test_natural_nll_logit_space_is_uniform():
    # u = logit((θ − lo)/(hi − lo)) with u ~ Logistic(0, 1) means θ ~ Uniform(lo, hi):
    # density 1/(hi − lo) everywhere, summed over two independent components.
    spaces = (sgjax.Space("logit", 0.1, 1.0), sgjax.Space("logit", 0.2, 0.6))
    theta = np.array([[0.15, 0.3], [0.5, 0.41], [0.95, 0.55]])
    u = np.stack([np.asarray(s.forward(theta[:, i])) for i, s in enumerate(spaces)], axis=1)
    log_q_u = scipy.stats.logistic.logpdf(u).sum(axis=1)
    got = bench_peers.natural_nll(log_q_u, theta, spaces)
    assert got == pytest.approx(math.log(0.9) + math.log(0.4), abs=1e-4)


def test_to_natural_inverts_the_learning_space():
    task = bench_peers.problem()
    theta = np.array([[0.3, 0.1, 0.5], [0.9, 0.45, 0.99]], np.float32)
    u = np.stack([np.asarray(s.forward(theta[:, i])) for i, s in enumerate(task.spaces)], axis=1)
    np.testing.assert_allclose(bench_peers.to_natural(task.spaces, u), theta, rtol=1e-5)


@pytest.mark.parametrize("peer, module", [("sbi", "sbi"), ("bayesflow", "bayesflow")])
def test_missing_peer_is_skipped(monkeypatch, peer, module):
    # A peer that does not import is recorded as skipped, before any simulation or
    # training (the held-out set and settings are never touched).
    monkeypatch.setitem(sys.modules, module, None)  # `import module` now raises ImportError
    run = {"sbi": bench_peers.run_sbi, "bayesflow": bench_peers.run_bayesflow}[peer]
    out = run(bench_peers.problem(), jax.random.key(0), None, None)
    assert out["status"].startswith(f"skipped: {peer} not importable")


def test_report_with_peers_skipped():
    sgjax_figures = {
        "status": "ok", "batch_size": 512, "steps": 100, "network": "MLP", "parameters": 10, "wall_s": 3.0,
        "compile_s": 1.0, "samples_per_s": 1e4, "final_val_loss": -1.0, "best_val_loss": -1.0,
        "log_prob_check": -1.0, "time_to_threshold_s": None, "steps_to_threshold": None,
    }  # fmt: skip
    out = {
        "machine": "m", "revision": "r", "quick": True, "settings": bench_peers.SETTINGS["quick"], "held_out": 8,
        "load_after": "0.0", "sgjax": sgjax_figures,
        "sbi": {"status": "skipped: sbi not importable"}, "bayesflow": {"status": "skipped: bayesflow not importable"},
    }  # fmt: skip
    text = bench_peers.report(out)
    assert "| sbi | skipped: sbi not importable" in text
    assert "| BayesFlow | skipped: bayesflow not importable" in text
