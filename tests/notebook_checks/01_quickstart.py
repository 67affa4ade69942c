# Checks on what notebooks/01_quickstart.ipynb computed (run after it, in its kernel, in quick mode).
# ruff: noqa: F821  (the names are the notebook's: this file runs in its kernel)
# pyright: reportUndefinedVariable=false
import numpy as np


# The simulations: 100 series of 60 daily Poisson counts, θ inside the default prior's ranges.
assert sims.observations.shape == test.observations.shape == (100, 60, 1)
for s in (sims, test):
    x = np.asarray(s.observations)
    assert np.all(x >= 0) and np.array_equal(x, np.round(x)), "Poisson counts are non-negative integers"
    assert np.all((s.theta["beta"] >= 0.1) & (s.theta["beta"] <= 1.0))
    assert np.all((s.theta["gamma"] >= 0.05) & (s.theta["gamma"] <= 0.5))
    assert bool(np.all(s.valid))
assert np.isfinite(history["loss"]).all() and np.isfinite(history["val_loss"]).all()

# The posterior: 1000 draws per held-out series, its intervals the samples' 5% and 95% quantiles.
assert posterior.labels == ("beta", "gamma")
assert posterior.samples["beta"].shape == posterior.samples["gamma"].shape == (100, 1000)
assert np.allclose(lower["beta"], np.quantile(posterior.samples["beta"], 0.05, axis=1))
assert np.allclose(upper["gamma"], np.quantile(posterior.samples["gamma"], 0.95, axis=1))
assert np.all(lower["beta"] < upper["beta"])
assert np.allclose(samples["R0"], posterior.samples["beta"] / posterior.samples["gamma"])
assert np.allclose(truth["R0"], test.theta["beta"] / test.theta["gamma"])
assert set(theta_i) == {"beta", "gamma"} and np.array_equal(theta_i["beta"], posterior.samples["beta"][i])

# Even after the quick run's few steps the intervals must hold the truth most of the time: an
# estimator that learned nothing from the data, or a mix-up of series, would not.
assert inside["beta"] >= 0.6 and inside["gamma"] >= 0.6, inside
# Where the epidemic took off, the posterior of R0 is narrower than the prior's range (0.2 to 20).
assert test.observations[i].sum() > 50
r0_lo, r0_hi = np.quantile(samples["R0"][i], [0.05, 0.95])
assert r0_hi / r0_lo < 20, (r0_lo, r0_hi)
