"""The `sgjax` command line: `simulate`, `train`, `infer`, and the main job
`boarding-school`."""

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


def _simulator(args):
    """The built-in model named on the command line, observed as the flags say."""
    import jax.numpy as jnp

    from . import Simulator

    registry = _registry()
    if args.model not in registry:
        raise SystemExit(f"error: unknown model {args.model!r}; choose one of {sorted(registry)}.")
    cls = registry[args.model]
    kind = cls.__module__.rsplit(".", 1)[-1]
    t1 = args.t1 if args.t1 is not None else _HORIZON.get(kind, 50.0)
    ts = jnp.linspace(t1 / args.times, t1, args.times)
    return cls, Simulator(cls(), ts, _observation(args, counts=kind in ("epidemics", "growth")))


def _simulate_cmd(args) -> int:
    import jax

    from . import PerTrajectory, SharedStep, __version__, simulate

    cls, simulator = _simulator(args)
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


_HEADS = {"point": "Point", "quantile": "Quantile", "gaussian": "Gaussian", "mixture": "MixtureDensity"}
_NETWORKS = {"mlp": "MLP", "cnn": "CNN", "gru": "GRU", "transformer": "Transformer"}


def _train_cmd(args) -> int:
    import jax

    from . import Task, _plots, fit, heads, nn, save
    from ._evaluate import held_out, recovery
    from ._io import rounded, versions

    cls, simulator = _simulator(args)
    out = Path(args.out or f"runs/{args.model}")
    if not args.resume:
        out = _prepare_out(str(out), args.overwrite)
    elif not (out / "checkpoints").exists():
        raise SystemExit(f"error: --resume needs checkpoints in {out / 'checkpoints'}; none found.")
    targets = args.targets.split(",") if args.targets else list(simulator.param_names)
    task = Task(simulator, targets)
    head = getattr(heads, _HEADS[args.head])()
    network = getattr(nn, _NETWORKS[args.network])
    key = jax.random.key(args.seed)
    k_fit, k_test = jax.random.split(key)
    start = time.perf_counter()
    estimator, history = fit(
        task, head, network, key=k_fit, steps=args.steps, batch_size=args.batch_size, learning_rate=args.learning_rate,
        eval_every=args.eval_every, steps_per_call=min(25, args.eval_every), validation_size=args.validation_size,
        budget=args.budget, checkpoint_dir=out / "checkpoints", resume=args.resume, progress=not args.quiet,
    )
    seconds = time.perf_counter() - start
    save(out, estimator, overwrite=True)
    post, truth = held_out(estimator, task, k_test, args.test_size)
    rec = recovery(post, truth)
    _plots.training_curve(history, out / "training.png")
    if post.quantiles:
        _plots.recovery(truth, post, out / "recovery.png")
    metrics = {
        "model": cls.__name__,
        "targets": list(task.labels),
        "head": head.config(),
        "network": estimator.network.config(),
        "training": {"steps": history["step"][-1], "batch_size": args.batch_size, "seconds_including_compile": round(seconds, 2),
                     "samples_per_s_last_window": rounded(history["samples_per_s"][-1]),
                     "final_validation_loss": history["val_loss"][-1]},
        "recovery_on_held_out_simulations": {"n": len(truth), **rec},
        "history": history,
        "versions": versions(),
        "backend": jax.default_backend(),
    }
    _write_atomic(out / "metrics.json", lambda p: p.write_text(json.dumps(metrics, indent=2)))
    for label, m in rec.items():
        print(f"{label:>12}: " + ", ".join(f"{k} = {v:.3f}" for k, v in m.items()))
    print(f"wrote {out}/estimator.eqx, estimator.json, metrics.json, training.png" + (", recovery.png" if post.quantiles else ""))
    return 0


