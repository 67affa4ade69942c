"""Export of posterior samples to ArviZ InferenceData."""

import warnings

import numpy as np
import pytest

import sgjax
from sgjax.baselines import ReferencePosterior


with warnings.catch_warnings():
    warnings.simplefilter("ignore", FutureWarning)  # ArviZ announces its refactor
    az = pytest.importorskip("arviz")


def _posterior(n=3, s=40):
    samples = np.random.default_rng(0).normal(size=(n, s, 2)) + np.array([1.0, -2.0])
    samples = sgjax.unstack(samples, ("beta", "gamma"))
    return sgjax.Posterior(("beta", "gamma"), {k: v.mean(1) for k, v in samples.items()}, {}, samples, None)


def test_sgnn_samples_keep_every_series_and_value():
    post = _posterior()
    idata = sgjax.to_arviz(post, observed=np.ones((5, 1)))
    beta = idata.posterior["beta"]
    assert beta.dims == ("chain", "draw", "series") and beta.shape == (1, 40, 3)
    np.testing.assert_array_equal(beta.values[0, :, 2], post.samples["beta"][2])
    assert idata.observed_data["x"].shape == (5, 1)
    one = sgjax.to_arviz(post, 1)
    np.testing.assert_array_equal(one.posterior["gamma"].values[0], post.samples["gamma"][1])
    summary = az.summary(one, kind="stats")
    np.testing.assert_allclose(summary.loc["beta", "mean"], post.samples["beta"][1].mean(), atol=1e-3)


def test_nuts_chains_stay_apart():
    # Two chains of 5 draws, stored chain after chain: chain 1 is all ones.
    draws = np.concatenate([np.zeros((2, 5)), np.ones((2, 5))], axis=1)
    ref = ReferencePosterior(
        samples={"rho": draws},
        r_hat={"rho": np.ones(2)},
        ess={"rho": np.ones(2)},
        divergences=np.zeros(2),
        num_steps=np.ones(2),
        num_chains=2,
    )
    rho = sgjax.to_arviz(ref, 0).posterior["rho"]
    assert rho.shape == (2, 5)
    np.testing.assert_array_equal(rho.values, [[0] * 5, [1] * 5])


def test_bad_input_says_what_to_do():
    with pytest.raises(ValueError, match="no samples"):
        sgjax.to_arviz(sgjax.Posterior(("beta",), {"beta": np.zeros(2)}, {}, None, None))
    with pytest.raises(ValueError, match="model probabilities.*posterior.probabilities"):
        sgjax.to_arviz(sgjax.Posterior(("SIR", "SEIR"), None, {}, None, np.full((2, 2), 0.5)))
    with pytest.raises(ValueError, match="index into the 3 observed series"):
        sgjax.to_arviz(_posterior(), 3)
    with pytest.raises(TypeError, match="sgjax.AbstractPosterior"):
        sgjax.to_arviz(np.zeros((3, 4)))


def test_any_abstract_posterior_is_exported():
    class Draws(sgjax.AbstractPosterior):  # e.g. a user's own sampler's
        samples: dict

    draws = Draws({"beta": np.arange(12.0).reshape(2, 6)})
    idata = sgjax.to_arviz(draws)
    np.testing.assert_array_equal(idata.posterior["beta"].values[0, :, 1], np.arange(6.0, 12.0))
