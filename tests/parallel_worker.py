"""Run by test_parallel.py in fresh processes (the device count and the distributed
runtime are fixed when JAX starts): train a small SGNN data-parallel and print the
loss history and a fingerprint of the parameters as JSON.

    python parallel_worker.py devices N             # N simulated CPU devices, one process
    python parallel_worker.py distributed ID PORT   # process ID of 2, 2 CPU devices each
"""

import json
import os
import sys

mode = sys.argv[1]
n_local = int(sys.argv[2]) if mode == "devices" else 2
os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={n_local}"

import jax  # noqa: E402

if mode == "distributed":
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=f"localhost:{sys.argv[3]}", num_processes=2, process_id=int(sys.argv[2]))

sys.path.insert(0, os.path.dirname(__file__))
import equinox as eqx  # noqa: E402
import numpy as np  # noqa: E402

import sgjax  # noqa: E402
from exact_tasks import PoissonGamma  # noqa: E402

KW = dict(key=jax.random.key(0), steps=50, batch_size=64, eval_every=25, steps_per_call=25, progress=False)


def fingerprint(est):
    leaves = jax.tree.leaves(eqx.filter(est.network, eqx.is_inexact_array))
    return [float(np.asarray(leaf.addressable_data(0)).sum()) for leaf in leaves]


out = {"devices": len(jax.devices()), "processes": jax.process_count()}
for name, extra in (("stream", {}), ("budget", {"budget": 256})):
    est, hist = sgjax.fit(PoissonGamma(), devices="all", **KW, **extra)
    shardings = {str(leaf.sharding.spec) for leaf in jax.tree.leaves(eqx.filter(est.network, eqx.is_inexact_array))}
    out[name] = {"loss": hist["loss"], "val_loss": hist["val_loss"], "params": fingerprint(est), "specs": sorted(shardings)}
print("RESULT " + json.dumps(out), flush=True)
