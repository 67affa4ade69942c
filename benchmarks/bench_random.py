"""Micro-benchmark of the samplers in `sgjax._internal._random` against `jax.random`.

1. Poisson, Gamma, negative binomial and binomial sampling for 65,536 x 100
   parameters (exponential with mean 20, plus 1% large rates up to 1e5), both on
   the whole array at once and generated in chunks of 1024 rows with
   `jax.lax.map` inside `jit`. Each figure is the best of `--repeat` runs (the jax
   baselines take seconds, so they are run fewer times).
2. The target workload of `sgjax.simulate`: Poisson noise on the daily incidence
   of SIR epidemics (the model's default prior, integrated here with NumPy RK4),
   one 100 x 1 x 1024 chunk (batch last, as `simulate` hands it to the noise) per
   call, timed per chunk (best of many calls, interleaved across samplers), with
   the compile time of each sampler for that shape.

Compilation is excluded from the run times (one warm-up call).

    python benchmarks/bench_random.py            # full size, ~2 minutes
    python benchmarks/bench_random.py --rows 8192 --repeat 3   # quick
    python benchmarks/bench_random.py --impl philox4x32        # other PRNG
    python benchmarks/bench_random.py --sir-only               # section 2 only
    python benchmarks/bench_random.py --baseline-rev 761b8af   # + samplers at a rev

Prints markdown tables and the speed-ups.
"""

import argparse
import importlib.util
import subprocess
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from sgjax._internal import _random as sgr


