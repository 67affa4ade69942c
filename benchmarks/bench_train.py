"""Fused-training benchmarks (issue: fused on-the-fly training).

SIR, 100 daily Poisson-observed incidences, MLP 2×256, batch 512, float32. Measured
in one run, each the best of several repeats after compilation:

- fused: `sgjax.fit`'s jitted call (prior → simulate → observe → network → loss →
  gradient → optax update), `--steps-per-call` steps per dispatch;
- the split: simulation alone (`task.sample` jitted) and the network step alone
  (gradient + update on a fixed batch, also scanned), per batch;
- unfused baseline: simulate a batch with `sgjax.simulate` (to NumPy on the host),
  copy it back to the device, and take a jitted training step — what a pipeline
  with a separate simulator and trainer does;
- the ratio's ceiling at this network: fused / unfused if the simulation cost
  nothing in either loop, `(unfused - s) / network`, where `s = fused - network` is
  what the simulation costs inside the fused step. The fused step can be no faster
  than the network step it contains, and the unfused one keeps its own overhead, so
  no simulator, however fast, takes the ratio past this figure;
- the simulation budget for 3×: the most the simulation may cost inside the fused
  step for the ratio to reach 3× with the unfused loop's overhead as measured,
  `(unfused - fused) / 2 - network` (negative: out of reach at this network).

Run: `python benchmarks/bench_train.py` (`--quick` for a smoke run). Prints a markdown
report and writes it into benchmarks/RESULTS.md between markers.
"""

import argparse
import functools
import json
import platform
import warnings
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from _common import best_of, write_section

import sgjax
from sgjax import models
from sgjax._training import _init, _sources, _step
from sgjax.observation import ObservationModel, Poisson


HERE = Path(__file__).parent

# The training call donates all its inputs but its constants, the step mode's scalars
# included, which no output can reuse: XLA warns once per compilation. Not a cost.
warnings.filterwarnings("ignore", message="Some donated buffers were not usable")


def warm_best_of(fn, repeats):
    fn()  # compile / warm up
    return best_of(fn, repeats)


def initial_estimator(task, head, network, pilot, key):
    """The estimator before training, its scaling fitted on a pilot batch in hand, from
    the same pieces (`modules`, `placeholder`, `_step.batch_stats`, `pilot_scaling`)
    that `fit`'s `initialise` uses."""
    ok = np.asarray(pilot.weight) > 0
    log1p = _init.log1p_guess(task, None)
    if log1p is None:
        log1p = bool(np.all(np.asarray(pilot.x)[ok][np.asarray(pilot.mask)[ok]] >= 0))
    built = _init.modules(task, head, network, key)
    frozen = _init.placeholder(task, built, log1p)[1]
    stats = _step.batch_stats(jax.tree.map(np.asarray, pilot), frozen, (0.0, 0.0))
    stats = {k: np.asarray(v)[None] for k, v in stats.items()}
    return _init.estimator(task, built, *_init.pilot_scaling(stats, log1p, task))


def setup(batch, width=256, days=100):
    """The SIR task, the estimator without its trained arrays, those arrays, and the
    optimiser, as `fit` builds them (MLP 2×`width`, point head)."""
    sim = sgjax.Simulator(models.SIR(), jnp.arange(1.0, days + 1.0), ObservationModel(Poisson()))
    task = sgjax.Task(sim, ["beta", "gamma"])
    head = sgjax.heads.Point()
    pilot = _sources.simulate_batch(task, key=jax.random.key(0), n=2048, chunk=min(batch, 1024))
    network = functools.partial(sgjax.nn.MLP, width=width, depth=2)
    est = initial_estimator(task, head, network, pilot, jax.random.key(1))
    params, frozen = _step.split(est)
    optimiser = sgjax.default_optimiser(1e-3, 10_000)
    return task, frozen, params, optimiser


def train_consts(task, frozen, optimiser, batch):
    """The constants of `fit`'s jitted training call, on one device."""
    return (task, frozen, optimiser, batch, 1, None)


@eqx.filter_jit(donate="all-except-first")
def _network_only(consts, params, opt_state, batch):
    frozen, optimiser, k = consts

    def step(carry, _):
        params, opt_state = carry
        loss, grads = eqx.filter_value_and_grad(_step.batch_loss)(params, frozen, batch)
        updates, opt_state = optimiser.update(grads, opt_state, params)
        return (eqx.apply_updates(params, updates), opt_state), loss

    (params, opt_state), losses = jax.lax.scan(step, (params, opt_state), None, length=k)
    return params, opt_state, losses


@eqx.filter_jit(donate="all-except-first")
def _one_step(consts, params, opt_state, batch):
    frozen, optimiser = consts
    loss, grads = eqx.filter_value_and_grad(_step.batch_loss)(params, frozen, batch)
    updates, opt_state = optimiser.update(grads, opt_state, params)
    return eqx.apply_updates(params, updates), opt_state, loss


