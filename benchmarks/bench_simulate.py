"""Simulation-engine benchmarks (issue: simulation engine).

Every figure is a ratio against a baseline measured in the same run:

- sgjax `simulate` (noise included) against a loop over `scipy.integrate.solve_ivp`
  (+ NumPy noise), per sample;
- against `jax.jit(jax.vmap(diffrax.diffeqsolve))` with `jax.random` noise, the same
  solver (Tsit5) and tolerances, per sample;
- the accuracy of the clean trajectories against a float64, tight-tolerance
  reference (scipy DOP853, rtol = atol = 1e-10);
- the compile time of every built-in model, and the peak memory for n = 1,000,000.

Run: `python benchmarks/bench_simulate.py` (add `--quick` for a smoke run). Prints a
markdown report and writes it into benchmarks/RESULTS.md between markers.

`python benchmarks/bench_simulate.py --noise-cost [--baseline-rev REV]` only measures
what the observation noise adds per 1,024-sample SIR chunk (clean, exact Poisson,
`method="normal"`, and the Poisson sampler of git revision REV), interleaved.
"""

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple

import diffrax as dfx
import jax
import jax.numpy as jnp
import numpy as np
import scipy
from _common import best_of, write_section
from scipy.integrate import solve_ivp

import sgjax
from sgjax import models
from sgjax.observation import Gaussian, LogNormal, ObservationModel, Poisson


HERE = Path(__file__).parent
RTOL, ATOL = 1e-4, 1e-3  # epidemics: counts out of N = 1000


def poisson_np(m, rng):
    return rng.poisson(np.maximum(m, 0.0))


class Config(NamedTuple):
    model: object
    ts: object
    observation: object
    noise_jax: object  # the baseline's noise: jax.random on the signal
    noise_numpy: object  # the scipy loop's noise
    rtol: float = RTOL
    atol: float = ATOL
    err_until: float = np.inf  # accuracy measured on ts <= err_until


def configs():
    days = jnp.arange(1.0, 101.0)  # 100 daily observations on [0, 100]
    return {
        "SIR": Config(models.SIR(), days, ObservationModel(Poisson()), jax.random.poisson, poisson_np),
        "SEIR": Config(models.SEIR(), days, ObservationModel(Poisson()), jax.random.poisson, poisson_np),
        # Many predator-prey cycles: phase error accumulates, so tighter tolerances.
        "LotkaVolterra": Config(
            models.LotkaVolterra(),
            jnp.linspace(0.5, 50.0, 100),
            ObservationModel(LogNormal(0.1)),
            lambda k, m: m * jnp.exp(0.1 * jax.random.normal(k, m.shape)),
            lambda m, rng: m * np.exp(0.1 * rng.standard_normal(m.shape)),
            rtol=1e-6,
            atol=1e-5,
        ),
        # Chaotic: any error (even float32 rounding) grows like exp(0.9 t), so accuracy
        # is measured on t <= 2, where float32 can still be accurate.
        "Lorenz": Config(
            models.Lorenz(),
            jnp.linspace(0.1, 10.0, 100),
            ObservationModel(Gaussian(1.0)),
            lambda k, m: m + jax.random.normal(k, m.shape),
            lambda m, rng: m + rng.standard_normal(m.shape),
            rtol=1e-6,
            atol=1e-5,
            err_until=2.0,
        ),
    }


def numpy_theta(theta, i):
    return {k: float(v[i]) for k, v in theta.items()}


# The vector fields as a scipy user writes them: plain NumPy, no JAX dispatch per call.
def _sir(model, p):
    b, g, n = p["beta"], p["gamma"], model.N
    return lambda t, y: np.array([-b * y[0] * y[1] / n, b * y[0] * y[1] / n - g * y[1], g * y[1]])


def _seir(model, p):
    b, s, g, n = p["beta"], p["sigma"], p["gamma"], model.N
    return lambda t, y: np.array([-b * y[0] * y[2] / n, b * y[0] * y[2] / n - s * y[1], s * y[1] - g * y[2], g * y[2]])


def _lotka_volterra(model, p):
    a, b, d, g = p["alpha"], p["beta"], p["delta"], p["gamma"]
    return lambda t, y: np.array([a * y[0] - b * y[0] * y[1], d * y[0] * y[1] - g * y[1]])