def sir_like_rates(rows: int, days: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rates = rng.exponential(20.0, (rows, days))
    large = rng.random((rows, days)) < 0.01
    rates[large] = rng.uniform(1e3, 1e5, large.sum())
    return rates.astype(np.float32)


def sir_incidence(rows: int, days: int = 100, seed: int = 0) -> np.ndarray:
    """Daily incidence S(t - 1) - S(t) of SIR epidemics (N = 1000, I0 = 1, the
    default prior beta ~ LogUniform(0.1, 1), gamma ~ LogUniform(0.05, 0.5)), by RK4
    with 20 steps a day; shape (days, 1, rows), batch last like `simulate`."""
    rng = np.random.default_rng(seed)
    beta = np.exp(rng.uniform(np.log(0.1), np.log(1.0), rows))
    gamma = np.exp(rng.uniform(np.log(0.05), np.log(0.5), rows))
    n = 1000.0

    def f(y):
        s, i = y
        new = beta * s * i / n
        return np.stack([-new, new - gamma * i])

    y = np.stack([np.full(rows, n - 1.0), np.ones(rows)])
    h, s_daily = 1 / 20, [y[0]]
    for _ in range(days):
        for _ in range(20):
            k1 = f(y)
            k2 = f(y + h / 2 * k1)
            k3 = f(y + h / 2 * k2)
            k4 = f(y + h * k3)
            y = y + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        s_daily.append(y[0])
    s_daily = np.stack(s_daily)
    return np.maximum(s_daily[:-1] - s_daily[1:], 0)[:, None, :].astype(np.float32)


def load_revision(rev: str):
    """The samplers as of git revision `rev` (`sgjax/_internal/_random.py`, or
    `sgjax/_random.py` before the move), imported as a module."""
    for file in ("sgjax/_internal/_random.py", "sgjax/_internal/random.py", "sgjax/_random.py"):
        run = subprocess.run(
            ["git", "show", f"{rev}:{file}"], cwd=Path(__file__).parent, capture_output=True, text=True
        )
        if run.returncode == 0 and "def poisson" in run.stdout:  # not the shim left at the old path
            source = run.stdout
            break
    else:
        raise ValueError(f"No samplers at git revision {rev!r} (sgjax/_internal/_random.py or sgjax/_random.py).")
    path = Path(tempfile.mkdtemp()) / f"random_{rev}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(f"random_{rev}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def sir_section(our_key, chunk: int, calls: int, baseline_rev: str | None):
    """Per-chunk timing of Poisson noise on SIR daily incidence (section 2)."""
    rates = jnp.asarray(sir_incidence(chunk))
    lam = np.asarray(rates)
    print(f"\nSIR daily incidence, one chunk {rates.shape} = {rates.size:,} values: "
          f"median rate {np.median(lam):.2f}, {np.mean(lam < 10):.0%} below 10, "
          f"max {lam.max():.0f}")  # fmt: skip
    base_name = "`jax.random.poisson`"
    samplers = {
        base_name: lambda k, r: jax.random.poisson(k, r).astype(r.dtype),
        "sgjax `poisson` (exact)": sgr.poisson,
        "sgjax `poisson(method=\"normal\")`": lambda k, r: sgr.poisson(k, r, method="normal"),
    }  # fmt: skip
    if baseline_rev is not None:
        old = load_revision(baseline_rev)
        samplers[f"sgjax `poisson` (exact) at {baseline_rev}"] = old.poisson
    compiled, compile_s = {}, {name: np.inf for name in samplers}
    for _ in range(2):  # best of two from cold caches (the first pays warm-up)
        for name, fn in samplers.items():
            k = jax.random.key(0) if name == base_name else our_key
            jax.clear_caches()
            start = time.perf_counter()
            compiled[name] = (jax.jit(lambda k, r, fn=fn: fn(k, r)).lower(k, rates).compile(), k)
            compile_s[name] = min(compile_s[name], time.perf_counter() - start)
    best = {name: np.inf for name in compiled}
    for i in range(calls):  # interleaved, so that load changes hit all alike
        for name, (fn, k) in compiled.items():
            if name == base_name and i % 10:
                continue  # ~20 ms a call: timed every tenth round only
            start = time.perf_counter()
            jax.block_until_ready(fn(jax.random.fold_in(k, i), rates))
            best[name] = min(best[name], time.perf_counter() - start)
    print()
    print("| sampler (SIR incidence, one 100 x 1 x 1024 chunk) | ms per chunk | values/s "
          "| speed-up | compile [s] |")  # fmt: skip
    print("|---|---:|---:|---:|---:|")
    for name in compiled:
        t = best[name]
        print(f"| {name} | {t * 1e3:.2f} | {rates.size / t:,.0f} | {best[base_name] / t:.1f}x "
              f"| {compile_s[name]:.2f} |")  # fmt: skip


def chunked(sampler, chunk_rows: int):
    """`sampler(key, *params)` applied with `lax.map` over chunks of rows."""

    def run(key, *params):
        rows = params[0].shape[0]
        num = rows // chunk_rows
        chunks = [p.reshape(num, chunk_rows, *p.shape[1:]) for p in params]

        def body(args):
            index, *chunk = args
            return sampler(jax.random.fold_in(key, index), *chunk)

        out = jax.lax.map(body, (jnp.arange(num), *chunks))
        return out.reshape(params[0].shape)

    return run


def best_time(fn, args, repeat: int) -> float:
    jax.block_until_ready(fn(*args))  # compile + warm up
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return min(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=65536)
    parser.add_argument("--days", type=int, default=100)
    parser.add_argument("--chunk-rows", type=int, default=1024)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--baseline-repeat", type=int, default=2)
    parser.add_argument("--impl", default=None, help="PRNG for our samplers")
    parser.add_argument("--sir-calls", type=int, default=200)
    parser.add_argument("--sir-only", action="store_true")
    parser.add_argument("--baseline-rev", default=None, help="also time the samplers of this git revision")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 8,192 rows, fewer repeats")
    args = parser.parse_args()
    if args.quick:
        args.rows, args.repeat, args.baseline_repeat, args.sir_calls = 8192, 2, 1, 20
    our_key = jax.random.key(0) if args.impl is None else jax.random.key(0, impl=args.impl)
    if args.sir_only:
        print(f"{jax.devices()[0]}; our PRNG: {jax.random.key_impl(our_key)}")
        sir_section(our_key, args.chunk_rows, args.sir_calls, args.baseline_rev)
        return

    rates = jnp.asarray(sir_like_rates(args.rows, args.days))
    shapes = rates + 0.1  # gamma shapes of the same magnitudes, some < 1
    dispersion = jnp.full_like(rates, 5.0)
    trials = jnp.round(rates)
    key = jax.random.key(0)  # jax.random.poisson only supports threefry keys

    cases = [
        # name, sampler, params, is_baseline, baseline name
        ("jax.random.poisson", lambda k, r: jax.random.poisson(k, r).astype(r.dtype),
         (rates,), True, None),
        ("sgjax poisson (exact)", sgr.poisson, (rates,), False, "jax.random.poisson"),
        ("sgjax poisson (method='normal')",
         lambda k, r: sgr.poisson(k, r, method="normal"),
         (rates,), False, "jax.random.poisson"),
        ("jax.random.gamma", jax.random.gamma, (shapes,), True, None),
        ("sgjax gamma", sgr.gamma, (shapes,), False, "jax.random.gamma"),
        ("jax gamma + poisson (NB)",
         lambda k, m, d: jax.random.poisson(
             jax.random.fold_in(k, 1), jax.random.gamma(k, d) * m / d
         ).astype(m.dtype),
         (rates, dispersion), True, None),
        ("sgjax negative_binomial", sgr.negative_binomial, (rates, dispersion), False,
         "jax gamma + poisson (NB)"),
        ("jax.random.binomial (p = 0.3)",
         lambda k, n: jax.random.binomial(k, n, 0.3).astype(n.dtype),
         (trials,), True, None),
        ("sgjax binomial (p = 0.3)", lambda k, n: sgr.binomial(k, n, 0.3), (trials,),
         False, "jax.random.binomial (p = 0.3)"),
    ]  # fmt: skip
    if args.baseline_rev is not None:
        old = load_revision(args.baseline_rev)
        at = f" at {args.baseline_rev}"
        cases += [
            ("sgjax poisson (exact)" + at, old.poisson, (rates,), False, "jax.random.poisson"),
            ("sgjax gamma" + at, old.gamma, (shapes,), False, "jax.random.gamma"),
            ("sgjax negative_binomial" + at, old.negative_binomial, (rates, dispersion),
             False, "jax gamma + poisson (NB)"),
            ("sgjax binomial (p = 0.3)" + at, lambda k, n: old.binomial(k, n, 0.3),
             (trials,), False, "jax.random.binomial (p = 0.3)"),
        ]  # fmt: skip

    n = rates.size
    print(f"{args.rows} x {args.days} = {n:,} values; {jax.devices()[0]}; "
          f"our PRNG: {jax.random.key_impl(our_key)}")  # fmt: skip
    results = {}
    for name, sampler, params, baseline, _ in cases:
        k = key if baseline else our_key
        repeat = args.baseline_repeat if baseline else args.repeat
        whole = best_time(jax.jit(sampler), (k, *params), repeat)
        chunks = best_time(jax.jit(chunked(sampler, args.chunk_rows)), (k, *params), repeat)
        results[name] = (whole, chunks)
        print(f"  {name}: whole {whole:.3f} s, chunks {chunks:.3f} s", flush=True)

    print()
    print(
        f"| sampler ({n:,} values) | whole array [s] | lax.map over "
        f"{args.chunk_rows}-row chunks [s] | speed-up whole | speed-up chunks |"
    )
    print("|---|---:|---:|---:|---:|")
    for name, _, _, _, base in cases:
        whole, chunks = results[name]
        if base is None:
            up = ("1", "1")
        else:
            up = tuple(f"{b / t:.1f}x" for b, t in zip(results[base], (whole, chunks)))
        print(f"| {name} | {whole:.3f} | {chunks:.3f} | {up[0]} | {up[1]} |")

    sir_section(our_key, args.chunk_rows, args.sir_calls, args.baseline_rev)


if __name__ == "__main__":
    main()
