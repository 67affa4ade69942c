"""Before/after check for a refactor: simulation and fused-training throughput of two
checkouts of sgjax, measured in one run, alternating, through the public API only.

    python benchmarks/bench_redesign.py BEFORE_DIR AFTER_DIR [--rounds 3]

Each measurement runs in a fresh process with `PYTHONPATH` set to one checkout:
- simulate: `sgjax.simulate` of SIR, 100 daily Poisson-observed incidences, n = 100,000
  (best of 5 after a warm-up call), simulations per second;
- train: `sgjax.fit` (Point head, MLP 2×256, batch 512, 25 steps per call) for 500 and
  1,500 steps; samples per second from the difference, so compilation cancels.
The figure reported for each checkout is the median over rounds. `--env-after NAME=VALUE`
sets an environment variable for the after checkout only (e.g. `SGJAX_HOST_POOL=1`, the
host memory pool the redesign made opt-in); `--only simulate|train` measures one.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys


CHILD = r"""
import functools, json, sys, time
import jax, jax.numpy as jnp
import sgjax
from sgjax.observation import ObservationModel, Poisson
sim = sgjax.Simulator(sgjax.models.SIR(), jnp.arange(1.0, 101.0), ObservationModel(Poisson()))
what = sys.argv[1]
if what == "simulate":
    n = 100_000
    jax.block_until_ready(sgjax.simulate(sim, key=jax.random.key(0), n=n).observations)
    best = float("inf")
    for i in range(5):
        t = time.perf_counter()
        jax.block_until_ready(sgjax.simulate(sim, key=jax.random.key(i + 1), n=n).observations)
        best = min(best, time.perf_counter() - t)
    print(json.dumps({"per_s": n / best}))
else:
    task = sgjax.Task(sim, ["beta", "gamma"])
    net = functools.partial(sgjax.nn.MLP, width=256, depth=2)
    def run(steps):
        t = time.perf_counter()
        sgjax.fit(task, sgjax.heads.Point(), net, key=jax.random.key(0), steps=steps, batch_size=512,
                  progress=False, validation_size=512, eval_every=steps)
        return time.perf_counter() - t
    t1, t2 = run(500), run(1500)
    print(json.dumps({"per_s": 512 * 1000 / (t2 - t1)}))
"""


def measure(tree: str, what: str, extra_env: dict | None = None) -> float:
    env = dict(os.environ, PYTHONPATH=tree, JAX_PLATFORMS="cpu", **(extra_env or {}))
    out = subprocess.run([sys.executable, "-c", CHILD, what], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["per_s"]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("before")
    p.add_argument("after")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--only", choices=("simulate", "train"), help="measure one of the two")
    p.add_argument(
        "--env-after",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an environment variable for the after checkout only (e.g. SGJAX_HOST_POOL=1)",
    )
    args = p.parse_args()
    env_after = dict(kv.split("=", 1) for kv in args.env_after)
    whats = (args.only,) if args.only else ("simulate", "train")
    figs = {(t, w): [] for t in ("before", "after") for w in ("simulate", "train")}
    for r in range(args.rounds):
        for what in whats:
            for name, tree in (("before", args.before), ("after", args.after)):
                figs[name, what].append(measure(tree, what, env_after if name == "after" else None))
                print(f"round {r + 1} {what:8s} {name:6s} {figs[name, what][-1]:,.0f}/s", flush=True)
    for what in whats:
        b, a = (statistics.median(figs[n, what]) for n in ("before", "after"))
        print(f"{what}: before {b:,.0f}/s, after {a:,.0f}/s, after/before {a / b:.3f}")


if __name__ == "__main__":
    main()
