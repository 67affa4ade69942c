"""Training: Bayes-optimality against exact posteriors, compile-once, budgets,
checkpoints and resume."""

import functools
import os

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats
from exact_tasks import binomial_tolerance, coverage, LinearGaussian, PoissonGamma, TwoGaussians
from helpers import with_compiles

import sgjax
from sgjax import _io
from sgjax._training import _checkpoint, _init, _parallel, _step
from sgjax.observation import MissingAtRandom, ObservationModel, Poisson


SMALL_MLP = functools.partial(sgjax.nn.MLP, width=64)
# Small settings shared by the tests: a 64-wide MLP, batches of 256.
FAST = dict(batch_size=256, validation_size=512, pilot_size=512, steps_per_call=50, eval_every=50, progress=False)


def _fit(task, head=None, **kwargs):
    return sgjax.fit(task, head, kwargs.pop("network", SMALL_MLP), **{**FAST, **kwargs})


@pytest.mark.slow  # kept out of the default run for CI's time (issue 25); `pytest -m slow` runs it
def test_point_head_learns_the_exact_posterior_mean_linear_gaussian():
    task = LinearGaussian()
    test = task.sample(jax.random.key(99), 4000)
    mean, sd = task.posterior(test.x)
    errors = []
    for steps in (100, 600):
        est, _ = _fit(task, key=jax.random.key(0), steps=steps)
        point = sgjax.infer(est, test.x).point["theta"]
        errors.append(np.mean((point - mean) ** 2) / sd**2)
    # The mean squared distance to the exact posterior mean, in units of the posterior
    # variance: measured ~0.07 after 100 steps and ~0.01 after 600.
    assert errors[1] < errors[0]
    assert errors[1] < 0.03


def test_point_head_learns_the_exact_posterior_mean_poisson_gamma():
    task = PoissonGamma()
    test = task.sample(jax.random.key(98), 4000)
    mean, var = task.posterior_log_moments(test.x)
    est, _ = _fit(task, key=jax.random.key(1), steps=1000)
    # Estimated in log space, the target's learning space: E[log λ | x] exactly.
    point = np.log(sgjax.infer(est, test.x).point["lam"])
    assert np.mean((point - mean) ** 2 / var) < 0.05
    # The Bayes risk bound: the trained network's risk is no better than the posterior
    # variance (the irreducible error), up to sampling error.
    truth = np.asarray(test.y[:, 0])
    assert np.mean((point - truth) ** 2) > 0.9 * np.mean(var)


def test_quantile_head_covers_at_nominal_rates():
    task = LinearGaussian()
    n = 4000
    test = task.sample(jax.random.key(97), n)
    head = sgjax.heads.Quantile((0.025, 0.1, 0.25, 0.5, 0.75, 0.9, 0.975))
    est, _ = _fit(task, head, key=jax.random.key(2), steps=600)
    post = sgjax.infer(est, test.x)
    truth = np.asarray(test.y[:, 0])
    for mass in (0.5, 0.8, 0.95):
        lo, hi = post.interval(mass)
        # Sampling error of a coverage over n draws (4 sd), plus 0.02 for training.
        assert abs(coverage(lo["theta"], hi["theta"], truth) - mass) < binomial_tolerance(mass, n) + 0.02
    # And the quantiles themselves are the exact posterior quantiles.
    mean, sd = task.posterior(test.x)
    for level in (0.1, 0.5, 0.9):
        exact = mean + sd * scipy.stats.norm.ppf(level)
        assert np.sqrt(np.mean((post.quantiles[level]["theta"] - exact) ** 2)) < 0.15 * sd


@pytest.mark.parametrize(
    "head", [sgjax.heads.Gaussian(), pytest.param(sgjax.heads.MixtureDensity(3), marks=pytest.mark.slow)]
)
def test_density_heads_match_the_exact_posterior(head):
    task = LinearGaussian()
    test = task.sample(jax.random.key(96), 500)
    est, _ = _fit(task, head, key=jax.random.key(3), steps=600)
    post = sgjax.infer(est, test.x, key=jax.random.key(0), n_samples=4000)
    mean, sd = task.posterior(test.x)
    assert post.samples["theta"].shape == (500, 4000)
    assert np.sqrt(np.mean((post.point["theta"] - mean) ** 2)) < 0.15 * sd
    assert abs(np.mean(post.samples["theta"].std(1)) / sd - 1) < 0.1


