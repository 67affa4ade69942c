import jax
import numpy as np
import pytest
from exact_tasks import LinearGaussian

import sgjax


def test_mmd_is_zero_in_expectation_for_one_distribution_and_grows_with_a_shift():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(400, 3)), rng.normal(size=(400, 3))
    same = sgjax.mmd(a, b)
    # The unbiased estimator's standard deviation at n = 400 is ~1e-3 here.
    assert abs(same) < 5e-3
    shifts = [sgjax.mmd(a + d, b, bandwidth=1.0) for d in (0.25, 0.5, 1.0)]
    assert 0 < shifts[0] < shifts[1] < shifts[2]
    with pytest.raises(ValueError, match="two samples"):
        sgjax.mmd(a, b[:, :2])


def test_mismatch_score_is_calibrated_on_simulations_and_flags_shifted_data():
    task = LinearGaussian()
    est, _ = sgjax.fit(
        task, key=jax.random.key(0), steps=200, batch_size=256, validation_size=512, pilot_size=512, progress=False
    )
    detector = sgjax.MismatchScore.fit(est, task, key=jax.random.key(1), n_reference=2048, n_calibration=1024)
    fresh = task.sample(jax.random.key(2), 2000)
    s = detector.score(fresh.x, fresh.mask)
    # Under the simulator the p-values are uniform: 5% flagged within sampling error
    # (binomial sd at n = 2000 is 0.5%), and the median p-value near 1/2.
    assert abs(s["flagged"].mean() - 0.05) < 0.02
    assert abs(np.median(s["p_value"]) - 0.5) < 0.06
    # The same series with ten times the noise lie outside the simulator's world. A
    # point head summarises a series by one number (its posterior mean), so only the
    # noisy series whose mean moves far are visible: measured 41% flagged, 8x nominal.
    noisy = np.asarray(fresh.x) + 9.0 * np.random.default_rng(3).normal(size=fresh.x.shape)
    assert detector.score(noisy)["flagged"].mean() > 0.25
    assert sgjax.mmd(sgjax.embed(est, noisy[:300]), sgjax.embed(est, fresh.x[300:600])) > 10 * abs(
        sgjax.mmd(sgjax.embed(est, fresh.x[:300]), sgjax.embed(est, fresh.x[300:600]))
    )


def test_nearest_simulations_are_exact_neighbours_in_summary_space():
    task = LinearGaussian()
    est, _ = sgjax.fit(
        task, key=jax.random.key(0), steps=50, batch_size=256, validation_size=512, pilot_size=512, progress=False
    )
    bank = sgjax.SimulationBank.simulate(est, task, 1000, key=jax.random.key(5))
    assert len(bank) == 1000 and bank.y.shape == (1000, 1)
    # A simulation in the bank is its own nearest neighbour, at distance 0 (or one
    # with the same summary up to float32 rounding of the squared-distance expansion).
    idx, dist = bank.nearest(bank.x[:5], bank.mask[:5], k=3)
    np.testing.assert_allclose(np.asarray(bank.z)[idx[:, 0]], np.asarray(bank.z)[:5], atol=1e-3)
    np.testing.assert_allclose(dist[:, 0], 0.0, atol=1e-2)
    assert np.all(np.diff(dist, axis=1) >= 0)
    # Brute force agrees (on distances: in a 1-D summary, near-ties may swap order).
    z = np.asarray(bank.z, np.float64)
    q = sgjax.embed(est, bank.x[7:8], bank.mask[7:8]) / np.asarray(bank.scale)
    brute = np.sort(np.sqrt(((z - q) ** 2).sum(1)))[:20]
    idx, dist = bank.nearest(bank.x[7:8], bank.mask[7:8], k=20, first=1000)
    np.testing.assert_allclose(dist[0], brute, atol=2e-3)
    np.testing.assert_allclose(np.sqrt(((z[idx[0]] - q) ** 2).sum(1)), brute, atol=2e-3)
    with pytest.raises(ValueError, match="k <= first"):
        bank.nearest(bank.x[:1], k=5, first=3)
