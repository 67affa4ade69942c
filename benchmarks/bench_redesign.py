"""Before/after check for a refactor: simulation and fused-training throughput of two
checkouts of sgjax, measured in one run, alternating, through the public API only.

    python benchmarks/bench_redesign.py BEFORE_DIR AFTER_DIR [--rounds 3]

Each measurement runs in a fresh process with `PYTHONPATH` set to one checkout:
- simulate: `sgjax.simulate` of SIR, 100 daily Poisson-observed incidences, n = 100,000
  (best of 5 after a warm-up call), simulations per second;
- train: `sgjax.fit` (Point head, MLP 2×256, batch 512, 25 steps per call) for 500 and
  1,500 steps; samples per second from the difference, so compilation cancels.
The figure reported for each checkout is the median over rounds.
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


def measure(tree: str, what: str) -> float:
    env = dict(os.environ, PYTHONPATH=tree, JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, "-c", CHILD, what], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["per_s"]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("before")
    p.add_argument("after")
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    figs = {(t, w): [] for t in ("before", "after") for w in ("simulate", "train")}
    for r in range(args.rounds):
        for what in ("simulate", "train"):
            for name, tree in (("before", args.before), ("after", args.after)):
                figs[name, what].append(measure(tree, what))
                print(f"round {r + 1} {what:8s} {name:6s} {figs[name, what][-1]:,.0f}/s", flush=True)
    for what in ("simulate", "train"):
        b, a = (statistics.median(figs[n, what]) for n in ("before", "after"))
        print(f"{what}: before {b:,.0f}/s, after {a:,.0f}/s, after/before {a / b:.3f}")


if __name__ == "__main__":
    main()
