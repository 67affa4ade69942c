"""Training on simulations one already has: (θ, x) arrays from any simulator, in
memory or on disk."""

import os
from collections.abc import Mapping
from typing import Any

import equinox as eqx
import jax
import jax.core
import jax.numpy as jnp
import numpy as np

from .._custom_types import check_key, Key
from .._learning import AbstractTask, Batch, Space
from .._simulation import Prior, support_of


def _open(a, name: str):
    """An array as given (a NumPy array or memmap stays as it is: nothing is read), a
    `.npy` path opened with `mmap_mode='r'`, or any other array-like as NumPy."""
    if isinstance(a, (str, os.PathLike)):
        return np.load(a, mmap_mode="r")
    if isinstance(a, np.ndarray):
        return a
    if isinstance(a, jax.Array) or hasattr(a, "__array__"):
        return np.asarray(a)
    raise TypeError(f"`{name}` must be an array, a NumPy memmap or the path of a .npy file, got {type(a).__name__}.")


def _spaces(spaces, names) -> tuple[Space, ...]:
    if spaces is None:
        return tuple(Space("identity") for _ in names)
    if isinstance(spaces, Prior):
        missing = [n for n in names if n not in spaces.distributions]
        if missing:
            raise ValueError(f"The prior given as `spaces` has no distribution for {missing}.")
        return tuple(Space.from_support(support_of(spaces.distributions[n])) for n in names)
    if isinstance(spaces, Mapping):
        unknown = sorted(set(spaces) - set(names))
        if unknown or not all(isinstance(s, Space) for s in spaces.values()):
            raise ValueError(
                f"`spaces` must map names of `theta` {list(names)} to sgjax.Space objects, got {spaces!r}."
            )
        return tuple(spaces.get(n, Space("identity")) for n in names)
    raise TypeError("`spaces` must be None, a mapping name -> sgjax.Space, or an sgjax.Prior (its supports).")


