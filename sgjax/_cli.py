"""The `sgjax` command line: `sgjax simulate MODEL ...`."""

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np


def _registry() -> dict:
    from . import models

    return {
        name.lower(): cls
        for name, cls in vars(models).items()
        if isinstance(cls, type) and cls.__module__.startswith("sgjax.models")
    }


#: Observation horizon (t1) by the kind of model, in the model's time units.
_HORIZON = {"epidemics": 100.0, "growth": 50.0, "ecology": 50.0, "dynamics": 20.0}


def _observation(args, counts: bool):
    from . import observation as obs

    noise = args.noise or ("poisson" if counts else "gaussian")
    transforms = () if args.reporting == 1.0 else (obs.Reporting(args.reporting),)
    if noise == "none":
        return None
    make = {
        "poisson": lambda: obs.Poisson(),
        "negbin": lambda: obs.NegativeBinomial(args.dispersion),
        "gaussian": lambda: obs.Gaussian(args.scale),
        "lognormal": lambda: obs.LogNormal(args.scale),
    }[noise]
    return obs.ObservationModel(make(), transforms)


def _prepare_out(path: str, overwrite: bool) -> Path:
    out = Path(path)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise SystemExit(
            f"error: the output directory {out} already exists and is not empty; "
            "choose another --out, or pass --overwrite to replace its files."
        )
    out.mkdir(parents=True, exist_ok=True)
    return out


def _write_atomic(path: Path, write) -> None:
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)


def _plot(sim, path: Path, title: str, k: int = 6) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    idx = np.flatnonzero(sim.valid)[:k]
    ts = np.asarray(sim.ts)
    fig, axes = plt.subplots(2, 3, figsize=(12, 6), sharex=True)
    for ax, i in zip(axes.flat, idx):
        for c in range(sim.signal.shape[-1]):
            (line,) = ax.plot(ts, sim.signal[i, :, c], lw=1.5)
            m = sim.mask[i, :, c]
            ax.plot(ts[m], sim.observations[i, m, c], ".", ms=3, color=line.get_color())
        ax.set_title(", ".join(f"{n}={float(v[i]):.3g}" for n, v in sim.theta.items()), fontsize=8)
    for ax in axes[-1]:
        ax.set_xlabel("t")
    fig.suptitle(f"{title}: clean signal (lines) and observations (dots)")
    fig.tight_layout()
    _write_atomic(path, lambda p: fig.savefig(p, format="png", dpi=110))
    plt.close(fig)


def _simulate_cmd(args) -> int:
    import jax
    import jax.numpy as jnp

    from . import PerTrajectory, SharedStep, Simulator, __version__, simulate

    registry = _registry()
    if args.model not in registry:
        raise SystemExit(f"error: unknown model {args.model!r}; choose one of {sorted(registry)}.")
    cls = registry[args.model]
    kind = cls.__module__.rsplit(".", 1)[-1]
    model = cls()
    t1 = args.t1 if args.t1 is not None else _HORIZON.get(kind, 50.0)
    ts = jnp.linspace(t1 / args.times, t1, args.times)
    simulator = Simulator(model, ts, _observation(args, counts=kind in ("epidemics", "growth")))
    out = _prepare_out(args.out, args.overwrite)
    strategy = PerTrajectory() if args.strategy == "per-trajectory" else SharedStep()
    start = time.perf_counter()
    sim = simulate(simulator, jax.random.key(args.seed), args.n, strategy=strategy)
    seconds = time.perf_counter() - start
    arrays = {f"theta_{k}": v for k, v in sim.theta.items()}
    arrays.update(ts=np.asarray(sim.ts), signal=sim.signal, observations=sim.observations, mask=sim.mask, valid=sim.valid)
    def save_npz(path):
        with open(path, "wb") as f:
            np.savez_compressed(f, **arrays)

    _write_atomic(out / "simulations.npz", save_npz)
    _plot(sim, out / "simulations.png", cls.__name__)
    summary = {
        "model": cls.__name__,
        "n": args.n,
        "n_valid": int(sim.valid.sum()),
        "n_failed_and_resampled": sim.n_failed,
        "seconds_including_compile": round(seconds, 3),
        "parameters": list(sim.theta),
        "sgjax": __version__,
        "jax": jax.__version__,
        "backend": jax.default_backend(),
    }
    _write_atomic(out / "summary.json", lambda p: p.write_text(json.dumps(summary, indent=2)))
    print(json.dumps(summary, indent=2))
    print(f"wrote {out}/simulations.npz, simulations.png, summary.json")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="sgjax", description="Simulation-grounded learning in JAX.")
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser(
        "simulate",
        help="simulate a batch from a built-in model and save data, a plot and a summary",
        description="Simulate a batch from a built-in model with its default prior.",
    )
    s.add_argument("model", help=f"a built-in model: {', '.join(sorted(_registry()))}")
    s.add_argument("--n", type=int, default=1000, help="number of simulations (default 1000)")
    s.add_argument("--times", type=int, default=100, help="number of observation times (default 100)")
    s.add_argument("--t1", type=float, default=None, help="last observation time (default by model kind)")
    s.add_argument("--noise", choices=["poisson", "negbin", "gaussian", "lognormal", "none"], default=None,
                   help="observation noise (default: poisson for epidemics and growth, gaussian otherwise)")
    s.add_argument("--reporting", type=float, default=1.0, help="reporting fraction in [0, 1] (default 1)")
    s.add_argument("--dispersion", type=float, default=10.0, help="negative-binomial dispersion (default 10)")
    s.add_argument("--scale", type=float, default=0.1, help="gaussian / lognormal noise scale (default 0.1)")
    s.add_argument("--strategy", choices=["shared-step", "per-trajectory"], default="shared-step")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out", default="runs/simulate", help="output directory (default runs/simulate)")
    s.add_argument("--overwrite", action="store_true", help="replace files in an existing --out")
    s.set_defaults(func=_simulate_cmd)
    args = parser.parse_args(argv)
    if getattr(args, "n", 1) < 1:
        parser.error("--n must be a positive integer")
    try:
        return args.func(args)
    except ValueError as e:  # our errors say what to fix; show them without a traceback
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