def test_classifier_learns_the_exact_posterior_model_probabilities():
    task = TwoGaussians()
    test = task.sample(jax.random.key(95), 4000)
    est, _ = _fit(task, sgjax.heads.Classifier(), key=jax.random.key(4), steps=600)
    post = sgjax.infer(est, test.x)
    assert post.probabilities.shape == (4000, 2)
    np.testing.assert_allclose(post.probabilities.sum(1), 1, rtol=1e-5)
    exact = task.posterior(test.x)
    assert np.mean(np.abs(post.probabilities[:, 1] - exact)) < 0.03


def _traces() -> int:
    """How many times the training call has been traced (compiled) so far."""
    return eqx.debug.get_num_traces(_step.steps_body)


def test_the_fused_step_compiles_once():
    before = _traces()
    _fit(LinearGaussian(), key=jax.random.key(5), steps=200)  # four dispatches
    assert _traces() == before + 1


@pytest.mark.slow  # kept out of the default run for CI's time (issue 25); `pytest -m slow` runs it
def test_fixed_budget_trains_on_the_budget_only():
    task = LinearGaussian()
    test = task.sample(jax.random.key(94), 2000)
    mean, sd = task.posterior(test.x)
    est, hist = _fit(task, key=jax.random.key(6), steps=400, budget=1024)
    point = sgjax.infer(est, test.x).point["theta"]
    assert np.mean((point - mean) ** 2) / sd**2 < 0.2
    # Four epochs of 1024 at batch 256 = 16 steps each; the training loss falls below
    # the validation loss once the network starts to fit its fixed sample.
    assert hist["loss"][-1] < hist["val_loss"][-1]


def test_early_stopping_returns_the_best_estimator():
    seen = []
    est, hist = _fit(
        LinearGaussian(),
        key=jax.random.key(7),
        steps=3000,
        patience=2,
        learning_rate=3e-2,
        callback=lambda step, m: seen.append(step),
    )
    assert hist["val_step"][-1] < 3000  # stopped early
    best = int(np.argmin(hist["val_loss"]))
    assert len(hist["val_loss"]) - 1 - best == 2
    assert seen == hist["val_step"]


def _leaves(est):
    return [np.asarray(a) for a in jax.tree.leaves(eqx_filter(est))]


def eqx_filter(tree):
    import equinox as eqx

    return eqx.filter(tree, eqx.is_array)


