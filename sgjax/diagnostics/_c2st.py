"""The classifier two-sample test (C2ST) as in the sbibm benchmark (Lueckmann et al.
2021): how well can a classifier tell two samples apart? Used to compare an
approximate posterior's draws with a reference posterior's."""

from collections.abc import Mapping
from typing import cast

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, Float

from .._custom_types import check_key, Key
from . import _common


#: sbibm's classifier is scikit-learn's `MLPClassifier` with Adam at its default
#: learning rate 1e-3. One instance, so that repeated calls reuse the compiled code.
DEFAULT_OPTIMISER = optax.adam(1e-3)


class _Classifier(eqx.Module):
    """A ReLU MLP with one logit output: `sizes` are the layer widths, input first."""

    weights: tuple[Float[Array, "a b"], ...]
    biases: tuple[Float[Array, " b"], ...]

    @classmethod
    def init(cls, key, sizes: tuple[int, ...]) -> "_Classifier":
        """PyTorch's (and equinox's) default: U(±1/√fan_in) for weights and biases,
        from one random draw (one draw per layer would multiply the compile time)."""
        shapes = [(a, b) for a, b in zip(sizes[:-1], sizes[1:])]
        u = jax.random.uniform(key, (sum(a * b + b for a, b in shapes),), minval=-1.0, maxval=1.0)
        weights, biases, start = [], [], 0
        for a, b in shapes:
            scale = 1 / jnp.sqrt(a)
            weights.append(scale * u[start : start + a * b].reshape(a, b))
            biases.append(scale * u[start + a * b : start + a * b + b])
            start += a * b + b
        return cls(tuple(weights), tuple(biases))

    def __call__(self, x: Float[Array, "batch d"]) -> Float[Array, " batch"]:
        for w, b in zip(self.weights[:-1], self.biases[:-1]):
            x = jax.nn.relu(x @ w + b)
        return (x @ self.weights[-1] + self.biases[-1])[:, 0]


def _loss(model, x, y, w):
    losses = optax.sigmoid_binary_cross_entropy(model(x), y)
    return jnp.sum(w * losses) / jnp.maximum(jnp.sum(w), 1.0)


