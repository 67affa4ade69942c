"""The mistake battery (issue 24): mistakes a new user makes through the API and the
command line, each of which must end in a clear, specific error — never a silent
result, never a traceback from deep inside.

Each case names the mistake, the call that makes it, the error it must raise and a
phrase of that error's message (a regular expression). The CLI's cases must exit with
status 2 and print one line naming the problem, no traceback.

`python tests/test_mistakes.py` tries every case and prints the counts: mistakes tried,
clear errors, silent results, tracebacks (goal: 0 and 0).
"""

import contextlib
import functools
import io
import json
import pathlib
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import pytest

import sgjax
from sgjax import models
from sgjax._cli._main import main
from sgjax.observation import ObservationModel, Poisson


DAYS = jnp.arange(1.0, 21.0)


class Context:
    """What the cases need, built once and only when a case asks: a temporary
    directory, and a tiny SIR estimator trained by `sgjax train` (Poisson counts, 20
    daily times from day 5 to 100)."""

    def __init__(self, root: pathlib.Path):
        self.root = root
        self._n = 0

    def path(self, name: str = "f") -> pathlib.Path:
        """A fresh path under the temporary directory (nothing there yet)."""
        self._n += 1
        return self.root / f"{self._n:03d}-{name}"

    def csv(self, text: str | bytes) -> pathlib.Path:
        p = self.path("data.csv")
        p.write_bytes(text.encode() if isinstance(text, str) else text)
        return p

    @functools.cached_property
    def model_dir(self) -> pathlib.Path:
        out = self.root / "trained-sir"
        with contextlib.redirect_stdout(io.StringIO()):
            code = main(["train", "sir", "--steps", "25", "--eval-every", "25", "--times", "20", "--validation-size", "128",
                         "--test-size", "64", "--batch-size", "64", "--quiet", "--out", str(out)])  # fmt: skip
        assert code == 0
        return out

    @functools.cached_property
    def estimator(self) -> sgjax.Estimator:
        return sgjax.load(self.model_dir)

    @property
    def times(self) -> np.ndarray:
        return np.linspace(5.0, 100.0, 20)

    @functools.cached_property
    def density(self) -> sgjax.Estimator:
        """An untrained estimator with a Gaussian head over (beta, gamma), 20 times: the
        bookkeeping of samples and densities needs no training."""
        head = sgjax.heads.Gaussian()
        net = sgjax.nn.MLP(20, 1, head.n_outputs(2, 0), width=8, depth=1, key=jax.random.key(0))
        std = sgjax.nn.Standardise(jnp.zeros((20, 1)), jnp.ones((20, 1)), True)
        return sgjax.Estimator(std, net, head, jnp.zeros(2), jnp.ones(2), ("beta", "gamma"), (sgjax.Space("log"),) * 2)

    def good_csv(self, values=None) -> pathlib.Path:
        values = [1, 2, 4, 8] + [10] * 16 if values is None else values
        return self.csv("time,cases\n" + "".join(f"{t:g},{v}\n" for t, v in zip(self.times, values)))

    def tampered_model_dir(self, edit: Callable[[dict], None]) -> pathlib.Path:
        out = self.path("tampered")
        shutil.copytree(self.model_dir, out, ignore=shutil.ignore_patterns("checkpoints", "inference*"))
        header = json.loads((out / "estimator.json").read_text())
        edit(header)
        (out / "estimator.json").write_text(json.dumps(header, indent=2))
        return out


@dataclass(frozen=True)
class Mistake:
    """A user's mistake through the API: `call(ctx)` must raise `error` with a message
    matching `match`."""

    name: str
    call: Callable[[Context], object]
    error: type[BaseException] | tuple[type[BaseException], ...]
    match: str

    def outcome(self, ctx: Context) -> tuple[str, str]:
        """`("clear" | "silent" | "traceback" | "vague", detail)`."""
        try:
            self.call(ctx)
        except self.error as e:
            msg = str(e)
            return ("clear", msg) if re.search(self.match, msg, re.IGNORECASE | re.DOTALL) else ("vague", msg)
        except Exception as e:  # noqa: BLE001 - the battery classifies every failure
            return "traceback", f"{type(e).__name__}: {e}"
        return "silent", "no error"