@pytest.mark.parametrize("counts", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_resume_equals_an_uninterrupted_run(tmp_path, counts):
    # counts: a Poisson-observed SIR, whose pilot and validation set the training
    # call itself simulates; the resumed run must evaluate the same validation set.
    if counts:
        sim = sgjax.Simulator(sgjax.models.SIR(), jnp.arange(1.0, 15.0), ObservationModel(Poisson()))
        task = sgjax.Task(sim, ["beta", "gamma"])
    else:
        task = LinearGaussian()
    kwargs = dict(key=jax.random.key(8), steps=300, checkpoint_every=50)
    full, full_hist = _fit(task, checkpoint_dir=tmp_path / "a", **kwargs)

    class Crash(Exception):
        pass

    def crash(step, metrics):
        if step == 150:
            raise Crash

    with pytest.raises(Crash):
        _fit(task, checkpoint_dir=tmp_path / "b", callback=crash, **kwargs)
    assert len(list((tmp_path / "b").glob("ckpt-*.json"))) == 2  # only the last two kept
    with pytest.raises(FileExistsError, match="resume=True"):
        _fit(task, checkpoint_dir=tmp_path / "b", **kwargs)
    resumed, hist = _fit(task, checkpoint_dir=tmp_path / "b", resume=True, **kwargs)
    for a, b in zip(_leaves(full), _leaves(resumed), strict=True):
        np.testing.assert_array_equal(a, b)
    assert hist["val_loss"] == full_hist["val_loss"]
    with pytest.raises(ValueError, match="other settings"):
        _fit(task, checkpoint_dir=tmp_path / "b", resume=True, **{**kwargs, "batch_size": 128})


def test_a_crash_during_a_checkpoint_write_leaves_the_previous_one(tmp_path, monkeypatch):
    task = LinearGaussian()
    _fit(task, key=jax.random.key(9), steps=100, checkpoint_dir=tmp_path)
    # A crash after the payload is written but before its JSON (the commit record)...
    (tmp_path / "ckpt-99999999.eqx").write_bytes(b"partial")
    # ...and a checkpoint whose payload was truncated later.
    eqx_file = sorted(tmp_path.glob("ckpt-*.eqx"))[-2]
    eqx_file.write_bytes(eqx_file.read_bytes()[:100])
    header, state = _checkpoint.latest_checkpoint(tmp_path, sgjax.default_optimiser(1e-3, 100))
    assert header["step"] == 50
    # atomic_write: a failure mid-write leaves the old file and no temporary behind.
    target = tmp_path / "file.bin"
    target.write_bytes(b"old")

    def boom(fd):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(OSError, match="disk full"):
        _io.atomic_write(target, b"new")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.glob(".file.bin*")) == []


def test_networks_read_the_mask_only_where_data_can_be_missing():
    _make_network = _init.make_network

    days = jnp.arange(1.0, 21.0)
    full = sgjax.Task(sgjax.Simulator(sgjax.models.SIR(), days, ObservationModel(Poisson())), ["beta"])
    gappy = sgjax.Task(
        sgjax.Simulator(sgjax.models.SIR(), days, ObservationModel(Poisson(), missing=MissingAtRandom(0.1))), ["beta"]
    )
    assert full.fully_observed and not gappy.fully_observed
    key = jax.random.key(0)
    assert _make_network(None, full, 2, key).mask_input is False
    assert _make_network(functools.partial(sgjax.nn.CNN, width=8), full, 2, key).mask_input is False
    assert _make_network(None, gappy, 2, key).mask_input is True
    # The user's own choice stands.
    assert _make_network(functools.partial(sgjax.nn.MLP, mask_input=True), full, 2, key).mask_input is True


def test_errors_surface_while_the_pilot_simulates_on_another_thread():
    task = LinearGaussian()
    # The network is built on this thread while the pilot batch simulates on another.
    with pytest.raises(TypeError, match="not an sgjax.nn.AbstractNetwork"):
        sgjax.fit(task, network=lambda *a, key: object(), key=jax.random.key(0), steps=50, **FAST)

    class Broken(LinearGaussian):  # raises on the pilot's thread, re-raised on this one
        def sample(self, key, n):
            raise ValueError("this simulator is broken")

    with pytest.raises(ValueError, match="this simulator is broken"):
        _fit(Broken(), key=jax.random.key(0), steps=50)


