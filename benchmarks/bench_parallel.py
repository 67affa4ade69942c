"""Fused training throughput with data parallelism over N devices (issue 6).

    python benchmarks/bench_parallel.py N [--steps S] [--json]

On a CPU, N devices are simulated with XLA_FLAGS=--xla_force_host_platform_device_count=N
(set here, before JAX starts); on a GPU node N may be up to the number of GPUs (the flag
then only affects the host platform). SIR with 40 days of Poisson-reported incidence,
MLP, batch 512, max(2, N) key streams per batch (so N = 1 and 2 train on the same
batches); prints samples/s after compilation for 2 fits of S steps (default 600), or
with `--json` one JSON line with the better of the two.
"""

import argparse
import json
import os


parser = argparse.ArgumentParser()
parser.add_argument("n", type=int, nargs="?", default=1, help="devices")
parser.add_argument("--steps", type=int, default=600)
parser.add_argument("--json", action="store_true")
args = parser.parse_args()
os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={args.n}"

import jax  # noqa: E402

import sgjax  # noqa: E402
from sgjax.reproduce._common import sir_reported  # noqa: E402


_, task = sir_reported()
rates = []
for rep in range(2):
    _, hist = sgjax.fit(task, key=jax.random.key(rep), steps=args.steps, batch_size=512, eval_every=args.steps,
                        progress=False, devices=args.n, shards=max(2, args.n))  # fmt: skip
    rates.append(hist["samples_per_s"][-1])
if args.json:
    print(json.dumps({"devices": args.n, "platform": jax.devices()[0].platform, "samples_per_s": max(rates)}))
else:
    print(
        f"{jax.devices()[0].platform}: devices={args.n} shards={max(2, args.n)} samples/s",
        [round(r) for r in rates],
        flush=True,
    )
