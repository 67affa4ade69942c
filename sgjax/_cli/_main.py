"""The `sgjax` command line: `simulate`, `train`, `infer`, and the main job
`boarding-school`.

Exit status: 0 on success; 2 for a user's mistake (a flag, a file, a folder), with one
line on stderr that names it and the fix; 130 after Ctrl-C, with one line that says
how to go on; 1 with one line when training diverged (`sgjax.TrainingDivergedError`,
which names the step and the last good checkpoint); 1 with a traceback for anything
else, which is a bug in sgjax (set `SGJAX_TRACEBACK=1` to see the traceback of a
mistake's error too).

Here: the flags, the parser and the exit status. What each command does is in
`_commands.py`; its output folder is prepared by `_folders.py`.
"""

import argparse
import math
import os
import sys

# Tests patch `tempfile` and read `UsageError` and `_steps_per_call` through this module.
import tempfile as tempfile

from ._commands import (
    _HEADS,
    _infer_cmd,
    _main_job_cmd,
    _NETWORKS,
    _registry,
    _reproduce_cmd,
    _simulate_cmd,
    _steps_per_call as _steps_per_call,
    _train_cmd,
)
from ._folders import _OUTPUTS, _remove_temporaries, UsageError as UsageError


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
    import matplotlib

    matplotlib.use("Agg")  # the commands write figures to files; never open a window
    try:
        args = _parser().parse_args(argv)
    except KeyboardInterrupt:  # while the models and experiments are imported
        print("interrupted", file=sys.stderr)
        return 130
    return _run(args)