def _infer_cmd(args) -> int:
    import jax

    from . import _plots, infer, load, read_csv

    estimator = load(args.model_dir)
    times, values, mask = read_csv(args.data, columns=args.columns, time_column=args.time_column)
    trained = json.loads(estimator.info).get("ts")
    if trained is not None and len(trained) == estimator.in_time and (
        len(times) != len(trained) or not np.allclose(times, trained)
    ):
        raise ValueError(
            f"The estimator was trained on observations at times {trained[0]:g}..{trained[-1]:g} "
            f"({len(trained)} times); {args.data} has {len(times)} rows at times "
            f"{times[0]:g}..{times[-1]:g}. Give one row per training time, with empty cells "
            "where a value is missing."
        )
    out = _prepare_out(args.out or str(Path(args.model_dir) / "inference"), args.overwrite)
    post = infer(estimator, values, mask, key=jax.random.key(args.seed), n_samples=args.samples)
    result = {"data": str(args.data), "posterior": post.summary(0)}
    _write_atomic(out / "posterior.json", lambda p: p.write_text(json.dumps(result, indent=2)))
    if post.samples is not None:
        _plots.posterior_histograms({l: post.samples[0, :, j] for j, l in enumerate(post.labels)}, out / "posterior.png", f"Posterior given {Path(args.data).name}")
    print(json.dumps(result["posterior"], indent=2))
    print(f"wrote {out}/posterior.json" + (", posterior.png" if post.samples is not None else ""))
    return 0


def _main_job_cmd(args) -> int:
    from . import _mainjob

    out = _prepare_out(args.out, args.overwrite)
    metrics = _mainjob.run(out, fast=args.fast, seed=args.seed, steps=args.steps, progress=not args.quiet, overwrite=True)
    print(_mainjob.report(metrics))
    print(f"wrote {out}/metrics.json, posterior_predictive.png, posterior.png, recovery.png, training.png, estimator/")
    return 0


def _add_simulator_args(p: argparse.ArgumentParser) -> None:
    """The flags that choose the observation grid and model, shared by `simulate` and
    `train`."""
    p.add_argument("--times", type=int, default=100, help="number of observation times (default 100)")
    p.add_argument("--t1", type=float, default=None, help="last observation time (default by model kind)")
    p.add_argument("--noise", choices=["poisson", "negbin", "gaussian", "lognormal", "none"], default=None,
                   help="observation noise (default: poisson for epidemics and growth, gaussian otherwise)")
    p.add_argument("--reporting", type=float, default=1.0, help="reporting fraction in [0, 1] (default 1)")
    p.add_argument("--dispersion", type=float, default=10.0, help="negative-binomial dispersion (default 10)")
    p.add_argument("--scale", type=float, default=0.1, help="gaussian / lognormal noise scale (default 0.1)")


