# Checks on what notebooks/04_model_selection.ipynb computed (run after it, in its kernel, in quick mode).
# ruff: noqa: F821  (the names are the notebook's: this file runs in its kernel)
# pyright: reportUndefinedVariable=false
import numpy as np


assert names == ["SIR", "SEIR", "SIRS"] and task.names == tuple(names)
# Held-out series: every model present; the classifier's probabilities are distributions.
assert x.shape == (len(truth), days, 1) and set(np.unique(truth)) == {0, 1, 2}
assert probabilities.shape == (len(truth), 3)
np.testing.assert_allclose(probabilities.sum(1), 1.0, atol=1e-5)
assert np.all(probabilities >= 0)
# Better than chance (1/3), even after quick mode's few steps.
accuracy = np.mean(chosen["SGNN"] == truth)
assert accuracy > 0.45, accuracy

# AIC and BIC are the lowest 2k − 2ℓ̂ and k ln(n) − 2ℓ̂ of the fits, with k each model's free parameters.
assert [fits[m].n_params for m in names] == [4, 5, 5]
ll = np.stack([np.asarray(fits[m].log_likelihood) for m in names], axis=1)
k = np.array([fits[m].n_params for m in names])
n_obs = np.asarray(mask[:n_mle]).sum(axis=(1, 2))
np.testing.assert_array_equal(chosen["AIC"], np.argmin(2 * k - 2 * ll, axis=1))
np.testing.assert_array_equal(chosen["BIC"], np.argmin(k * np.log(n_obs)[:, None] - 2 * ll, axis=1))
assert np.all(np.isfinite(ll))

# The baselines' series are a fair sample: every model among them.
assert set(np.unique(truth[:n_mle])) == {0, 1, 2}, np.bincount(truth[:n_mle], minlength=3)

# Confusion matrices: rows count the true models of the same n_mle series; errors read off them.
for m, c in confusion.items():
    assert c.shape == (3, 3) and c.sum() == n_mle, m
    np.testing.assert_array_equal(c.sum(1), np.bincount(truth[:n_mle], minlength=3))
    assert np.isclose(error[m], np.mean(chosen[m][:n_mle] != truth[:n_mle])), m
if bayes is not None:
    np.testing.assert_allclose(bayes.sum(1), 1.0, atol=1e-5)
    assert error["Bayes"] < 0.5
