"""Micro-benchmark of the samplers in `sgjax._random` against `jax.random`.

Times Poisson, Gamma and negative binomial sampling for 65,536 x 100 parameters
drawn like the daily incidence of a batch of SIR simulations (exponential with mean
20, plus 1% large rates up to 1e5), both on the whole array at once and generated
in chunks of 1024 rows with `jax.lax.map` inside `jit`. Compilation is excluded
(one warm-up call); each figure is the best of `--repeat` runs (the jax baselines
take seconds, so they are run fewer times).

    python benchmarks/bench_random.py            # full size, ~2 minutes
    python benchmarks/bench_random.py --rows 8192 --repeat 3   # quick
    python benchmarks/bench_random.py --impl philox4x32        # other PRNG

Prints a markdown table and the speed-ups.
"""

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from sgjax import _random as sgr


def sir_like_rates(rows: int, days: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rates = rng.exponential(20.0, (rows, days))
    large = rng.random((rows, days)) < 0.01
    rates[large] = rng.uniform(1e3, 1e5, large.sum())
    return rates.astype(np.float32)


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
    args = parser.parse_args()

    rates = jnp.asarray(sir_like_rates(args.rows, args.days))
    shapes = rates + 0.1  # gamma shapes of the same magnitudes, some < 1
    dispersion = jnp.full_like(rates, 5.0)
    key = jax.random.key(0)  # jax.random.poisson only supports threefry keys
    our_key = key if args.impl is None else jax.random.key(0, impl=args.impl)

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
    ]  # fmt: skip

    n = rates.size
    print(f"{args.rows} x {args.days} = {n:,} values; {jax.devices()[0]}; "
          f"our PRNG: {jax.random.key_impl(our_key)}")  # fmt: skip
    results = {}
    for name, sampler, params, baseline, _ in cases:
        k = key if baseline else our_key
        repeat = args.baseline_repeat if baseline else args.repeat
        whole = best_time(jax.jit(sampler), (k, *params), repeat)
        chunks = best_time(
            jax.jit(chunked(sampler, args.chunk_rows)), (k, *params), repeat
        )
        results[name] = (whole, chunks)
        print(f"  {name}: whole {whole:.3f} s, chunks {chunks:.3f} s", flush=True)

    print()
    print(f"| sampler ({n:,} values) | whole array [s] | lax.map over "
          f"{args.chunk_rows}-row chunks [s] | speed-up whole | speed-up chunks |")
    print("|---|---:|---:|---:|---:|")
    for name, _, _, _, base in cases:
        whole, chunks = results[name]
        if base is None:
            up = ("1", "1")
        else:
            up = tuple(f"{b / t:.1f}x" for b, t in zip(results[base], (whole, chunks)))
        print(f"| {name} | {whole:.3f} | {chunks:.3f} | {up[0]} | {up[1]} |")


if __name__ == "__main__":
    main()
