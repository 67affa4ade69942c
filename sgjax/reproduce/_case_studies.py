"""Real-data case studies: a normalising-flow SGNN posterior against NUTS on the same
simulator, for the 1978 boarding-school influenza outbreak (SIR and SEIR) and the
Hudson's Bay hare and lynx pelts (Lotka–Volterra), each with its time to agreement
(C2ST ≤ 0.6), a posterior predictive check and a misspecification score."""

import time

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist

from .. import datasets, models
from .._inference import infer, stack
from .._learning import Task
from .._simulation import Prior, Simulator, State
from .._training import fit
from ..baselines import nuts
from ..diagnostics import c2st, MismatchScore, posterior_predictive
from ..heads import Flow
from ..observation import LogNormal, NegativeBinomial, ObservationModel, Reporting
from ._report import fmt, pyplot, Report


#: C2ST accuracy at or below which the SGNN posterior counts as agreeing with NUTS
#: (0.5: indistinguishable; sbibm's usual bar for a good posterior is ~0.6).
C2ST_GOAL = 0.6
#: The peak learning rate, measured on the boarding-school SIR problem: 4,000 steps at
#: 3e-3 matched NUTS better than 6,000 at 1e-3. `fit`'s default is the same now; kept
#: explicit so that the case studies do not move with the default.
LEARNING_RATE = 3e-3
#: Steps per round, the most rounds and the batch size, per problem, at default
#: settings. Short rounds, more of them, reach a posterior sooner where a round's steps
#: suffice: on the boarding-school SIR problem (2 CPU cores, one seed each) rounds of
#: 1,000 steps reached C2ST 0.59 in 59 s (3 rounds) against 0.57 in 92 s for two rounds
#: of 4,000 (on a slow machine; the first round is mostly compilation). SEIR's
#: five-parameter posterior stalled at 0.63–0.67 over six rounds of 1,000 (81 s) and
#: reaches 0.56 in rounds of 4,000. SIR trains on batches of 256: a round costs ~65% of
#: one of 512, and C2ST ≤ 0.6 came in as many rounds for two of three seeds
#: (`python benchmarks/case_study_rounds.py --batch 256 --warm 1000,1000,1000,1000`,
#: 2026-12-03: 16.1–16.5 s against NUTS's 17.6–18.5 s; the third seed a round later,
#: 18.6 s). SEIR too (`--problem SEIR --batch 256 --warm 4000,4000,4000`): C2ST ≤ 0.6 at
#: 31.3 s (round 2) and 41.1 s (round 3) for two seeds, against NUTS's 35.6 and 35.0 s;
#: 41.3 s at batch 512 in the full run before. Within a problem every round has the
#: same steps: the optimiser's schedule is compiled into the training step.
SCHEDULES = {"SIR": (1000, 6, 256), "SEIR": (4000, 3, 256), "Lotka–Volterra": (1000, 6, 512)}


def boarding_school_problems(quick: bool) -> dict:
    """SIR (and, unless `quick`, SEIR) for the 763 boys with one infectious boy on day
    0: the number ill `I(t)` (SEIR: also from `I`) on days 1–14, of which a fraction
    is confined to bed, with negative-binomial noise — the main job's model."""
    data = datasets.boarding_school()
    obs = ObservationModel(NegativeBinomial("dispersion"), (Reporting("reporting"),))
    base = {
        "beta": dist.LogUniform(0.5, 5.0),
        "gamma": dist.LogUniform(0.1, 2.0),
        "reporting": dist.Uniform(0.3, 1.0),
        "dispersion": dist.LogUniform(2.0, 200.0),
    }
    out = {"SIR": (Simulator(models.SIR(N=763.0, I0=1.0, observable=State("I")), data.times, obs, t0=0.0), Prior(base))}
    if not quick:
        seir = models.SEIR(N=763.0, I0=1.0, observable=State("I"))
        out["SEIR"] = (Simulator(seir, data.times, obs, t0=0.0), Prior({**base, "sigma": dist.LogUniform(0.5, 5.0)}))
    return {name: (sim, prior, data.values, data.mask) for name, (sim, prior) in out.items()}


