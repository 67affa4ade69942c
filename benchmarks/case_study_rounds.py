"""How the steps per round change the time to a posterior on the boarding-school SIR
(or `--problem SEIR`, or the hare–lynx `--problem Lotka–Volterra`) problem: the case study's own loop (`sgjax.reproduce._case_studies.study`: `fit` and
`infer` per round, `Task.restrict` to the last posterior's box between rounds), with
C2ST against one set of NUTS draws computed first, with the case study's settings.

Run: `python benchmarks/case_study_rounds.py [--seed S] [--batch B] [--warm] 1000,1000,1000 4000,4000` — each
argument a schedule (steps of each round, all rounds run); prints, per schedule, the
training time and C2ST after every round. NUTS (~40 s on 2 CPU cores) runs once per
call. Without `--seed` the training keys are the case study's; `--seed S` folds `S`
into them; `--batch B` trains on batches of B (default 512); `--warm` starts each
later round from the last round's network and flow. One seed each: C2ST moves by a
few hundredths from seed to seed.
"""

import argparse
import time

import jax
import numpy as np

from sgjax import fit, infer, stack, Task
from sgjax.baselines import nuts
from sgjax.diagnostics import c2st
from sgjax.heads import Flow
from sgjax.reproduce._case_studies import boarding_school_problems, hudson_bay_problem, LEARNING_RATE


def main(
    schedules: list[list[int]],
    seed: int | None = None,
    batch: int = 512,
    n_draws: int = 2000,
    warm: bool = False,
    problem: str = "SIR",
) -> None:
    problems = hudson_bay_problem() if problem == "Lotka–Volterra" else boarding_school_problems(quick=problem == "SIR")
    sim, prior, x, mask = problems[problem]
    names = tuple(prior.distributions)
    # The keys `study` uses for this problem.
    k_nuts, k_train, k_c2st, _, _ = jax.random.split(
        jax.random.fold_in(jax.random.key(0), list(problems).index(problem)), 5
    )
    k_train = k_train if seed is None else jax.random.fold_in(k_train, seed)
    t = time.perf_counter()
    ref = nuts(sim, x, mask, prior=prior, key=k_nuts, num_warmup=1000, num_samples=1000, num_chains=4, n_init=256)
    print(f"NUTS: {time.perf_counter() - t:.1f} s", flush=True)
    ref_draws = stack(ref.samples, names)[0]  # (draws, k), in the order of `names`
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
            acc = float(c2st(np.log(post.stacked()[0]), np.log(ref_draws), key=jax.random.fold_in(k_c2st, r_i)))
            rows.append(f"{elapsed:.1f} s: {acc:.3f}")
            task = task.restrict(post.box())
        print(f"{','.join(map(str, schedule))}: " + " → ".join(rows), flush=True)


def _schedule(text: str) -> list[int]:
    steps = text.split(",")
    if not all(s.isdigit() and int(s) > 0 for s in steps):
        raise argparse.ArgumentTypeError(
            f"a schedule is comma-separated positive steps per round, e.g. 1000,1000,1000; got {text!r}"
        )
    return [int(s) for s in steps]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("schedules", nargs="+", type=_schedule, help="steps of each round, e.g. 1000,1000,1000")
    parser.add_argument("--seed", type=int, default=None, help="fold S into the case study's training keys")
    parser.add_argument("--batch", type=int, default=512, help="batch size (default 512)")
    parser.add_argument(
        "--warm", action="store_true", help="start each later round from the last round's network and flow"
    )
    parser.add_argument(
        "--problem",
        choices=("SIR", "SEIR", "Lotka–Volterra"),
        default="SIR",
        help="the case study's model (default SIR)",
    )
    args = parser.parse_args()
    main(args.schedules, args.seed, batch=args.batch, warm=args.warm, problem=args.problem)