def bench(batch, k, calls, repeats):
    task, frozen, params, optimiser = setup(batch)
    state = {"params": params, "opt": optimiser.init(params)}
    consts = train_consts(task, frozen, optimiser, batch)
    counter = {"call": 0}

    def fused():
        for _ in range(calls):
            counter["call"] += 1
            keys = jax.random.split(jax.random.key(counter["call"]), k)
            state["params"], state["opt"], losses, _ = _step.train_call(
                (consts, _step.mode(k)), state["params"], state["opt"], keys
            )
        losses.block_until_ready()

    t_fused = warm_best_of(fused, repeats) / (calls * k)

    sample = lambda key: _sources._sample(task, key, batch)  # noqa: E731

    def sim_only():
        for i in range(calls * k):
            out = sample(jax.random.key(i))
        out.x.block_until_ready()

    t_sim = warm_best_of(sim_only, repeats) / (calls * k)

    fixed = _sources._sample(task, jax.random.key(123), batch)

    def net_only():
        for _ in range(calls):
            state["params"], state["opt"], losses = _network_only(
                (frozen, optimiser, k), state["params"], state["opt"], fixed
            )
        losses.block_until_ready()

    t_net = warm_best_of(net_only, repeats) / (calls * k)

    sim = task.simulator

    def unfused():
        for i in range(max(calls * k // 4, 2)):
            s = sgjax.simulate(
                sim, key=jax.random.key(i), n=batch, keep_states=False, resample_failed=False, chunk_size=batch
            )
            y = np.log(np.stack([s.theta["beta"], s.theta["gamma"]], 1))
            b = sgjax.Batch(
                jnp.asarray(s.observations), jnp.asarray(s.mask), jnp.asarray(y), jnp.asarray(s.valid, jnp.float32)
            )
            state["params"], state["opt"], loss = _one_step((frozen, optimiser), state["params"], state["opt"], b)
        loss.block_until_ready()
        return max(calls * k // 4, 2)

    n_unfused = unfused()
    t_unfused = best_of(unfused, repeats) / n_unfused
    t_sim_in = max(t_fused - t_net, 0.0)  # what the simulation costs inside the fused step
    return {
        "batch": batch,
        "steps_per_call": k,
        "fused_samples_per_s": batch / t_fused,
        "sim_only_samples_per_s": batch / t_sim,
        "network_only_samples_per_s": batch / t_net,
        "unfused_samples_per_s": batch / t_unfused,
        "ms_per_step_fused": 1e3 * t_fused,
        "ms_per_step_sim": 1e3 * t_sim,
        "ms_per_step_network": 1e3 * t_net,
        "ms_per_step_unfused": 1e3 * t_unfused,
        # The ratio's ceiling and the simulation's budget for 3× (module notes).
        "ceiling_free_simulation": (t_unfused - t_sim_in) / t_net,
        "ms_simulation_in_step": 1e3 * t_sim_in,
        "ms_simulation_budget_for_3x": 1e3 * ((t_unfused - t_fused) / 2 - t_net),
    }


def report(rows, args):
    lines = [
        f"Machine: {platform.processor() or platform.machine()}, {jax.device_count()} {jax.default_backend()} "
        f"device(s), {__import__('os').cpu_count()} cores; jax {jax.__version__}, equinox {eqx.__version__}, "
        f"sgjax {sgjax.__version__}. Command: `python benchmarks/bench_train.py{' --quick' if args.quick else ''}"
        f"{'' if args.batch == [512] else ' --batch ' + ' '.join(map(str, args.batch))}`.",
        "",
        "SIR, 100 daily Poisson incidences, targets (β, γ), MLP 2×256, point head, float32. Best of "
        f"{args.repeats} repeats of {args.calls} dispatches. Ceiling: the ratio if the simulation cost nothing "
        "in either loop, (unfused − (fused − network)) / network. Simulation in the step: fused − network; its "
        "budget for 3×: (unfused − fused) / 2 − network.",
        "",
        "| batch | steps/dispatch | fused samples/s | simulation only | network only | unfused (simulate → host → train) | fused / unfused | ceiling (free simulation) | simulation in the step / its budget for 3× |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['batch']} | {r['steps_per_call']} | {r['fused_samples_per_s']:,.0f} ({r['ms_per_step_fused']:.2f} ms/step) | "
            f"{r['sim_only_samples_per_s']:,.0f} ({r['ms_per_step_sim']:.2f} ms) | "
            f"{r['network_only_samples_per_s']:,.0f} ({r['ms_per_step_network']:.2f} ms) | "
            f"{r['unfused_samples_per_s']:,.0f} ({r['ms_per_step_unfused']:.2f} ms) | "
            f"{r['fused_samples_per_s'] / r['unfused_samples_per_s']:.2f}× | {r['ceiling_free_simulation']:.2f}× | "
            f"{r['ms_simulation_in_step']:.2f} / {r['ms_simulation_budget_for_3x']:.2f} ms |"
        )
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--calls", type=int, default=4)
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--batch", type=int, nargs="+", default=[512],
                        help="batch sizes (a GPU needs large ones, e.g. 512 8192 65536)")  # fmt: skip
    args = parser.parse_args()
    if args.quick:
        args.repeats, args.calls = 1, 2
    if any(b < 1 for b in args.batch):
        parser.error(f"--batch sizes must be positive, got {args.batch}")
    rows = [bench(b, k, args.calls, args.repeats) for b in args.batch for k in ((1, 25) if not args.quick else (25,))]
    text = report(rows, args)
    print(text)
    (HERE / "results_train.json").write_text(json.dumps(rows, indent=2))
    if not args.no_write and not args.quick:
        write_section("train", "Fused training", text)


if __name__ == "__main__":
    main()
