"""The figures of the documentation's concept pages, each made by sgjax itself.

    python docs/figures/make_figures.py            # every figure (about 4 CPU-minutes; 2 cores)
    python docs/figures/make_figures.py losses     # some of them

Each figure is a small PNG beside this script (`docs/figures/<name>.png`). The budgets
are small on purpose: the point is to show each concept for real, in minutes; the
paper's experiments (`sgjax reproduce`) run the same checks at full size.
"""

import argparse
import pathlib
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
import matplotlib


matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import numpyro.distributions as dist  # noqa: E402
import scipy.stats  # noqa: E402

import sgjax  # noqa: E402
from sgjax.observation import Gaussian, NegativeBinomial, ObservationModel, Poisson, Reporting  # noqa: E402


HERE = pathlib.Path(__file__).parent
DPI = 90
plt.rcParams.update({"font.size": 9, "axes.titlesize": 9, "figure.dpi": DPI})


def _samples(posterior) -> dict:
    """A density head's posterior samples, name -> (n, draws)."""
    assert posterior.samples is not None, "a density head's posterior has samples"
    return posterior.samples


def _point(posterior) -> dict:
    """A posterior's point estimates, name -> (n,)."""
    assert posterior.point is not None, "a regression posterior has point estimates"
    return posterior.point


def _save(fig, name: str) -> None:
    fig.tight_layout()
    path = HERE / f"{name}.png"
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    print(f"  wrote {path} ({path.stat().st_size / 1024:.0f} KB)")


# --- losses and posteriors: a conjugate toy whose posterior is known exactly ----------


def _toy(prior=None):
    """x_t = mu + noise (sd 1) at 10 times, mu ~ Normal(0, 1): the posterior of mu is
    Normal(sum(x) / 11, 1 / sqrt(11)), exactly."""
    model = sgjax.ODEModel(
        lambda t, y, theta: jnp.zeros_like(y),  # a constant level
        initial_state=lambda theta: jnp.stack([theta["mu"]]),
        param_names=("mu",),
        state_names=("level",),
        observable=sgjax.State("level"),
    )
    simulator = sgjax.Simulator(model, jnp.arange(1.0, 11.0), ObservationModel(Gaussian(1.0)))
    return sgjax.Task(simulator, ["mu"], prior or sgjax.Prior(mu=dist.Normal(0.0, 1.0)))


def losses(key):
    task = _toy()
    k_point, k_quant, k_flow, k_sims, k_infer = jax.random.split(key, 5)
    settings: dict[str, Any] = dict(steps=400, batch_size=256, validation_size=512, pilot_size=1024, progress=False)
    point, _ = sgjax.fit(task, sgjax.heads.Point(), key=k_point, **settings)
    quantile, _ = sgjax.fit(task, sgjax.heads.Quantile(levels=(0.05, 0.5, 0.95)), key=k_quant, **settings)
    flow, _ = sgjax.fit(task, sgjax.heads.Flow(flow_layers=2), key=k_flow, **settings)

    sims = sgjax.simulate(task.simulator, 300, key=k_sims, prior=task.prior)
    x = sims.observations
    exact_mean, exact_sd = x.sum(axis=(1, 2)) / 11.0, 1.0 / np.sqrt(11.0)
    z = scipy.stats.norm.ppf(0.95)
    p_point = sgjax.infer(point, x)
    p_quant = sgjax.infer(quantile, x)
    p_flow = sgjax.infer(flow, x[:1], key=k_infer, n_samples=4000)

    fig, ax = plt.subplots(1, 3, figsize=(9.6, 3.0))
    lim = (-3, 3)
    ax[0].plot(lim, lim, "k-", lw=0.8)
    ax[0].plot(exact_mean, _point(p_point)["mu"], ".", ms=3)
    ax[0].set(xlim=lim, ylim=lim, xlabel="exact posterior mean", ylabel="network output")
    ax[0].set_title("Squared loss (Point): the posterior mean")
    ax[1].plot(lim, lim, "k-", lw=0.8)
    ax[1].plot(exact_mean - z * exact_sd, p_quant.quantiles[0.05]["mu"], ".", ms=3, label="5%")
    ax[1].plot(exact_mean + z * exact_sd, p_quant.quantiles[0.95]["mu"], ".", ms=3, label="95%")
    ax[1].set(xlim=lim, ylim=lim, xlabel="exact posterior quantile", ylabel="network output")
    ax[1].set_title("Pinball loss (Quantile): quantiles")
    ax[1].legend(loc="upper left", frameon=False)
    grid = np.linspace(exact_mean[0] - 4 * exact_sd, exact_mean[0] + 4 * exact_sd, 200)
    ax[2].hist(_samples(p_flow)["mu"][0], bins=40, density=True, alpha=0.5, label="flow samples")
    ax[2].plot(grid, scipy.stats.norm.pdf(grid, exact_mean[0], exact_sd), "k-", lw=1, label="exact posterior")
    ax[2].set(xlabel="mu", ylabel="density")
    ax[2].set_title("Likelihood (Flow): the posterior")
    ax[2].legend(loc="upper left", frameon=False, fontsize=7)
    _save(fig, "losses")


