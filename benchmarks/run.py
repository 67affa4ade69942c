"""The whole benchmark suite in one command.

    python benchmarks/run.py            # everything (about an hour on 2 CPU cores)
    python benchmarks/run.py --quick    # a smoke run of every benchmark (a few minutes)
    python benchmarks/run.py --only simulate train   # rerun some; keep the others

Each benchmark runs in its own process (a fresh JAX, so compile times and peak memory
are its own) and writes its own JSON and, in a full run, its own section of
benchmarks/RESULTS.md. This script then gathers their JSON into
benchmarks/results.json (results.quick.json for `--quick`), each benchmark with the
revision and date it was measured at, and writes the scoreboard — every performance
goal of the issues against the latest figures — into RESULTS.md. `--only` replaces
the named benchmarks' figures and keeps the others' from the last run, each row of
the scoreboard saying which revision and date its figure comes from. The plots on the
benchmarks page (docs/benchmarks/*.png) are drawn from results.json by
`python benchmarks/plots.py`.

Peers (sbi, BayesFlow) are measured only where they are installed
(`pip install -e ".[peers]"`); otherwise their benchmark records them as skipped. The
fused GPU kernel is measured natively only on a GPU.
"""

import argparse
import datetime
import json
import subprocess
import sys
import time

from _common import HERE, load, machine, revision, write_section