@dataclass(frozen=True)
class CliMistake:
    """A user's mistake on the command line: `args(ctx)` given to `sgjax` must exit with
    status 2 and print one line on stderr matching `match`."""

    name: str
    args: Callable[[Context], list[str]]
    match: str

    def outcome(self, ctx: Context) -> tuple[str, str]:
        argv = [str(a) for a in self.args(ctx)]
        err = io.StringIO()
        try:
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                try:
                    code = main(argv)
                except SystemExit as e:  # argparse's usage errors
                    code = e.code
        except Exception as e:  # noqa: BLE001 - an exception out of main is a traceback
            return "traceback", f"{type(e).__name__}: {e}"
        lines = [line for line in err.getvalue().splitlines() if line.strip()]
        text = lines[-1] if lines else ""
        if code == 0:
            return "silent", "exit status 0"
        if code != 2 or "Traceback" in err.getvalue():
            return "traceback", f"exit status {code}: {err.getvalue()[-300:]}"
        return ("clear", text) if re.search(self.match, text, re.IGNORECASE) else ("vague", text)


# --------------------------------------------------------------------------- the API


def _sir(observation=None, ts=DAYS):
    return sgjax.Simulator(models.SIR(), ts, ObservationModel(Poisson()) if observation is None else observation)


def _fit(ctx, **kwargs):
    task = sgjax.Task(_sir(), ["beta"])
    options = dict(key=jax.random.key(0), steps=25, batch_size=64, validation_size=64, pilot_size=64, progress=False)
    return sgjax.fit(task, **{**options, **kwargs})


def _theta(**kwargs):
    return {"beta": jnp.array([0.5]), "gamma": jnp.array([0.2]), **kwargs}


def _ode(vector_field=None, initial_state=None):
    return sgjax.ODEModel(
        vector_field or (lambda t, y, th: -th["k"] * y),
        initial_state=initial_state or (lambda th: jnp.array([1.0])),
        param_names=("k",),
        state_names=("y",),
        observable=sgjax.State("y"),
    )


def _edit_prior_bound(header: dict) -> None:
    """A one-character edit of a prior bound recorded in the header (1.0 -> 9.0)."""
    text = json.dumps(header)
    assert "1.0" in text
    header.clear()
    header.update(json.loads(text.replace("1.0", "9.0", 1)))


def _swap_labels(header: dict) -> None:
    text = json.dumps(header)
    header.clear()
    header.update(json.loads(text.replace('"beta"', '"@@"').replace('"gamma"', '"beta"').replace('"@@"', '"gamma"')))


def _huge_width(header: dict) -> None:
    """The network's width set to 20,000 (a 4.9 GB allocation if trusted)."""
    text = json.dumps(header)
    header.clear()
    header.update(json.loads(re.sub(r'"width": \d+', '"width": 20000', text)))


def _truncated(c: Context) -> pathlib.Path:
    out = c.tampered_model_dir(lambda h: None)
    payload = out / "estimator.eqx"
    payload.write_bytes(payload.read_bytes()[:100])
    return out


