"""Run by test_parallel.py in fresh processes (the device count and the distributed
runtime are fixed when JAX starts): train a small SGNN data-parallel and print the
loss history and a fingerprint of the parameters as JSON.

    python parallel_worker.py devices N [MODES]     # N simulated CPU devices, one process;
                                                    # MODES: stream,budget (the default) or one
    python parallel_worker.py distributed ID PORT DIR  # process ID of 2, 2 CPU devices each;
                                                       # checkpoints into the shared DIR
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
    jax.distributed.initialize(
        coordinator_address=f"localhost:{sys.argv[3]}", num_processes=2, process_id=int(sys.argv[2])
    )

sys.path.insert(0, os.path.dirname(__file__))
import equinox as eqx  # noqa: E402
import jax.experimental.multihost_utils  # noqa: E402
import numpy as np  # noqa: E402
from exact_tasks import PoissonGamma  # noqa: E402

import sgjax  # noqa: E402


KW = dict(key=jax.random.key(0), steps=50, batch_size=64, eval_every=25, steps_per_call=25, progress=False)


def fingerprint(est):
    leaves = jax.tree.leaves(eqx.filter(est.network, eqx.is_inexact_array))
    return [float(np.asarray(leaf.addressable_data(0)).sum()) for leaf in leaves]


MODES = {"stream": {}, "budget": {"budget": 256}}
if mode == "devices" and len(sys.argv) > 3:
    MODES = {name: MODES[name] for name in sys.argv[3].split(",")}
out = {"devices": len(jax.devices()), "processes": jax.process_count()}
for name, extra in MODES.items():
    est, hist = sgjax.fit(PoissonGamma(), devices="all", **KW, **extra)
    # One process: replicated over its devices. Several: each process's own full copy.
    shardings = {
        str(getattr(leaf.sharding, "spec", "local"))
        for leaf in jax.tree.leaves(eqx.filter(est.network, eqx.is_inexact_array))
    }
    out[name] = {
        "loss": hist["loss"],
        "val_loss": hist["val_loss"],
        "params": fingerprint(est),
        "specs": sorted(shardings),
    }
if mode == "distributed":
    # Checkpoints: one writer (process 0) into the directory both share; both resume.
    from sgjax._training import _loop

    writes = []
    save = _loop.save_checkpoint
    _loop.save_checkpoint = lambda *a, **k: (writes.append(a[1]), save(*a, **k))
    ckpt = sys.argv[4]
    sgjax.fit(PoissonGamma(), devices="all", checkpoint_dir=ckpt, checkpoint_every=25, **KW)
    jax.experimental.multihost_utils.sync_global_devices("checkpoints written")
    est, hist = sgjax.fit(PoissonGamma(), devices="all", checkpoint_dir=ckpt, resume=True, **(KW | {"steps": 75}))
    saved = sgjax.save(os.path.join(ckpt, f"estimator-{jax.process_index()}"), est)  # a local copy saves
    out["checkpoints"] = {
        "writes": writes,
        "files": sorted(os.listdir(ckpt)),
        "resumed_loss": hist["loss"],
        "resumed_params": fingerprint(est),
        "saved": os.path.exists(saved),
    }
print("RESULT " + json.dumps(out), flush=True)