def _reproduce_cmd(args) -> int:
    from .reproduce import reproduce

    page = reproduce(
        args.names, args.out, quick=args.quick, seed=args.seed, overwrite=args.overwrite, progress=args.progress, jobs=args.jobs
    )
    print(f"results page: {page}")
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
    _add_simulator_args(s)
    s.add_argument("--strategy", choices=["shared-step", "per-trajectory"], default="shared-step")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out", default="runs/simulate", help="output directory (default runs/simulate)")
    s.add_argument("--overwrite", action="store_true", help="replace files in an existing --out")
    s.set_defaults(func=_simulate_cmd)

    t = sub.add_parser(
        "train",
        help="train an SGNN on fresh simulations from a built-in model",
        description="Train a network on a stream of simulations from a built-in model with its default "
        "prior, then check recovery on held-out simulations. Writes the estimator, metrics.json and plots.",
    )
    t.add_argument("model", help=f"a built-in model: {', '.join(sorted(_registry()))}")
    t.add_argument("--targets", default=None, help="comma-separated parameters or derived quantities, e.g. beta,gamma,R0 "
                   "(default: every parameter)")
    t.add_argument("--head", choices=sorted(_HEADS), default="quantile", help="what to learn (default quantile)")
    t.add_argument("--network", choices=sorted(_NETWORKS), default="mlp", help="network (default mlp)")
    t.add_argument("--steps", type=int, default=2000, help="optimiser steps (default 2000)")
    t.add_argument("--batch-size", type=int, default=512, help="simulations per step (default 512)")
    t.add_argument("--learning-rate", type=float, default=3e-3, help="peak learning rate (default 3e-3)")
    t.add_argument("--eval-every", type=int, default=250, help="steps between validation losses (default 250)")
    t.add_argument("--validation-size", type=int, default=4096, help="held-out validation simulations (default 4096)")
    t.add_argument("--test-size", type=int, default=2000, help="held-out simulations for recovery metrics (default 2000)")
    t.add_argument("--budget", type=int, default=None, help="train on this many pre-simulated samples instead of fresh ones")
    _add_simulator_args(t)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--out", default=None, help="output directory (default runs/MODEL)")
    t.add_argument("--overwrite", action="store_true", help="replace files in an existing --out")
    t.add_argument("--resume", action="store_true", help="continue from the checkpoints in --out")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.set_defaults(func=_train_cmd)

    i = sub.add_parser(
        "infer",
        help="apply a trained estimator to observed data in a CSV file",
        description="Amortized inference: the posterior for the series in a CSV file (a time column and "
        "one column per observed channel; empty cells are missing).",
    )
    i.add_argument("model_dir", help="a directory written by `sgjax train` (holding estimator.json)")
    i.add_argument("data", help="the CSV file")
    i.add_argument("--time-column", default="time", help="name of the time column (default time)")
    i.add_argument("--columns", nargs="+", default=None, help="value columns (default: all but the time column)")
    i.add_argument("--samples", type=int, default=2000, help="posterior samples for density heads (default 2000)")
    i.add_argument("--seed", type=int, default=0)
    i.add_argument("--out", default=None, help="output directory (default MODEL_DIR/inference)")
    i.add_argument("--overwrite", action="store_true", help="replace files in an existing --out")
    i.set_defaults(func=_infer_cmd)

    m = sub.add_parser(
        "boarding-school",
        help="the main job: an SGNN for the 1978 boarding-school influenza outbreak",
        description="Train an SGNN on an SIR model with under-reporting and negative-binomial counts, check "
        "recovery on held-out simulations, and infer beta, gamma, R0 and the final size for the 1978 English "
        "boarding-school influenza outbreak, with posterior predictive bands.",
    )
    m.add_argument("--out", default="runs/boarding-school", help="output directory (default runs/boarding-school)")
    m.add_argument("--steps", type=int, default=None, help="training steps (default 3000)")
    m.add_argument("--fast", action="store_true", help="a quick run with few steps (for tests)")
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--overwrite", action="store_true", help="replace files in an existing --out")
    m.add_argument("--quiet", action="store_true", help="no progress bar")
    m.set_defaults(func=_main_job_cmd)

    from .reproduce import CASE_STUDIES, EXPERIMENTS

    r = sub.add_parser(
        "reproduce",
        help="reproduce a claim of the paper: writes a markdown table, JSON and figures",
        description="Run experiments that check the claims of 'Learning From Simulators' (Dudley & "
        "Eisenberg, 2025) against MLE/AIC, NUTS and ABC on the same simulators, and assemble the "
        "results page OUT/README.md. Experiments: "
        + "; ".join(f"{k} ({v[1]})" for k, v in EXPERIMENTS.items())
        + ". Real-data case studies (a flow SGNN against NUTS): "
        + "; ".join(f"{k} ({v[1]})" for k, v in CASE_STUDIES.items()),
    )
    r.add_argument(
        "names", nargs="+", metavar="NAME",
        help=f"experiments: {', '.join(EXPERIMENTS)}, or all; case studies: {', '.join(CASE_STUDIES)}, or case-studies",
    )
    r.add_argument("--quick", action="store_true", help="the reduced versions that CI runs")
    r.add_argument("--out", default="results", help="output directory (default results)")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--overwrite", action="store_true", help="replace earlier results of these experiments in --out")
    r.add_argument("--progress", action="store_true", help="show training progress bars")
    r.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1),
                   help="experiments run at once, in separate processes (default: 2 with 2 or more cores)")
    r.set_defaults(func=_reproduce_cmd)
    args = parser.parse_args(argv)
    if getattr(args, "n", 1) < 1:
        parser.error("--n must be a positive integer")
    try:
        return args.func(args)
    except (ValueError, FileExistsError, FileNotFoundError) as e:
        # Our errors say what to fix; show them without a traceback.
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