@pytest.mark.slow  # kept out of the default run for CI's time (issue 25); `pytest -m slow` runs it
def test_a_restricted_task_keeps_its_learning_spaces_and_its_compiled_step():
    import numpyro.distributions as dist

    prior = sgjax.Prior(r=dist.Uniform(0.1, 1.0), K=dist.LogUniform(50.0, 500.0))
    sim = sgjax.Simulator(sgjax.models.Logistic(), jnp.arange(1.0, 11.0), ObservationModel(Poisson()))
    task = sgjax.Task(sim, ["r", "K"], prior)
    box = {"r": (0.3, 0.5), "K": (100.0, 200.0)}
    restricted = task.restrict(box)
    # Sampled from the restricted prior, learnt in the whole prior's spaces.
    theta = restricted.prior.sample(jax.random.key(0), 2000)
    for name, (lo, hi) in box.items():
        assert lo <= float(theta[name].min()) and float(theta[name].max()) <= hi
    assert restricted.spaces == task.spaces
    assert [s.kind for s in task.spaces] == ["logit", "logit"]
    np.testing.assert_allclose([(s.lo, s.hi) for s in task.spaces], [(0.1, 1.0), (50.0, 500.0)], rtol=1e-6)
    # A fresh task on the restricted prior would learn in logit spaces on the box.
    fresh = sgjax.Task(sim, ["r", "K"], prior.restrict(box)).spaces[0]
    assert (fresh.lo, fresh.hi) == pytest.approx((0.3, 0.5))
    _fit(task, key=jax.random.key(1), steps=50)
    before = _traces()
    est, _ = _fit(restricted, key=jax.random.key(2), steps=50)
    assert _traces() == before  # the compiled step is reused
    # Its pilot's mean of logit((r - 0.1) / 0.9) lies on the box: it trained on the box.
    assert 0.3 <= float(task.spaces[0].inverse(est.y_mean[0])) <= 0.5
    with pytest.raises(ValueError, match="does not have"):
        task.restrict({"rr": (0.3, 0.5)})


@pytest.mark.slow  # kept out of the default run for CI's time (issue 25); `pytest -m slow` runs it
def test_the_training_call_simulates_the_pilot_and_validation_sets():
    # Count data: fit knows log1p before the pilot, so the training call itself draws
    # and measures the pilot batch and the validation set (`_measure`): one trace, one
    # compilation, and no other program of the simulator compiled.
    from sgjax.observation import Gaussian

    days = jnp.arange(1.0, 14.0)  # a size no other test compiles
    task = sgjax.Task(sgjax.Simulator(sgjax.models.SIR(), days, ObservationModel(Poisson())), ["beta", "gamma"])
    assert _init.log1p_guess(task, None) is True and _init.log1p_guess(task, False) is False
    real = sgjax.Task(sgjax.Simulator(sgjax.models.SIR(), days, ObservationModel(Gaussian(1.0))), ["beta"])
    assert _init.log1p_guess(real, None) is None  # values may be negative: the pilot decides
    before = _traces()
    (est, history), compiles = with_compiles(_fit, task, key=jax.random.key(3), steps=100)
    assert _traces() == before + 1 and compiles.count("jit(_steps)") == 1
    assert "jit(_sample)" not in compiles and "jit(_eval_loss)" not in compiles
    assert np.all(np.isfinite(history["val_loss"])) and history["val_loss"][-1] < history["val_loss"][0]