@eqx.filter_jit
@eqx.debug.assert_max_traces(max_traces=None)  # counts compilations for the tests
def _cross_validate(x, y, key, *, folds, sizes, epochs, batch_size, optimiser):
    """Split into `folds` folds at random, train one classifier per fold (vmapped over
    folds) on the other folds, and return each one's accuracy on its held-out fold."""
    n = x.shape[0]
    k_split, key = jax.random.split(key)
    fold = jnp.argsort(jax.random.uniform(k_split, (n,))) % folds  # sizes differ by ≤ 1
    n_batches = -(-n // batch_size)
    pad = n_batches * batch_size - n

    def train(f, k):
        k_init, k_order = jax.random.split(k)
        model = _Classifier.init(k_init, sizes)
        weight = (fold != f).astype(x.dtype)  # train on the other folds
        # A fresh shuffle each epoch (argsort of uniforms: cheaper to compile than
        # jax.random.permutation), padded to whole batches with index n (weight 0).
        order = jnp.argsort(jax.random.uniform(k_order, (epochs, n)), axis=1)
        order = jnp.concatenate([order, jnp.full((epochs, pad), n)], axis=1).reshape(-1, batch_size)

        def step(carry, idx):
            model, state = carry
            w = jnp.where(idx < n, weight[jnp.minimum(idx, n - 1)], 0.0)
            idx = jnp.minimum(idx, n - 1)
            grads = jax.grad(_loss)(model, x[idx], y[idx], w)
            updates, state = optimiser.update(grads, state, model)
            return (optax.apply_updates(model, updates), state), None

        (trained, _), _ = jax.lax.scan(step, (model, optimiser.init(model)), order)
        held_out = fold == f
        correct = (cast(_Classifier, trained)(x) > 0) == (y > 0.5)
        return jnp.sum(held_out & correct) / jnp.sum(held_out)

    return jax.vmap(train)(jnp.arange(folds), jax.random.split(key, folds))


def _sample(value, which: str) -> tuple[np.ndarray, tuple[str, ...] | None]:
    """One sample as `(m, d)` float64 and its components' names (`None` for an
    array): from an array, a mapping name → `(m,)`, or a posterior of one dataset."""
    draws, labels = _common.posterior_samples(value, "c2st", which)
    if not isinstance(draws, Mapping):
        if labels is not None:  # a posterior with stacked samples (n, draws, k)
            draws = {name: np.asarray(draws)[..., j] for j, name in enumerate(labels)}
        else:
            return np.asarray(draws, np.float64), None
    if not draws:
        raise ValueError(f"`c2st` got no draws in `{which}`: the mapping of parameter name -> draws is empty.")
    arrays = {name: np.asarray(v, np.float64) for name, v in draws.items()}
    shapes = {v.shape for v in arrays.values()}
    if len(shapes) == 1 and len(next(iter(shapes))) == 2:
        n = next(iter(shapes))[0]
        if n != 1:
            raise ValueError(
                f"`c2st` compares the draws for one dataset, but `{which}` holds draws for {n} datasets "
                f"(name -> (n, draws)); pass one of them, e.g. posterior.theta(i)."
            )
        arrays = {name: v[0] for name, v in arrays.items()}
    shapes = {name: v.shape for name, v in arrays.items()}
    if len(set(shapes.values())) != 1 or len(next(iter(shapes.values()))) != 1:
        raise ValueError(f"`c2st` needs one draw count for every entry of `{which}`, each (draws,); got {shapes}.")
    return np.stack(list(arrays.values()), axis=-1), tuple(arrays)


def c2st(
    a,
    b,
    *,
    key: Key,
    folds: int = 5,
    width: int | None = None,
    depth: int = 2,
    epochs: int = 100,
    batch_size: int = 200,
    optimiser: optax.GradientTransformation | None = None,
) -> float:
    """The classifier two-sample test: the cross-validated accuracy of a classifier
    trained to tell sample `a` from sample `b`.

    Follows sbibm: both samples are z-scored with the mean and standard deviation of
    `a`; a ReLU MLP with `depth` hidden layers of `10·d` units is trained with Adam on
    mini-batches of 200 to minimise the cross-entropy; the score is its mean accuracy
    over the held-out folds of a shuffled `folds`-fold split. All folds train at once
    (vmapped) in one compiled function; repeated calls with the same shapes and
    settings compile nothing.

    **Arguments:**

    - `a`, `b`: the two samples (e.g. posterior draws from an SGNN and from NUTS for
        one observation), each a mapping name → `(draws,)` (`posterior.theta(i)`), a
        posterior of one dataset, or an array `(n_a, d)` (1-D: one dimension). Named
        samples must name the same parameters (compared name by name, in any
        order); arrays are compared column by column. Use equal sizes: the score's
        chance level is the larger sample's share, `max(n_a, n_b) / (n_a + n_b)`.
    - `key`: a JAX PRNG key (fold split, initialisation, mini-batches).
    - `folds`: the number of cross-validation folds (default 5).
    - `width`: hidden units per layer; default `10·d`, as in sbibm.
    - `depth`: hidden layers (default 2, as in sbibm).
    - `epochs`: passes over the training folds. sbibm trains until the training loss
        stalls; a fixed count keeps the computation one compiled loop.
    - `batch_size`: mini-batch size (default 200, scikit-learn's).
    - `optimiser`: any optax transformation; default Adam with learning rate 1e-3.
        Create yours once and reuse it: the compiled training is cached per
        optimiser object.

    **Returns:** the mean held-out accuracy, a float: ≈ 0.5 when the samples come from
    one distribution (with equal sizes), 1.0 when they are fully separable. For two
    unit-variance Gaussians `δ` apart it approaches the Bayes accuracy `Φ(δ/2)`.
    """
    # Checks and z-scoring on the host (NumPy): eager JAX ops would each compile.
    (a_arr, a_names), (b_arr, b_names) = _sample(a, "a"), _sample(b, "b")
    if (a_names is None) != (b_names is None):
        raise TypeError(
            "`c2st` got one named sample (a dict or a posterior) and one array; their columns cannot be "
            "matched. Pass both as dicts, or both as arrays (sgjax.stack(theta, names))."
        )
    if a_names is not None and b_names is not None:
        if set(a_names) != set(b_names):
            raise ValueError(
                f"`c2st` needs draws of the same parameters in `a` and `b`; got {list(a_names)} and {list(b_names)}."
            )
        b_arr = b_arr[:, [b_names.index(name) for name in a_names]]
    check_key(key)
    if a_arr.ndim == 1 and b_arr.ndim == 1:
        a_arr, b_arr = a_arr[:, None], b_arr[:, None]
    if a_arr.ndim != 2 or b_arr.ndim != 2 or a_arr.shape[1] != b_arr.shape[1]:
        raise ValueError(
            f"`c2st` needs two samples of shape (n_a, d) and (n_b, d) with the same dimension d; "
            f"got {a_arr.shape} and {b_arr.shape}."
        )
    if not isinstance(folds, (int, np.integer)) or folds < 2:
        raise ValueError(f"`folds` must be an integer ≥ 2, got {folds!r}.")
    n = a_arr.shape[0] + b_arr.shape[0]
    if min(a_arr.shape[0], b_arr.shape[0]) < 2 or n < 2 * folds:
        raise ValueError(
            f"`c2st` needs at least 2 points in each sample and 2 per fold; got {a_arr.shape[0]} and "
            f"{b_arr.shape[0]} points for {folds} folds."
        )
    for name, v in (("epochs", epochs), ("batch_size", batch_size), ("depth", depth)):
        if not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"`{name}` must be a positive integer, got {v!r}.")
    if not (np.isfinite(a_arr).all() and np.isfinite(b_arr).all()):
        raise ValueError("`c2st` got NaN or infinite values; drop them from both samples first.")
    d = a_arr.shape[1]
    width = 10 * d if width is None else width
    if not isinstance(width, (int, np.integer)) or width < 1:
        raise ValueError(f"`width` must be a positive integer, got {width!r}.")

    mean, std = a_arr.mean(axis=0), a_arr.std(axis=0, ddof=1)
    std = np.where(std > 0, std, 1.0)
    x = (np.concatenate([a_arr, b_arr]) - mean) / std
    y = np.concatenate([np.zeros(a_arr.shape[0]), np.ones(b_arr.shape[0])])
    dtype = jnp.result_type(float)
    accuracy = _cross_validate(
        jnp.asarray(x, dtype),
        jnp.asarray(y, dtype),
        key,
        folds=int(folds),
        sizes=(d,) + (int(width),) * int(depth) + (1,),
        epochs=int(epochs),
        batch_size=int(min(batch_size, n)),
        optimiser=DEFAULT_OPTIMISER if optimiser is None else optimiser,
    )
    return float(np.mean(np.asarray(accuracy)))
