"""How the steps per round change the time to a posterior on the boarding-school SIR
problem: the case study's own loop (`sgjax.reproduce._case_studies.study`: `fit` and
`infer` per round, `Task.restrict` to the last posterior's box between rounds), with
C2ST against one set of NUTS draws computed first, with the case study's settings.

Run: `python benchmarks/case_study_rounds.py [--seed S] [--warm] 1000,1000,1000 4000,4000` — each
argument a schedule (steps of each round, all rounds run); prints, per schedule, the
training time and C2ST after every round. NUTS (~40 s on 2 CPU cores) runs once per
call. Without `--seed` the training keys are the case study's; `--seed S` folds `S`
into them; `--warm` starts each later round from the last round's network and flow. One seed each: C2ST moves by a few hundredths from seed to seed.
"""

import sys
import time

import jax
import numpy as np

from sgjax import fit, infer, Task
from sgjax.baselines import nuts
from sgjax.diagnostics import c2st
from sgjax.heads import Flow
from sgjax.reproduce._case_studies import _stack, boarding_school_problems, LEARNING_RATE


def main(schedules: list[list[int]], seed: int | None = None, batch: int = 512, n_draws: int = 2000, warm: bool = False) -> None:
    sim, prior, x, mask = boarding_school_problems(quick=True)["SIR"]
    names = tuple(prior.distributions)
    # The keys `study` uses for the SIR problem.
    k_nuts, k_train, k_c2st, _, _ = jax.random.split(jax.random.fold_in(jax.random.key(0), 0), 5)
    k_train = k_train if seed is None else jax.random.fold_in(k_train, seed)
    t = time.perf_counter()
    ref = nuts(sim, x, mask, prior=prior, key=k_nuts, num_warmup=1000, num_samples=1000, num_chains=4, n_init=256)
    print(f"NUTS: {time.perf_counter() - t:.1f} s", flush=True)
    ref_draws = _stack(ref.samples, names)[0]
    ref_draws = ref_draws[np.random.default_rng(0).permutation(len(ref_draws))[:n_draws]]
    for schedule in schedules:
        task, elapsed, rows, est = Task(sim, names, prior), 0.0, [], None
        for r_i, steps in enumerate(schedule):
            t = time.perf_counter()
            # --warm: a later round starts from the last round's network and flow.
            head, network = (est.head, est.network) if warm and est is not None else (Flow(), None)
            est, _ = fit(task, head, network, key=jax.random.fold_in(k_train, r_i), steps=steps, batch_size=batch,
                         learning_rate=LEARNING_RATE, progress=False)  # fmt: skip
            post = infer(est, x, mask, key=jax.random.fold_in(k_train, 100 + r_i), n_samples=n_draws)
            elapsed += time.perf_counter() - t
            acc = float(c2st(np.log(post.samples[0]), np.log(ref_draws), key=jax.random.fold_in(k_c2st, r_i)))
            rows.append(f"{elapsed:.1f} s: {acc:.3f}")
            task = task.restrict(post.box())
        print(f"{','.join(map(str, schedule))}: " + " → ".join(rows), flush=True)


if __name__ == "__main__":
    args, seed = sys.argv[1:], None
    warm = "--warm" in args
    args = [a for a in args if a != "--warm"]
    if args[:1] == ["--seed"] and len(args) > 1 and args[1].isdigit():
        seed, args = int(args[1]), args[2:]
    if not args or not all(a.replace(",", "").isdigit() and "" not in a.split(",") for a in args):
        got = sys.argv[1:]
        sys.exit(f"{__doc__}\nEach schedule is comma-separated steps per round, e.g. 1000,1000,1000; got {got}.")
    main([[int(s) for s in a.split(",")] for a in args], seed, warm=warm)
