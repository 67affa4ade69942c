"""Fused training throughput with data parallelism over N devices (issue 6).

    python benchmarks/bench_parallel.py N

On a CPU, N devices are simulated with XLA_FLAGS=--xla_force_host_platform_device_count=N
(set here, before JAX starts); on a GPU node N may be up to the number of GPUs (the flag
then only affects the host platform). SIR with 40 days of Poisson-reported incidence,
MLP, batch 512, 2 key streams per batch (so every N in {1, 2} trains on the same
batches); prints samples/s after compilation for 2 fits of 600 steps.
"""

import os
import sys

n = int(sys.argv[1]) if len(sys.argv) > 1 else 1
os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={n}"

import jax  # noqa: E402

import sgjax  # noqa: E402
from sgjax.reproduce._common import sir_reported  # noqa: E402

_, task = sir_reported()
rates = []
for rep in range(2):
    _, hist = sgjax.fit(task, key=jax.random.key(rep), steps=600, batch_size=512, eval_every=200, progress=False, devices=n, shards=2)
    rates.append(hist["samples_per_s"][-1])
print(f"{jax.devices()[0].platform}: devices={n} shards=2 samples/s", [round(r) for r in rates], flush=True)