# --- the 1978 boarding school: one estimator shared by several figures ----------------

_SCHOOL = {}


def _school():
    """The main job's problem (SIR among 763 boys, under-reporting, negative-binomial
    counts) with a mixture-density head, trained once at a small budget."""
    if "estimator" in _SCHOOL:
        return _SCHOOL
    data = sgjax.datasets.boarding_school()
    model = sgjax.models.SIR(N=763.0, I0=1.0, observable=sgjax.State("I"))
    observation = ObservationModel(NegativeBinomial("dispersion"), transforms=(Reporting("reporting"),))
    simulator = sgjax.Simulator(model, data.times, observation, t0=0.0)
    prior = sgjax.Prior(
        beta=dist.LogUniform(0.5, 5.0),
        gamma=dist.LogUniform(0.1, 2.0),
        reporting=dist.Uniform(0.3, 1.0),
        dispersion=dist.LogUniform(2.0, 200.0),
    )
    task = sgjax.Task(simulator, ["beta", "gamma", "reporting", "dispersion"], prior)
    start = time.perf_counter()
    estimator, _ = sgjax.fit(
        task,
        sgjax.heads.MixtureDensity(3),
        key=jax.random.key(1978),
        steps=1500,
        batch_size=512,
        validation_size=1024,
        pilot_size=2048,
        progress=False,
    )
    print(f"  trained the boarding-school estimator in {time.perf_counter() - start:.0f} s")
    _SCHOOL.update(data=data, simulator=simulator, prior=prior, task=task, estimator=estimator)
    return _SCHOOL


def amortization(key):
    school = _school()
    estimator, task = school["estimator"], school["task"]
    k_sims, k_infer = jax.random.split(jax.random.fold_in(key, 1))
    sims = sgjax.simulate(task.simulator, 1000, key=k_sims, prior=task.prior)
    sgjax.infer(estimator, sims.observations, key=k_infer, n_samples=500)  # compile, then time a second call
    start = time.perf_counter()
    posterior = sgjax.infer(estimator, sims.observations, key=k_infer, n_samples=500)
    seconds = time.perf_counter() - start
    coverage = sgjax.diagnostics.expected_coverage(posterior, sims.theta)

    fig, ax = plt.subplots(figsize=(4.2, 3.4))
    lv = coverage.levels
    ax.fill_between(lv, coverage.band[0], coverage.band[1], color="0.85", label="95% band, calibrated")
    ax.plot([0, 1], [0, 1], "k-", lw=0.8)
    for j, name in enumerate(coverage.labels):
        ax.plot(lv, coverage.coverage[:, j], "-", lw=1.2, label=name)
    ax.set(xlabel="credible level", ylabel="fraction of datasets covered", xlim=(0, 1), ylim=(0, 1))
    ax.set_title(f"1,000 posteriors from one trained network\n(one compiled infer call: {seconds:.1f} s on CPU)")
    ax.legend(loc="upper left", frameon=False, fontsize=7)
    _save(fig, "amortization")


