# Checks on what notebooks/03_boarding_school.ipynb computed (run after it, in its kernel, in quick mode).
# ruff: noqa: F821  (the names are the notebook's: this file runs in its kernel)
# pyright: reportUndefinedVariable=false
import numpy as np


# The task learns 3 parameters, R0, the final size and S on each of the 14 observed days.
assert task.labels[:5] == ("beta", "gamma", "reporting", "R0", "final_size"), task.labels
assert task.labels[5:] == tuple(f"S(t={t:g})" for t in data.times), task.labels

# The targets the task simulates obey the model exactly: R0 = β/γ, the final size in boys is
# N times the exact final-size fraction, and the hidden S(t) lies between 0 and N, falling.
batch = task.sample(jax.random.key(100), 64)
y = {label: np.asarray(space.inverse(batch.y[:, i])) for i, (label, space) in enumerate(zip(task.labels, task.spaces))}
np.testing.assert_allclose(y["R0"], y["beta"] / y["gamma"], rtol=1e-4)
np.testing.assert_allclose(y["final_size"], N * np.asarray(models.final_size(y["R0"], 1 - 1 / N)), rtol=1e-4)
S = np.stack([y[label] for label in task.labels[5:]], axis=1)
assert np.all(S >= -1e-3) and np.all(S <= N) and np.all(np.diff(S, axis=1) <= 1e-3)

# The SGNN's answers on the data: ordered quantiles, within the possible range.
for k in names:
    assert sgnn_lo[k] <= sgnn_median[k] <= sgnn_hi[k], k
assert 0 <= sgnn_median["final_size"] <= N * 1.05
# NUTS's pushforward: the exact relations, and S + I + R = N along every draw's trajectory.
np.testing.assert_allclose(nuts["R0"], draws["beta"] / draws["gamma"], rtol=1e-6)
assert S_nuts.shape == (len(nuts["R0"]), len(data.times))
np.testing.assert_allclose(paths.sum(-1), N, rtol=1e-4)
assert np.all(np.diff(S_nuts, axis=1) <= 1e-3)  # nobody becomes susceptible again in SIR

# What is known about this outbreak: R0 well above 1 (published SIR fits give about 3.5), and more
# boys infected in all than were ever in bed at once.
assert 2.0 < np.median(nuts["R0"]) < 8.0, np.median(nuts["R0"])
assert 1.0 < sgnn_median["R0"] < 10.0, sgnn_median["R0"]
peak = data.observations[:, 0].max()
assert np.median(nuts["final_size"]) > peak and sgnn_median["final_size"] > peak
# The two methods agree at least roughly on R0 (their 90% intervals overlap).
q = np.quantile(nuts["R0"], [0.05, 0.95])
assert sgnn_lo["R0"] <= q[1] and q[0] <= sgnn_hi["R0"], (sgnn_lo["R0"], sgnn_hi["R0"], q)
