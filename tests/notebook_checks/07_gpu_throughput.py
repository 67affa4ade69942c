# Checks for notebooks/07_gpu_throughput.ipynb, run in its kernel after its cells (quick mode).
# ruff: noqa: F821  (the names are the notebook's: this file runs in its kernel)
# pyright: reportUndefinedVariable=false
import math

import jax
import numpy as np


# The runtime switch is the backend's, and the sizes follow it.
assert on_gpu == (jax.default_backend() == "gpu")
assert sim_sizes == sorted(sim_sizes) and len(sim_rates) == len(sim_sizes)
assert len(train_rates) == len(train_batches)
assert all(math.isfinite(r) and r > 0 for r in [*sim_rates, *train_rates])

# The last batch is what simulate was asked for: one series of `days` Poisson counts per draw, none failed.
assert sims.observations.shape == (sim_sizes[-1], days, 1)
assert np.all(np.asarray(sims.valid)) and np.all(sims.observations >= 0)
assert np.array_equal(sims.observations, np.round(sims.observations))
assert sims.theta["beta"].shape == (sim_sizes[-1],)

# Training learned something: R² computed right, and better than the prior mean (R² 0) for beta.
truth_beta = np.asarray(sims.theta["beta"][:2000])
expected = 1 - np.mean((posterior.mean()["beta"] - truth_beta) ** 2) / np.var(truth_beta)
assert np.isclose(r2["beta"], expected)
assert r2["beta"] > 0.3, r2

# Several devices (two virtual CPU devices here): the data-parallel fit ran and learned beta too.
assert n_devices == jax.device_count()
if n_devices > 1:
    assert math.isfinite(all_rate) and all_rate > 0
    assert multi_r2 > 0.3, multi_r2