def misspecification(key):
    """Data from outside the simulator's world, more so at each step: a latent period
    the SIR simulator lacks (SEIR), or a school larger than the 763 boys it assumes."""
    school = _school()
    estimator, task, prior, data = school["estimator"], school["task"], school["prior"], school["data"]
    k_score, k_data = jax.random.split(jax.random.fold_in(key, 2))
    score = sgjax.MismatchScore.fit(estimator, task, key=k_score, n_reference=2048, n_calibration=512)
    observe: dict[str, Any] = dict(observation=task.simulator.observation, t0=0.0)
    seir = sgjax.Simulator(sgjax.models.SEIR(N=763.0, I0=1.0, observable=sgjax.State("I")), data.times, **observe)
    larger = sgjax.Simulator(sgjax.models.SIR(N="N", I0=1.0, observable=sgjax.State("I")), data.times, **observe)
    steps = {
        "latent period 0, 0.5, 1, 2, 3 days (SEIR)": (seir, "sigma", [np.inf, 2.0, 1.0, 0.5, 1.0 / 3.0]),
        "school size ×1, 1.25, 1.5, 2, 3": (larger, "N", [np.inf] + [763.0 * f for f in (1.25, 1.5, 2.0, 3.0)]),
    }
    n = 300
    fig, ax = plt.subplots(1, 2, figsize=(7.6, 3.0))
    for j, (label, (simulator, name, values)) in enumerate(steps.items()):
        errors, flagged = [], []
        for i, value in enumerate(values):
            k_theta, k_sim, k_infer = jax.random.split(jax.random.fold_in(k_data, 10 * j + i), 3)
            theta = {k: jnp.asarray(v) for k, v in prior.sample(k_theta, n).items()}
            if np.isinf(value):  # step 0: the simulator's own world
                sims = sgjax.simulate(task.simulator, key=k_sim, theta=theta)
            else:
                sims = sgjax.simulate(simulator, key=k_sim, theta={**theta, name: jnp.full(n, value)})
            ok = np.asarray(sims.valid)
            post = sgjax.infer(estimator, sims.observations, key=k_infer, n_samples=500)
            r0_hat = np.mean(_samples(post)["beta"] / _samples(post)["gamma"], axis=1)
            r0 = np.asarray(theta["beta"] / theta["gamma"])
            errors.append(np.sqrt(np.mean(np.log(r0_hat / r0)[ok] ** 2)))
            flagged.append(np.mean(score.score(sims.observations)["flagged"][ok]))
        ax[0].plot(range(len(values)), errors, "o-", label=label)
        ax[1].plot(range(len(values)), flagged, "o-", label=label)
    ax[0].set(xlabel="mismatch step (0 = the simulator itself)", ylabel="RMSE of log R0", ylim=(0, None))
    ax[0].set_title("The error grows with the mismatch")
    ax[0].legend(loc="upper left", frameon=False, fontsize=7)
    ax[1].axhline(0.05, color="k", lw=0.8, ls="--", label="5%: the false-alarm rate")
    ax[1].set(xlabel="mismatch step (0 = the simulator itself)", ylabel="fraction flagged", ylim=(0, 1))
    ax[1].set_title("The mismatch score sees one, not the other")
    ax[1].legend(loc="upper left", frameon=False, fontsize=7)
    _save(fig, "misspecification")


def attribution(key):
    school = _school()
    estimator, task, data = school["estimator"], school["task"], school["data"]
    bank = sgjax.SimulationBank.simulate(estimator, task, 4096, key=jax.random.fold_in(key, 3))
    idx, _ = bank.nearest(data.observations, k=10)
    rng = np.random.default_rng(0)
    random = rng.choice(len(bank.x), 10, replace=False)
    t = data.times
    fig, ax = plt.subplots(1, 2, figsize=(7.6, 3.0), sharey=True)
    for a, rows, title in (
        (ax[0], random, "10 simulations drawn from the prior"),
        (ax[1], idx[0], "the 10 nearest in the network's summary space"),
    ):
        for r in rows:
            a.plot(t, bank.x[r, :, 0], "-", color="C0", lw=0.8, alpha=0.6)
        a.plot(t, data.observations[:, 0], "ko", ms=3.5, label="1978 data")
        a.set(xlabel="day", title=title)
    ax[0].set_ylabel("boys confined to bed")
    ax[0].legend(loc="upper right", frameon=False, fontsize=7)
    _save(fig, "attribution")