@pytest.mark.slow  # kept out of the default run for CI's time (issue 25); `pytest -m slow` runs it
def test_measuring_with_the_training_call_matches_the_batches_it_draws():
    # `_measure`: the batches drawn from the pilot's keys, seen by the training call
    # without updates, give Standardise.fit's standardisation, the targets' mean and
    # std, and `_eval_loss`'s loss, and leave the parameters as they were.
    task = sgjax.Task(
        sgjax.Simulator(sgjax.models.SIR(), jnp.arange(1.0, 15.0), ObservationModel(Poisson())), ["beta", "gamma"]
    )
    modules = _init.modules(task, sgjax.heads.Point(), SMALL_MLP, jax.random.key(0))
    params, frozen = _init.placeholder(task, modules, True)
    optimiser = _step.default_optimiser(1e-3, 100)
    consts = (task, frozen, optimiser, 64, 1, None)
    key, n_batches, per_call = jax.random.key(5), 5, 2  # three calls, the last one part-filled
    keys = jax.random.split(key, n_batches)
    before = [np.asarray(a) for a in jax.tree.leaves(params)]
    after, _, stats = _step.measure(
        consts, _parallel.copy(params), optimiser.init(params), lambda a, b: keys[a:b], n_batches, per_call
    )
    assert all(np.array_equal(a, np.asarray(b)) for a, b in zip(before, jax.tree.leaves(after)))
    sample = jax.jit(lambda k: task.sample(k, 64))  # once: eagerly, each call would trace the solver anew
    batches = [sample(k) for k in jax.random.split(key, n_batches)]
    batch = jax.tree.map(lambda *a: jnp.concatenate(a), *batches)
    assert stats["n"].shape[0] == n_batches
    standardise, y_mean, y_std, inputs = _init.pilot_scaling(stats, True, task)
    assert inputs is None  # a task without known inputs
    expected = sgjax.nn.Standardise.fit(batch.x, batch.mask & (batch.weight > 0)[:, None, None], log1p=True)
    np.testing.assert_allclose(standardise.mean, expected.mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(standardise.std, expected.std, rtol=1e-5, atol=1e-6)
    y = np.asarray(batch.y)[np.asarray(batch.weight) > 0]
    np.testing.assert_allclose(y_mean, y.mean(0), rtol=1e-5)
    np.testing.assert_allclose(y_std, y.std(0), rtol=1e-5)
    expected_loss = float(_step.eval_loss(frozen, params, batch, 64))
    np.testing.assert_allclose(_step.validation_loss(stats), expected_loss, rtol=1e-5)


@pytest.mark.slow  # kept out of the default run for CI's time (issue 25); `pytest -m slow` runs it
def test_a_network_and_head_passed_in_built_keep_their_arrays():
    # The training call donates the parameters it trains; fit must train copies, or
    # the caller's network (say the last round's of a sequential fit) is deleted.
    import equinox as eqx

    eqx_filter_arrays = lambda e: eqx.filter((e.network, e.head), eqx.is_array)  # noqa: E731
    est, _ = _fit(LinearGaussian(), sgjax.heads.Gaussian(), key=jax.random.key(0), steps=50)
    before = [np.asarray(a).copy() for a in jax.tree.leaves(eqx_filter_arrays(est))]
    again, _ = _fit(LinearGaussian(), est.head, network=est.network, key=jax.random.key(1), steps=50)
    after = [np.asarray(a) for a in jax.tree.leaves(eqx_filter_arrays(est))]  # raises if deleted
    assert all(np.array_equal(a, b) for a, b in zip(before, after))
    assert not all(np.array_equal(np.asarray(a), b) for a, b in zip(jax.tree.leaves(eqx_filter_arrays(again)), before))


def _nan_from_update(k):
    """Plain gradient descent whose `k`-th update (counted from 1) and every later one
    are NaN: parameters that turn non-finite at step `k`."""
    import optax

    def update(grads, count, params=None):
        count = count + 1
        scale = jnp.where(count >= k, jnp.nan, -1e-2)
        return jax.tree.map(lambda g: scale * g, grads), count

    return optax.GradientTransformation(lambda params: jnp.zeros((), jnp.int32), update)


@pytest.mark.parametrize("k", [pytest.param(137, marks=pytest.mark.slow), 150])
def test_non_finite_parameters_stop_training_at_their_step(tmp_path, k):
    # Step 137 is inside the third dispatch (steps 101-150), whose losses from step 138
    # on are NaN; at step 150, the dispatch's last, every loss is finite and only the
    # parameters' flag returned with them tells.
    optimiser = _nan_from_update(k)
    kwargs = dict(key=jax.random.key(10), steps=200, optimiser=optimiser, checkpoint_every=50)
    with pytest.raises(
        sgjax.TrainingDivergedError, match=f"diverged at step {k}: its update made the parameters non-finite"
    ) as info:
        _fit(LinearGaussian(), checkpoint_dir=tmp_path, **kwargs)
    assert isinstance(info.value, FloatingPointError) and info.value.step == k
    assert f"The last good checkpoint, {tmp_path / 'ckpt-00000100'} (step 100), is kept." in str(info.value)
    assert info.value.checkpoint == tmp_path / "ckpt-00000100"
    # Nothing after step 100 was written; the kept checkpoint loads, and its
    # parameters and its best estimator so far are finite.
    assert [p.name for p in _checkpoint.checkpoints(tmp_path)] == ["ckpt-00000050.json", "ckpt-00000100.json"]
    header, state = _checkpoint.latest_checkpoint(tmp_path, optimiser)
    assert header["step"] == 100
    assert all(np.isfinite(a).all() for a in _leaves(state["estimator"]) + _leaves(state["best"]))


def test_the_divergence_message_tells_a_loss_from_the_parameters(tmp_path):
    losses = np.array([0.5, 0.4, np.nan, np.nan], np.float32)
    with pytest.raises(sgjax.TrainingDivergedError, match="diverged at step 13: its loss is nan") as info:
        _checkpoint.check_finite(losses, np.array([True, True, False, False]), 10, None, optimiser_given=False)
    assert "Lower `learning_rate`" in str(info.value) and "pass `checkpoint_dir`" in str(info.value)
    assert info.value.checkpoint is None
    with pytest.raises(sgjax.TrainingDivergedError, match=f"No checkpoint had been written to {tmp_path}"):
        _checkpoint.check_finite(losses[:2], np.array([True, False]), 0, tmp_path, optimiser_given=True)
    _checkpoint.check_finite(losses[:2], np.array([True, True]), 0, tmp_path, optimiser_given=True)  # all finite


@pytest.mark.parametrize(
    "setting, message",
    [
        (dict(learning_rate=float("nan")), "`learning_rate` must be a finite positive number such as 3e-3, got nan"),
        (dict(learning_rate=float("inf")), "`learning_rate` must be a finite positive number"),
        (dict(learning_rate=0.0), "`learning_rate` must be a finite positive number"),
        (dict(learning_rate=-1e-3), "`learning_rate` must be a finite positive number"),
        (dict(learning_rate="3e-3"), "`learning_rate` must be a finite positive number"),
        (dict(patience=0), r"`patience` must be a positive integer or None, got 0"),
        (dict(patience=2.5), r"`patience` must be a positive integer or None, got 2.5"),
        (dict(checkpoint_every=0), r"`checkpoint_every` must be a positive integer or None, got 0"),
        (dict(steps=True), r"`steps` must be a positive integer or None, got True"),
        (dict(time_limit=0), r"`time_limit` must be a finite positive number of seconds"),
        (dict(time_limit="10"), r"`time_limit` must be a finite positive number of seconds"),
        (dict(log1p="yes"), r"`log1p` must be True or False or None"),
        (dict(resume=1, checkpoint_dir="x"), r"`resume` must be True or False, got 1"),
        (dict(callback=3), r"`callback` must be a function"),
        (dict(optimiser="adam"), r"`optimiser` must be an optax.GradientTransformation"),
        (dict(checkpoint_dir=3), r"`checkpoint_dir` must be a directory path"),
        (dict(key=0), r"`key` must be one JAX PRNG key, e.g. key=jax.random.key\(0\), got 0"),
        (dict(key=jax.random.split(jax.random.key(0))), r"`key` must be one JAX PRNG key"),
    ],
)
def test_invalid_settings_are_refused_before_anything_runs(setting, message):
    class Unsampled(LinearGaussian):  # a refused setting never reaches the simulator
        def sample(self, key, n):
            raise AssertionError("simulated before the settings were checked")

    with pytest.raises((ValueError, TypeError), match=message):
        _fit(Unsampled(), **{"key": jax.random.key(0), "steps": 50, **setting})


def test_a_checkpoint_dir_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "ckpt").write_text("")
    with pytest.raises(ValueError, match="is a file; name a directory"):
        _fit(LinearGaussian(), key=jax.random.key(0), steps=50, checkpoint_dir=tmp_path / "ckpt")


