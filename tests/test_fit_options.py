"""fit's front door (issue 25): simulations one already has (`sgjax.ArrayTask`, in
memory or on disk), a user's own noise model on the built-ins' path, the default head
for model selection, a wall-clock budget, a callback that stops, and warm starts."""

import functools
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from exact_tasks import LinearGaussian, PoissonGamma, TwoGaussians
from helpers import with_compiles

import sgjax
from sgjax._training import _step
from sgjax.observation import AbstractNoise, ObservationModel


SMALL_MLP = functools.partial(sgjax.nn.MLP, width=64)
FAST = dict(batch_size=256, validation_size=512, pilot_size=512, steps_per_call=50, eval_every=50, progress=False)


def _fit(task, head=None, **kwargs):
    return sgjax.fit(task, head, kwargs.pop("network", SMALL_MLP), **{**FAST, **kwargs})


def _traces() -> int:
    return eqx.debug.get_num_traces(_step.steps_body)


def _leaves(tree):
    return [np.asarray(a) for a in jax.tree.leaves(eqx.filter(tree, eqx.is_array))]


def _write_linear_gaussian(directory, n: int):
    """`n` draws of LinearGaussian written as `.npy` files: θ `(n,)`, x `(n, T, 1)`."""
    batch = LinearGaussian().sample(jax.random.key(123), n)
    theta = np.lib.format.open_memmap(directory / "theta.npy", "w+", np.float32, (n,))
    x = np.lib.format.open_memmap(directory / "x.npy", "w+", np.float32, tuple(batch.x.shape))
    theta[:], x[:] = np.asarray(batch.y[:, 0]), np.asarray(batch.x)
    theta.flush(), x.flush()
    return directory / "theta.npy", directory / "x.npy"


def test_array_task_on_disk_learns_the_exact_posterior_mean(tmp_path):
    # Simulations one already has, on disk and opened lazily (mmap_mode='r'): the
    # Gaussian linear model, whose posterior mean is known exactly.
    theta_path, x_path = _write_linear_gaussian(tmp_path, 16384)
    task = sgjax.ArrayTask({"theta": theta_path}, x_path)
    assert isinstance(task.x, np.memmap) and isinstance(task.theta["theta"], np.memmap)
    assert (task.labels, task.in_time, task.in_channels, task.n_rows) == (("theta",), 10, 1, 16384)
    est, hist = _fit(task, key=jax.random.key(0), steps=600, validation_size=1024)
    test = LinearGaussian().sample(jax.random.key(99), 4000)
    mean, sd = LinearGaussian().posterior(test.x)
    point = sgjax.infer(est, test.x).point["theta"]
    # 16,384 rows, 600 steps of 256 (~10 epochs): the mean squared distance to the
    # exact posterior mean in units of the posterior variance is ~0.01 (0.01 streaming
    # fresh simulations, test_train); 0.05 leaves room for the fixed sample.
    assert np.mean((point - mean) ** 2) / sd**2 < 0.05
    assert len(hist["val_loss"]) == 12 and np.all(np.isfinite(hist["val_loss"]))
    # The estimator saves and loads like any other.
    again = sgjax.load(sgjax.save(tmp_path / "est", est))
    np.testing.assert_allclose(sgjax.infer(again, test.x).point["theta"], point, rtol=1e-6)


