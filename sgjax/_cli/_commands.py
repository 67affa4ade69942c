"""What each command does: `simulate`, `train`, `infer`, `boarding-school` and
`reproduce`, from the parsed flags to the files in the output folder."""

import io
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from .._io import atomic_write
from ._folders import _OUTPUTS, _prepare_out, _remove_temporaries, UsageError


def _registry() -> dict:
    from .. import models

    return {
        name.lower(): cls
        for name, cls in vars(models).items()
        if isinstance(cls, type) and cls.__module__.startswith("sgjax.models")
    }


#: Observation horizon (t1) by the kind of model, in the model's time units.
_HORIZON = {"epidemics": 100.0, "growth": 50.0, "ecology": 50.0, "dynamics": 20.0}


def _observation(args, counts: bool):
    from .. import observation as obs

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


def _plot(sim, path: Path, title: str, k: int = 6) -> None:
    from .._plots import _pyplot, save_figure

    plt = _pyplot()
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
    save_figure(fig, path)


def _simulator(args):
    """The built-in model named on the command line, observed as the flags say."""
    import jax.numpy as jnp

    from .. import Simulator
    from .._simulation import suggest

    registry = _registry()
    if args.model not in registry:
        raise UsageError(
            f"unknown model {args.model!r}; choose one of {sorted(registry)}.{suggest(args.model, registry)}"
        )
    cls = registry[args.model]
    kind = cls.__module__.rsplit(".", 1)[-1]
    t1 = args.t1 if args.t1 is not None else _HORIZON.get(kind, 50.0)
    ts = jnp.linspace(t1 / args.times, t1, args.times)
    return cls, Simulator(cls(), ts, _observation(args, counts=kind in ("epidemics", "growth")))


def _simulate_cmd(args) -> int:
    import jax

    from .. import __version__, PerTrajectory, SharedStep, simulate

    cls, simulator = _simulator(args)
    out = args.out_dir = _prepare_out(args.out, "simulate", args.overwrite)
    strategy = PerTrajectory() if args.strategy == "per-trajectory" else SharedStep()
    start = time.perf_counter()
    sim = simulate(simulator, key=jax.random.key(args.seed), n=args.n, strategy=strategy)
    seconds = time.perf_counter() - start
    arrays: dict[str, Any] = {f"theta_{k}": v for k, v in sim.theta.items()}
    arrays.update(
        ts=np.asarray(sim.ts), signal=sim.signal, observations=sim.observations, mask=sim.mask, valid=sim.valid
    )
    npz = io.BytesIO()
    np.savez_compressed(npz, **arrays)
    atomic_write(out / "simulations.npz", npz.getvalue())
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
    atomic_write(out / "summary.json", json.dumps(summary, indent=2).encode())
    print(json.dumps(summary, indent=2))
    print(f"wrote {out}/simulations.npz, simulations.png, summary.json")
    return 0


_HEADS = {"point": "Point", "quantile": "Quantile", "gaussian": "Gaussian", "mixture": "MixtureDensity"}
_NETWORKS = {"mlp": "MLP", "cnn": "CNN", "gru": "GRU", "transformer": "Transformer"}


def _steps_per_call(steps: int, eval_every: int, most: int = 25) -> int:
    """The most training steps fused into one dispatch (at most `most`) that `fit`
    accepts for these flags: a divisor of `--eval-every` no larger than `--steps`."""
    return max((d for d in range(1, min(most, steps, eval_every) + 1) if eval_every % d == 0), default=1)


def _train_out(args) -> Path:
    """`--out` of `sgjax train`: a fresh or replaced run's folder, or with `--resume`
    the folder of the run it continues."""
    out = Path(args.out or f"runs/{args.model}")
    if not args.resume:
        return _prepare_out(out, "train", args.overwrite)
    if not (out / "checkpoints").is_dir():
        raise UsageError(
            f"--resume continues the run in --out {out}, but {out / 'checkpoints'} does not exist; "
            "give the --out of the run to continue, or drop --resume to start a new run."
        )
    _remove_temporaries(out, _OUTPUTS["train"])
    return out


