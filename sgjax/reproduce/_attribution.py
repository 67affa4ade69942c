"""Experiment 6: attribute a prediction back to the simulations behind it — the
posterior model probabilities, and the nearest training simulations in the network's
learned summary space, whose parameters form a posterior sample that agrees with the
NUTS reference posterior as the bank of simulations grows."""

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist

from .. import models
from .._learning import ModelSelection
from .._simulation import Prior, Simulator
from .._stats import chi2_sf
from ..baselines import nuts
from ..diagnostics import mmd, SimulationBank
from ..heads import Classifier, Quantile
from ..observation import ObservationModel, Poisson, Reporting
from ._common import held_out, predict, SIR_DAYS, SIR_PARAMS, sir_prior, sir_reported, train
from ._report import fmt, pyplot, Report


CLAIM = (
    "Predictions can be attributed back to the simulated mechanisms that generated "
    "them: which model, and which simulations, an observation resembles."
)

DAYS = jnp.arange(1.0, SIR_DAYS + 1.0)
PARAMS = SIR_PARAMS
PRIOR = sir_prior().distributions


def _obs():
    return ObservationModel(Poisson(), (Reporting("rho"),))


def _chisquare_uniform(counts) -> float:
    """The p-value of Pearson's χ² test that `counts` come from equal bin
    probabilities."""
    counts = np.asarray(counts, float)
    expected = counts.sum() / len(counts)
    stat = float(np.sum((counts - expected) ** 2 / expected))
    return float(chi2_sf(stat, len(counts) - 1))


