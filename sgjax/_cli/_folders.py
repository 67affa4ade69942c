"""The output folder of a command: created and checked before any work is done, the
temporaries of an interrupted run removed, an earlier run's outputs replaced only on
`--overwrite`; and `UsageError`, the mistake `main` reports on one line."""

import shutil
import tempfile
from pathlib import Path


class UsageError(Exception):
    """A mistake on the command line: `main` prints its message on one line and exits
    with status 2."""


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
