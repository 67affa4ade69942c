"""Experiment 1: with squared loss an SGNN converges to the Bayes-optimal predictor,
the posterior mean E[T(θ) | x], on problems whose posterior is known exactly."""

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist

from .. import models
from .._learning import Parameter, Task
from .._simulation import Prior, simulate, Simulator
from ..heads import Point
from ..observation import LogNormal, ObservationModel, Poisson, Scale
from ._common import held_out, loglog_slope, predict, train
from ._report import fmt, pyplot, Report


CLAIM = (
    "With squared loss, a network trained on simulations learns the posterior mean "
    "E[T(θ) | x] under the simulation prior: its error to the exact posterior mean, "
    "and so its excess risk over the Bayes risk, goes to zero as the number of "
    "training simulations grows."
)


@dataclasses.dataclass
class Problem:
    name: str
    description: str
    task: Task
    #: x `(n, time, 1)` → the exact posterior mean and variance of the target.
    posterior: Callable


def sir_reporting() -> Problem:
    """SIR with a known epidemic curve s and an unknown reporting multiplier
    ρ ~ Gamma(a, b); x_t ~ Poisson(ρ s_t). The posterior is Gamma(a + Σx, b + Σs)."""
    a, b = 4.0, 8.0
    sim = Simulator(
        models.SIR(N=1000.0, I0=5.0),
        jnp.arange(1.0, 41.0),
        ObservationModel(Poisson(), (Scale("rho"),)),
    )
    prior = Prior(beta=0.5, gamma=0.25, rho=dist.Gamma(a, b))
    clean = simulate(
        sim,
        key=jax.random.key(0),
        theta={"beta": jnp.array([0.5]), "gamma": jnp.array([0.25]), "rho": jnp.array([1.0])},
    )
    s_total = float(np.asarray(clean.signal, np.float64).sum())

    def posterior(x):
        shape = a + np.asarray(x, np.float64).sum((1, 2))
        return shape / (b + s_total), shape / (b + s_total) ** 2

    return Problem(
        "sir-reporting",
        "SIR (N = 1000, β = 0.5, γ = 0.25), 40 days of Poisson incidence, reporting "
        f"multiplier ρ ~ Gamma({a:g}, {b:g}): exact posterior Gamma(a + Σx, b + Σs)",
        Task(sim, [Parameter("rho", space="identity")], prior),
        posterior,
    )


def growth_lognormal() -> Problem:
    """Exponential growth N(t) = N0 e^{rt} observed with log-normal noise, r ~ Normal:
    log x_t = log N0 + r t + σ ε_t is linear-Gaussian in r, so the posterior is Normal."""
    m0, s0, sigma, n0 = 0.15, 0.05, 0.3, 10.0
    ts = jnp.arange(1.0, 21.0)
    sim = Simulator(models.Exponential(N0=n0), ts, ObservationModel(LogNormal(sigma)))
    prior = Prior(r=dist.Normal(m0, s0))
    t = np.asarray(ts, np.float64)
    precision = 1 / s0**2 + np.sum(t**2) / sigma**2

    def posterior(x):
        z = np.log(np.asarray(x, np.float64)[:, :, 0]) - np.log(n0)
        mean = (m0 / s0**2 + z @ t / sigma**2) / precision
        return mean, np.full_like(mean, 1 / precision)

    return Problem(
        "growth-lognormal",
        f"exponential growth (N0 = {n0:g}), 20 times, log-normal noise σ = {sigma}, "
        f"r ~ Normal({m0}, {s0}): exact Normal posterior (linear-Gaussian in r)",
        Task(sim, [Parameter("r", space="identity")], prior),
        posterior,
    )