API = [
    # Priors
    Mistake(
        "prior value is not a distribution", lambda c: sgjax.Prior(beta="uniform"), TypeError, "numpyro distribution"
    ),
    Mistake("prior with no parameter", lambda c: sgjax.Prior(), ValueError, "at least one parameter"),
    Mistake(
        "prior given a vector distribution",
        lambda c: sgjax.Prior(beta=dist.Normal(jnp.zeros(3), 1.0)),
        ValueError,
        "scalar distribution",
    ),
    Mistake(
        "prior misses a parameter",
        lambda c: sgjax.simulate(_sir(), key=jax.random.key(0), n=4, prior=sgjax.Prior(beta=dist.Uniform(0.1, 1.0))),
        ValueError,
        "gamma",
    ),
    Mistake(
        "prior names a typo",
        lambda c: sgjax.simulate(
            _sir(), key=jax.random.key(0), n=4, prior=sgjax.Prior(betaa=dist.Uniform(0.1, 1.0), gamma=0.2)
        ),
        ValueError,
        "did you mean 'beta'",
    ),
    Mistake(
        "prior outside the model's support",
        lambda c: sgjax.simulate(
            _sir(), key=jax.random.key(0), n=4, prior=sgjax.Prior(beta=dist.Normal(0.5, 1.0), gamma=0.2)
        ),
        ValueError,
        "support",
    ),
    # Simulators
    Mistake("times not increasing", lambda c: _sir(ts=jnp.array([1.0, 3.0, 2.0])), ValueError, "strictly increasing"),
    Mistake("times with NaN", lambda c: _sir(ts=jnp.array([1.0, jnp.nan])), ValueError, "NaN or infinite"),
    Mistake("times as a matrix", lambda c: _sir(ts=jnp.ones((2, 3))), ValueError, "1-D array"),
    Mistake("no times", lambda c: _sir(ts=jnp.array([])), ValueError, "non-empty"),
    Mistake(
        "start after the first time",
        lambda c: sgjax.Simulator(models.SIR(), DAYS, t0=5.0),
        ValueError,
        "t0=5.0 must be before",
    ),
    Mistake("model is not an sgjax model", lambda c: sgjax.Simulator("sir", DAYS), TypeError, "must be an sgjax model"),
    Mistake(
        "observation is a bare noise model",
        lambda c: sgjax.Simulator(models.SIR(), DAYS, Poisson()),
        TypeError,
        "ObservationModel\\(Poisson\\(\\)\\)",
    ),
    Mistake(
        "constant step without dt0",
        lambda c: sgjax.Simulator(models.SIR(), DAYS, stepsize_controller=__import__("diffrax").ConstantStepSize()),
        ValueError,
        "needs `dt0`",
    ),
    Mistake("max_steps of zero", lambda c: sgjax.Simulator(models.SIR(), DAYS, max_steps=0), ValueError, "max_steps"),
    Mistake(
        "vector field of the wrong shape",
        lambda c: sgjax.Simulator(_ode(vector_field=lambda t, y, th: jnp.zeros(3)), DAYS),
        ValueError,
        "vector_field returned shape",
    ),
    Mistake(
        "initial state of the wrong shape",
        lambda c: sgjax.Simulator(_ode(initial_state=lambda th: jnp.ones(2)), DAYS),
        ValueError,
        "initial_state returned shape",
    ),
    # simulate
    Mistake(
        "simulate zero samples",
        lambda c: sgjax.simulate(_sir(), key=jax.random.key(0), n=0),
        ValueError,
        "`n` must be a positive integer",
    ),
    Mistake(
        "simulate a negative number",
        lambda c: sgjax.simulate(_sir(), key=jax.random.key(0), n=-5),
        ValueError,
        "`n` must be a positive integer",
    ),
    Mistake("simulate with an integer key", lambda c: sgjax.simulate(_sir(), key=0, n=4), TypeError, "PRNG key"),
    Mistake(
        "simulate with the key where n goes",
        lambda c: sgjax.simulate(_sir(), jax.random.key(0)),
        TypeError,
        "keyword-only",
    ),
    Mistake(
        "simulate with a prior and θ",
        lambda c: sgjax.simulate(_sir(), key=jax.random.key(0), prior=_sir().default_prior(), theta=_theta()),
        ValueError,
        "either `prior` or `theta`",
    ),
    Mistake(
        "θ misses a parameter",
        lambda c: sgjax.simulate(_sir(), key=jax.random.key(0), theta={"beta": jnp.array([0.5])}),
        ValueError,
        "no value for \\['gamma'\\]",
    ),
    Mistake(
        "θ has a typo",
        lambda c: sgjax.simulate(_sir(), key=jax.random.key(0), theta=_theta(gamme=jnp.array([0.2]))),
        ValueError,
        "did you mean 'gamma'",
    ),
    Mistake(
        "θ of mixed lengths",
        lambda c: sgjax.simulate(_sir(), key=jax.random.key(0), theta=_theta(gamma=jnp.array([0.2, 0.3]))),
        ValueError,
        "same shape",
    ),
    Mistake(
        "θ outside the support",
        lambda c: sgjax.simulate(_sir(), key=jax.random.key(0), theta=_theta(beta=jnp.array([-0.3]))),
        ValueError,
        "beta",
    ),
    Mistake(
        "θ is not a mapping",
        lambda c: sgjax.simulate(_sir(), key=jax.random.key(0), theta=[0.5, 0.2]),
        TypeError,
        "`theta` must be a dict of parameter name",
    ),
    Mistake(
        "strategy is a string",
        lambda c: sgjax.simulate(_sir(), key=jax.random.key(0), n=4, strategy="shared"),
        TypeError,
        "`strategy` must be",
    ),
    Mistake(
        "chunk size of zero",
        lambda c: sgjax.simulate(_sir(), key=jax.random.key(0), n=4, chunk_size=0),
        ValueError,
        "`chunk_size` must be a positive integer",
    ),
    Mistake(
        "simulate a model, not a simulator",
        lambda c: sgjax.simulate(models.SIR(), key=jax.random.key(0), n=4),
        TypeError,
        "must be an sgjax.Simulator",
    ),
    # Tasks
    Mistake("target name with a typo", lambda c: sgjax.Task(_sir(), ["betaa"]), ValueError, "did you mean 'beta'"),
    Mistake("task over a model", lambda c: sgjax.Task(models.SIR(), ["beta"]), TypeError, "must be an sgjax.Simulator"),
    # fit
    Mistake(
        "fit a simulator, not a task",
        lambda c: sgjax.fit(_sir(), key=jax.random.key(0)),
        TypeError,
        "`task` must be an sgjax task",
    ),
    Mistake("head as a string", lambda c: _fit(c, head="quantile"), TypeError, "`head` must be an sgjax.heads head"),
    Mistake(
        "classifier for parameters",
        lambda c: _fit(c, head=sgjax.heads.Classifier()),
        ValueError,
        "goes with the Classifier head",
    ),
    Mistake("zero steps", lambda c: _fit(c, steps=0), ValueError, "`steps` must be a positive integer"),
    Mistake(
        "negative batch size", lambda c: _fit(c, batch_size=-1), ValueError, "`batch_size` must be a positive integer"
    ),
    Mistake(
        "evaluation off the dispatch grid",
        lambda c: _fit(c, steps=100, eval_every=30),
        ValueError,
        "`eval_every`=30 must be a multiple",
    ),
    Mistake("resume with nowhere to resume from", lambda c: _fit(c, resume=True), ValueError, "needs `checkpoint_dir`"),
    Mistake(
        "budget below one batch",
        lambda c: _fit(c, budget=10),
        ValueError,
        "`budget` must be an integer of at least one batch",
    ),
    Mistake("more devices than exist", lambda c: _fit(c, devices=99), ValueError, "99"),
    Mistake("learning rate NaN", lambda c: _fit(c, learning_rate=float("nan")), ValueError, "learning_rate"),
    Mistake("negative learning rate", lambda c: _fit(c, learning_rate=-1e-3), ValueError, "learning_rate"),
    Mistake("fit with an integer key", lambda c: _fit(c, key=0), TypeError, "PRNG key"),
    # infer, log_prob, evaluate
    Mistake(
        "infer with no samples", lambda c: sgjax.infer(c.estimator, c.good_csv(), n_samples=0), ValueError, "n_samples"
    ),
    Mistake(
        "infer with negative samples",
        lambda c: sgjax.infer(c.estimator, c.good_csv(), n_samples=-3),
        ValueError,
        "n_samples",
    ),
    Mistake(
        "infer with an integer key", lambda c: sgjax.infer(c.estimator, c.good_csv(), key=0), TypeError, "PRNG key"
    ),
    Mistake(
        "infer on a series of the wrong length",
        lambda c: sgjax.infer(c.estimator, np.ones(30)),
        ValueError,
        "trained on series of 20 times",
    ),
    Mistake(
        "infer on negative counts", lambda c: sgjax.infer(c.estimator, -np.ones(20)), ValueError, "whole numbers >= 0"
    ),
    Mistake(
        "infer on fractional counts",
        lambda c: sgjax.infer(c.estimator, np.full(20, 2.5)),
        ValueError,
        "whole numbers >= 0",
    ),
    Mistake(
        "infer on NaN without a mask",
        lambda c: sgjax.infer(c.estimator, np.r_[np.nan, np.ones(19)]),
        ValueError,
        "contain NaN",
    ),
    Mistake("infer on infinity", lambda c: sgjax.infer(c.estimator, np.r_[np.inf, np.ones(19)]), ValueError, "finite"),
    Mistake(
        "mask of another shape",
        lambda c: sgjax.infer(c.estimator, np.ones(20), np.ones(19, bool)),
        ValueError,
        "`mask` has shape",
    ),
    Mistake(
        "CSV shifted by a day",
        lambda c: sgjax.infer(c.estimator, c.csv("time,cases\n" + "".join(f"{t + 1:g},1\n" for t in c.times))),
        ValueError,
        "training grid",
    ),
    Mistake(
        "CSV weekly, not daily",
        lambda c: sgjax.infer(c.estimator, c.csv("time,cases\n" + "".join(f"{7 * t:g},1\n" for t in range(1, 21)))),
        ValueError,
        "training grid",
    ),
    Mistake(
        "CSV with too few rows",
        lambda c: sgjax.infer(c.estimator, c.csv("time,cases\n5,1\n10,2\n")),
        ValueError,
        "has 2 rows, not 20",
    ),
    Mistake(
        "CSV and a mask",
        lambda c: sgjax.infer(c.estimator, c.good_csv(), np.ones(20, bool)),
        ValueError,
        "do not pass `mask`",
    ),
    Mistake(
        "infer with a task, not an estimator",
        lambda c: sgjax.infer(sgjax.Task(_sir(), ["beta"]), np.ones(20)),
        TypeError,
        "must be an sgjax.Estimator",
    ),
    Mistake(
        "infer with a density head and no key",
        lambda c: sgjax.infer(c.density, np.ones(20)),
        TypeError,
        r"key=jax.random.key\(seed\)",
    ),
    Mistake(
        "log_prob with a stacked array for θ",
        lambda c: sgjax.log_prob(c.density, np.ones((5, 2)), np.ones(20)),
        TypeError,
        "sgjax.unstack",
    ),
    Mistake(
        "log_prob with θ missing a target",
        lambda c: sgjax.log_prob(c.density, {"beta": 0.5}, np.ones(20)),
        ValueError,
        r"missing \['gamma'\]",
    ),
    Mistake(
        "log_prob with x and θ swapped",
        lambda c: sgjax.log_prob(c.density, np.ones(20), {"beta": 0.5, "gamma": 0.1}),
        TypeError,
        "must be a dict",
    ),
    Mistake(
        "an interval from a model-selection posterior",
        lambda c: sgjax.Posterior(("SIR", "SEIR"), None, {}, None, np.full((1, 2), 0.5)).interval(0.9),
        ValueError,
        r"model probabilities.*posterior\.probabilities",
    ),
    Mistake(
        "a Posterior built from a stacked array",
        lambda c: sgjax.Posterior(("beta",), None, {}, np.ones((1, 5, 1)), None),
        TypeError,
        "sgjax.unstack",
    ),
    Mistake(
        "evaluate on another model's task",
        lambda c: sgjax.evaluate(
            c.estimator,
            sgjax.Task(sgjax.Simulator(models.SEIR(), c.times, ObservationModel(Poisson())), ["beta", "gamma"]),
            64,
            key=jax.random.key(0),
        ),
        ValueError,
        "task",
    ),
    Mistake(
        "evaluate on other targets",
        lambda c: sgjax.evaluate(c.estimator, sgjax.Task(_sir(ts=c.times), ["beta", "R0"]), 64, key=jax.random.key(0)),
        ValueError,
        "R0",
    ),
    Mistake(
        "evaluate with an integer key",
        lambda c: sgjax.evaluate(c.estimator, sgjax.Task(_sir(ts=c.times), ["beta", "gamma"]), 64, key=0),
        TypeError,
        "PRNG key",
    ),
    Mistake(
        "evaluate with the key in the place of n",
        lambda c: sgjax.evaluate(c.estimator, sgjax.Task(_sir(ts=c.times), ["beta", "gamma"]), jax.random.key(0)),
        TypeError,
        "keyword-only",
    ),
    # save and load
    Mistake("save onto a file", lambda c: sgjax.save(c.csv("x"), c.estimator), (FileExistsError, ValueError), "file"),
    Mistake(
        "save over a saved estimator", lambda c: sgjax.save(c.model_dir, c.estimator), FileExistsError, "overwrite=True"
    ),
    Mistake(
        "load from nowhere", lambda c: sgjax.load(c.path("nothing")), FileNotFoundError, "No saved sgjax estimator"
    ),
    Mistake(
        "load a header whose prior bound was edited",
        lambda c: sgjax.load(c.tampered_model_dir(_edit_prior_bound)),
        sgjax.FileFormatError,
        "modified",
    ),
    Mistake(
        "load a header whose labels were swapped",
        lambda c: sgjax.load(c.tampered_model_dir(_swap_labels)),
        sgjax.FileFormatError,
        "modified",
    ),
    Mistake(
        "load a header that declares a huge network",
        lambda c: sgjax.load(c.tampered_model_dir(_huge_width)),
        sgjax.FileFormatError,
        ".",
    ),
    Mistake(
        "load a header of another format",
        lambda c: sgjax.load(c.tampered_model_dir(lambda h: h.update(format_version=99))),
        sgjax.FileFormatError,
        "file format 99",
    ),
    Mistake("load a truncated payload", lambda c: sgjax.load(_truncated(c)), sgjax.FileFormatError, "truncated"),
    # read_csv
    Mistake(
        "CSV with no time column",
        lambda c: sgjax.read_csv(c.csv("day,cases\n1,2\n")),
        ValueError,
        "no time column 'time'",
    ),
    Mistake(
        "CSV with a word for a number",
        lambda c: sgjax.read_csv(c.csv("time,cases\n1,two\n")),
        ValueError,
        "line 2: cases='two' is not a number",
    ),
    Mistake(
        "CSV with times out of order",
        lambda c: sgjax.read_csv(c.csv("time,cases\n2,1\n1,1\n")),
        ValueError,
        "strictly increasing",
    ),
    Mistake(
        "CSV with a ragged row",
        lambda c: sgjax.read_csv(c.csv("time,cases\n1,2,3\n")),
        ValueError,
        "3 fields, expected 2",
    ),
    Mistake("CSV file missing", lambda c: sgjax.read_csv(c.path("none.csv")), FileNotFoundError, "none.csv"),
]


