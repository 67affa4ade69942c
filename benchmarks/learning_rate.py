"""The default optimiser's peak learning rate: validation loss after the same steps at
each rate, on the peers' SIR problem (`bench_peers.problem`: reporting and Poisson
counts, targets β, γ, ρ). The evidence behind `sgjax.fit`'s default (3e-3).

Run: `python benchmarks/learning_rate.py flow` (the peers' flow fit, 6,000 steps:
the step at which its natural-unit validation loss first reaches `--threshold`, sbi's
loss in the peers run, and its best), `... heads` (MLP with the point and mixture
heads, 2,000 steps), `... networks` (GRU and Transformer with the point head, 600
steps of 128). `--rates 1e-3 3e-3` by default; `--seed` for the fit key.
"""

import argparse
import functools
import sys
from pathlib import Path

import jax

import sgjax


sys.path.insert(0, str(Path(__file__).parent))
import bench_peers as bp  # noqa: E402


def flow(task, rate, seed, threshold):
    """The peers' sgjax fit (`bench_peers.run_sgjax`, full settings) at `rate`, scored by
    `bench_peers.score_sgjax` on its own validation set."""
    k_fit = jax.random.split(jax.random.key(seed), 3)[0]  # as bench_peers draws it
    cfg = bp.SETTINGS["full"]
    out, estimator, curve = bp.run_sgjax(task, k_fit, cfg, learning_rate=rate)
    val = bp.held_out(task, jax.random.split(k_fit, 5)[1], cfg["n_val"])
    out = bp.score_sgjax(task, out, estimator, curve, val, threshold)
    return f"reaches {threshold} at step {out['steps_to_threshold']}; best {out['best_val_loss']:.3f}"


def point_like(task, rate, seed, head, network, steps, batch):
    _, history = sgjax.fit(
        task, head, network, key=jax.random.key(seed), steps=steps, batch_size=batch, eval_every=steps // 4 // 25 * 25,
        validation_size=2048, progress=False, learning_rate=rate,
    )  # fmt: skip
    return "validation loss " + " → ".join(f"{v:.4f}" for v in history["val_loss"])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["flow", "heads", "networks"])
    parser.add_argument("--rates", type=float, nargs="+", default=[1e-3, 3e-3])
    parser.add_argument("--seed", type=int, default=None, help="fit key (default 0 for flow, 3 otherwise)")
    parser.add_argument("--threshold", type=float, default=-5.765, help="natural-unit validation loss (flow)")
    args = parser.parse_args()
    task = bp.problem()
    runs = {
        "flow": [("Flow", lambda r, s: flow(task, r, s, args.threshold))],
        "heads": [
            (name, functools.partial(point_like, task, head=h, network=sgjax.nn.MLP, steps=2000, batch=512))
            for name, h in (
                ("MLP + Point", sgjax.heads.Point()),
                ("MLP + MixtureDensity(3)", sgjax.heads.MixtureDensity(3)),
            )
        ],
        "networks": [
            (
                net.__name__ + " + Point",
                functools.partial(point_like, task, head=sgjax.heads.Point(), network=net, steps=600, batch=128),
            )
            for net in (sgjax.nn.GRU, sgjax.nn.Transformer)
        ],
    }[args.what]
    seed = args.seed if args.seed is not None else (0 if args.what == "flow" else 3)
    for name, run in runs:
        for rate in args.rates:
            print(f"{name}, learning rate {rate:g}, seed {seed}: {run(rate, seed)}", flush=True)


if __name__ == "__main__":
    main()
