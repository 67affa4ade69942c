"""The whole benchmark suite in one command.

    python benchmarks/run.py            # everything (about an hour on 2 CPU cores)
    python benchmarks/run.py --quick    # a smoke run of every benchmark (a few minutes)
    python benchmarks/run.py --only simulate train

Each benchmark runs in its own process (a fresh JAX, so compile times and peak memory
are its own) and writes its own JSON and, in a full run, its own section of
benchmarks/RESULTS.md. This script then gathers their JSON into
benchmarks/results.json (results.quick.json for `--quick`) and, after a full run,
writes the scoreboard — every performance goal of the issues against what this run
measured — into RESULTS.md. The plot is benchmarks/scaling.png (from bench_scaling).

Peers (sbi, BayesFlow) are measured only where they are installed
(`pip install -e ".[peers]"`); otherwise their benchmark records them as skipped. The
fused GPU kernel is measured natively only on a GPU.
"""

import argparse
import json
import subprocess
import sys
import time

from _common import HERE, load, machine, revision, write_section

# name: (script, what it measures). Order: cheapest first, so a broken setup fails fast.
BENCHMARKS = {
    "train": ("bench_train.py", "fused training against an unfused loop"),
    "random": ("bench_random.py", "exact noise samplers against jax.random"),
    "simulate": ("bench_simulate.py", "simulation against scipy and jit(vmap(diffeqsolve)); compile times; peak memory"),
    "fused": ("bench_fused.py", "the fused (Pallas) integration kernel"),
    "scaling": ("bench_scaling.py", "throughput against batch, network, series length, state dimension, devices"),
    "baselines": ("bench_baselines.py", "maximum-likelihood baselines"),
    "peers": ("bench_peers.py", "end to end against sbi and BayesFlow"),
}
JSON = {"train": "results_train.json", "simulate": "results_simulate.json", "fused": "results_fused.json",
        "scaling": "results_scaling.json", "baselines": "results_baselines.json", "peers": "results_peers.json"}  # fmt: skip


def run_one(name, quick, timeout):
    script, _ = BENCHMARKS[name]
    if not (HERE / script).exists():
        return {"status": "missing", "seconds": 0.0}
    cmd = [sys.executable, str(HERE / script)] + (["--quick"] if quick else [])
    start = time.perf_counter()
    print(f"== {name}: {' '.join(cmd[1:])} (load {load()})", flush=True)
    try:
        res = subprocess.run(cmd, cwd=HERE.parent, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"status": f"timed out after {timeout} s", "seconds": time.perf_counter() - start}
    seconds = time.perf_counter() - start
    tail = (res.stdout + res.stderr).strip().splitlines()[-15:]
    print("\n".join("   " + line for line in tail), flush=True)
    out = {"status": "ok" if res.returncode == 0 else f"failed (exit {res.returncode})", "seconds": seconds}
    if res.returncode:
        out["error"] = tail[-1] if tail else ""
    path = HERE / JSON.get(name, "")
    if name in JSON and path.exists() and path.stat().st_mtime >= time.time() - seconds - 1:
        out["figures"] = json.loads(path.read_text())
    return out


def _get(results, name, *path):
    """A figure from a benchmark's JSON, or None if it was not measured."""
    value = results.get(name, {}).get("figures")
    for p in path:
        if value is None:
            return None
        try:
            value = value[p]
        except (KeyError, IndexError, TypeError):
            return None
    return value


def _row(results, name, model):
    rows = _get(results, name, "rows") or []
    return next((r for r in rows if r.get("model") == model), {})