def _lorenz(model, p):
    s, r, b = p["sigma"], p["rho"], p["beta"]
    return lambda t, y: np.array([s * (y[1] - y[0]), y[0] * (r - y[2]) - y[1], y[0] * y[1] - b * y[2]])


NUMPY_FIELDS = {"SIR": _sir, "SEIR": _seir, "LotkaVolterra": _lotka_volterra, "Lorenz": _lorenz}


def scipy_loop(model, sim, theta, n, method="RK45", rtol=RTOL, atol=ATOL, noise=None):
    """Solve n trajectories one by one with solve_ivp (+ NumPy noise on the signal);
    returns the states (n, T + 1, S)."""
    t_eval = np.concatenate([[sim.t0], np.asarray(sim.ts, float)])
    make = NUMPY_FIELDS[type(model).__name__]
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        th = numpy_theta(theta, i)
        y0 = np.asarray(model.initial_state(th), float)
        sol = solve_ivp(make(model, th), (sim.t0, t_eval[-1]), y0, method=method, t_eval=t_eval, rtol=rtol, atol=atol)
        if noise is not None:
            noise(sol.y.T, rng)  # same cost as noise on the signal, no JAX call
        out.append(sol.y.T)
    return np.stack(out)


def vmap_baseline(model, sim, noise_fn, rtol, atol):
    t_save = jnp.concatenate([jnp.array([sim.t0]), sim.ts])

    def one(theta, key):
        sol = dfx.diffeqsolve(
            dfx.ODETerm(lambda t, y, args: model.vector_field(t, y, args)),
            dfx.Tsit5(),
            sim.t0,
            sim.ts[-1],
            None,
            model.initial_state(theta),
            args=theta,
            saveat=dfx.SaveAt(ts=t_save),
            stepsize_controller=dfx.PIDController(rtol=rtol, atol=atol),
            max_steps=4096,
            throw=False,
        )
        signal = sim.signal(sol.ys)
        return noise_fn(key, jnp.maximum(signal, 0.0) if noise_fn is jax.random.poisson else signal)

    return jax.jit(jax.vmap(one))


def bench_model(name, cfg, n, n_scipy, n_vmap, repeats):
    controller = dfx.PIDController(rtol=cfg.rtol, atol=cfg.atol)
    sim = sgjax.Simulator(cfg.model, cfg.ts, cfg.observation, stepsize_controller=controller)
    model = cfg.model
    prior = sim.default_prior()
    key = jax.random.key(0)
    row = {"model": name, "n": n, "rtol": cfg.rtol, "atol": cfg.atol}

    # Compile time: first call (trace + compile + run) minus a warm call.
    start = time.perf_counter()
    jax.block_until_ready(sgjax.simulate(sim, key=key, n=1024, prior=prior).observations)
    first = time.perf_counter() - start
    warm = best_of(lambda: sgjax.simulate(sim, key=key, n=1024, prior=prior).observations, 2)
    row["compile_s"] = round(first - warm, 2)

    for label, strategy in (("shared", sgjax.SharedStep()), ("per_traj", sgjax.PerTrajectory())):
        sgjax.simulate(sim, key=key, n=n, prior=prior, strategy=strategy)  # warm: same shapes as timed
        t = best_of(
            lambda: sgjax.simulate(sim, key=jax.random.key(1), n=n, prior=prior, strategy=strategy).observations,
            repeats,
        )
        row[f"{label}_per_s"] = n / t

    theta = prior.sample(jax.random.key(2), max(n_vmap, n_scipy))
    base = vmap_baseline(model, sim, cfg.noise_jax, cfg.rtol, cfg.atol)
    th_v = {k: v[:n_vmap] for k, v in theta.items()}
    keys = jax.random.split(key, n_vmap)
    jax.block_until_ready(base(th_v, keys))
    row["vmap_per_s"] = n_vmap / best_of(lambda: base(th_v, keys), repeats)

    start = time.perf_counter()
    scipy_loop(model, sim, theta, n_scipy, rtol=cfg.rtol, atol=cfg.atol, noise=cfg.noise_numpy)
    row["scipy_per_s"] = n_scipy / (time.perf_counter() - start)

    # Accuracy of clean states against a float64 tight reference, each trajectory's
    # error relative to its own largest value.
    n_acc = min(n_scipy, 100)
    th_acc = {k: v[:n_acc] for k, v in theta.items()}
    ref = scipy_loop(model, sim, th_acc, n_acc, method="DOP853", rtol=1e-10, atol=1e-10)[:, 1:]
    upto = np.asarray(cfg.ts) <= cfg.err_until
    row["err_until"] = None if np.isinf(cfg.err_until) else cfg.err_until
    for label, strategy in (("shared", sgjax.SharedStep()), ("per_traj", sgjax.PerTrajectory())):
        got = sgjax.simulate(sim, key=key, theta=th_acc, strategy=strategy)
        r, g = ref[:, upto], got.states[:, upto]
        err = (np.abs(g - r) / np.abs(r).max(axis=(1, 2), keepdims=True)).max(axis=(1, 2))
        row[f"{label}_relerr_max"] = float(err[got.valid].max())
        row[f"{label}_relerr_median"] = float(np.median(err[got.valid]))
    row["vs_scipy"] = row["shared_per_s"] / row["scipy_per_s"]
    row["vs_vmap"] = row["shared_per_s"] / row["vmap_per_s"]
    return row