@pytest.mark.slow  # kept out of the default run for CI's time (issue 25); `pytest -m slow` runs it
def test_every_simulation_failing_names_the_fixes():
    import numpyro.distributions as dist

    from sgjax.observation import Gaussian

    # exp(100 t) overflows float32 by t = 1: every draw of this prior fails.
    sim = sgjax.Simulator(sgjax.models.Exponential(), jnp.arange(1.0, 6.0), ObservationModel(Gaussian(1.0)))
    task = sgjax.Task(sim, ["r"], sgjax.Prior(r=dist.Uniform(100.0, 200.0)))
    with pytest.raises(
        RuntimeError, match=r"Every simulation in the pilot batch failed \(Task of Exponential, strategy SharedStep\)"
    ) as info:
        _fit(task, key=jax.random.key(0), steps=50)
    for fix in ("strategy=sgjax.PerTrajectory()", "tighten the prior", "max_steps (now 4096)"):
        assert fix in str(info.value)
    # Already per trajectory: the other fixes only.
    per = sgjax.Task(sim, ["r"], task.prior, strategy=sgjax.PerTrajectory())
    assert "PerTrajectory()" not in str(_init.all_failed(per)) and "tighten the prior" in str(_init.all_failed(per))

    class Failing(LinearGaussian):  # a task of one's own: weight 0 everywhere
        def sample(self, key, n):
            return eqx_tree_at_weight(super().sample(key, n), 0.0)

    # log1p given: the training call measures the pilot itself (`_pilot_scaling`).
    with pytest.raises(RuntimeError, match="Failing.sample gave every sample weight 0"):
        _fit(Failing(), key=jax.random.key(0), steps=50, log1p=False)


