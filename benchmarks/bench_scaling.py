"""Scaling benchmarks (issue: performance and scale).

How throughput and cost grow, each figure measured in this run:

- simulation throughput against batch size (1 to 10^6) for SIR, SEIR, Lotka–Volterra
  and Lorenz, for each strategy (`SharedStep`, `PerTrajectory`, and `Fused` where it
  runs natively, i.e. on a GPU), with the compile time of each compiled size and XLA's
  temporary memory per compiled chunk;
- fused training throughput against batch size and network size (MLP width), with
  XLA's temporary memory for one compiled training dispatch;
- cost against series length (SIR, 25 to 400 daily observations) and state dimension
  (Lorenz-96 with 4 to 64 states);
- fused-training throughput against the number of devices (simulated CPU devices here,
  one subprocess per count; GPUs on a GPU node).

Run: `python benchmarks/bench_scaling.py [--quick]`. Writes benchmarks/results_scaling.json,
its section of benchmarks/RESULTS.md, and a plot in the system's temporary directory
(`--quick`: the JSON only). The page's plot is drawn by `benchmarks/plots.py`.
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import diffrax as dfx
import jax
import jax.numpy as jnp
import numpy as np


HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))

from _common import best_of, load, machine, write_section  # noqa: E402
from bench_simulate import configs  # noqa: E402
from bench_train import setup, train_consts  # noqa: E402

import sgjax  # noqa: E402
from sgjax import models  # noqa: E402
from sgjax._simulation._simulate import _chunk_from_prior  # noqa: E402
from sgjax._training import _step  # noqa: E402
from sgjax.observation import Gaussian, ObservationModel, Poisson  # noqa: E402


MiB = 2**20


def _strategies():
    out = {"SharedStep": sgjax.SharedStep(), "PerTrajectory": sgjax.PerTrajectory()}
    # The fused kernel runs natively only on a GPU; on a CPU it would run in Pallas's
    # interpreter, which measures the interpreter, not the kernel.
    if jax.default_backend() == "gpu":
        out["Fused"] = sgjax.experimental.Fused()
    return out


def _timed_simulate(sim, strategy, n, chunk, repeats):
    """(samples/s, compile s): the first call's excess over the best warm call is the
    compile time of this chunk size."""
    run = lambda key: (
        sgjax.simulate(sim, key=key, n=n, strategy=strategy, chunk_size=chunk, keep_states=False).observations
    )  # noqa: E731
    start = time.perf_counter()
    run(jax.random.key(0))
    first = time.perf_counter() - start
    warm = best_of(lambda: run(jax.random.key(1)), repeats)
    return n / warm, max(first - warm, 0.0)


def _chunk_temp_mib(sim, strategy, size):
    lowered = _chunk_from_prior.lower(sim, strategy, sim.default_prior(), jax.random.key(0), size, False)
    return lowered.compile().compiled.memory_analysis().temp_size_in_bytes / MiB


def simulation_vs_batch(quick):
    """Samples/s against n for each model and strategy. `n` up to the chunk size is one
    compiled call of that size (its own compile); larger `n` runs in 1,024-sample chunks
    through `simulate`'s pipelined loop. PerTrajectory stops at 32,768 (it is the slow
    reference) unless on a GPU."""
    sizes = [1, 32, 1024, 16384] if quick else [1, 32, 1024, 32768, 1_000_000]
    cap = {"PerTrajectory": 16384 if quick else 32768} if jax.default_backend() == "cpu" else {}
    rows = []
    for name, cfg in configs().items():
        if quick and name not in ("SIR", "Lorenz"):
            continue
        controller = dfx.PIDController(rtol=cfg.rtol, atol=cfg.atol)
        sim = sgjax.Simulator(cfg.model, cfg.ts, cfg.observation, stepsize_controller=controller)
        for sname, strategy in _strategies().items():
            for n in sizes:
                if n > cap.get(sname, np.inf):
                    continue
                chunk = min(n, 1024)
                rate, compile_s = _timed_simulate(sim, strategy, n, chunk, repeats=3 if n <= 32768 else 1)
                row = {"model": name, "strategy": sname, "n": n, "samples_per_s": rate}
                if n <= 1024:
                    row["compile_s"] = compile_s
                    row["temp_mib"] = _chunk_temp_mib(sim, strategy, chunk)
                rows.append(row)
                print(f"  simulate {name:14s} {sname:13s} n={n:>9,}  {rate:>12,.0f}/s", flush=True)
    return rows


def training_rate(batch, width, in_days=100, k=10, calls=3, repeats=2):
    """Fused training samples/s (`k` steps per dispatch, as `fit` runs them) and XLA's
    temporary memory for one dispatch."""
    task, frozen, params, optimiser = setup(batch, width, in_days)
    consts, opt = train_consts(task, frozen, optimiser, batch), optimiser.init(params)
    keys = lambda i: jax.random.split(jax.random.key(i), k)  # noqa: E731
    temp = (
        _step.train_call.lower((consts, _step.mode(k)), params, opt, keys(0))
        .compile()
        .compiled.memory_analysis()
        .temp_size_in_bytes
    )
    state = [params, opt]

    def run():
        for i in range(calls):
            state[0], state[1], losses, _ = _step.train_call((consts, _step.mode(k)), state[0], state[1], keys(i))
        return losses

    start = time.perf_counter()
    run()
    compile_s = time.perf_counter() - start
    t = best_of(run, repeats)
    compile_s = max(compile_s - t, 0.0)
    return {"batch": batch, "width": width, "days": in_days, "samples_per_s": batch * k * calls / t,
            "compile_s": compile_s, "temp_mib": temp / MiB}  # fmt: skip


def training_vs_batch_and_width(quick):
    batches = [64, 512, 2048] if quick else [64, 256, 1024, 4096]
    widths = [64, 256] if quick else [64, 256, 1024]
    rows = []
    for width in widths:
        for batch in batches:
            row = training_rate(batch, width, k=5 if quick else 10, calls=2 if quick else 3, repeats=1 if quick else 2)
            rows.append(row)
            print(f"  train MLP 2×{width:<5d} batch={batch:<6d} {row['samples_per_s']:>10,.0f}/s  "
                  f"temp {row['temp_mib']:.0f} MiB", flush=True)  # fmt: skip
    return rows


def series_length(quick):
    """Simulation and training cost against the number of observation times (SIR,
    daily), at a fixed batch."""
    n = 4096 if quick else 16384
    rows = []
    for days in [25, 100] if quick else [25, 50, 100, 200, 400]:
        sim = sgjax.Simulator(models.SIR(), jnp.arange(1.0, days + 1.0), ObservationModel(Poisson()), max_steps=16384)
        sim_rate, _ = _timed_simulate(sim, sgjax.SharedStep(), n, 1024, repeats=2)
        train = training_rate(512, 256, in_days=days, k=5, calls=2, repeats=1)
        rows.append({"days": days, "simulate_per_s": sim_rate, "train_per_s": train["samples_per_s"],
                     "train_temp_mib": train["temp_mib"]})  # fmt: skip
        print(
            f"  series length {days:4d} days  simulate {sim_rate:>10,.0f}/s  train {train['samples_per_s']:>9,.0f}/s",
            flush=True,
        )
    return rows


def _lorenz96(d):
    """Lorenz-96 with `d` states (F a parameter): a standard test of cost against
    state dimension."""

    def field(t, y, theta):
        return (jnp.roll(y, -1) - jnp.roll(y, 2)) * jnp.roll(y, 1) - y + theta["F"]

    return sgjax.ODEModel(
        field,
        initial_state=lambda theta: jnp.full(d, theta["F"]).at[0].add(0.01),
        param_names=("F",),
        state_names=tuple(f"x{i}" for i in range(d)),
        observable=lambda ys, names: ys[1:],
        prior=sgjax.Prior({"F": __import__("numpyro").distributions.Uniform(6.0, 10.0)}),
    )


def state_dimension(quick):
    n = 2048 if quick else 8192
    rows = []
    for d in [4, 16] if quick else [4, 8, 16, 32, 64]:
        sim = sgjax.Simulator(_lorenz96(d), jnp.linspace(0.05, 2.0, 40), ObservationModel(Gaussian(0.1)),
                              stepsize_controller=dfx.PIDController(rtol=1e-5, atol=1e-5))  # fmt: skip
        rate, compile_s = _timed_simulate(sim, sgjax.SharedStep(), n, 1024, repeats=2)
        rows.append({"state_dim": d, "simulate_per_s": rate, "compile_s": compile_s})
        print(f"  Lorenz-96 d={d:3d}  {rate:>10,.0f}/s  compile {compile_s:.1f} s", flush=True)
    return rows


def devices(quick):
    """Fused-training samples/s with data parallelism over N devices, one subprocess
    per N (on a CPU the devices are simulated, sharing the same cores)."""
    counts = [1, 2] if quick else [1, 2, 4]
    rows = []
    for n in counts:
        res = subprocess.run([sys.executable, str(HERE / "bench_parallel.py"), str(n), "--json", "--steps", "200" if quick else "600"],
                             capture_output=True, text=True)  # fmt: skip
        if res.returncode:
            rows.append({"devices": n, "error": res.stderr.strip().splitlines()[-1]})
            continue
        rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
        print(f"  devices={n}  {rows[-1]['samples_per_s']:>10,.0f}/s", flush=True)
    return rows


def _simulation_table(sim):
    sizes = sorted({r["n"] for r in sim})
    lines = ["**Simulation throughput (samples/s, noise included) against batch size.** Tolerances per model as in the",
             "simulation-engine table; n ≤ 1,024 is one compiled call of that size, larger n runs 1,024-sample chunks.", "",
             "| model | strategy | " + " | ".join(f"n = {n:,}" for n in sizes) + " | compile s (n = 1 / 32 / 1,024) | XLA temp MiB per 1,024 chunk |",
             "|---|---|" + "---:|" * len(sizes) + "---|---:|"]  # fmt: skip
    for model, strat in dict.fromkeys((r["model"], r["strategy"]) for r in sim):
        rs = {r["n"]: r for r in sim if r["model"] == model and r["strategy"] == strat}
        cells = [f"{rs[n]['samples_per_s']:,.0f}" if n in rs else "–" for n in sizes]
        comp = " / ".join(f"{rs[n]['compile_s']:.1f}" for n in sizes if n in rs and "compile_s" in rs[n])
        temp = f"{rs[1024]['temp_mib']:.1f}" if 1024 in rs else "–"
        lines.append(f"| {model} | {strat} | " + " | ".join(cells) + f" | {comp} | {temp} |")
    return lines


def _training_table(tr):
    batches, widths = sorted({r["batch"] for r in tr}), sorted({r["width"] for r in tr})
    lines = ["**Fused training throughput (samples/s) against batch size and network size** (SIR, 100 days, MLP 2×width, "
             "point head; in brackets XLA's temporary memory for one dispatch).", "",
             "| MLP | " + " | ".join(f"batch {b:,}" for b in batches) + " |", "|---|" + "---:|" * len(batches)]  # fmt: skip
    for w in widths:
        rs = {r["batch"]: r for r in tr if r["width"] == w}
        lines.append(
            f"| 2×{w} | "
            + " | ".join(f"{rs[b]['samples_per_s']:,.0f} ({rs[b]['temp_mib']:.1f} MiB)" for b in batches)
            + " |"
        )
    return lines


def _length_table(rows):
    lines = ["**Cost against series length** (SIR, daily; simulation in 1,024-sample chunks; training batch 512, MLP 2×256).", "",
             "| days | simulate samples/s | train samples/s | train XLA temp MiB |", "|---:|---:|---:|---:|"]  # fmt: skip
    for r in rows:
        lines.append(
            f"| {r['days']} | {r['simulate_per_s']:,.0f} | {r['train_per_s']:,.0f} | {r['train_temp_mib']:.1f} |"
        )
    return lines


def _dimension_table(rows):
    lines = ["**Cost against state dimension** (Lorenz-96, 40 observation times on (0, 2], Gaussian noise, rtol = atol = 1e-5, SharedStep).", "",
             "| states | samples/s | samples × states /s, relative to the smallest | compile s |", "|---:|---:|---:|---:|"]  # fmt: skip
    base = rows[0]["simulate_per_s"] * rows[0]["state_dim"]
    for r in rows:
        rel = r["simulate_per_s"] * r["state_dim"] / base
        lines.append(f"| {r['state_dim']} | {r['simulate_per_s']:,.0f} | {rel:.2f} | {r['compile_s']:.1f} |")
    return lines


def _devices_table(rows):
    lines = [f"**Data-parallel fused training against devices** ({jax.default_backend()} devices; on a CPU they are simulated and "
             "share the same cores, so this measures overhead, not speed-up).", "", "| devices | samples/s |", "|---:|---:|"]  # fmt: skip
    for r in rows:
        lines.append(
            f"| {r['devices']} | "
            + (f"{r['samples_per_s']:,.0f}" if "samples_per_s" in r else f"failed: {r['error']}")
            + " |"
        )
    return lines


TABLES = {"simulation": _simulation_table, "training": _training_table, "series_length": _length_table,
          "state_dimension": _dimension_table, "devices": _devices_table}  # fmt: skip


def report(out, quick):
    lines = [f"Machine: {machine()}.", f"Command: `python benchmarks/bench_scaling.py{' --quick' if quick else ''}`."]
    for name, table in TABLES.items():
        if out[name]:
            lines += [""] + table(out[name])
    return "\n".join(lines)


def plot(out, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(18, 4.2))
    ax = axes[0]
    sim = out["simulation"]
    for model, strat in dict.fromkeys((r["model"], r["strategy"]) for r in sim):
        rs = [r for r in sim if r["model"] == model and r["strategy"] == strat]
        ax.loglog(
            [r["n"] for r in rs],
            [r["samples_per_s"] for r in rs],
            "o-" if strat == "SharedStep" else "s--",
            label=f"{model} {strat}",
        )
    ax.set(xlabel="batch size n", ylabel="samples / s", title="simulation (noise included)")
    ax.legend(fontsize=6)
    ax = axes[1]
    tr = out["training"]
    for w in sorted({r["width"] for r in tr}):
        rs = [r for r in tr if r["width"] == w]
        ax.loglog([r["batch"] for r in rs], [r["samples_per_s"] for r in rs], "o-", label=f"MLP 2×{w}")
    ax.set(xlabel="batch size", ylabel="trained samples / s", title="fused training")
    ax.legend(fontsize=7)
    ax = axes[2]
    sl = out["series_length"]
    ax.loglog([r["days"] for r in sl], [r["simulate_per_s"] for r in sl], "o-", label="simulate (SIR)")
    ax.loglog([r["days"] for r in sl], [r["train_per_s"] for r in sl], "s-", label="train (SIR)")
    sd = out["state_dimension"]
    ax.loglog(
        [r["state_dim"] for r in sd], [r["simulate_per_s"] for r in sd], "^-", label="simulate (Lorenz-96, x = states)"
    )
    ax.set(
        xlabel="observation times (SIR) / states (Lorenz-96)",
        ylabel="samples / s",
        title="cost vs length and dimension",
    )
    ax.legend(fontsize=7)
    ax = axes[3]
    dv = [r for r in out["devices"] if "samples_per_s" in r]
    ax.plot([r["devices"] for r in dv], [r["samples_per_s"] for r in dv], "o-")
    ax.set(xlabel=f"{jax.default_backend()} devices", ylabel="trained samples / s", title="data-parallel training")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


SECTIONS = {"simulation": simulation_vs_batch, "training": training_vs_batch_and_width,
            "series_length": series_length, "state_dimension": state_dimension, "devices": devices}  # fmt: skip


def main(quick: bool = False, write: bool = True, only=None) -> dict:
    """Run every section (or those named in `only`, for a look; only a whole run is
    written to RESULTS.md) and return the figures."""
    out = {"machine": machine(), "quick": quick}
    for name, fn in SECTIONS.items():
        if only and name not in only:
            out[name] = []
            continue
        print(f"[scaling] {name} (load {load()})", flush=True)
        out[name] = fn(quick)
    text = report(out, quick)
    print(text)
    if write:
        (HERE / "results_scaling.json").write_text(json.dumps(out, indent=2))
        # The committed figure is drawn by benchmarks/plots.py (docs/benchmarks/scaling.png)
        # from results.json; this one, beside the system's temporary files, is a quick look.
        plot(out, Path(tempfile.gettempdir()) / f"sgjax_scaling{'.quick' if quick else ''}.png")
        if not quick and not only:
            write_section("scaling", "Scaling: batch, network, series length, state dimension, devices (issue 6)", text)
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: fewer sizes, two models")
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument("--only", nargs="+", choices=list(SECTIONS), help="run only these sections (not written)")
    args = parser.parse_args()
    main(args.quick, not args.no_write and not args.only, args.only)
