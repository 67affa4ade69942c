"""The `sgjax` command line: `simulate`, `train`, `infer`, and the main job
`boarding-school`.

Exit status: 0 on success; 2 for a user's mistake (a flag, a file, a folder), with one
line on stderr that names it and the fix; 130 after Ctrl-C, with one line that says
how to go on; 1 with one line when training diverged (`sgjax.TrainingDivergedError`,
which names the step and the last good checkpoint); 1 with a traceback for anything
else, which is a bug in sgjax (set `SGJAX_TRACEBACK=1` to see the traceback of a
mistake's error too).
"""

import argparse
import io
import json
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from .._io import atomic_write


class UsageError(Exception):
    """A mistake on the command line: `main` prints its message on one line and exits
    with status 2."""


class _Parser(argparse.ArgumentParser):
    """argparse, with a usage error on one line (the flag, what was wrong, where the
    help is) and exit status 2."""

    def error(self, message):
        self.exit(2, f"error: {message} (see `{self.prog} --help`)\n")


def _flag_type(parse, ok, need: str, example: str):
    """An argparse `type=`: the flag's text read by `parse` (`int` or `float`), then
    required to satisfy `ok`; otherwise one line saying what was wrong and an example."""

    def convert(text: str):
        try:
            value = parse(text)
        except ValueError:
            kind = "a whole number" if parse is int else "a number"
            raise argparse.ArgumentTypeError(f"{text!r} is not {kind}; give one such as {example}") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"{text} {need}; give one such as {example}")
        return value

    return convert


_positive_int = _flag_type(int, lambda v: v >= 1, "is not positive", "100")
_seed = _flag_type(int, lambda v: -(2**63) <= v < 2**63, "is out of range (below 2**63 in size)", "0")
_positive_float = _flag_type(float, lambda v: math.isfinite(v) and v > 0, "is not a positive finite number", "0.5")
_fraction = _flag_type(float, lambda v: math.isfinite(v) and 0 < v <= 1, "is not a fraction in (0, 1]", "0.5")


def _registry() -> dict:
    from .. import models

    return {
        name.lower(): cls
        for name, cls in vars(models).items()
        if isinstance(cls, type) and cls.__module__.startswith("sgjax.models")
    }


#: Observation horizon (t1) by the kind of model, in the model's time units.
_HORIZON = {"epidemics": 100.0, "growth": 50.0, "ecology": 50.0, "dynamics": 20.0}

#: What each command writes in its output folder: `--overwrite` removes these (and
#: only these) before the run, and their temporary files left by an interrupted run
#: are removed at every start.
_OUTPUTS = {
    "simulate": ("simulations.npz", "simulations.png", "summary.json"),
    "train": ("estimator.eqx", "estimator.json", "metrics.json", "training.png", "recovery.png", "checkpoints"),
    "infer": ("posterior.json", "posterior.png"),
    "boarding-school": (
        "metrics.json",
        "posterior_predictive.png",
        "posterior.png",
        "recovery.png",
        "training.png",
        "estimator",
    ),
}


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


def _remove_temporaries(folder: Path, names) -> None:
    """Remove what an interrupted write of one of `names` left in `folder`:
    `NAME.tmp`, `.NAME.tmp`, and `atomic_write`'s `.NAME.XXXXXXXX.tmp`."""
    for name in names:
        for tmp in (*folder.glob(f"{name}.tmp"), *folder.glob(f".{name}.tmp"), *folder.glob(f".{name}.*.tmp")):
            if tmp.is_file():
                tmp.unlink()


def _remove_outputs(folder: Path, names) -> None:
    """Remove the files and folders `names` from `folder` (a link, not what it points
    to): nothing outside `folder` is touched."""
    for name in names:
        path = folder / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.is_symlink() or path.exists():
            path.unlink()


def _prepare_out(path, command: str, overwrite: bool) -> Path:
    """The output folder of `command`, ready before any work is done: created and
    checked to be writable; temporaries of an interrupted run removed; refused if it
    holds files, unless `overwrite`, which removes the command's earlier outputs (and
    nothing else)."""
    out = Path(path)
    above = next((p for p in out.parents if p.is_file()), None)
    if out.is_file() or above is not None:
        where = "is a file" if above is None else f"lies under {above}, which is a file"
        raise UsageError(f"--out {out} {where}; give --out a folder (new or existing).")
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as e:
        raise UsageError(
            f"--out {out} cannot be written ({e.strerror}); give --out a folder you can write to."
        ) from None
    names = _OUTPUTS[command]
    _remove_temporaries(out, names)
    if any(out.iterdir()):
        if not overwrite:
            raise UsageError(
                f"--out {out} already exists and is not empty; choose another --out, or pass "
                "--overwrite to replace the results of an earlier run there."
            )
        _remove_outputs(out, names)
    return out


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
    arrays = {f"theta_{k}": v for k, v in sim.theta.items()}
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


def _add_simulator_args(p: argparse.ArgumentParser) -> None:
    """The flags that choose the observation grid and model, shared by `simulate` and
    `train`."""
    p.add_argument("--times", type=_positive_int, default=100, help="number of observation times (default 100)")
    p.add_argument("--t1", type=_positive_float, default=None, help="last observation time (default by model kind)")
    p.add_argument(
        "--noise",
        choices=["poisson", "negbin", "gaussian", "lognormal", "none"],
        default=None,
        help="observation noise (default: poisson for epidemics and growth, gaussian otherwise)",
    )
    p.add_argument("--reporting", type=_fraction, default=1.0, help="reporting fraction in (0, 1] (default 1)")
    p.add_argument("--dispersion", type=_positive_float, default=10.0, help="negative-binomial dispersion (default 10)")
    p.add_argument("--scale", type=_positive_float, default=0.1, help="gaussian / lognormal noise scale (default 0.1)")


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