def compile_times():
    """Compile time of every built-in model with its default prior (clean signal)."""
    out = {}
    for name, cls in sorted(vars(models).items()):
        if not (isinstance(cls, type) and issubclass(cls, sgjax.AbstractODEModel)):
            continue
        sim = sgjax.Simulator(cls(), jnp.linspace(0.5, 20.0, 40))
        key = jax.random.key(0)
        start = time.perf_counter()
        sgjax.simulate(sim, key=key, n=256)
        first = time.perf_counter() - start
        warm = best_of(lambda: sgjax.simulate(sim, key=key, n=256).observations, 2)
        out[name] = round(first - warm, 2)
    return out


PEAK = """
import resource, jax, jax.numpy as jnp, sgjax
from sgjax.observation import ObservationModel, Poisson
sim = sgjax.Simulator(sgjax.models.SIR(), jnp.arange(1.0, 101.0), ObservationModel(Poisson()))
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
out = sgjax.simulate(sim, key=jax.random.key(0), n={n}, keep_states={keep})
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, out.observations.nbytes / 2**20)
"""


def peak_memory(n, keep):
    res = subprocess.run([sys.executable, "-c", PEAK.format(n=n, keep=keep)], capture_output=True, text=True)
    if res.returncode:
        raise RuntimeError(f"peak-memory run failed: {res.stderr.strip().splitlines()[-1]}")
    peak, data = map(float, res.stdout.split())
    return round(peak), round(data)


def poisson_at(rev):
    """A Poisson noise model sampling with `sgjax/_random.py` as of git revision
    `rev` (its own type, so `simulate` compiles its own chunk for it)."""
    sys.path.insert(0, str(HERE))
    from bench_random import load_revision

    old = load_revision(rev)

    class PoissonAtRevision(Poisson):
        def sample(self, key, mean, theta):
            return old.poisson(key, jnp.maximum(mean, 0.0))

    return PoissonAtRevision()


