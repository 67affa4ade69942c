"""One small figure per benchmark, for benchmarks/RESULTS.md and the docs site.

    python benchmarks/plots.py              # every figure, from benchmarks/results.json
    python benchmarks/plots.py --only peers train

Reads the figures the suite gathered (`benchmarks/run.py` writes benchmarks/results.json,
each benchmark with the revision, date and machine it was measured at) and writes
docs/benchmarks/<name>.png, each titled with that revision and date. Three benchmarks
print their figures without writing JSON (bench_random, bench_rescue, bench_redesign):
their figures are copied below from the runs recorded in RESULTS.md. No JAX needed:
matplotlib and the JSON only, a few seconds.
"""

import argparse
import json
from pathlib import Path

import matplotlib


matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import NullFormatter  # noqa: E402


HERE = Path(__file__).parent
OUT = HERE.parent / "docs" / "benchmarks"
DPI = 80

#: Figures of the scripts that write no JSON, as recorded in RESULTS.md (revision, date).
#: bench_random.py --baseline-rev 761b8af, 6,553,600 values, seconds (whole array, lax.map chunks).
RANDOM = {
    "source": "bench_random.py, samplers at aad7a50",
    "rows": {
        "Poisson": ((5.026, 2.062), (0.153, 0.109)),
        "gamma": ((8.767, 2.555), (0.122, 0.088)),
        "negative binomial": ((10.916, 3.453), (0.270, 0.208)),
        "binomial": ((6.641, 2.658), (0.318, 0.207)),
    },
}
#: bench_rescue.py: SharedStep(fallback=False) against SharedStep() (the rescue), seconds.
RESCUE = {
    "source": "bench_rescue.py, 2026-12-07",
    "rows": {
        "cold fit, SIR, 100 steps": (7.72, 9.99),
        "compile a batch, SIR": (3.74, 6.29),
        "compile a batch, Lorenz": (2.05, 4.14),
    },
}
#: bench_redesign.py 7d5932f (before) against a804c20 (after), samples/s; the last two rows
#: are bench_train.py's jitted call alone at each revision.
REDESIGN = {
    "source": "2026-12-08",
    "rows": {
        "simulate, SIR n=100k": (327_881, 312_628),
        "simulate, host pool on": (354_418, 364_321),
        "fused call, 25 steps/dispatch": (85_856, 109_916),
        "fused call, 1 step/dispatch": (60_321, 56_991),
    },
}


def _stamp(entry: dict) -> str:
    return f"{entry.get('revision', '?')}, {entry.get('date', '?')}"


def _save(fig, name: str) -> Path:
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"{name}.png"
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def _bars(ax, labels, groups: dict, log: bool = False, horizontal: bool = False):
    """Grouped bars: `groups` maps a series name to one value per label."""
    width = 0.8 / len(groups)
    for i, (name, values) in enumerate(groups.items()):
        pos = [j + (i - (len(groups) - 1) / 2) * width for j in range(len(labels))]
        (ax.barh if horizontal else ax.bar)(pos, values, width, label=name)
    if horizontal:
        ax.set_yticks(range(len(labels)), labels)
        ax.invert_yaxis()
        if log:
            ax.set_xscale("log")
    else:
        ax.set_xticks(range(len(labels)), labels)
        if log:
            ax.set_yscale("log")
    ax.legend(fontsize=7, ncol=2 if len(groups) > 2 else 1)


def simulate(entry: dict) -> Figure:
    rows = entry["figures"]["rows"]
    fig, ax = plt.subplots(figsize=(6.4, 3.2))
    groups = {
        "sgjax SharedStep": [r["shared_per_s"] for r in rows],
        "sgjax PerTrajectory": [r["per_traj_per_s"] for r in rows],
        "jit(vmap(diffeqsolve))": [r["vmap_per_s"] for r in rows],
        "scipy solve_ivp loop": [r["scipy_per_s"] for r in rows],
    }
    _bars(ax, [r["model"] for r in rows], groups, log=True)
    ax.set_ylim(top=1e8)  # room for the legend
    ax.set_ylabel("noisy samples / s")
    ax.set_title(f"Simulation throughput, 100 observation times, CPU ({_stamp(entry)})", fontsize=9)
    return fig