def hudson_bay_problem() -> dict:
    """Lotka–Volterra for the pelts (thousands), started at the 1900 counts (30 hares,
    4 lynx) and observed 1901–1920 with log-normal noise of unknown scale σ."""
    data = datasets.hudson_bay()
    ts = jnp.asarray(data.times[1:] - data.times[0], float)
    model = models.LotkaVolterra(prey0=float(data.values[0, 0]), predator0=float(data.values[0, 1]))
    sim = Simulator(model, ts, ObservationModel(LogNormal("sigma")), t0=0.0)
    prior = Prior(
        alpha=dist.LogUniform(0.2, 2.0),
        beta=dist.LogUniform(0.005, 0.1),
        delta=dist.LogUniform(0.005, 0.1),
        gamma=dist.LogUniform(0.2, 2.0),
        sigma=dist.LogUniform(0.05, 1.0),
    )
    return {"Lotka–Volterra": (sim, prior, data.values[1:], data.mask[1:])}


def study(
    sim, prior, x, mask, *, key, steps, rounds, learning_rate, batch, nuts_kwargs, n_draws, report, name, progress
) -> dict:
    """NUTS on the observation, then a Flow SGNN: first amortized over the whole prior,
    then — until it agrees with NUTS (C2ST ≤ 0.6) or `rounds` are spent — trained on
    from where it stands on the prior restricted to a box around the last round's
    posterior (truncated sequential NPE). Every round has the same settings, so only
    the first compiles.
    Then the posterior predictive and the misspecification score."""
    names = tuple(n for n, d in prior.distributions.items() if not isinstance(d, dist.Delta))
    k_nuts, k_train, k_c2st, k_ppc, k_score = jax.random.split(key, 5)
    with report.phase(f"{name}: NUTS"):
        t = time.perf_counter()
        ref = nuts(sim, x, mask, prior=prior, key=k_nuts, **nuts_kwargs)
        nuts_seconds = time.perf_counter() - t
    ref_draws = stack(ref.samples, names)[0]
    ref_draws = ref_draws[np.random.default_rng(0).permutation(len(ref_draws))[:n_draws]]
    runs, amortized, elapsed, task, est = [], None, 0.0, Task(sim, names, prior), None
    for r_i in range(rounds):
        with report.phase(f"{name}: SGNN training"):
            t = time.perf_counter()
            # A later round starts from the last round's network and flow: on the SIR
            # problem C2ST ≤ 0.6 came a round sooner (two seeds, 1,000-step rounds).
            head, network = (Flow(), None) if est is None else (est.head, est.network)
            est, _ = fit(task, head, network, key=jax.random.fold_in(k_train, r_i), steps=steps, batch_size=batch,
                         learning_rate=learning_rate, progress=progress)  # fmt: skip
            post = infer(est, x, mask, key=jax.random.fold_in(k_train, 100 + r_i), n_samples=n_draws)
            elapsed += time.perf_counter() - t
        amortized = amortized or (est, task)
        # Once compiled, what each further posterior costs.
        t = time.perf_counter()
        infer(est, x, mask, key=jax.random.fold_in(k_train, 200 + r_i), n_samples=n_draws)
        infer_ms = 1e3 * (time.perf_counter() - t)
        draws = post.stacked()[0]  # (draws, k), in the order of `names`
        # Positive parameters compared on the log scale, where the posteriors are
        # closer to Gaussian and the classifier's z-scoring suits them.
        acc = c2st(np.log(draws), np.log(ref_draws), key=jax.random.fold_in(k_c2st, r_i))
        runs.append({"round": r_i + 1, "prior": "whole" if r_i == 0 else "restricted", "steps": steps,
                     "train_seconds": elapsed, "infer_ms": infer_ms, "c2st": acc, "draws": draws})  # fmt: skip
        if acc <= C2ST_GOAL:
            break
        task = task.restrict(post.box())  # the same learning spaces: the compiled step is reused
    assert amortized is not None  # rounds ≥ 1
    est, task = amortized  # the misspecification score asks about the whole simulated world
    best = runs[-1]
    with report.phase(f"{name}: checks"):
        theta = {n: best["draws"][:, j] for j, n in enumerate(names)}
        ppc = posterior_predictive(sim, theta, x, mask, key=k_ppc)
        score = MismatchScore.fit(est, task, key=k_score, n_reference=2048, n_calibration=1024).score(
            x[None], mask[None]
        )
    return {
        "names": names,
        "nuts_seconds": nuts_seconds,
        "nuts_r_hat": float(max(np.max(v) for v in ref.r_hat.values())),
        "nuts_divergences": int(np.sum(ref.divergences)),
        "runs": [{k: v for k, v in r.items() if k != "draws"} for r in runs],
        "reached": best["c2st"] <= C2ST_GOAL,
        "sgnn_mean": dict(zip(names, best["draws"].mean(0))),
        "sgnn_sd": dict(zip(names, best["draws"].std(0))),
        "nuts_mean": dict(zip(names, ref_draws.mean(0))),
        "nuts_sd": dict(zip(names, ref_draws.std(0))),
        "ppc_inside": ppc.inside,
        "ppc_p_values": ppc.p_values,
        "mismatch_p_value": float(np.asarray(score["p_value"])[0]),
        "mismatch_flagged": bool(np.asarray(score["flagged"])[0]),
        "_plot": (best["draws"], ref_draws, ppc),
    }