def scoreboard(results):
    """(issue, goal, measured, met) for every performance goal whose figure this run has."""
    sir = _row(results, "simulate", "SIR")
    train = next((r for r in (_get(results, "train") or []) if r.get("steps_per_call", 0) > 1), {})
    compiles = _get(results, "simulate", "compile_s") or {}
    goals = [
        ("2", "SIR noisy observations per second ≥ 500,000", sir.get("shared_per_s"), lambda v: v >= 5e5, "{:,.0f}/s"),
        ("2, 6", "simulation ≥ 1,000× a scipy loop (SIR)", sir.get("vs_scipy"), lambda v: v >= 1000, "{:,.0f}×"),
        ("2", "≥ 10× jit(vmap(diffeqsolve)) (SIR)", sir.get("vs_vmap"), lambda v: v >= 10, "{:.1f}×"),
        ("2", "compile time of every built-in model ≤ 3 s", max(compiles.values()) if compiles else None, lambda v: v <= 3, "max {:.1f} s"),
        ("3", "fused training ≥ 100,000 samples/s (CPU, batch 512)", train.get("fused_samples_per_s"), lambda v: v >= 1e5, "{:,.0f}/s"),
        ("3", "fused ≥ 3× an unfused loop", (train.get("fused_samples_per_s") or 0) / train["unfused_samples_per_s"]
         if train.get("unfused_samples_per_s") else None, lambda v: v >= 3, "{:.2f}×"),  # fmt: skip
        ("6", "reaches sbi's validation loss ≥ 10× sooner", _get(results, "peers", "sbi", "speedup_to_loss"), lambda v: v >= 10, "{:.1f}×"),
        ("6", "≥ 3× BayesFlow fit_online samples/s", _get(results, "peers", "bayesflow", "speedup_samples_per_s"), lambda v: v >= 3, "{:.1f}×"),
        ("6", "fused kernel: SIR ≥ 10^8 trajectories/s (H100)", _get(results, "fused", "gpu", "sir_per_s"), lambda v: v >= 1e8, "{:,.0f}/s"),
        ("6", "fused kernel: Lorenz 2^23 × 1,000 Tsit5 steps ≤ 145 ms (H100)", _get(results, "fused", "gpu", "lorenz_ms"), lambda v: v <= 145, "{:.0f} ms"),
        ("6", "fused kernel ≥ 20× jit(vmap(diffeqsolve)) (GPU)", _get(results, "fused", "gpu", "vs_vmap"), lambda v: v >= 20, "{:.1f}×"),
    ]
    return [(issue, goal, None if v is None else fmt.format(v), None if v is None else bool(ok(v))) for issue, goal, v, ok, fmt in goals]


def render(results, quick, wall):
    lines = [f"Machine: {machine()}. Revision {revision()}.",
             f"Command: `python benchmarks/run.py{' --quick' if quick else ''}`; {wall / 60:.1f} min in all.", "",
             "| benchmark | what | status | minutes |", "|---|---|---|---:|"]  # fmt: skip
    for name, r in results.items():
        lines.append(f"| {name} | {BENCHMARKS[name][1]} | {r['status']} | {r['seconds'] / 60:.1f} |")
    lines += ["", "| issue | goal | this run | met |", "|---|---|---|---|"]
    for issue, goal, got, met in scoreboard(results):
        lines.append(f"| {issue} | {goal} | {got or 'not measured'} | {'–' if met is None else ('yes' if met else '**no**')} |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run of every benchmark")
    parser.add_argument("--only", nargs="+", choices=list(BENCHMARKS), help="run only these")
    parser.add_argument("--timeout", type=int, default=3600, help="seconds per benchmark")
    args = parser.parse_args()
    names = args.only or list(BENCHMARKS)
    start = time.perf_counter()
    results = {name: run_one(name, args.quick, args.timeout) for name in names}
    wall = time.perf_counter() - start
    text = render(results, args.quick, wall)
    print("\n" + text)
    out = HERE / ("results.quick.json" if args.quick else "results.json")
    out.write_text(json.dumps({"machine": machine(), "revision": revision(), "quick": args.quick,
                               "seconds": wall, "benchmarks": results}, indent=1))  # fmt: skip
    if not args.quick and not args.only:
        write_section("suite", "The whole suite: every performance goal against this run", text)
    failed = [n for n, r in results.items() if r["status"] not in ("ok", "missing")]
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
