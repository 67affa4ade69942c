# Checks on notebooks/06_misspecification_and_attribution.ipynb, run in its kernel after its cells (quick mode).
# ruff: noqa: F821  (the names are the notebook's: this file runs in its kernel)
# pyright: reportUndefinedVariable=false
import numpy as np


# Twenty series of each kind, 100 days, one channel; the in-world and waning series share β and γ.
assert all(x.shape == (n_series, 100, 1) for x in data.values())
np.testing.assert_array_equal(inside.theta["beta"], waning.theta["beta"])
assert np.all(overdispersed >= 0) and np.all(overdispersed == np.round(overdispersed))
# With immunity for millennia SIRS is SIR: its clean incidence is the SIR model's for the same β and γ.
sir_signal = sgjax.simulate(task.simulator, key=jax.random.key(9), theta=theta).signal
np.testing.assert_allclose(inside.signal, sir_signal, rtol=1e-3, atol=0.05)

# The score's p-value is the share of calibration scores at least as high, and `flagged` is the 95% threshold.
cal = np.sort(detector.calibration)
assert len(cal) <= n_calibration
for s in scores.values():
    assert s["score"].shape == s["p_value"].shape == s["flagged"].shape == (n_series,)
    by_hand = (np.sum(cal[None, :] >= s["score"][:, None], axis=1) + 1) / (len(cal) + 1)
    np.testing.assert_allclose(s["p_value"], by_hand)
    np.testing.assert_array_equal(s["flagged"], s["score"] > detector.threshold(0.95))
# In-world series are flagged rarely (5% expected; 6 or more of 20 has probability < 0.3%), second waves often.
inside_s, waning_s = scores["SIR (inside)"], scores["SIRS, waning immunity"]
assert inside_s["flagged"].sum() <= 5, inside_s["flagged"]
assert waning_s["flagged"].sum() >= 5 and waning_s["flagged"].sum() > inside_s["flagged"].sum()
assert np.median(waning_s["p_value"]) < np.median(inside_s["p_value"])

# Attribution: nearest() returns the k closest bank entries in the standardised summary space, nearest first.
z = sgjax.embed(estimator, examples["SIR (inside)"]) / np.asarray(bank.scale)
all_d = np.sqrt(np.sum((np.asarray(bank.z) - z) ** 2, axis=1))
idx, d = nearest["SIR (inside)"]
assert idx.shape == d.shape == (1, 10) and np.all(np.diff(d[0]) >= -1e-5)
np.testing.assert_allclose(d[0], all_d[idx[0]], rtol=1e-3, atol=1e-3)
np.testing.assert_allclose(d[0], np.sort(all_d)[:10], rtol=1e-3, atol=1e-3)
# The in-world outbreak's nearest simulations have β and γ closer to its truth than the bank's typical entry.
for name in ("beta", "gamma"):
    j = bank.labels.index(name)
    err = lambda rows: np.median(np.abs(np.log(bank.y[rows, j]) - np.log(float(theta[name][0]))))  # noqa: E731
    assert err(idx[0]) < 0.5 * err(np.arange(len(bank))), name
print("notebook 06 checks passed")