def _run(report, problems, *, quick, seed, progress, ylabel):
    key = jax.random.key(seed)
    if quick:
        schedules, n_draws = dict.fromkeys(problems, (150, 2, 256)), 500
        nuts_kwargs = dict(num_warmup=100, num_samples=150, num_chains=2)
    else:
        schedules, n_draws = {name: SCHEDULES[name] for name in problems}, 2000
        # Chains start at the best of 256 prior draws: the Lotka–Volterra likelihood has
        # poor local modes (flat fits with large σ) that strand chains started anywhere.
        nuts_kwargs = dict(num_warmup=1000, num_samples=1000, num_chains=4, n_init=256)
    results = {}
    for p_i, (name, (sim, prior, x, mask)) in enumerate(problems.items()):
        steps, rounds, batch = schedules[name]
        results[name] = study(
            sim,
            prior,
            x,
            mask,
            key=jax.random.fold_in(key, p_i),
            steps=steps,
            rounds=rounds,
            learning_rate=LEARNING_RATE,
            batch=batch,
            nuts_kwargs=nuts_kwargs,
            n_draws=n_draws,
            report=report,
            name=name,
            progress=progress,
        )
    rows = []
    for name, r in results.items():
        last = r["runs"][-1]
        rows.append(
            [
                name, f"{schedules[name][0]:,} × ≤ {schedules[name][1]} (batch {schedules[name][2]})", f"{r['nuts_seconds']:.0f} s",
                " → ".join(f"{run['c2st']:.2f}" for run in r["runs"]),
                f"{last['train_seconds']:.0f} s", "yes" if r["reached"] else "no", f"{r['runs'][0]['infer_ms']:.0f} ms",
                f"{r['mismatch_p_value']:.2f}", fmt(r["ppc_inside"]),
            ]
        )  # fmt: skip
    report.table(
        [
            "model",
            "steps × rounds",
            "NUTS time",
            "C2ST vs NUTS, round by round",
            "SGNN training, all rounds",
            f"≤ {C2ST_GOAL}?",
            "each further posterior (round 1)",
            "misspecification p",
            "data in 90% PPC band",
        ],  # fmt: skip
        rows,
        caption=f"The flow SGNN against NUTS ({nuts_kwargs['num_chains']} chains × {nuts_kwargs['num_samples']} "
        f"draws after {nuts_kwargs['num_warmup']} warmup) on the same simulator and data (C2ST 0.5: "
        "indistinguishable). Round 1 trains over the whole prior (an amortized estimator: any further "
        "observation's posterior costs milliseconds); each further round trains as many steps on the prior "
        "restricted to a box around the last posterior (`Task.restrict`, `Posterior.box`), until C2ST ≤ "
        f"{C2ST_GOAL} or the rounds are spent. Training times include compilation and the inference between "
        "rounds. A misspecification p-value near 0 says the data lie outside the simulated world (it asks round "
        "1's estimator, so it depends on how long round 1 trained).",
    )
    for name, r in results.items():
        report.table(
            ["parameter", "SGNN mean", "NUTS mean", "SGNN sd", "NUTS sd"],
            [[n, r["sgnn_mean"][n], r["nuts_mean"][n], r["sgnn_sd"][n], r["nuts_sd"][n]] for n in r["names"]],
            caption=f"{name}: posterior summaries (NUTS max R-hat {r['nuts_r_hat']:.3f}, "
            f"{r['nuts_divergences']} divergences).",
        )
    _figure(report, results, ylabel)
    for r in results.values():
        r.pop("_plot")
    report.data.update(results=results, schedules=schedules, learning_rate=LEARNING_RATE, nuts=nuts_kwargs)
    report.data["headline"] = "; ".join(
        f"{name}: C2ST {r['runs'][-1]['c2st']:.2f} after {r['runs'][-1]['train_seconds']:.0f} s of training "
        f"(NUTS {r['nuts_seconds']:.0f} s), then {r['runs'][-1]['infer_ms']:.0f} ms per posterior"
        for name, r in results.items()
    )
    return report


