"""Checkpoints of a training run — written atomically, the last `KEEP_CHECKPOINTS`
kept, resumed from the newest that verifies — and the error for a run that
diverged, which names the last good one."""

import math
import pathlib
import re

import jax
import numpy as np

from .._inference import estimator_config, skeleton
from .._io import FileFormatError, read_header, read_payload, write_pair
from ._step import split


#: Checkpoints kept in a checkpoint directory (older ones are deleted).
KEEP_CHECKPOINTS = 2

# `atomic_write`'s temporary files for a checkpoint's two files: `.ckpt-<step>.eqx.XXXXXXXX.tmp`.
_CHECKPOINT_TMP = re.compile(r"\.ckpt-\d+\.(eqx|json)\.[A-Za-z0-9_]+\.tmp")


def checkpoints(directory: pathlib.Path) -> list[pathlib.Path]:
    return sorted(directory.glob("ckpt-*.json"))


def checkpoint_step(path: pathlib.Path) -> int:
    return int(path.stem.removeprefix("ckpt-"))


def remove_stale_temporaries(directory: pathlib.Path) -> None:
    """Delete the temporary files of checkpoint writes that a kill interrupted (only
    those: nothing else in `directory` is touched)."""
    for path in directory.iterdir():
        if _CHECKPOINT_TMP.fullmatch(path.name):
            path.unlink(missing_ok=True)


def latest_checkpoint(directory: pathlib.Path, optimiser):
    """The newest checkpoint whose payload verifies, or `None`. A checkpoint whose
    write was interrupted has no JSON (written last) or a payload that fails its
    checksum; it is skipped in favour of the previous one."""
    errors = []
    for path in reversed(checkpoints(directory)):
        try:
            header = read_header(path, "checkpoint")
            est = skeleton(header["estimator"])
            params, _ = split(est)
            like = {"estimator": est, "opt_state": optimiser.init(params), "best": params}
            return header, read_payload(path.with_suffix(""), header, like)
        except (FileFormatError, KeyError) as e:
            errors.append(f"{path.name}: {e}")
    if errors:
        raise FileFormatError("No usable checkpoint in " + str(directory) + ":\n" + "\n".join(errors))
    return None


def open_directory(checkpoint_dir, resume: bool, optimiser, config: dict):
    """`(directory, found)`: the checkpoint directory (created; `None` without one) and
    the checkpoint to resume from (`(header, state)` or `None`), after refusing a
    directory that holds a run unless resuming it with the same settings."""
    if checkpoint_dir is None:
        return None, None
    directory = pathlib.Path(checkpoint_dir)
    directory.mkdir(parents=True, exist_ok=True)
    if jax.process_index() == 0:  # the one writer (below)
        remove_stale_temporaries(directory)
    if checkpoints(directory) and not resume:
        newest = checkpoints(directory)[-1]
        raise FileExistsError(
            f"{directory} already holds checkpoints (the newest {newest.name}, step "
            f"{checkpoint_step(newest)}). Pass resume=True to continue that run, or delete the "
            "directory (or choose another `checkpoint_dir`) to start afresh."
        )
    found = latest_checkpoint(directory, optimiser) if resume else None
    if found is not None:
        saved = {"shards": 1, **found[0]["fit"]}  # checkpoints from before data parallelism
        diff = {k: (saved.get(k), v) for k, v in config.items() if saved.get(k) != v}
        if diff:
            raise ValueError(f"Cannot resume: the checkpoint was trained with other settings {diff} (saved, now).")
    return directory, found


def save_checkpoint(directory, step, estimator, opt_state, best, best_val, bad_evals, history, config, stopped):
    header = {
        "kind": "checkpoint",
        "step": step,
        "best_val": None if math.isinf(best_val) else best_val,
        "bad_evals": bad_evals,
        "stopped": stopped,
        "history": history,
        "fit": config,
        "estimator": estimator_config(estimator),
    }
    write_pair(directory / f"ckpt-{step:08d}", {"estimator": estimator, "opt_state": opt_state, "best": best}, header)
    for old in checkpoints(directory)[:-KEEP_CHECKPOINTS]:
        old.unlink()
        old.with_suffix(".eqx").unlink(missing_ok=True)


class TrainingDivergedError(FloatingPointError):
    """Raised by [`sgjax.fit`][] when the training loss or the parameters become NaN or
    infinite. `step` is the first such optimiser step (counted from 1); `checkpoint`
    the last checkpoint written before it (kept, its parameters finite; the path of
    its two files without their `.json` / `.eqx` suffix), or `None`."""

    def __init__(self, message: str, step: int, checkpoint: pathlib.Path | None):
        super().__init__(message)
        self.step = step
        self.checkpoint = checkpoint


def check_finite(losses, finite, done: int, ckpt_dir, optimiser_given: bool) -> None:
    """Raise `TrainingDivergedError` unless each loss of a dispatch that began after
    step `done`, and the parameters after each of its updates (`finite`), are finite."""
    bad = ~np.isfinite(losses) | ~finite
    if not bad.any():
        return
    i = int(np.argmax(bad))
    step = done + i + 1
    if np.isfinite(losses[i]):
        what = f"its update made the parameters non-finite (NaN or inf; its loss was {losses[i]:.4g})"
    else:
        what = f"its loss is {losses[i]} (the parameters were finite): the network's output or the batch's data is not finite"
    fix = "Lower the optimiser's learning rate" if optimiser_given else "Lower `learning_rate`"
    fix += ", and check that the simulations are finite under the prior (sgjax.simulate)."
    ckpts = [] if ckpt_dir is None else checkpoints(ckpt_dir)
    last = ckpts[-1].with_suffix("") if ckpts else None
    if ckpts:
        kept = f" The last good checkpoint, {last} (step {checkpoint_step(ckpts[-1])}), is kept."
    elif ckpt_dir is not None:
        kept = f" No checkpoint had been written to {ckpt_dir} yet."
    else:
        kept = " Nothing was saved: pass `checkpoint_dir` to keep checkpoints of a long run."
    raise TrainingDivergedError(f"Training diverged at step {step}: {what}. {fix}{kept}", step, last)