def sequential(key):
    """The conjugate toy with a wide prior, mu ~ Uniform(-50, 50): the exact posterior
    (sd 0.32) is a three-hundredth of the prior's width. Round 1 is short on purpose:
    a budget too small to resolve the whole prior finely."""
    task = _toy(sgjax.Prior(mu=dist.Uniform(-50.0, 50.0)))
    k_fit1, k_fit2, k_fit3, k_obs, k1, k2, k3, k_eval = jax.random.split(key, 8)
    settings: dict[str, Any] = dict(
        steps=100, batch_size=256, validation_size=512, eval_every=50, steps_per_call=25, progress=False
    )
    first_estimator, _ = sgjax.fit(task, sgjax.heads.Gaussian(), key=k_fit1, pilot_size=1024, **settings)
    x = sgjax.simulate(task.simulator, key=k_obs, theta={"mu": jnp.array([12.3])}).observations
    first = sgjax.infer(first_estimator, x, key=k1, n_samples=4000)
    box = first.box()
    restricted = task.restrict(box)
    second_estimator, _ = sgjax.fit(restricted, init=first_estimator, key=k_fit2, **settings)
    second = sgjax.infer(second_estimator, x, key=k2, n_samples=4000)
    longer_estimator, _ = sgjax.fit(task, init=first_estimator, key=k_fit3, **settings)  # the same steps, whole prior
    longer = sgjax.infer(longer_estimator, x, key=k3, n_samples=4000)
    cover = sgjax.evaluate(second_estimator, restricted, 500, key=k_eval)["mu"]["coverage_90"]

    mean, sd = float(x.sum()) / 10.0, 1.0 / np.sqrt(10.0)  # a flat prior: the likelihood's shape
    lo, hi = box["mu"]
    grid = np.linspace(lo, hi, 300)
    fig, ax = plt.subplots(figsize=(6.0, 3.4))
    bins = np.linspace(lo, hi, 60).tolist()
    for post, label in (
        (first, "round 1: 100 steps, whole prior"),
        (longer, "+100 steps on the whole prior"),
        (second, "+100 steps on the box (round 2)"),
    ):
        s = _samples(post)["mu"][0]
        l90, h90 = np.quantile(s, [0.05, 0.95])
        ax.hist(s, bins=bins, density=True, histtype="step", lw=1.2, label=f"{label}: 90% width {h90 - l90:.2f}")
    ax.plot(grid, scipy.stats.norm.pdf(grid, mean, sd), "k-", lw=1, label=f"exact: 90% width {2 * 1.645 * sd:.2f}")
    ax.set(xlabel="mu (the x-range is round 1's box)", ylabel="posterior density", xlim=(lo, hi))
    ax.set_title(
        f"Prior Uniform(−50, 50), one observation\nround 2's 90% intervals cover {cover:.2f} of simulations from the box"
    )
    ax.legend(loc="upper left", frameon=False, fontsize=6.5)
    _save(fig, "sequential")


def _epidemic(ts, key):
    """SIR in a town of a million with an unknown initial number I0 and an unknown
    reporting fraction (1% to 100%), trained to estimate how many are infected on
    day 10 — a number no report shows."""
    model = sgjax.models.SIR(N=1e6, I0="I0", observable=sgjax.State("I"))
    simulator = sgjax.Simulator(model, ts, ObservationModel(Poisson(), transforms=(Reporting("rho"),)))
    prior = sgjax.Prior(
        beta=dist.LogUniform(0.4, 0.8),
        gamma=dist.LogUniform(0.1, 0.2),
        I0=dist.LogUniform(1.0, 20.0),
        rho=dist.LogUniform(0.01, 1.0),
    )
    task = sgjax.Task(simulator, [sgjax.Hidden("I", times=10.0, space="log1p")], prior)
    estimator, _ = sgjax.fit(
        task, sgjax.heads.Point(), key=key, steps=800, batch_size=256, validation_size=512, progress=False
    )
    return task, estimator


def unobservable(key):
    fig, ax = plt.subplots(1, 2, figsize=(7.6, 3.2), sharey=True)
    for i, (a, last) in enumerate(zip(ax, (10, 100))):
        task, estimator = _epidemic(jnp.arange(1.0, last + 1.0), jax.random.fold_in(key, 10 + i))
        post, truth = sgjax.diagnostics.held_out(estimator, task, 400, key=jax.random.fold_in(key, 20 + i))
        label = next(iter(truth))  # "I(t=10)"
        y, yhat = np.log(truth[label]), np.log(_point(post)[label])
        r2 = 1 - np.sum((yhat - y) ** 2) / np.sum((y - y.mean()) ** 2)
        a.loglog(np.exp(y), np.exp(yhat), ".", ms=3)
        lim = (np.exp(y.min()), np.exp(y.max()))
        a.plot(lim, lim, "k-", lw=0.8)
        a.set(xlabel="true number infected on day 10", title=f"reported counts, days 1–{last}: R² (log) = {r2:.2f}")
    ax[0].set_ylabel("network's posterior mean")
    _save(fig, "unobservable")


FIGURES = {
    "losses": losses,
    "amortization": amortization,
    "misspecification": misspecification,
    "attribution": attribution,
    "sequential": sequential,
    "unobservable": unobservable,
}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", help=f"figures to make: {', '.join(FIGURES)} (default all)")
    names = parser.parse_args(argv).names or list(FIGURES)
    unknown = [n for n in names if n not in FIGURES]
    if unknown:
        parser.error(f"unknown figure(s) {unknown}; choose from {', '.join(FIGURES)}")
    key = jax.random.key(2026)
    for name in names:
        start = time.perf_counter()
        print(f"{name}:")
        FIGURES[name](jax.random.fold_in(key, list(FIGURES).index(name)))
        print(f"  {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    sys.exit(main())