def train(entry: dict) -> Figure:
    rows = entry["figures"]
    fig, ax = plt.subplots(figsize=(6.4, 2.8))
    labels = [f"{r['steps_per_call']} step(s)/dispatch" for r in rows]
    groups = {
        "fused step": [r["ms_per_step_fused"] for r in rows],
        "simulation alone": [r["ms_per_step_sim"] for r in rows],
        "network step alone": [r["ms_per_step_network"] for r in rows],
        "unfused loop": [r["ms_per_step_unfused"] for r in rows],
    }
    _bars(ax, labels, groups, horizontal=True)
    ax.set_xlabel("ms per training step (batch 512, SIR, MLP 2×256)")
    ax.set_title(f"Fused training against an unfused loop, CPU ({_stamp(entry)})", fontsize=9)
    return fig


def scaling(entry: dict) -> Figure:
    f = entry["figures"]
    fig, axes = plt.subplots(1, 4, figsize=(11, 2.9))
    ax = axes[0]
    for model in dict.fromkeys(r["model"] for r in f["simulation"]):
        pts = [(r["n"], r["samples_per_s"]) for r in f["simulation"]
               if r["model"] == model and r["strategy"] == "SharedStep" and r["samples_per_s"]]  # fmt: skip
        ax.plot(*zip(*pts), "o-", ms=3, label=model)
    ax.set(xscale="log", yscale="log", xlabel="batch n", ylabel="samples / s", title="simulate (SharedStep)")
    ax.legend(fontsize=6)
    ax = axes[1]
    for width in sorted({r["width"] for r in f["training"]}):
        pts = [(r["batch"], r["samples_per_s"]) for r in f["training"] if r["width"] == width]
        ax.plot(*zip(*pts), "o-", ms=3, label=f"MLP 2×{width}")
    ax.set(xscale="log", yscale="log", xlabel="batch", ylabel="trained samples / s", title="fused training")
    ax.legend(fontsize=6)
    ax = axes[2]
    days = [r["days"] for r in f["series_length"]]
    ax.plot(days, [r["simulate_per_s"] for r in f["series_length"]], "o-", ms=3, label="simulate")
    ax.plot(days, [r["train_per_s"] for r in f["series_length"]], "o-", ms=3, label="train")
    ax.set(xscale="log", yscale="log", xlabel="days observed (SIR)", ylabel="samples / s", title="series length")
    ax.legend(fontsize=6)
    ax = axes[3]
    dims = [r["state_dim"] for r in f["state_dimension"]]
    ax.plot(dims, [r["simulate_per_s"] for r in f["state_dimension"]], "o-", ms=3)
    ax.set(xscale="log", yscale="log", xlabel="states (Lorenz-96)", ylabel="samples / s", title="state dimension")
    for a, ticks in zip(axes, (None, None, days, dims)):
        a.title.set_fontsize(9)
        a.yaxis.set_minor_formatter(NullFormatter())
        if ticks:
            a.set_xticks(ticks, [str(t) for t in ticks])
            a.xaxis.set_minor_formatter(NullFormatter())
    fig.suptitle(f"Scaling on a 2-core CPU ({_stamp(entry)})", fontsize=9)
    return fig


def fused(entry: dict) -> Figure:
    f = entry["figures"]
    fig, axes = plt.subplots(1, 2, figsize=(6.4, 2.6))
    for ax, key, title in ((axes[0], "sir", "SIR, adaptive"), (axes[1], "lorenz", "Lorenz, 1,000 fixed steps")):
        rows = f[key]["rows"]
        ax.barh([r["engine"] for r in rows], [r["per_s"] for r in rows], color="C0")
        ax.invert_yaxis()
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("trajectories / s")
        ax.set_title(title, fontsize=9)
        ax.tick_params(labelsize=7)
    fig.suptitle(f"Fused kernel on CPU, no GPU measured ({_stamp(entry)})", fontsize=9)
    return fig


def baselines(entry: dict) -> Figure:
    f = entry["figures"]
    fig, axes = plt.subplots(1, 2, figsize=(8, 2.8), gridspec_kw={"width_ratios": [3, 2]})
    for ax, key, title in ((axes[0], "batching", "batching datasets (BFGS)"), (axes[1], "solvers", "optimisers")):
        items = f[key]
        ax.barh([k.replace(" datasets (512 optimisations)", "") for k in items],
                [v["fits_per_s"] for v in items.values()], color="C1")  # fmt: skip
        ax.invert_yaxis()
        ax.set_xlabel("maximum-likelihood fits / s")
        ax.set_title(title, fontsize=9)
        ax.tick_params(labelsize=7)
    fig.suptitle(f"Maximum-likelihood baselines, SIR, 8 starts, CPU ({_stamp(entry)})", fontsize=9)
    return fig