def noise_cost(calls, baseline_rev=None):
    """What the noise adds per 1,024-sample SIR chunk through `simulate`
    (`keep_states=False`), interleaved across noise models so that load changes on
    a shared machine hit all alike; best of `calls` per model."""
    days = jnp.arange(1.0, 101.0)
    controller = dfx.PIDController(rtol=RTOL, atol=ATOL)
    noises = {"none (clean signal)": None, "`Poisson()` (exact)": Poisson(),
              '`Poisson(method="normal")`': Poisson(method="normal")}  # fmt: skip
    if baseline_rev is not None:
        noises[f"`Poisson()` (exact) at {baseline_rev}"] = poisson_at(baseline_rev)
    sims = {
        name: sgjax.Simulator(models.SIR(), days, None if noise is None else ObservationModel(noise),
                              stepsize_controller=controller)
        for name, noise in noises.items()
    }  # fmt: skip
    prior = next(iter(sims.values())).default_prior()
    run = lambda sim, key: sgjax.simulate(sim, key=key, n=1024, prior=prior, keep_states=False).observations  # noqa: E731
    compile_s, best = {}, {}
    for name, sim in sims.items():
        start = time.perf_counter()
        jax.block_until_ready(run(sim, jax.random.key(0)))
        first = time.perf_counter() - start
        compile_s[name] = first - best_of(lambda: run(sim, jax.random.key(0)), 3)
        best[name] = np.inf
    for i in range(calls):
        for name, sim in sims.items():
            start = time.perf_counter()
            jax.block_until_ready(run(sim, jax.random.key(i)))
            best[name] = min(best[name], time.perf_counter() - start)
    clean = best["none (clean signal)"]
    lines = [
        "| noise (SIR, one 1,024-sample chunk through `simulate`) | ms per chunk | noise adds [ms] | samples/s | compile [s] |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, t in best.items():
        lines.append(f"| {name} | {t * 1e3:.2f} | {(t - clean) * 1e3:.2f} | {1024 / t:,.0f} | {compile_s[name]:.2f} |")
    return "\n".join(lines)


def report(rows, compiles, peaks, args):
    lines = [
        f"Machine: {platform.machine()}, {__import__('os').cpu_count()} cores, {platform.platform()}; "
        f"backend {jax.default_backend()}, float32.",
        f"Versions: sgjax {sgjax.__version__}, jax {jax.__version__}, diffrax {dfx.__version__ if hasattr(dfx, '__version__') else '?'}, "
        f"numpy {np.__version__}, scipy {scipy.__version__}, Python {platform.python_version()}.",
        f"Command: `python benchmarks/bench_simulate.py{' --quick' if args.quick else ''}`. 100 observation times; every "
        "method (sgjax, vmap, scipy RK45) at the same tolerances, given per row; baselines on subsets, figures per sample. "
        "Relative error: max over a trajectory of |y − y_ref| / max|y_ref|, against scipy DOP853 in float64 at rtol = atol = 1e-10; "
        "worst over 100 draws from the prior.",
        "",
        "| model | rtol / atol | sgjax shared-step /s | sgjax per-trajectory /s | jit(vmap(diffeqsolve)) /s | scipy loop /s | × scipy | × vmap | rel. err. max (shared / per-traj) | compile s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        horizon = "" if r["err_until"] is None else f" (t ≤ {r['err_until']:g})"
        lines.append(
            f"| {r['model']} | {r['rtol']:g} / {r['atol']:g} | {r['shared_per_s']:,.0f} | {r['per_traj_per_s']:,.0f} | {r['vmap_per_s']:,.0f} | "
            f"{r['scipy_per_s']:,.0f} | {r['vs_scipy']:,.0f} | {r['vs_vmap']:.1f} | "
            f"{r['shared_relerr_max']:.1e} / {r['per_traj_relerr_max']:.1e}{horizon} | {r['compile_s']} |"
        )
    lines += ["", "Compile time (s) of each built-in model, default prior, clean signal:", ""]
    lines += [
        "| " + " | ".join(compiles) + " |",
        "|" + "---|" * len(compiles),
        "| " + " | ".join(str(v) for v in compiles.values()) + " |",
    ]
    if peaks:
        lines += ["", "Peak resident memory, SIR with Poisson noise, n = 1,000,000 (one process):", ""]
        for keep, (peak, data) in peaks.items():
            lines.append(f"- keep_states={keep}: peak {peak:,} MiB (observations alone {data:,} MiB)")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument(
        "--noise-cost", action="store_true", help="only: what the noise adds per SIR chunk (prints, writes nothing)"
    )
    parser.add_argument("--noise-calls", type=int, default=100)
    parser.add_argument(
        "--baseline-rev", default=None, help="--noise-cost: also the Poisson sampler of this git revision"
    )
    args = parser.parse_args()
    if args.noise_cost:
        print(noise_cost(args.noise_calls, args.baseline_rev))
        return
    n, n_scipy, n_vmap, repeats = (4096, 20, 1024, 1) if args.quick else (65536, 200, 8192, 3)
    rows = [
        bench_model(name, cfg, n=n, n_scipy=n_scipy, n_vmap=n_vmap, repeats=repeats) for name, cfg in configs().items()
    ]
    compiles = compile_times()
    peaks = {} if args.quick else {keep: peak_memory(1_000_000, keep) for keep in (True, False)}
    text = report(rows, compiles, peaks, args)
    print(text)
    (HERE / "results_simulate.json").write_text(
        json.dumps({"rows": rows, "compile_s": compiles, "peak_mib": peaks}, indent=2)
    )
    if not args.no_write and not args.quick:
        write_section("simulate", "Simulation engine", text)


if __name__ == "__main__":
    main()