def _train_cmd(args) -> int:
    import jax

    from .. import _plots, fit, heads, nn, save, Task
    from .._io import rounded, versions
    from ..diagnostics import held_out, recovery

    cls, simulator = _simulator(args)
    targets = args.targets.split(",") if args.targets else list(simulator.param_names)
    try:
        task = Task(simulator, targets)
    except ValueError as e:
        raise UsageError(f"--targets: {e}") from None
    if args.budget is not None and args.budget < args.batch_size:
        raise UsageError(
            f"--budget {args.budget} is less than one batch (--batch-size {args.batch_size}); give a larger --budget or a smaller --batch-size."
        )
    # Everything the flags say is checked: only now is an earlier run replaced.
    out = args.out_dir = _train_out(args)
    head = getattr(heads, _HEADS[args.head])()
    network = getattr(nn, _NETWORKS[args.network])
    key = jax.random.key(args.seed)
    k_fit, k_test = jax.random.split(key)
    start = time.perf_counter()
    estimator, history = fit(
        task,
        head,
        network,
        key=k_fit,
        steps=args.steps,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        eval_every=args.eval_every,
        steps_per_call=_steps_per_call(args.steps, args.eval_every),
        validation_size=args.validation_size,
        budget=args.budget,
        checkpoint_dir=out / "checkpoints",
        resume=args.resume,
        progress=not args.quiet,
    )
    seconds = time.perf_counter() - start
    save(out, estimator, overwrite=True)
    post, truth = held_out(estimator, task, args.test_size, key=k_test)
    rec = recovery(post, truth)
    _plots.training_curve(history, out / "training.png")
    if post.quantiles:
        _plots.recovery(truth, post, out / "recovery.png")
    metrics = {
        "model": cls.__name__,
        "targets": list(task.labels),
        "head": head.config(),
        "network": estimator.network.config(),
        "training": {
            "steps": history["step"][-1],
            "batch_size": args.batch_size,
            "seconds_including_compile": round(seconds, 2),
            "samples_per_s_last_window": rounded(history["samples_per_s"][-1]),
            "final_validation_loss": history["val_loss"][-1],
        },
        "recovery_on_held_out_simulations": {"n": len(post), **rec},
        "history": history,
        "versions": versions(),
        "backend": jax.default_backend(),
    }
    atomic_write(out / "metrics.json", json.dumps(metrics, indent=2).encode())
    for label, m in rec.items():
        print(f"{label:>12}: " + ", ".join(f"{k} = {v:.3f}" for k, v in m.items()))
    print(
        f"wrote {out}/estimator.eqx, estimator.json, metrics.json, training.png"
        + (", recovery.png" if post.quantiles else "")
    )
    return 0


def _read_data(args):
    """The CSV file named on the command line as `(times, values, mask)`; a folder or a
    header without rows is refused with the fix (`read_csv` refuses a binary file)."""
    from .. import read_csv

    path = Path(args.data)
    if path.is_dir():
        raise UsageError(f"the data {path} is a folder; give the path of a CSV file in it.")
    if not path.is_file():
        raise UsageError(f"the data file {path} does not exist; give the path of a CSV file.")
    times, values, mask = read_csv(path, columns=args.columns, time_column=args.time_column)
    if len(times) == 0:
        raise UsageError(f"the data file {path} has a header but no rows; add one row per observation time.")
    return times, values, mask


def _infer_cmd(args) -> int:
    import jax

    from .. import _plots, infer, load
    from .._inference import check_times

    estimator = load(args.model_dir)  # refuses a damaged or edited header
    times, values, mask = _read_data(args)
    check_times(estimator, times, f"The data file {args.data}")
    out = args.out_dir = _prepare_out(args.out or Path(args.model_dir) / "inference", "infer", args.overwrite)
    post = infer(estimator, values, mask, key=jax.random.key(args.seed), n_samples=args.samples)
    result = {"data": str(args.data), "posterior": post.summary(0)}
    atomic_write(out / "posterior.json", json.dumps(result, indent=2).encode())
    if post.samples is not None:
        _plots.posterior_histograms(
            {l: v[0] for l, v in post.samples.items()}, out / "posterior.png", f"Posterior given {Path(args.data).name}"
        )
    print(json.dumps(result["posterior"], indent=2))
    print(f"wrote {out}/posterior.json" + (", posterior.png" if post.samples is not None else ""))
    return 0


def _main_job_cmd(args) -> int:
    from . import _mainjob as _mainjob

    out = args.out_dir = _prepare_out(args.out, "boarding-school", args.overwrite)
    metrics = _mainjob.run(
        out, fast=args.fast, seed=args.seed, steps=args.steps, progress=not args.quiet, overwrite=True
    )
    print(_mainjob.report(metrics))
    print(f"wrote {out}/metrics.json, posterior_predictive.png, posterior.png, recovery.png, training.png, estimator/")
    return 0


def _reproduce_cmd(args) -> int:
    from ..reproduce import reproduce

    args.out_dir = Path(args.out)
    page = reproduce(
        args.names,
        args.out,
        quick=args.quick,
        seed=args.seed,
        overwrite=args.overwrite,
        progress=args.progress,
        jobs=args.jobs,
    )
    print(f"results page: {page}")
    return 0
