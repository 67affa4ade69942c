# Checks for notebooks/08_reproducing_the_paper.ipynb, run in its kernel after its cells (quick mode).
# ruff: noqa: F821  (the names are the notebook's: this file runs in its kernel)
# pyright: reportUndefinedVariable=false
import json
import pathlib

import numpy as np

import sgjax.reproduce


# The live run wrote each experiment's section, numbers and figure, and the page that lists them.
assert page == out / "README.md" and page.exists()
for name in names:
    assert (out / f"{name}.md").exists() and (out / f"{name}.json").exists()
    assert f"`{name}`" in page.read_text()
assert (out / "convergence-loglog.png").read_bytes()[:4] == b"\x89PNG"

# Claim 1 at the quick budget: the network is far closer to the exact posterior mean than the
# prior mean is (for growth-lognormal, r ~ Normal(0.15, 0.05): that MSE is about 80× the Bayes risk).
assert live == json.loads((out / "convergence.json").read_text()) and live["quick"] is True
result = live["results"]["growth-lognormal"]
n_train = [row["n_train"] for row in result["budgets"]]
ratio = np.array([row["mse_to_posterior_mean"] for row in result["budgets"]]) / result["bayes_risk"]
assert n_train == sorted(n_train) and len(n_train) >= 2
assert np.all(np.isfinite(ratio)) and ratio[-1] < 0.5, ratio
assert 0 < result["bayes_risk"] < 0.05**2  # the posterior variance is below the prior's

# The stored full runs were read wherever a results/ folder sits next to the notebook (the
# test's kernel runs at the repository root, where it does).
if pathlib.Path("results/convergence.json").exists():
    assert stored is not None
    expected = {
        n for n in {**sgjax.reproduce.EXPERIMENTS, **sgjax.reproduce.CASE_STUDIES} if (stored / f"{n}.json").exists()
    }
    assert set(summary) == expected and "convergence" in summary
    assert summary["convergence"]["quick"] is False
    full = summary["convergence"]["results"]["growth-lognormal"]["budgets"]
    assert [row["n_train"] for row in full][-1] > n_train[-1]  # the full run trains on more