CLI = [
    CliMistake("unknown model", lambda c: ["simulate", "sri", "--n", "8", "--out", c.path()], "unknown model 'sri'"),
    CliMistake("simulate zero samples", lambda c: ["simulate", "sir", "--n", "0", "--out", c.path()], "--n"),
    CliMistake("--out names a file", lambda c: ["simulate", "sir", "--n", "8", "--out", c.csv("x")], "--out"),
    CliMistake("--out under a file", lambda c: ["simulate", "sir", "--n", "8", "--out", c.csv("x") / "run"], "--out"),
    CliMistake(
        "--out in a read-only place", lambda c: ["simulate", "sir", "--n", "8", "--out", "/proc/sgjax-run"], "--out"
    ),
    CliMistake(
        "--out already holds a run", lambda c: ["simulate", "sir", "--n", "8", "--out", c.model_dir], "--overwrite"
    ),
    CliMistake("--times 0", lambda c: ["simulate", "sir", "--n", "8", "--times", "0", "--out", c.path()], "--times"),
    CliMistake("--times -3", lambda c: ["simulate", "sir", "--n", "8", "--times", "-3", "--out", c.path()], "--times"),
    CliMistake("--t1 -5", lambda c: ["simulate", "sir", "--n", "8", "--t1", "-5", "--out", c.path()], "--t1"),
    CliMistake(
        "--reporting 1.5",
        lambda c: ["simulate", "sir", "--n", "8", "--reporting", "1.5", "--out", c.path()],
        "--reporting",
    ),
    CliMistake(
        "--dispersion -1",
        lambda c: ["simulate", "sir", "--n", "8", "--noise", "negbin", "--dispersion", "-1", "--out", c.path()],
        "--dispersion",
    ),
    CliMistake(
        "--scale 0",
        lambda c: ["simulate", "sir", "--n", "8", "--noise", "gaussian", "--scale", "0", "--out", c.path()],
        "--scale",
    ),
    CliMistake(
        "--test-size 0",
        lambda c: ["train", "sir", "--steps", "25", "--test-size", "0", "--out", c.path()],
        "--test-size",
    ),
    CliMistake(
        "--eval-every 0",
        lambda c: ["train", "sir", "--steps", "10", "--eval-every", "0", "--out", c.path()],
        "--eval-every",
    ),
    CliMistake(
        "--targets betaa", lambda c: ["train", "sir", "--targets", "betaa", "--out", c.path()], "did you mean 'beta'"
    ),
    CliMistake(
        "--learning-rate nan",
        lambda c: ["train", "sir", "--learning-rate", "nan", "--out", c.path()],
        "--learning-rate",
    ),
    CliMistake(
        "--learning-rate 0", lambda c: ["train", "sir", "--learning-rate", "0", "--out", c.path()], "--learning-rate"
    ),
    CliMistake("--batch-size 0", lambda c: ["train", "sir", "--batch-size", "0", "--out", c.path()], "--batch-size"),
    CliMistake("--resume with no checkpoints", lambda c: ["train", "sir", "--resume", "--out", c.path()], "--resume"),
    CliMistake(
        "infer on a header-only CSV",
        lambda c: ["infer", c.model_dir, c.csv("time,cases\n"), "--out", c.path()],
        "no rows|no data|header",
    ),
    CliMistake(
        "infer on a binary file",
        lambda c: ["infer", c.model_dir, c.csv(bytes(range(256)) * 4), "--out", c.path()],
        "CSV|text",
    ),
    CliMistake("infer on a directory", lambda c: ["infer", c.model_dir, c.root, "--out", c.path()], "is a folder"),
    CliMistake(
        "infer on a missing CSV", lambda c: ["infer", c.model_dir, c.path("none.csv"), "--out", c.path()], "none.csv"
    ),
    CliMistake(
        "infer at the wrong times",
        lambda c: [
            "infer",
            c.model_dir,
            c.csv("time,cases\n" + "".join(f"{t}\n" for t in ["1,1"] * 1)),
            "--out",
            c.path(),
        ],
        "training",
    ),
    CliMistake(
        "infer on negative counts",
        lambda c: ["infer", c.model_dir, c.good_csv([-1] * 20), "--out", c.path()],
        "whole numbers",
    ),
    CliMistake(
        "infer with a tampered task",
        lambda c: ["infer", c.tampered_model_dir(lambda h: h.update(task="sir")), c.good_csv(), "--out", c.path()],
        "estimator.json|modified|task",
    ),
    CliMistake("infer with no estimator", lambda c: ["infer", c.root, c.good_csv(), "--out", c.path()], "estimator"),
    CliMistake(
        "infer --samples 0",
        lambda c: ["infer", c.model_dir, c.good_csv(), "--samples", "0", "--out", c.path()],
        "--samples",
    ),
    CliMistake("unknown noise", lambda c: ["simulate", "sir", "--noise", "binomial", "--out", c.path()], "--noise"),
]