def _neighbour_vs_reference(theta_nb, ref) -> dict:
    """How a neighbour sample `(k, p)` compares with reference draws `(d, p)`:
    standardised bias, sd ratio, and MMD² in reference-standardised units."""
    mu, sd = ref.mean(0), ref.std(0)
    return {
        "bias_sd": np.abs(theta_nb.mean(0) - mu) / sd,
        "sd_ratio": theta_nb.std(0) / sd,
        "mmd2": mmd((theta_nb - mu) / sd, (ref[:: max(1, len(ref) // 500)] - mu) / sd),
    }


def run(out, *, quick: bool = False, seed: int = 0, progress: bool = False) -> Report:
    report = Report("attribution", "6. Mechanistic attribution", CLAIM, out, quick)
    key = jax.random.key(seed)
    if quick:
        steps, batch, sizes, n_ref, n_cal, n_bank_ms = 100, 256, (1024, 4096), 2, 300, 1024
        nuts_kwargs: dict[str, Any] = {"num_warmup": 100, "num_samples": 150, "num_chains": 2}
    else:
        steps, batch, sizes, n_ref, n_cal, n_bank_ms = 3000, 512, (1024, 4096, 16384, 65536), 8, 1000, 16384
        nuts_kwargs = {"num_warmup": 400, "num_samples": 500, "num_chains": 2}
    ks = dict(zip(("train", "bank", "obs", "nuts", "cal", "ms_train", "ms_bank", "ms_test"), jax.random.split(key, 8)))
    sim, task = sir_reported()
    prior = Prior(PRIOR)
    with report.phase("SGNN training"):
        # At 1e-3, not fit's default 3e-3: the embedding then retrieves neighbours that agree
        # more closely with NUTS (abs. bias / sd 0.47 against 0.61 at the largest bank for
        # seed 0, 0.53 against 0.56 for seed 1; benchmarks/RESULTS.md, "Default learning rate").
        est, _ = train(
            task, Quantile(), key=ks["train"], steps=steps, batch_size=batch, progress=progress, learning_rate=1e-3
        )
    with report.phase("bank"):
        bank = SimulationBank.simulate(est, task, sizes[-1], key=ks["bank"])

    # Posterior consistency against NUTS as the bank grows.
    x_obs, m_obs, _ = held_out(task, ks["obs"], n_ref)
    with report.phase("NUTS"):
        ref = nuts(sim, x_obs, m_obs, prior=prior, key=ks["nuts"], **nuts_kwargs)
    ref_draws = np.stack([ref.samples[p] for p in PARAMS], axis=-1)  # (n_ref, draws, p)
    consistency = []
    for m in sizes:
        k = int(np.sqrt(m))
        idx, _ = bank.nearest(x_obs, m_obs, k, first=m)
        per = [_neighbour_vs_reference(bank.y[idx[i], : len(PARAMS)], ref_draws[i]) for i in range(len(x_obs))]
        consistency.append(
            {
                "bank": m,
                "k": k,
                "bias_sd": float(np.mean([p["bias_sd"] for p in per])),
                "sd_ratio": float(np.mean([p["sd_ratio"] for p in per])),
                "mmd2": float(np.mean([p["mmd2"] for p in per])),
            }
        )

    # Calibration of the neighbour posterior on fresh simulations: ranks of the truth.
    x_cal, m_cal, y_cal = held_out(task, ks["cal"], n_cal)
    truth = np.stack([np.asarray(sp.inverse(y_cal[:, j])) for j, sp in enumerate(est.spaces)], axis=1)[:, : len(PARAMS)]
    k_big = consistency[-1]["k"]
    idx, _ = bank.nearest(x_cal, m_cal, k_big)
    nb = bank.y[idx][:, :, : len(PARAMS)]  # (n, k, p)
    ranks = (nb < truth[:, None, :]).sum(1)  # 0..k
    bins = 10
    calib = {}
    for j, p in enumerate(PARAMS):
        counts = np.histogram(ranks[:, j], bins=bins, range=(0, k_big + 1))[0]
        lo, hi = np.quantile(nb[:, :, j], [0.05, 0.95], axis=1)
        calib[p] = {
            "chi2_p_value": _chisquare_uniform(counts),
            "coverage_90": float(np.mean((truth[:, j] >= lo) & (truth[:, j] <= hi))),
            "counts": counts,
        }

    # Which mechanism: posterior model probabilities against the neighbours' models.
    cands = {
        "SIR": (Simulator(models.SIR(N=1000.0, I0=5.0), DAYS, _obs()), Prior(PRIOR)),
        "SEIR": (
            Simulator(models.SEIR(N=1000.0, I0=5.0), DAYS, _obs()),
            Prior({**PRIOR, "sigma": dist.LogUniform(0.2, 1.0)}),
        ),
        "SIRS": (
            Simulator(models.SIRS(N=1000.0, I0=5.0), DAYS, _obs()),
            Prior({**PRIOR, "omega": dist.LogUniform(0.01, 0.2)}),
        ),
    }
    if quick:
        del cands["SIRS"]
    ms = ModelSelection(cands)
    with report.phase("classifier training and bank"):
        clf, _ = train(ms, Classifier(), key=ks["ms_train"], steps=steps, batch_size=batch, progress=progress)
        ms_bank = SimulationBank.simulate(clf, ms, n_bank_ms, key=ks["ms_bank"])
    x_ms, m_ms, y_ms = held_out(ms, ks["ms_test"], 300 if quick else 1500)
    probs = predict(clf, x_ms, m_ms).probabilities
    assert probs is not None  # a classifier's
    k_ms = int(np.sqrt(n_bank_ms))
    idx_ms, _ = ms_bank.nearest(x_ms, m_ms, k_ms)
    frac = np.stack([(ms_bank.y[idx_ms, 0] == c).mean(1) for c in range(len(cands))], axis=1)
    label = y_ms[:, 0].astype(int)
    examples = [int(np.flatnonzero(label == c)[0]) for c in range(len(cands))]
    mechanism = {
        "k": k_ms,
        "mean_abs_diff": float(np.mean(np.abs(probs - frac))),
        "accuracy_classifier": float(np.mean(probs.argmax(1) == label)),
        "accuracy_neighbours": float(np.mean(frac.argmax(1) == label)),
        "examples": [
            {"true": list(cands)[label[i]], "probabilities": probs[i], "neighbour_fractions": frac[i]} for i in examples
        ],
    }
    _write(report, consistency, calib, mechanism, list(cands), nuts_kwargs, bank, x_obs, m_obs, ref_draws)
    return report


def _write(report, consistency, calib, mechanism, names, nuts_kwargs, bank, x_obs, m_obs, ref_draws) -> None:
    report.text(
        "An SGNN (MLP 2×256, quantile head for β, γ, ρ and R0) is trained on SIR with "
        "Poisson-reported incidence (40 days). Its output is a learned summary of a "
        "series; a bank of simulations is summarised the same way, and for an "
        "observation we retrieve the k = √M nearest of the bank's first M simulations. "
        "Their parameters are a posterior sample (ABC with the network's summary): we "
        "compare it with NUTS on the same data "
        f"({nuts_kwargs['num_chains']} chains × {nuts_kwargs['num_samples']} draws) as M grows."
    )
    report.table(
        ["bank size M", "neighbours k", "abs. bias / posterior sd", "sd ratio (neighbours / NUTS)", "MMD² to NUTS"],
        [[f"{c['bank']:,}", str(c["k"]), c["bias_sd"], c["sd_ratio"], c["mmd2"]] for c in consistency],
        caption=f"Posterior consistency, mean over {len(x_obs)} observations and the three parameters.",
    )
    report.table(
        ["parameter", "90% coverage", "rank uniformity p-value (χ², 10 bins)"],
        [[p, c["coverage_90"], c["chi2_p_value"]] for p, c in calib.items()],
        caption="Calibration of the neighbour posterior (largest bank) on fresh simulations: the "
        "truth's rank among the neighbours is uniform when the neighbour posterior is calibrated.",
    )
    report.table(
        ["true model", *[f"P({n} | x)" for n in names], *[f"neighbours from {n}" for n in names]],
        [[e["true"], *e["probabilities"], *e["neighbour_fractions"]] for e in mechanism["examples"]],
        caption=f"Which mechanism: the classifier's posterior model probabilities next to the share of "
        f"each model among the {mechanism['k']} nearest simulations, for one test series per model. Over "
        f"all test series the two differ by {fmt(mechanism['mean_abs_diff'])} on average; accuracy "
        f"{fmt(mechanism['accuracy_classifier'])} (classifier) and {fmt(mechanism['accuracy_neighbours'])} "
        "(majority of neighbours).",
    )
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    i = 0
    idx, _ = bank.nearest(x_obs[i : i + 1], m_obs[i : i + 1], consistency[-1]["k"])
    for j in idx[0][:25]:
        axes[0].plot(DAYS, bank.x[j, :, 0], color="tab:blue", alpha=0.2, lw=1)
    axes[0].plot(DAYS, x_obs[i, :, 0], "k.-", label="observation")
    axes[0].set_xlabel("day")
    axes[0].set_ylabel("reported cases")
    axes[0].set_title("An observation and its 25 nearest simulations")
    axes[0].legend(fontsize=8)
    axes[1].plot(ref_draws[i, :, 0], ref_draws[i, :, 1], ".", ms=2, alpha=0.3, color="gray", label="NUTS")
    axes[1].plot(bank.y[idx[0], 0], bank.y[idx[0], 1], ".", ms=4, color="tab:red", label="nearest simulations")
    axes[1].set_xlabel("β")
    axes[1].set_ylabel("γ")
    axes[1].set_title("Their parameters against the posterior")
    axes[1].legend(fontsize=8)
    axes[2].loglog([c["bank"] for c in consistency], [c["mmd2"] for c in consistency], "o-", label="MMD² to NUTS")
    axes[2].loglog([c["bank"] for c in consistency], [c["bias_sd"] for c in consistency], "s-", label="abs. bias / sd")
    axes[2].set_xlabel("bank size M")
    axes[2].set_title("Consistency as the bank grows")
    axes[2].legend(fontsize=8)
    fig.tight_layout()
    report.figure(
        fig,
        "neighbours",
        "Attribution back to simulations: the nearest simulations to an observation in the network's summary space, their parameters against NUTS, and agreement with NUTS as the bank grows.",
    )
    report.data.update(consistency=consistency, calibration=calib, mechanism=mechanism)
    c0, c1 = consistency[0], consistency[-1]
    report.data["headline"] = (
        f"neighbour posterior vs NUTS: MMD² {fmt(c0['mmd2'])} → {fmt(c1['mmd2'])}, bias/sd {c0['bias_sd']:.2f} → "
        f"{c1['bias_sd']:.2f} as the bank grows {c0['bank']:,} → {c1['bank']:,}; model probabilities match "
        f"neighbour shares to {mechanism['mean_abs_diff']:.2f}"
    )