# name: (script, what it measures). Order: cheapest first, so a broken setup fails fast.
BENCHMARKS = {
    "train": ("bench_train.py", "fused training against an unfused loop"),
    "random": ("bench_random.py", "exact noise samplers against jax.random"),
    "simulate": (
        "bench_simulate.py",
        "simulation against scipy and jit(vmap(diffeqsolve)); compile times; peak memory",
    ),
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
    out = {"status": "ok" if res.returncode == 0 else f"failed (exit {res.returncode})", "seconds": seconds,
           "revision": revision(), "date": datetime.date.today().isoformat(), "machine": machine()}  # fmt: skip
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
    """(issue, goal, measured, met, benchmark) for every performance goal."""
    sir = _row(results, "simulate", "SIR")
    train = next(
        (r for r in (_get(results, "train") or []) if r.get("steps_per_call", 0) > 1 and r.get("batch") == 512), {}
    )
    compiles = _get(results, "simulate", "compile_s") or {}
    goals = [
        (
            "simulate",
            "2",
            "SIR noisy observations per second ≥ 500,000",
            sir.get("shared_per_s"),
            lambda v: v >= 5e5,
            "{:,.0f}/s",
        ),
        (
            "simulate",
            "2, 6",
            "simulation ≥ 1,000× a scipy loop (SIR)",
            sir.get("vs_scipy"),
            lambda v: v >= 1000,
            "{:,.0f}×",
        ),
        ("simulate", "2", "≥ 10× jit(vmap(diffeqsolve)) (SIR)", sir.get("vs_vmap"), lambda v: v >= 10, "{:.1f}×"),
        (
            "simulate",
            "2",
            "compile time of every built-in model ≤ 3 s",
            max(compiles.values()) if compiles else None,
            lambda v: v <= 3,
            "max {:.1f} s",
        ),
        (
            "train",
            "3",
            "fused training ≥ 100,000 samples/s (CPU, batch 512)",
            train.get("fused_samples_per_s"),
            lambda v: v >= 1e5,
            "{:,.0f}/s",
        ),
        (
            "train",
            "3",
            "fused ≥ 3× an unfused loop",
            (train.get("fused_samples_per_s") or 0) / train["unfused_samples_per_s"]
            if train.get("unfused_samples_per_s")
            else None,
            lambda v: v >= 3,
            "{:.2f}×",
        ),  # fmt: skip
        (
            "peers",
            "6",
            "reaches sbi's validation loss ≥ 10× sooner",
            _get(results, "peers", "sbi", "speedup_to_loss"),
            lambda v: v >= 10,
            "{:.1f}×",
        ),
        (
            "peers",
            "6",
            "≥ 3× BayesFlow fit_online samples/s",
            _get(results, "peers", "bayesflow", "speedup_samples_per_s"),
            lambda v: v >= 3,
            "{:.1f}×",
        ),
        (
            "fused",
            "6",
            "fused kernel: SIR ≥ 10^8 trajectories/s (H100)",
            _get(results, "fused", "gpu", "sir_per_s"),
            lambda v: v >= 1e8,
            "{:,.0f}/s",
        ),
        (
            "fused",
            "6",
            "fused kernel: Lorenz 2^23 × 1,000 Tsit5 steps ≤ 145 ms (H100)",
            _get(results, "fused", "gpu", "lorenz_ms"),
            lambda v: v <= 145,
            "{:.0f} ms",
        ),
        (
            "fused",
            "6",
            "fused kernel ≥ 20× jit(vmap(diffeqsolve)) (GPU)",
            _get(results, "fused", "gpu", "vs_vmap"),
            lambda v: v >= 20,
            "{:.1f}×",
        ),
    ]
    return [
        (issue, goal, None if v is None else fmt.format(v), None if v is None else bool(ok(v)), bench)
        for bench, issue, goal, v, ok, fmt in goals
    ]


def _when(result, run):
    """Where a benchmark's figures come from: its revision and date (older files
    recorded only the run's revision)."""
    return f"{result.get('revision', run.get('revision', '?'))}, {result.get('date', '?')}"


def render(results, run, command):
    """The scoreboard: `results` (benchmark → its entry) and the run they were last
    gathered in."""
    lines = [f"Machine: {run['machine']}.",
             f"Command: `{command}`. Each figure comes from its benchmark's own run (revision, date).", "",
             "| benchmark | what | status | minutes | measured at |", "|---|---|---|---:|---|"]  # fmt: skip
    for name, r in results.items():
        lines.append(f"| {name} | {BENCHMARKS[name][1]} | {r['status']} | {r['seconds'] / 60:.1f} | {_when(r, run)} |")
    lines += ["", "| issue | goal | measured | met | from |", "|---|---|---|---|---|"]
    for issue, goal, got, met, bench in scoreboard(results):
        when = f"{bench} ({_when(results[bench], run)})" if bench in results else bench
        lines.append(
            f"| {issue} | {goal} | {got or 'not measured'} | {'–' if met is None else ('yes' if met else '**no**')} | {when} |"
        )
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run of every benchmark")
    parser.add_argument("--only", nargs="+", choices=list(BENCHMARKS), help="run only these")
    parser.add_argument("--timeout", type=int, default=3600, help="seconds per benchmark")
    args = parser.parse_args()
    names = args.only or list(BENCHMARKS)
    out = HERE / ("results.quick.json" if args.quick else "results.json")
    previous = json.loads(out.read_text()) if args.only and out.exists() else {}
    start = time.perf_counter()
    fresh = {name: run_one(name, args.quick, args.timeout) for name in names}
    wall = time.perf_counter() - start
    # --only: the other benchmarks keep their last figures, with their own revision.
    kept = {
        n: dict(r, revision=r.get("revision", previous["revision"])) for n, r in previous.get("benchmarks", {}).items()
    }
    results = {n: fresh.get(n, kept.get(n)) for n in BENCHMARKS if n in fresh or n in kept}
    run = {"machine": machine(), "revision": revision(), "quick": args.quick, "seconds": wall, "benchmarks": results}
    command = (
        "python benchmarks/run.py"
        + (" --quick" if args.quick else "")
        + (f" --only {' '.join(names)}" if args.only else "")
    )
    text = render(results, run, command)
    print("\n" + text)
    out.write_text(json.dumps(run, indent=1))
    if not args.quick:
        write_section("suite", "The whole suite: every performance goal against the latest figures", text)
    failed = [n for n, r in fresh.items() if r["status"] not in ("ok", "missing")]
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