#: What `main` reports on one line (exit status 2) instead of a traceback: the
#: errors sgjax raises for a mistake in a flag, a file or a folder.
_MISTAKES = (
    UsageError,
    ValueError,
    TypeError,
    FileNotFoundError,
    FileExistsError,
    IsADirectoryError,
    NotADirectoryError,
    PermissionError,
)


def _interrupted(args) -> str:
    """The line after Ctrl-C: how to go on."""
    out = getattr(args, "out_dir", None)
    if args.command == "train" and out is not None and (out / "checkpoints").is_dir():
        return "interrupted; rerun with --resume to continue"
    return "interrupted; rerun with --overwrite to start again"


def _run(args) -> int:
    """Run the chosen command; a user's mistake and Ctrl-C end on one line each."""
    try:
        return args.func(args)
    except KeyboardInterrupt:
        out = getattr(args, "out_dir", None)
        if out is not None:
            _remove_temporaries(out, _OUTPUTS.get(args.command, ()))
        print(_interrupted(args), file=sys.stderr)
        return 130
    except _MISTAKES as e:
        if os.environ.get("SGJAX_TRACEBACK"):
            raise
        print("error: " + " ".join(str(e).split()), file=sys.stderr)
        return 2
    except FloatingPointError as e:  # sgjax.TrainingDivergedError: the run failed, not a flag
        if os.environ.get("SGJAX_TRACEBACK"):
            raise
        print("error: " + " ".join(str(e).split()), file=sys.stderr)
        return 1


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="sgjax", description="Simulation-grounded learning in JAX.")
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser(
        "simulate",
        help="simulate a batch from a built-in model and save data, a plot and a summary",
        description="Simulate a batch from a built-in model with its default prior.",
    )
    s.add_argument("model", help=f"a built-in model: {', '.join(sorted(_registry()))}")
    s.add_argument("--n", type=_positive_int, default=1000, help="number of simulations (default 1000)")
    _add_simulator_args(s)
    s.add_argument("--strategy", choices=["shared-step", "per-trajectory"], default="shared-step")
    s.add_argument("--seed", type=_seed, default=0)
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
    t.add_argument(
        "--targets",
        default=None,
        help="comma-separated parameters or derived quantities, e.g. beta,gamma,R0 (default: every parameter)",
    )
    t.add_argument("--head", choices=sorted(_HEADS), default="quantile", help="what to learn (default quantile)")
    t.add_argument("--network", choices=sorted(_NETWORKS), default="mlp", help="network (default mlp)")
    t.add_argument("--steps", type=_positive_int, default=2000, help="optimiser steps (default 2000)")
    t.add_argument("--batch-size", type=_positive_int, default=512, help="simulations per step (default 512)")
    t.add_argument("--learning-rate", type=_positive_float, default=3e-3, help="peak learning rate (default 3e-3)")
    t.add_argument(
        "--eval-every", type=_positive_int, default=250, help="steps between validation losses (default 250)"
    )
    t.add_argument(
        "--validation-size", type=_positive_int, default=4096, help="held-out validation simulations (default 4096)"
    )
    t.add_argument(
        "--test-size", type=_positive_int, default=2000, help="held-out simulations for recovery metrics (default 2000)"
    )
    t.add_argument(
        "--budget",
        type=_positive_int,
        default=None,
        help="train on this many pre-simulated samples instead of fresh ones",
    )
    _add_simulator_args(t)
    t.add_argument("--seed", type=_seed, default=0)
    t.add_argument("--out", default=None, help="output directory (default runs/MODEL)")
    again = t.add_mutually_exclusive_group()
    again.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the run in an existing --out (its checkpoints included) with a new one",
    )
    again.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoints")
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
    i.add_argument(
        "--samples", type=_positive_int, default=2000, help="posterior samples for density heads (default 2000)"
    )
    i.add_argument("--seed", type=_seed, default=0)
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
    m.add_argument("--steps", type=_positive_int, default=None, help="training steps (default 3000)")
    m.add_argument("--fast", action="store_true", help="a quick run with few steps (for tests)")
    m.add_argument("--seed", type=_seed, default=0)
    m.add_argument("--overwrite", action="store_true", help="replace files in an existing --out")
    m.add_argument("--quiet", action="store_true", help="no progress bar")
    m.set_defaults(func=_main_job_cmd)

    from ..reproduce import CASE_STUDIES, EXPERIMENTS

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
        "names",
        nargs="+",
        metavar="NAME",
        help=f"experiments: {', '.join(EXPERIMENTS)}, or all; case studies: {', '.join(CASE_STUDIES)}, or case-studies",
    )
    r.add_argument("--quick", action="store_true", help="the reduced versions that CI runs")
    r.add_argument("--out", default="results", help="output directory (default results)")
    r.add_argument("--seed", type=_seed, default=0)
    r.add_argument("--overwrite", action="store_true", help="replace earlier results of these experiments in --out")
    r.add_argument("--progress", action="store_true", help="show training progress bars")
    r.add_argument(
        "--jobs",
        type=_positive_int,
        default=min(2, os.cpu_count() or 1),
        help="experiments run at once, in separate processes (default: 2 with 2 or more cores)",
    )
    r.set_defaults(func=_reproduce_cmd)
    return parser


def main(argv=None) -> int:
    """`sgjax ...`: the exit status (0; 1 when training diverged; 2 for a mistake;
    130 after Ctrl-C); see the module's docstring."""
    try:
        args = _parser().parse_args(argv)
    except KeyboardInterrupt:  # while the models and experiments are imported
        print("interrupted", file=sys.stderr)
        return 130
    return _run(args)