def test_array_task_reads_only_the_rows_of_each_batch(tmp_path):
    # In memory, with a mask and a prior's supports for the learning spaces; rows whose
    # θ or observed values are not finite get weight 0; rows are read a dispatch at a
    # time, never all at once.
    import numpyro.distributions as dist

    n, rng = 3000, np.random.default_rng(0)
    theta = {"a": rng.uniform(0.1, 0.9, n), "b": rng.lognormal(size=n)}
    x = rng.normal(size=(n, 6)).astype(np.float32) + theta["a"][:, None]
    mask = np.ones((n, 6), bool)
    mask[::7, 2] = False
    x[::7, 2] = np.nan  # missing, masked: fine
    x[5, 0] = np.inf  # observed and not finite: row 5 gets weight 0
    prior = sgjax.Prior(a=dist.Uniform(0.0, 1.0), b=dist.LogNormal(0.0, 1.0))
    task = sgjax.ArrayTask(theta, x, mask=mask, spaces=prior)
    assert [s.kind for s in task.spaces] == ["logit", "log"] and task.in_channels == 1
    batch = task.read(np.array([7, 5, 0]))
    np.testing.assert_array_equal(batch.weight, [1, 0, 1])
    assert np.all(np.isfinite(batch.x)) and not batch.mask[0, 2, 0] and batch.mask[1, 2, 0]
    np.testing.assert_allclose(batch.y[0], [theta["a"][7], theta["b"][7]], rtol=1e-6)
    sizes = []
    read = task.read
    object.__setattr__(task, "read", lambda rows: (sizes.append(len(rows)), read(rows))[1])
    est, hist = _fit(task, key=jax.random.key(1), steps=100, validation_size=500, pilot_size=256)
    assert max(sizes) <= 50 * 256 < n * 5  # one dispatch of rows at most
    assert est.labels == ("a", "b") and np.all(np.isfinite(hist["val_loss"]))
    with pytest.raises(ValueError, match=r"`theta\['a'\]` must have shape \(3000,\)"):
        sgjax.ArrayTask({"a": theta["a"][:10]}, x)
    with pytest.raises(ValueError, match="leaves no training rows"):
        _fit(sgjax.ArrayTask({"a": theta["a"][:300]}, x[:300]), key=jax.random.key(0), steps=50, validation_size=512)


def test_array_task_resumes_like_an_uninterrupted_run(tmp_path):
    theta_path, x_path = _write_linear_gaussian(tmp_path, 4096)
    task = sgjax.ArrayTask({"theta": theta_path}, x_path)
    kwargs = dict(key=jax.random.key(2), steps=150, checkpoint_every=50, validation_size=512)
    full, full_hist = _fit(task, checkpoint_dir=tmp_path / "a", **kwargs)

    def crash(step, info):
        if step == 100:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _fit(task, checkpoint_dir=tmp_path / "b", callback=crash, **kwargs)
    resumed, hist = _fit(task, checkpoint_dir=tmp_path / "b", resume=True, **kwargs)
    for a, b in zip(_leaves(full), _leaves(resumed), strict=True):
        np.testing.assert_array_equal(a, b)
    assert hist["val_loss"] == full_hist["val_loss"]


class _Doubled(AbstractNoise):
    """A user's own count noise: twice a Poisson draw. Declares `nonnegative`."""

    is_count: ClassVar[bool] = True
    nonnegative: ClassVar[bool] = True

    def sample(self, key, mean, theta):
        return 2.0 * jax.random.poisson(key, mean, mean.shape).astype(mean.dtype)

    def log_prob(self, x, mean, theta):
        raise NotImplementedError


class _Shifted(AbstractNoise):
    """A user's own real-valued noise: a Gaussian around the signal less 50."""

    is_count: ClassVar[bool] = False
    positive_mean: ClassVar[bool] = False

    def sample(self, key, mean, theta):
        return mean - 50.0 + jax.random.normal(key, mean.shape, mean.dtype)

    def log_prob(self, x, mean, theta):
        raise NotImplementedError


@pytest.mark.parametrize(
    "noise", [_Doubled(), pytest.param(_Shifted(), marks=pytest.mark.slow)], ids=["counts", "real"]
)
def test_a_users_own_noise_takes_the_built_ins_path(noise):
    # fit reads what the noise declares, not its class: the training call simulates
    # the pilot and the validation set itself, traced once, and no other program of
    # the simulator is compiled.
    sim = sgjax.Simulator(sgjax.models.SIR(), jnp.arange(1.0, 12.0), ObservationModel(noise))
    task = sgjax.Task(sim, ["beta", "gamma"])
    before = _traces()
    (est, history), compiles = with_compiles(_fit, task, key=jax.random.key(3), steps=100)
    assert _traces() == before + 1 and compiles.count("jit(_steps)") == 1
    assert "jit(_sample)" not in compiles and "jit(_eval_loss)" not in compiles
    assert est.standardise.log1p is (noise.nonnegative is True)
    assert np.all(np.isfinite(history["val_loss"]))