def run(out, *, quick: bool = False, seed: int = 0, progress: bool = False) -> Report:
    report = Report("convergence", "1. Convergence to the Bayes-optimal predictor", CLAIM, out, quick)
    budgets = [2**10, 2**13] if quick else [2**10, 2**12, 2**14, 2**16, 2**18]
    problems = [growth_lognormal()] if quick else [sir_reporting(), growth_lognormal()]
    n_test = 2000 if quick else 8000
    key = jax.random.key(seed)
    results = {}
    for p_i, problem in enumerate(problems):
        k_test, k_train = jax.random.split(jax.random.fold_in(key, p_i))
        x, mask, y = held_out(problem.task, k_test, n_test)
        mean, var = problem.posterior(x)
        y = y[:, 0]
        bayes_risk = float(np.mean((mean - y) ** 2))
        rows = []
        for b_i, n in enumerate(budgets):
            # At least ~10 epochs over the budget (up to 10,000 steps), so that the large
            # budgets are trained out rather than stopped after a pass or two.
            batch = min(512, n // 4)
            steps = 300 if quick else int(np.clip(10 * n // batch, 1500, 10_000))
            with report.phase(f"{problem.name}: training"):
                est, _ = train(
                    problem.task,
                    Point(),
                    key=jax.random.fold_in(k_train, b_i),
                    steps=steps,
                    batch_size=batch,
                    budget=n,
                    progress=progress,
                )
            point = predict(est, x, mask).point
            assert point is not None  # a point head's
            f = point[est.labels[0]]
            rows.append(
                {
                    "n_train": n,
                    "mse_to_posterior_mean": float(np.mean((f - mean) ** 2)),
                    "risk": float(np.mean((f - y) ** 2)),
                    "excess_risk": float(np.mean((f - y) ** 2)) - bayes_risk,
                }
            )
        last = f
        slope = loglog_slope([r["n_train"] for r in rows], [r["mse_to_posterior_mean"] for r in rows])
        results[problem.name] = {
            "description": problem.description,
            "bayes_risk": bayes_risk,
            "mean_posterior_variance": float(np.mean(var)),
            "slope": slope,
            "budgets": rows,
            "n_test": int(len(y)),
            "example": {"exact": mean[:200], "sgnn": last[:200]},
        }
    _write(report, problems, results)
    return report


def _write(report: Report, problems, results) -> None:
    report.text(
        "For each problem the network (MLP 2×256, point head, squared loss) is trained "
        "on a fixed budget of n simulations (epochs, early stopping on a separate "
        "validation set), then compared on held-out simulations with the **exact** "
        "posterior mean. By the squared-loss decomposition, excess risk = E[(f(x) − "
        "E[y|x])²], so the two error columns estimate the same quantity; the first is "
        "the low-noise estimate."
    )
    for problem in problems:
        r = results[problem.name]
        report.table(
            [
                "training simulations",
                "MSE to exact posterior mean",
                "risk E(f − y)²",
                "excess risk",
                "MSE / Bayes risk",
            ],
            [
                [
                    f"{b['n_train']:,}",
                    b["mse_to_posterior_mean"],
                    b["risk"],
                    b["excess_risk"],
                    b["mse_to_posterior_mean"] / r["bayes_risk"],
                ]
                for b in r["budgets"]
            ],
            caption=f"{problem.name}: {problem.description}. Bayes risk (mean posterior "
            f"variance) {fmt(r['bayes_risk'])}; log–log slope of the MSE {fmt(r['slope'])}; "
            f"{r['n_test']:,} test series.",
        )
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for problem in problems:
        r = results[problem.name]
        n = [b["n_train"] for b in r["budgets"]]
        rel = [b["mse_to_posterior_mean"] / r["bayes_risk"] for b in r["budgets"]]
        axes[0].loglog(n, rel, "o-", label=f"{problem.name} (slope {r['slope']:.2f})")
    axes[0].set_xlabel("training simulations n")
    axes[0].set_ylabel("MSE to exact posterior mean / Bayes risk")
    axes[0].set_title("Error to the Bayes-optimal predictor")
    axes[0].legend(fontsize=8)
    ex = results[problems[-1].name]["example"]
    axes[1].plot(ex["exact"], ex["sgnn"], ".", ms=3)
    lo, hi = float(np.min(ex["exact"])), float(np.max(ex["exact"]))
    axes[1].plot([lo, hi], [lo, hi], "k--", lw=1)
    axes[1].set_xlabel("exact posterior mean")
    axes[1].set_ylabel("SGNN prediction")
    axes[1].set_title(f"{problems[-1].name}, largest n")
    fig.tight_layout()
    report.figure(
        fig,
        "loglog",
        "SGNN error to the exact posterior mean against training simulations (log–log), and SGNN against exact posterior means on test data.",
    )
    first = results[problems[0].name]
    b0, b1 = first["budgets"][0], first["budgets"][-1]
    report.data.update(results=results)
    report.data["headline"] = (
        f"{problems[0].name}: MSE to the exact posterior mean falls "
        f"{b0['mse_to_posterior_mean'] / b1['mse_to_posterior_mean']:.0f}× from n = {b0['n_train']:,} to "
        f"{b1['n_train']:,} (slope {first['slope']:.2f}), ending at "
        f"{b1['mse_to_posterior_mean'] / first['bayes_risk']:.1%} of the Bayes risk"
    )
