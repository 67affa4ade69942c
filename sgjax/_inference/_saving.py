"""Saving and loading a trained estimator: `estimator.eqx` (array leaves only, no
pickle) and `estimator.json` (its structure, from which sgjax rebuilds it)."""

import json
import pathlib

import equinox as eqx
import jax
import jax.numpy as jnp

from .._io import FileFormatError, read_header, read_payload, write_pair
from .._learning import Space
from ..heads import head_from_config
from ..nn import network_from_config, Standardise, StandardiseInputs
from ..nn.base import check_size
from ._estimator import Estimator


def save(path, estimator: Estimator, *, overwrite: bool = False) -> pathlib.Path:
    """Save an estimator to the directory `path` as `estimator.eqx` (array leaves
    only, no pickle) and `estimator.json` (structure, versions, checksums of both).

    Refuses to replace an existing saved estimator unless `overwrite=True`.
    """
    if not isinstance(estimator, Estimator):
        raise TypeError(f"`estimator` must be an sgjax.Estimator, got {type(estimator).__name__}.")
    path = pathlib.Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise ValueError(
            f"Cannot save to {path}: it or a folder above it is a file. `path` names a directory "
            "(new or existing) to hold estimator.eqx and estimator.json; choose another path."
        ) from None
    stem = path / "estimator"
    if stem.with_suffix(".json").exists() and not overwrite:
        raise FileExistsError(
            f"{stem.with_suffix('.json')} exists; pass overwrite=True to replace it, or choose another path."
        )
    write_pair(stem, estimator, estimator_config(estimator))
    return path


def estimator_config(estimator: Estimator) -> dict:
    return {
        "kind": "estimator",
        "network": estimator.network.config(),
        "head": estimator.head.config(),
        "standardise": estimator.standardise.config(),
        "labels": list(estimator.labels),
        "spaces": [s.config() for s in estimator.spaces],
        "n_classes": estimator.n_classes,
        "dtype": str(estimator.y_mean.dtype),
        "task": json.loads(estimator.info),
        # Only where there are known inputs: a file without them is as before.
        **({"inputs": list(estimator.inputs)} if estimator.inputs else {}),
    }


def skeleton(config: dict) -> Estimator:
    """An estimator of the structure `config` describes, with placeholder values."""
    try:
        std = config["standardise"]
        k = max(len(config["labels"]), 1) if not config["n_classes"] else 1
        dtype = jnp.dtype(config["dtype"])
        return Estimator(
            standardise=_standardise(std),
            network=network_from_config(config["network"], key=jax.random.key(0)),
            head=head_from_config(config["head"]),
            y_mean=jnp.zeros(k, dtype),
            y_std=jnp.ones(k, dtype),
            labels=tuple(config["labels"]),
            spaces=tuple(Space(**s) for s in config["spaces"]),
            n_classes=int(config["n_classes"]),
            info=_task_info(config.get("task", {})),
            **_inputs(config.get("inputs", [])),
        )
    except (KeyError, TypeError) as e:
        raise FileFormatError(f"The saved configuration is incomplete or malformed ({e!r}).") from None


def _inputs(names) -> dict:
    """The known inputs' names and a placeholder standardisation, as `Estimator`'s
    keyword arguments (none for an estimator saved without inputs)."""
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names) or len(set(names)) != len(names):
        raise FileFormatError(
            "The saved estimator was edited or damaged: its `inputs` entry is not a list of distinct names."
        )
    if not names:
        return {}
    k, dtype = len(names), jnp.result_type(float)
    return {
        "inputs": tuple(names),
        "input_standardise": StandardiseInputs(jnp.zeros(k, dtype), jnp.ones(k, dtype), jnp.zeros(k, bool)),
    }


def _task_info(task) -> str:
    """The saved task description as `Estimator.info`, checked where inference reads
    it: `ts` a list of times, `counts` true or false."""
    ts = task.get("ts", []) if isinstance(task, dict) else None
    times = isinstance(ts, list) and all(isinstance(t, (int, float)) and not isinstance(t, bool) for t in ts)
    if not times or not isinstance(task.get("counts", False), bool):
        raise FileFormatError(
            "The saved estimator was edited or damaged: its `task` entry does not describe a task (a dict "
            "whose `ts` is a list of times and whose `counts` is true or false). Restore it or retrain."
        )
    return json.dumps(task)


def _standardise(config: dict) -> Standardise:
    # `Standardise.skeleton` with jax.numpy for its NumPy: traced under
    # `eqx.filter_eval_shape` (in `load`), it allocates nothing however large the
    # header says the series are.
    shape = (check_size(config["in_time"], "in_time"), check_size(config["in_channels"], "in_channels"))
    dtype = jnp.result_type(float)
    return Standardise(jnp.zeros(shape, dtype), jnp.ones(shape, dtype), config["log1p"])


def load(path) -> Estimator:
    """Load an estimator saved by [`sgjax.save`][] (or by `sgjax train`), in any
    process. The structure is rebuilt by sgjax from the JSON, after the JSON's own
    checksum is verified; only array values are read from the payload, after its
    checksum and the sizes the JSON declares are verified, before anything is
    allocated."""
    stem = pathlib.Path(path) / "estimator"
    header = read_header(stem.with_suffix(".json"), "estimator")
    return read_payload(stem, header, eqx.filter_eval_shape(skeleton, header))