class ArrayTask(AbstractTask):
    """Learn from simulations one already has: `n` parameter draws `θ` and their
    observed series `x`, from any simulator (even one not written in JAX).

    [`sgjax.fit`][] trains on it as on any task — the same heads, networks,
    validation, checkpoints and saving — in epochs of shuffled minibatches: it holds
    out `validation_size` rows (chosen at random by the key) for the validation loss,
    and feeds the others to the device one dispatch at a time. Arrays larger than
    memory stay on disk: pass NumPy memmaps, or the paths of `.npy` files (opened with
    `mmap_mode='r'`); only the rows of the current batches are read.

    **Arguments:**

    - `theta`: a mapping from parameter name to its `n` values (an array `(n,)`, a
        memmap, or a `.npy` path).
    - `x`: the observations `(n, time, channels)` (or `(n, time)` for one channel), an
        array, a memmap or a `.npy` path.
    - `mask`: optional booleans of `x`'s shape, `True` where observed; default: all
        observed. Rows whose θ or observed values are not finite get weight 0.
    - `spaces`: the learning space of each parameter: a mapping name →
        [`sgjax.Space`][] (default identity), or an [`sgjax.Prior`][] whose supports
        choose them as [`sgjax.Parameter`][] does (`log` for a positive rate, `logit`
        on a bounded interval).
    - `inputs`: known per-dataset inputs the network reads beside `x` (a population
        size, a covariate), keyword-only: a mapping name → its `n` values, like
        `theta`; never targets. [`sgjax.infer`][] then needs their values:
        `inputs={"N": 763}`.

    **Example:**

    ```python
    theta = {"beta": np.load("beta.npy"), "gamma": np.load("gamma.npy")}
    task = sgjax.ArrayTask(theta, "x.npy")        # x.npy: (n, time, channels), read lazily
    estimator, history = sgjax.fit(task, sgjax.heads.Flow(), key=jax.random.key(0))
    ```
    """

    theta: dict[str, Any]
    x: Any
    mask: Any
    _labels: tuple[str, ...] = eqx.field(static=True)
    _spaces: tuple[Space, ...] = eqx.field(static=True)
    known: dict[str, Any] = eqx.field(default_factory=dict)

    def __init__(self, theta: Mapping, x, mask=None, spaces=None, *, inputs: Mapping | None = None):
        if not isinstance(theta, Mapping) or not theta:
            raise TypeError(
                "`theta` must be a non-empty mapping from parameter name to an array of its values, one per row of `x`."
            )
        x = _open(x, "x")
        if x.ndim == 2:
            x = x[..., None]
        if x.ndim != 3:
            raise ValueError(f"`x` must have shape (n, time, channels), got {x.shape}.")
        if inputs is not None and not isinstance(inputs, Mapping):
            raise TypeError(f"`inputs` must be a mapping from input name to its values, got {type(inputs).__name__}.")
        theta = {str(k): _open(v, f"theta[{k!r}]") for k, v in theta.items()}
        known = {str(k): _open(v, f"inputs[{k!r}]") for k, v in (inputs or {}).items()}
        for what, arrays in (("theta", theta), ("inputs", known)):
            for k, v in arrays.items():
                if v.shape != (x.shape[0],):
                    raise ValueError(
                        f"`{what}[{k!r}]` must have shape ({x.shape[0]},), one value per row of `x`, got {v.shape}."
                    )
        both = sorted(set(theta) & set(known))
        if both:
            raise ValueError(f"{both} cannot be both a target (in `theta`) and a known input: an input is given.")
        if mask is not None:
            mask = _open(mask, "mask")
            mask = mask[..., None] if mask.ndim == 2 else mask
            if mask.shape != x.shape:
                raise ValueError(f"`mask` must have the shape of `x`, {x.shape}, got {mask.shape}.")
        self.theta, self.x, self.mask, self.known = theta, x, mask, known
        self._labels = tuple(theta)
        self._spaces = _spaces(spaces, self._labels)

    @property
    def labels(self):
        return self._labels

    @property
    def spaces(self):
        return self._spaces

    @property
    def in_time(self):
        return self.x.shape[1]

    @property
    def in_channels(self):
        return self.x.shape[2]

    @property
    def inputs(self):
        return tuple(self.known)

    @property
    def fully_observed(self):
        return self.mask is None

    @property
    def n_rows(self) -> int:
        return self.x.shape[0]

    def read(self, rows: np.ndarray) -> Batch:
        """The rows `rows` as a `Batch` of NumPy arrays, `θ` in natural units (read in
        ascending order, which a file on disk serves fastest)."""
        order = np.argsort(rows, kind="stable")
        back = np.empty_like(order)
        back[order] = np.arange(len(rows))
        rows = np.asarray(rows)[order]
        dtype = jnp.result_type(float)
        x = np.asarray(self.x[rows], dtype)
        mask = np.ones(x.shape, bool) if self.mask is None else np.asarray(self.mask[rows], bool)
        y = np.stack([np.asarray(self.theta[k][rows], dtype) for k in self._labels], axis=1)
        u = np.stack([np.asarray(self.known[k][rows], dtype) for k in self.known], axis=1) if self.known else None
        ok = np.asarray(np.isfinite(y).all(1)) & np.where(mask, np.isfinite(x), True).all((1, 2))
        if u is not None:
            ok &= np.isfinite(u).all(1)
            u = np.where(ok[:, None], u, 1).astype(dtype)
        x = np.where(mask & ok[:, None, None], x, 0).astype(dtype)
        y = np.where(ok[:, None], y, 0).astype(dtype)
        # A host batch: NumPy arrays where `Batch` declares jax arrays (`sample` converts them).
        fields: list[Any] = [x, mask, y, ok.astype(dtype), u]
        return jax.tree.map(lambda a: a[back], Batch(*fields))

    def sample(self, key: Key, n: int) -> Batch:
        """`n` rows drawn at random (with replacement), their targets in the learning
        space. Runs on the host: not inside `jax.jit` (`sgjax.fit` streams the rows
        itself)."""
        if isinstance(key, jax.core.Tracer):
            raise TypeError("ArrayTask.sample reads its rows on the host and cannot run inside jax.jit.")
        check_key(key)
        seed = np.asarray(jax.random.key_data(key)).ravel().tolist()
        batch = self.read(np.random.default_rng(seed).integers(0, self.n_rows, n))
        y = jnp.stack([s.forward(batch.y[:, i]) for i, s in enumerate(self._spaces)], axis=1)
        return Batch(
            jnp.asarray(batch.x),
            jnp.asarray(batch.mask),
            jnp.where(batch.weight[:, None] > 0, y, 0.0),
            jnp.asarray(batch.weight),
            None if batch.inputs is None else jnp.asarray(batch.inputs),
        )

    def describe(self):
        return {
            "kind": "ArrayTask",
            "labels": list(self._labels),
            "rows": int(self.n_rows),
            "in_time": int(self.in_time),
            "in_channels": int(self.in_channels),
            "spaces": [s.config() for s in self._spaces],
            **({"inputs": list(self.known)} if self.known else {}),
        }


def array_rows(task: ArrayTask, key: Key, batch_size: int, steps_per_call: int, pilot_size: int, validation_size: int):
    """`fit`'s source for an `ArrayTask`: `validation_size` rows chosen at random by
    `key` held out, the others shuffled into minibatches each epoch."""
    from ._sources import Rows

    n = task.n_rows
    if validation_size >= n:
        raise ValueError(
            f"`validation_size`={validation_size} leaves no training rows of the ArrayTask's {n}; lower it."
        )
    seed = np.asarray(jax.random.key_data(key)).ravel()
    order = np.random.default_rng([*seed.tolist(), 2**31]).permutation(n)
    return Rows(
        task.read,
        np.sort(order[validation_size:]),
        np.sort(order[:validation_size]),
        task.spaces,
        seed,
        batch_size,
        steps_per_call,
        pilot_size,
    )