def test_model_selection_chooses_the_classifier_head():
    est, _ = _fit(TwoGaussians(), key=jax.random.key(4), steps=50)
    assert isinstance(est.head, sgjax.heads.Classifier)
    post = sgjax.infer(est, TwoGaussians().sample(jax.random.key(5), 8).x)
    np.testing.assert_allclose(post.probabilities.sum(1), 1, rtol=1e-5)
    with pytest.raises(ValueError, match="goes with the Classifier head"):
        _fit(TwoGaussians(), sgjax.heads.Point(), key=jax.random.key(4), steps=50)


def test_a_callback_stops_training_at_its_step():
    seen = []

    def stop_at_100(step, info):
        seen.append(info)
        return "stop" if step >= 100 else None

    est, hist = _fit(LinearGaussian(), key=jax.random.key(6), steps=1000, callback=stop_at_100)
    assert hist["step"] == [50, 100] and hist["val_step"] == [50, 100]
    assert [i["step"] for i in seen] == [50, 100] and set(seen[0]) == {"step", "loss", "val_loss", "samples_per_s"}
    assert seen[-1]["val_loss"] == hist["val_loss"][-1]
    _, hist = _fit(LinearGaussian(), key=jax.random.key(6), steps=1000, callback=lambda step, info: step >= 150)
    assert hist["step"][-1] == 150


def test_a_tiny_time_limit_stops_early_with_a_usable_estimator():
    est, hist = _fit(LinearGaussian(), key=jax.random.key(7), steps=5000, time_limit=1e-3)
    # Past the limit after the first dispatch: evaluated there and stopped.
    assert hist["step"] == [50] and hist["val_step"] == [50]
    test = LinearGaussian().sample(jax.random.key(8), 100)
    assert np.all(np.isfinite(sgjax.infer(est, test.x).point["theta"]))


def test_the_timed_schedule_is_the_default_schedule_of_its_length():
    # timed_optimiser's schedule, its length in its state, is default_optimiser's.
    for total in (40, 1000):
        schedule = optax.warmup_cosine_decay_schedule(0.0, 3e-3, max(1, total // 20), total, 3e-5)
        counts = jnp.array([0, 1, total // 40, total // 20, total // 2, total - 1, total, total + 5])
        got = _step._warmup_cosine(counts, jnp.asarray(total), 3e-3)
        np.testing.assert_allclose(got, jax.vmap(schedule)(counts), rtol=1e-5, atol=1e-9)
    # And the updates are the default optimiser's, step for step.
    params = {"w": jnp.array([1.0, -2.0, 0.5])}
    grads = {"w": jnp.array([0.3, 0.1, -0.2])}
    timed, default = _step.timed_optimiser(1e-2), _step.default_optimiser(1e-2, 100)
    s1, s2 = _step.with_total(timed.init(params), 100), default.init(params)
    for _ in range(8):
        u1, s1 = timed.update(grads, s1, params)
        u2, s2 = default.update(grads, s2, params)
        np.testing.assert_allclose(u1["w"], u2["w"], rtol=1e-5, atol=1e-10)


def test_warm_start_continues_from_the_previous_estimator():
    task = LinearGaussian()
    first, _ = _fit(task, sgjax.heads.Gaussian(), key=jax.random.key(9), steps=50)
    before = _traces()
    # With an optimiser that changes nothing, the warm start returns its init: the
    # weights, standardisation and scaling at step 0 are the previous estimator's.
    same, hist = _fit(task, init=first, key=jax.random.key(10), steps=50, optimiser=optax.set_to_zero())
    for a, b in zip(_leaves(first), _leaves(same), strict=True):
        np.testing.assert_array_equal(a, b)
    assert isinstance(same.head, sgjax.heads.Gaussian)
    # A real continuation: the compiled step of the first fit is reused.
    _fit(task, init=first, key=jax.random.key(11), steps=50)
    assert _traces() - before == 1  # the zero optimiser's step only
    with pytest.raises(ValueError, match="differ in shape"):
        _fit(
            task,
            sgjax.heads.Gaussian(),
            network=functools.partial(sgjax.nn.MLP, width=32),
            init=first,
            key=jax.random.key(0),
            steps=50,
        )
    with pytest.raises(ValueError, match="cannot warm-start this task: its labels"):
        _fit(PoissonGamma(), init=first, key=jax.random.key(0), steps=50)
