# Checks on what notebooks/02_your_own_simulator.ipynb computed (run after it, in its kernel, in quick mode).
# ruff: noqa: F821  (the names are the notebook's: this file runs in its kernel)
# pyright: reportUndefinedVariable=false
import numpy as np
import numpyro.distributions as dist


# The user's model: S + E + I + R stays N, and C counts every onset (it equals I + R less the 10 initial).
ys = np.asarray(outbreak.states[0])
assert np.allclose(ys[:, :4].sum(axis=1), N, rtol=1e-4)
assert np.allclose(ys[:, 4], ys[:, 2] + ys[:, 3] - 10.0, rtol=1e-3, atol=0.5)
# The observed signal is the daily increase of C (onsets), from C(0) = 0 at t0 = 0.
assert np.allclose(outbreak.signal[0, :, 0], np.diff(np.r_[0.0, ys[:, 4]]), rtol=1e-4, atol=1e-3)
# The derived quantities: R0 = beta / gamma and the attack rate C(last day) / N.
d = simulator.derived(outbreak.theta, outbreak.states)
assert np.isclose(float(d["R0"][0]), 0.55 / 0.22, rtol=1e-5)
assert np.isclose(float(d["attack_rate"][0]), ys[-1, 4] / N, rtol=1e-5)

# The delay kernel is the discretised Gamma(2, 1): P(l <= delay < l + 1), l = 0..7.
cdf = np.asarray(dist.Gamma(2.0, 1.0).cdf(np.arange(9.0)))
assert np.allclose(delay.kernel, np.diff(cdf), atol=1e-6)
# Reported counts: under-reported by rho after the delay, negative-binomial with phi = 20 — over
# 100 days the total is within a few percent of its expectation.
signal = np.asarray(outbreak.signal[0, :, 0])
expected = truth["rho"] * np.convolve(signal, np.asarray(delay.kernel))[: len(signal)]
x = np.asarray(outbreak.observations[0, :, 0])
assert np.all(x >= 0) and np.array_equal(x, np.round(x))
assert abs(x.sum() / expected.sum() - 1) < 0.15, (x.sum(), expected.sum())

# The CSV round trip: what read_csv returns is what was simulated.
assert np.array_equal(times, np.asarray(simulator.ts))
assert np.array_equal(cases[:, 0], x) and cases.shape == (100, 1) and mask.all()
assert path.parent.name.startswith("tmp")  # written into tempfile.mkdtemp(), nowhere else

# The posterior: one series, 2000 draws of each target, beta recovered as R0 * gamma for the check.
assert posterior.labels == ("R0", "gamma", "rho", "phi")
assert all(posterior.samples[k].shape == (1, 2000) for k in posterior.labels)
assert np.all(posterior.samples["R0"] > 0) and np.all(
    (posterior.samples["rho"] >= 0.05) & (posterior.samples["rho"] <= 1)
)
assert set(draws) == {"beta", "gamma", "rho", "phi"}
assert np.allclose(draws["beta"] / draws["gamma"], posterior.samples["R0"][0], rtol=1e-5)
# Even the quick run places the truth inside wide (99%) posterior intervals.
lo99, hi99 = posterior.interval(0.99)
for name in ("R0", "rho"):
    assert lo99[name][0] <= true[name] <= hi99[name][0], (name, lo99[name][0], hi99[name][0], true[name])

# The posterior predictive check: one simulated series per draw, bands ordered, the data mostly inside.
assert ppc.observations.shape[1:] == (100, 1) and ppc.observations.shape[0] + ppc.n_failed == 2000
assert np.all(ppc.lower <= ppc.median) and np.all(ppc.median <= ppc.upper)
assert np.array_equal(ppc.observed[:, 0], x)
assert ppc.inside >= 0.6, ppc.inside