def eqx_tree_at_weight(batch, w):
    import equinox as eqx

    return eqx.tree_at(lambda b: b.weight, batch, jnp.full_like(batch.weight, w))


def test_stale_checkpoint_temporaries_are_removed_on_the_next_start(tmp_path):
    import tempfile

    # What a kill inside atomic_write leaves: temporaries named as it names them.
    stale = [
        tempfile.mkstemp(prefix=f".ckpt-00000050.{ext}.", suffix=".tmp", dir=tmp_path)[1] for ext in ("eqx", "json")
    ]
    others = [".ckpt-notes.tmp", "ckpt-00000050.eqx.tmp", "mine.tmp", ".simulations.npz.abc.tmp"]
    for name in others:
        (tmp_path / name).write_text("not sgjax's")
    _fit(LinearGaussian(), key=jax.random.key(9), steps=100, checkpoint_dir=tmp_path)
    assert not any(os.path.exists(p) for p in stale)
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".tmp") == sorted(others)
    # Over those checkpoints without resume: both ways on.
    with pytest.raises(
        FileExistsError,
        match=r"ckpt-00000100.json, step 100\). Pass resume=True to continue that run, or delete the directory",
    ):
        _fit(LinearGaussian(), key=jax.random.key(9), steps=100, checkpoint_dir=tmp_path)


def test_two_identical_fits_give_bitwise_identical_parameters():
    # What fit's docstring promises in one process (one setup): bit for bit.
    runs = [_fit(LinearGaussian(), key=jax.random.key(11), steps=100) for _ in range(2)]
    for a, b in zip(_leaves(runs[0][0]), _leaves(runs[1][0]), strict=True):
        np.testing.assert_array_equal(a, b)
    assert runs[0][1]["loss"] == runs[1][1]["loss"] and runs[0][1]["val_loss"] == runs[1][1]["val_loss"]


class _RareBranch(LinearGaussian):
    """A task whose `sample` has a branch (as a shared-step solve's rescue has) that
    is never taken here, and counts the times it runs."""

    def sample(self, key, n):
        batch = super().sample(key, n)
        taken = jnp.isnan(batch.x.sum())  # a traced predicate, False on finite data
        return jax.lax.cond(taken, lambda b: jax.debug.callback(_RARE_RUNS.append, 1) or b, lambda b: b, batch)


_RARE_RUNS = []


def test_sub_batches_keep_a_rare_branch_lazy():
    # With several key streams per batch (`shards`), each sub-batch is drawn on its
    # own: under `vmap` a `lax.cond` would run both branches on every step.
    _draw = _step.draw

    task = _RareBranch()
    _RARE_RUNS.clear()
    batch = jax.jit(lambda k: _draw(task, k, 64, 4, None))(jax.random.key(0))
    jax.block_until_ready(batch)
    assert batch.x.shape[0] == 64 and _RARE_RUNS == []
