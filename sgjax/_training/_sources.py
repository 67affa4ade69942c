"""Where `fit`'s batches come from. A source gives the training call one input per
step — a PRNG key to simulate from (`Stream`) or a batch's rows (`Rows`) — for its
training steps, its pilot batches and its validation set, and the pytree the
training call draws batches with (`program`)."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._custom_types import Key
from .._learning import AbstractTask, Batch, Space
from ._parallel import shard


@eqx.filter_jit
def _sample(task: AbstractTask, key: Key, n: int) -> Batch:
    return task.sample(key, n)


def simulate_batch(task: AbstractTask, n: int, *, key: Key, chunk: int = 512) -> Batch:
    """`n` training pairs from `task`, generated in jitted chunks of `chunk`, kept on
    the device, in random order: a task's chunk can be ordered inside (model
    selection stratifies by model), so its rows are shuffled and any first `k` of them
    are a fair sample. When `n` is not a whole number of chunks, the surplus is
    dropped at random, so no model loses its share. An [`sgjax.ArrayTask`][] gives `n`
    of its rows drawn at random."""
    from ._arrays import ArrayTask

    if isinstance(task, ArrayTask):
        return task.sample(key, n)
    m = -(-n // chunk)
    parts = [_sample(task, k, chunk) for k in jax.random.split(key, m)]
    batch = jax.tree.map(lambda *a: jnp.concatenate(a), *parts)
    keep = jax.random.permutation(jax.random.fold_in(key, m), m * chunk)[:n]
    return jax.tree.map(lambda a: a[keep], batch)


class Stream:
    """Fresh simulations from a task: one key per step, split from `fit`'s keys. The
    pilot batches and the validation set are simulated from fixed keys by the training
    call itself, the validation set anew at each evaluation (the same set each time)."""

    def __init__(
        self,
        task: AbstractTask,
        keys: dict,
        batch_size: int,
        steps_per_call: int,
        pilot_size: int,
        validation_size: int,
    ):
        self.program = task
        self.steps_per_call = steps_per_call
        self.train_key = keys["train"]
        self.pilot_keys = jax.random.split(keys["pilot"], -(-pilot_size // batch_size))
        self.validation_keys = jax.random.split(keys["validation"], validation_size // batch_size)

    def train(self, call: int):
        return jax.random.split(jax.random.fold_in(self.train_key, call), self.steps_per_call)

    def pilot(self, start: int, stop: int):
        return self.pilot_keys[start:stop]

    def validation(self, start: int, stop: int):
        return self.validation_keys[start:stop]

    @property
    def pilot_batches(self) -> int:
        return len(self.pilot_keys)

    @property
    def validation_batches(self) -> int:
        return len(self.validation_keys)


class Given(eqx.Module):
    """The training call's program for `Rows`: the step's input is the batch itself,
    its targets in natural units mapped to their learning `spaces` (`None`: already
    there)."""

    spaces: tuple[Space, ...] | None = eqx.field(static=True)

    def draw(self, rows: Batch, sharding) -> Batch:
        y = rows.y
        if self.spaces is not None:
            y = jnp.stack([s.forward(y[:, i]) for i, s in enumerate(self.spaces)], axis=1)
            y = jnp.where(rows.weight[:, None] > 0, y, 0.0)
        return shard(Batch(rows.x, rows.mask, y, rows.weight, rows.inputs), sharding)


class Rows:
    """A fixed set of training pairs on the host (in memory, or read from disk batch by
    batch: `read(rows) -> Batch` of NumPy arrays), split into training rows and
    validation rows. Each epoch shuffles the training rows (a function of the key and
    the epoch only) into minibatches; only the rows of the current dispatch are ever
    read. The pilot batches are the first epoch's first rows."""

    def __init__(
        self, read, train_rows, validation_rows, spaces, seed, batch_size: int, steps_per_call: int, pilot_size: int
    ):
        if len(train_rows) < batch_size:
            raise ValueError(
                f"{len(train_rows)} training rows are fewer than one batch ({batch_size}); lower `batch_size`."
            )
        self.program = Given(None if spaces is None else tuple(spaces))
        self.read, self.train_rows, self.seed = read, np.asarray(train_rows), np.asarray(seed).ravel()
        self.batch_size, self.steps_per_call = batch_size, steps_per_call
        self.per_epoch = len(train_rows) // batch_size
        self.pilot_batches = min(-(-pilot_size // batch_size), self.per_epoch)
        n_val = -(-len(validation_rows) // batch_size) * batch_size  # whole batches, padded with weight 0
        self.validation_rows = np.resize(np.asarray(validation_rows), n_val)
        self.validation_pad = n_val - len(validation_rows)
        self.validation_batches = n_val // batch_size
        self._perm = (None, None)

    def _epoch(self, epoch: int) -> np.ndarray:
        if self._perm[0] != epoch:  # one shuffle per epoch
            order = np.random.default_rng([*self.seed.tolist(), epoch]).permutation(len(self.train_rows))
            self._perm = (epoch, self.train_rows[order])
        rows = self._perm[1]
        assert rows is not None  # shuffled above for this epoch
        return rows

    def _batches(self, rows: np.ndarray) -> Batch:
        """The rows `(steps, batch)` read, one batch per step."""
        batch = self.read(rows.ravel())
        return jax.tree.map(lambda a: a.reshape(*rows.shape, *a.shape[1:]), batch)

    def train(self, call: int) -> Batch:
        rows = []
        for s in range(call * self.steps_per_call, (call + 1) * self.steps_per_call):
            epoch, pos = divmod(s, self.per_epoch)
            rows.append(self._epoch(epoch)[pos * self.batch_size : (pos + 1) * self.batch_size])
        return self._batches(np.stack(rows))

    def pilot(self, start: int, stop: int) -> Batch:
        rows = self._epoch(0)[: self.pilot_batches * self.batch_size].reshape(-1, self.batch_size)
        return self._batches(rows[start:stop])

    def validation(self, start: int, stop: int) -> Batch:
        batch = self._batches(self.validation_rows.reshape(-1, self.batch_size)[start:stop])
        if self.validation_pad and stop == self.validation_batches:  # the padding: weight 0
            weight = batch.weight.copy()
            weight.reshape(-1)[weight.size - self.validation_pad :] = 0
            batch = eqx.tree_at(lambda b: b.weight, batch, weight)
        return batch


def _host(batch: Batch) -> Batch:
    return jax.tree.map(np.asarray, jax.device_get(batch))


def budget(
    task: AbstractTask,
    keys: dict,
    budget: int,
    batch_size: int,
    steps_per_call: int,
    pilot_size: int,
    validation_size: int,
) -> Rows:
    """A fixed budget of `budget` simulations (and a validation set of
    `validation_size`), simulated once and kept on the host."""
    train = _host(simulate_batch(task, key=keys["budget"], n=budget))
    val = _host(simulate_batch(task, key=keys["validation"], n=validation_size))
    data = jax.tree.map(lambda a, b: np.concatenate([a, b]), train, val)
    read = lambda rows: jax.tree.map(lambda a: a[rows], data)  # noqa: E731
    seed = jax.random.key_data(keys["budget"])
    return Rows(
        read, np.arange(budget), budget + np.arange(validation_size), None, seed, batch_size, steps_per_call, pilot_size
    )
