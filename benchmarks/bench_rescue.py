"""What the in-program rescue of a failed shared-step solve costs (issue 24 item 3).

A training batch under `SharedStep()` (default `fallback=True`) carries a `lax.cond`
that re-solves the batch per trajectory when the shared solve fails as a whole
(`sgjax._simulation._strategy.solve_or_rescue`). It costs compile time always, run time only when
it fires. Measured here, each configuration in a fresh process (a cold compile):

- the compile of one training batch (`Task.sample`, jitted) with and without it;
- a cold `fit` (SIR, Poisson counts, 100 days, 100 steps), start to finish;
- the time of a batch when the rescue does not fire (SIR) and when it does (Lorenz
  with a wide prior), and the share of samples kept.

    python benchmarks/bench_rescue.py
"""

import json
import subprocess
import sys


CHILD = r"""
import json, sys, time
import jax, jax.numpy as jnp
import numpyro.distributions as dist
import sgjax
from sgjax.observation import ObservationModel, Poisson

fallback = sys.argv[1] == "on"
what = sys.argv[2]
strategy = sgjax.SharedStep(fallback=fallback)
sir = sgjax.Simulator(sgjax.models.SIR(), jnp.arange(1.0, 101.0), ObservationModel(Poisson()))
out = {}
if what == "fit":
    task = sgjax.Task(sir, ["beta", "gamma"], strategy=strategy)
    t = time.perf_counter()
    sgjax.fit(task, key=jax.random.key(0), steps=100, eval_every=100, progress=False)
    out["fit_s"] = time.perf_counter() - t
else:
    lorenz = sgjax.Simulator(sgjax.models.Lorenz(), jnp.linspace(0.05, 2.0, 40))
    wide = sgjax.Prior(sigma=dist.Uniform(0.1, 5000.0), rho=dist.Uniform(0.1, 5000.0), beta=8.0 / 3.0)
    for name, task in (("sir", sgjax.Task(sir, ["beta"], strategy=strategy)),
                       ("lorenz", sgjax.Task(lorenz, ["sigma"], prior=wide, strategy=strategy))):
        sample = jax.jit(lambda k, task=task: task.sample(k, 256))
        t = time.perf_counter()
        compiled = sample.lower(jax.random.key(0)).compile()
        out[name + "_compile_s"] = time.perf_counter() - t
        jax.block_until_ready(compiled(jax.random.key(0)))
        times, kept = [], []
        for i in range(1, 21):
            t = time.perf_counter()
            batch = jax.block_until_ready(compiled(jax.random.key(i)))
            times.append(time.perf_counter() - t)
            kept.append(float((batch.weight > 0).mean()))
        out[name + "_batch_ms"] = 1e3 * sorted(times)[len(times) // 2]
        out[name + "_kept"] = sum(kept) / len(kept)
print("RESULT " + json.dumps(out))
"""


def run(fallback: str, what: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", CHILD, fallback, what], capture_output=True, text=True, check=True)
    line = next(line for line in proc.stdout.splitlines() if line.startswith("RESULT "))
    return json.loads(line[len("RESULT ") :])


def main() -> None:
    rows = {}
    for repeat in range(2):  # alternated, so that a busy spell hits both
        for fallback in ("off", "on"):
            for what in ("batch", "fit"):
                for k, v in run(fallback, what).items():
                    rows.setdefault((fallback, k), []).append(v)
    print(f"{'':>22} {'fallback=False':>15} {'fallback=True':>15}  (best of 2 fresh processes; kept: the mean)")
    for key in sorted({k for _, k in rows}):
        pick = max if key.endswith("_kept") else min
        off, on = (pick(rows[(f, key)]) for f in ("off", "on"))
        print(f"{key:>22} {off:>15.3f} {on:>15.3f}")


if __name__ == "__main__":
    main()
