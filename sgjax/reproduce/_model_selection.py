"""Experiment 4: an SGNN classifier chooses the mechanism behind the data with fewer
errors than AIC or BIC from maximum-likelihood fits of the same candidate models to
the same held-out data."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist

from .. import models
from .._prior import Prior
from .._simulator import Simulator
from .._task import ModelSelection
from ..baselines import fit_mle, select
from ..heads import Classifier
from ..observation import LogNormal, ObservationModel
from ._common import held_out, predict, train
from ._report import Report, fmt, pyplot

CLAIM = (
    "In model selection an SGNN trained to classify simulations makes about half the "
    "errors of AIC (goal here: at most 0.5× AIC's error rate in the default setting)."
)

N0 = 10.0
SIGMA_PRIOR = (0.05, 0.3)


def candidates(n_times: int, sigma=None, only=None) -> dict:
    """Exponential, logistic, Gompertz and Richards growth from `N0 = 10`, observed at
    times 1..n_times with multiplicative log-normal noise of scale `sigma` (a number,
    or `None` for `sigma ~ LogUniform(0.05, 0.3)`, unknown to both methods)."""
    ts = jnp.arange(1.0, n_times + 1)
    noise = {"sigma": dist.LogUniform(*SIGMA_PRIOR) if sigma is None else float(sigma)}
    k = dist.LogUniform(100.0, 1000.0)
    spec = {
        "exponential": (models.Exponential(N0=N0), {"r": dist.LogUniform(0.02, 0.2)}),
        "logistic": (models.Logistic(N0=N0), {"r": dist.LogUniform(0.1, 1.0), "K": k}),
        "gompertz": (models.Gompertz(N0=N0), {"r": dist.LogUniform(0.05, 0.5), "K": k}),
        "richards": (models.Richards(N0=N0), {"r": dist.LogUniform(0.1, 1.0), "K": k, "nu": dist.LogUniform(0.2, 5.0)}),
    }
    obs = ObservationModel(LogNormal("sigma"))
    return {name: (Simulator(m, ts, obs), Prior({**p, **noise})) for name, (m, p) in spec.items() if only is None or name in only}


def _bootstrap_ratio(wrong_a, wrong_b, key, n_boot: int = 2000):
    """A paired bootstrap 95% interval for error(a) / error(b) over datasets."""
    rng = np.random.default_rng(np.asarray(jax.random.key_data(key)).ravel()[-1])
    n = len(wrong_a)
    idx = rng.integers(0, n, size=(n_boot, n))
    a, b = wrong_a[idx].mean(1), np.maximum(wrong_b[idx].mean(1), 1e-12)
    return tuple(float(v) for v in np.quantile(a / b, [0.025, 0.975]))


def compare(cands: dict, *, key, steps: int, batch: int, n_test: int, n_mle: int, n_starts: int, progress: bool) -> dict:
    """Train the SGNN classifier, fit every candidate by MLE on the same held-out
    data, and score SGNN, AIC, AICc and BIC selection."""
    task = ModelSelection(cands)
    k_train, k_test, k_mle, k_boot = jax.random.split(key, 4)
    est, _ = train(task, Classifier(), key=k_train, steps=steps, batch_size=batch, progress=progress)
    x, mask, y = held_out(task, k_test, n_test)
    # Every method is scored on the same series: those the MLE baseline also fits.
    x, mask, y = x[:n_mle], mask[:n_mle], y[:n_mle]
    label = y[:, 0].astype(int)
    chosen = {"SGNN": predict(est, x, mask).probabilities.argmax(1)}
    fits = {
        name: fit_mle(sim, x, mask, prior=prior, key=jax.random.fold_in(k_mle, i), n_starts=n_starts)
        for i, (name, (sim, prior)) in enumerate(cands.items())
    }
    for criterion, column in (("aic", "AIC"), ("aicc", "AICc"), ("bic", "BIC")):
        chosen[column] = np.asarray(select(fits, criterion)[0])
    wrong = {m: (c != label).astype(float) for m, c in chosen.items()}
    n_models = len(cands)
    confusion = {
        m: np.array([[np.sum((label == i) & (c == j)) for j in range(n_models)] for i in range(n_models)]) for m, c in chosen.items()
    }
    err = {m: float(w.mean()) for m, w in wrong.items()}
    return {
        "n_test": int(len(label)),
        "error": err,
        "ratio_vs_aic": err["SGNN"] / max(err["AIC"], 1e-12),
        "ratio_ci": _bootstrap_ratio(wrong["SGNN"], wrong["AIC"], k_boot),
        "ratio_vs_bic": err["SGNN"] / max(err["BIC"], 1e-12),
        "mle_converged": {n: float(np.mean(np.asarray(f.converged))) for n, f in fits.items()},
        "confusion": confusion,
    }


def run(out, *, quick: bool = False, seed: int = 0, progress: bool = False) -> Report:
    report = Report("model-selection", "4. Model selection against AIC and BIC", CLAIM, out, quick)
    key = jax.random.key(seed)
    if quick:
        # Two of the four candidates: each candidate compiles its own fit.
        cfg = dict(steps=150, batch=256, n_test=200, n_mle=60, n_starts=2)
        grid, only = [], ("exponential", "logistic")
    else:
        cfg = dict(steps=3000, batch=512, n_test=1000, n_mle=1000, n_starts=6)
        grid, only = [(0.05, 30), (0.2, 15)], None
    names = list(candidates(30, only=only))
    main = compare(candidates(30, only=only), key=key, progress=progress, **cfg)
    cells = {}
    for g_i, (sigma, n_times) in enumerate(grid):
        small = dict(cfg, steps=1500, n_test=400, n_mle=400)
        cells[f"sigma={sigma},T={n_times}"] = {
            "sigma": sigma,
            "n_times": n_times,
            **compare(candidates(n_times, sigma), key=jax.random.fold_in(key, g_i + 1), progress=progress, **small),
        }
    report.text(
        "Candidates: exponential, logistic, Gompertz and Richards growth from N0 = 10 "
        "(Richards nests logistic at ν = 1), observed with multiplicative log-normal "
        "noise, equal prior model probabilities. The SGNN (MLP 2×256, classifier head) "
        "is trained on simulations from all four; the baselines fit every candidate by "
        "maximum likelihood (BFGS through the same diffrax solver, "
        f"{cfg['n_starts']} starts from the prior, noise scale fitted too) and pick the "
        "lowest AIC, AICc or BIC. All methods see the same held-out datasets; the ratio's "
        "95% interval is a paired bootstrap over datasets."
    )
    lo, hi = main["ratio_ci"]
    report.table(
        ["method", "error rate", "error / AIC's"],
        [[m, e, e / max(main["error"]["AIC"], 1e-12)] for m, e in main["error"].items()],
        caption=f"Default setting: 30 times, noise σ ~ LogUniform{SIGMA_PRIOR} unknown; "
        f"{main['n_test']:,} test series. SGNN / AIC = {fmt(main['ratio_vs_aic'])} "
        f"(95% CI {fmt(lo)}–{fmt(hi)}); goal ≤ 0.5.",
    )
    for method in ("SGNN", "AIC"):
        c = main["confusion"][method]
        report.table(
            ["true \\ chosen", *names],
            [[names[i], *[str(int(v)) for v in c[i]]] for i in range(len(names))],
            caption=f"Confusion matrix, {method}, default setting.",
        )
    if cells:
        report.table(
            ["noise σ", "times", "SGNN", "AIC", "AICc", "BIC", "SGNN / AIC (95% CI)"],
            [
                [
                    c["sigma"], str(c["n_times"]), c["error"]["SGNN"], c["error"]["AIC"], c["error"]["AICc"], c["error"]["BIC"],
                    f"{fmt(c['ratio_vs_aic'])} ({fmt(c['ratio_ci'][0])}–{fmt(c['ratio_ci'][1])})",
                ]
                for c in cells.values()
            ],
            caption="Error rates across noise levels (σ known to both methods) and series lengths.",
        )
    _figure(report, main, cells)
    report.data.update(default=main, grid=cells, candidates=names)
    report.data["headline"] = (
        f"SGNN error {main['error']['SGNN']:.3f} vs AIC {main['error']['AIC']:.3f}: ratio "
        f"{main['ratio_vs_aic']:.2f} (95% CI {lo:.2f}–{hi:.2f}; goal ≤ 0.5)"
    )
    return report


def _figure(report, main, cells) -> None:
    plt = pyplot()
    panels = [("default", main)] + list(cells.items())
    methods = list(main["error"])
    fig, ax = plt.subplots(figsize=(max(5, 1.6 * len(panels)), 3.8))
    width = 0.8 / len(methods)
    for m_i, m in enumerate(methods):
        ax.bar(np.arange(len(panels)) + m_i * width, [p["error"][m] for _, p in panels], width, label=m)
    ax.set_xticks(np.arange(len(panels)) + 0.4 - width / 2, [name.replace(",", "\n") for name, _ in panels], fontsize=8)
    ax.set_ylabel("misclassification rate")
    ax.set_title("Growth-model selection: SGNN against information criteria")
    ax.legend(fontsize=8)
    fig.tight_layout()
    report.figure(fig, "errors", "Error rates of SGNN, AIC, AICc and BIC selection in each setting.")