def peers(entry: dict) -> Figure:
    f = entry["figures"]
    fig, ax = plt.subplots(figsize=(6.4, 3.2))
    for key, label in (("sgjax", "sgjax fit (cold)"), ("sgjax_cached", "sgjax fit (compiled programs cached)"),
                       ("bayesflow", "BayesFlow fit_online")):  # fmt: skip
        run = f.get(key, {})
        if run.get("status") == "ok" and run.get("curve"):
            ax.plot([c["t"] for c in run["curve"]], [c["val_loss"] for c in run["curve"]], label=label)
    sbi = f.get("sbi", {})
    if sbi.get("status") == "ok":
        ax.axhline(sbi["final_val_loss"], color="gray", ls="--", lw=1)
        ax.plot([sbi["total_s"]], [sbi["final_val_loss"]], "ks", label="sbi NPE (end of training)")
    ax.set(xlabel="wall time (s, compilation included)", ylabel="validation −log q(θ | x)", ylim=(-7.2, -2))
    ax.legend(fontsize=7)
    ax.set_title(f"SIR posterior of (β, γ, ρ): time to a validation loss ({_stamp(entry)})", fontsize=9)
    return fig


def random() -> Figure:
    fig, ax = plt.subplots(figsize=(6.4, 2.6))
    rows = RANDOM["rows"]
    groups = {
        "whole array": [jx[0] / sg[0] for jx, sg in rows.values()],
        "1,024-row chunks": [jx[1] / sg[1] for jx, sg in rows.values()],
    }
    _bars(ax, list(rows), groups)
    ax.set_ylabel("× jax.random")
    ax.set_title(f"Exact noise samplers, 6,553,600 values, CPU ({RANDOM['source']})", fontsize=9)
    return fig


def rescue() -> Figure:
    fig, ax = plt.subplots(figsize=(6.4, 2.4))
    rows = RESCUE["rows"]
    groups = {"fallback=False": [v[0] for v in rows.values()], "default (rescue)": [v[1] for v in rows.values()]}
    _bars(ax, list(rows), groups, horizontal=True)
    ax.set_xlabel("seconds")
    ax.set_title(f"The in-program rescue, when it does not fire ({RESCUE['source']})", fontsize=9)
    return fig


def redesign() -> Figure:
    fig, ax = plt.subplots(figsize=(6.4, 2.6))
    rows = REDESIGN["rows"]
    groups = {"before (7d5932f)": [v[0] / 1e3 for v in rows.values()],
              "after (a804c20)": [v[1] / 1e3 for v in rows.values()]}  # fmt: skip
    _bars(ax, list(rows), groups, horizontal=True)
    ax.set_xlabel("thousand samples / s")
    ax.set_title(f"The redesign, before and after ({REDESIGN['source']})", fontsize=8)
    return fig


FROM_JSON = {"simulate": simulate, "train": train, "scaling": scaling, "fused": fused, "baselines": baselines,
             "peers": peers}  # fmt: skip
RECORDED = {"random": random, "rescue": rescue, "redesign": redesign}


def main(argv=None) -> list[Path]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", choices=[*FROM_JSON, *RECORDED], help="draw only these")
    parser.add_argument("--results", type=Path, default=HERE / "results.json", help="the suite's gathered JSON")
    args = parser.parse_args(argv)
    names = args.only or [*FROM_JSON, *RECORDED]
    suite = json.loads(args.results.read_text())["benchmarks"]
    written = []
    for name in names:
        if name in RECORDED:
            written.append(_save(RECORDED[name](), name))
        elif suite.get(name, {}).get("status") == "ok" and suite[name].get("figures"):
            written.append(_save(FROM_JSON[name](suite[name]), name))
        else:
            print(f"{name}: no figures in {args.results}; skipped")
    for path in written:
        print(f"{path.relative_to(HERE.parent)}: {path.stat().st_size // 1024} KB")
    return written


if __name__ == "__main__":
    main()
