# Checks on notebooks/05_posteriors_and_calibration.ipynb, run in its kernel after its cells (quick mode).
# ruff: noqa: F821  (the names are the notebook's: this file runs in its kernel)
# pyright: reportUndefinedVariable=false
import numpy as np


# The observed series and the flow's joint draws for it.
assert x_obs.shape == (1, 14, 1)
assert set(draws) == {"beta", "gamma"} and all(v.shape == (n_draws,) for v in draws.values())
assert all(np.all(np.isfinite(v)) and np.all(v > 0) for v in draws.values())
# interval() is the posterior draws' central quantiles.
for name in ("beta", "gamma"):
    np.testing.assert_allclose([lower[name][0], upper[name][0]], np.quantile(draws[name], [0.05, 0.95]), rtol=1e-5)

# diagnose: ranks of up to n_check held-out simulations among 255 draws, for both parameters.
assert check.labels == ("beta", "gamma") and 0.9 * n_check <= len(check) <= n_check
assert check.sbc.ranks.shape == (len(check), 2) and check.sbc.ranks.min() >= 0 and check.sbc.ranks.max() <= 255
assert check.coverage.coverage.shape == (len(check.coverage.levels), 2)

# sbc's ranks are the number of draws below the truth (continuous draws: no ties).
for j, name in enumerate(("beta", "gamma")):
    by_hand = np.sum(flow_draws[name] < sims_truth[name][:, None], axis=1)
    assert np.array_equal(ranks["flow"].ranks[:, j], by_hand)
# Shrinking each posterior around its mean nests its central intervals inside the flow's, so its coverage
# can only fall, and it falls well below nominal: overconfidence shows.
assert np.all(coverage["overconfident"].coverage <= coverage["flow"].coverage + 1e-9)
assert coverage["overconfident"].coverage[-1].max() < coverage["flow"].coverage[-1].min() + 1e-9
# Ranks of an overconfident posterior pile up at the ends: more ranks in the outer tenth than the flow's.
outer = lambda r: np.mean((r < 26) | (r > 229))  # noqa: E731
assert outer(ranks["overconfident"].ranks) > outer(ranks["flow"].ranks)

# The exact grid posterior: the fine grid holds every cell within 25 log units of the coarse maximum, its
# edges are far below its maximum (no mass cut off), and the truth lies inside the reference's range.
assert ll_fine.max() >= ll.max() - 1e-3
assert max(ll_fine[0].max(), ll_fine[-1].max(), ll_fine[:, 0].max(), ll_fine[:, -1].max()) < ll_fine.max() - 20
for name in ("beta", "gamma"):
    assert reference[name].min() < truth[name] < reference[name].max()
# C2ST: two exact samples are indistinguishable; accuracies are fractions.
assert 0.4 <= acc_chance <= 0.6, acc_chance
assert 0.0 <= acc_round1 <= 1.0 and 0.0 <= acc_round2 <= 1.0

# The second round trained on the prior restricted to the box, from the first estimator.
restricted = task.restrict(box).prior.distributions
for name in ("beta", "gamma"):
    lo, hi = box[name]
    assert 0 < lo < hi
    assert restricted[name].support.lower_bound == lo and restricted[name].support.upper_bound == hi
assert estimator_2.labels == estimator.labels and estimator_2.spaces == estimator.spaces
assert all(v.shape == (n_draws,) for v in draws_2.values())
print("notebook 05 checks passed")