@pytest.fixture(scope="module")
def ctx():
    with tempfile.TemporaryDirectory(prefix="sgjax-mistakes-") as root:
        yield Context(pathlib.Path(root))


@pytest.mark.parametrize("case", API + CLI, ids=lambda m: m.name)
def test_mistake_gets_a_clear_error(case, ctx):
    kind, detail = case.outcome(ctx)
    assert kind == "clear", f"{case.name}: {kind} ({detail})"


def test_the_battery_is_large_enough():
    assert len(API) + len(CLI) >= 60


def _report() -> None:
    """Try every case and print the counts by outcome, then the cases that failed."""
    counts: dict[str, int] = {}
    failures = []
    with tempfile.TemporaryDirectory(prefix="sgjax-mistakes-") as root:
        ctx = Context(pathlib.Path(root))
        for case in API + CLI:
            kind, detail = case.outcome(ctx)
            counts[kind] = counts.get(kind, 0) + 1
            if kind != "clear":
                failures.append(f"  [{kind}] {case.name}: {detail[:200]}")
    tried = len(API) + len(CLI)
    print(f"mistakes tried: {tried} ({len(API)} API, {len(CLI)} CLI)")
    for kind in ("clear", "vague", "silent", "traceback"):
        print(f"{kind:>10}: {counts.get(kind, 0)}")
    print("\n".join(failures))


if __name__ == "__main__":
    _report()