def _figure(report, results, ylabel) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(len(results), 2, figsize=(10, 3.8 * len(results)), squeeze=False)
    for row, (name, r) in zip(axes, results.items()):
        draws, ref, ppc = r["_plot"]
        ax = row[0]
        ax.plot(ref[:, 0], ref[:, 1], ".", ms=2, alpha=0.3, color="gray", label="NUTS")
        ax.plot(draws[:, 0], draws[:, 1], ".", ms=2, alpha=0.3, color="tab:red", label="SGNN (flow)")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(r["names"][0])
        ax.set_ylabel(r["names"][1])
        ax.set_title(f"{name}: posterior, C2ST {r['runs'][-1]['c2st']:.2f}")
        ax.legend(fontsize=8, markerscale=4)
        ax = row[1]
        for c in range(ppc.median.shape[1]):
            ax.fill_between(ppc.ts, ppc.lower[:, c], ppc.upper[:, c], alpha=0.25)
            ax.plot(ppc.ts, ppc.median[:, c], lw=1)
            ax.plot(ppc.ts, ppc.observed[:, c], "k.")
        ax.set_xlabel("time")
        ax.set_ylabel(ylabel)
        ax.set_title(f"{name}: posterior predictive 90% band and data")
    fig.tight_layout()
    report.figure(
        fig,
        "posterior",
        "Each model: the SGNN flow posterior against NUTS (first two parameters) and the posterior predictive band against the data.",
    )


def run_boarding_school(out, *, quick: bool = False, seed: int = 0, progress: bool = False) -> Report:
    report = Report(
        "boarding-school",
        "Case study: influenza in a boarding school, 1978",
        "An SGNN with a normalising-flow head gives the same posterior as NUTS on real data, "
        "sooner, and every further posterior in milliseconds.",
        out,
        quick,
    )
    report.text(
        "763 boys, 14 days of counts confined to bed from 1978-01-22 (BMJ 1978). SIR and SEIR "
        "with one infectious boy on day 0; the number ill is observed through a reporting "
        "fraction with negative-binomial noise. Priors: β ~ LogU(0.5, 5), γ ~ LogU(0.1, 2), "
        "reporting ~ U(0.3, 1), dispersion ~ LogU(2, 200), SEIR's σ ~ LogU(0.5, 5)."
    )
    return _run(
        report,
        boarding_school_problems(quick),
        quick=quick,
        seed=seed,
        progress=progress,
        ylabel="boys confined to bed",
    )


def run_hudson_bay(out, *, quick: bool = False, seed: int = 0, progress: bool = False) -> Report:
    report = Report(
        "hare-lynx",
        "Case study: hares and lynx, Hudson's Bay Company, 1900–1920",
        "An SGNN with a normalising-flow head gives the same Lotka–Volterra posterior as NUTS on real data.",
        out,
        quick,
    )
    report.text(
        "Hare and lynx pelts in thousands, 1900–1920. Lotka–Volterra started at the 1900 counts, "
        "observed 1901–1920 with log-normal noise of unknown scale σ. Priors: α, γ ~ LogU(0.2, 2), "
        "β, δ ~ LogU(0.005, 0.1), σ ~ LogU(0.05, 1)."
    )
    return _run(report, hudson_bay_problem(), quick=quick, seed=seed, progress=progress, ylabel="pelts (thousands)")
