"""How close model selection's SGNN classifier comes to the Bayes-optimal choice, and
what closes the gap: variants of its training scored against the Bayes classifier
(SMC marginal likelihoods, `sgjax.baselines.evidence`) on the same held-out series of
the default setting (epidemic, 60 days, noise unknown).

For each variant: its error rate, how often it picks the Bayes choice, and the mean
KL divergence from the Bayes posterior model probabilities to its own (zero for a
Bayes-optimal classifier, up to the evidence's Monte Carlo error).

Run: `python benchmarks/model_selection_sgnn.py [--setting K] [N] [VARIANT ...]` (setting K
of the experiment's list, default 0, the default setting; N held-out series, default
1,000, at most the setting's held-out set; variants: default, steps16k, batch2048,
mlp3x512; all by default).
"""

import functools
import json
import sys
import time

import jax
import numpy as np

from sgjax import ModelSelection
from sgjax.baselines import evidence, model_posterior
from sgjax.heads import Classifier
from sgjax.nn import MLP
from sgjax.reproduce._common import held_out, predict, train
from sgjax.reproduce._model_selection import _settings, epidemic, growth


VARIANTS = {
    "default": {},
    "steps16k": dict(steps=16000),
    "batch2048": dict(batch_size=2048),
    "mlp3x512": dict(network=functools.partial(MLP, width=512, depth=3)),
}


def main(n: int, variants: list[str], setting: int = 0) -> dict:
    name, family, length, noise, cfg = _settings(False)[setting]
    cands = growth(length, noise) if family == "growth" else epidemic(length, noise)
    task = ModelSelection(cands)
    # The experiment's keys (compare() with this setting's key).
    k_train, k_test, k_mle, _ = jax.random.split(jax.random.fold_in(jax.random.key(0), setting), 4)
    x, mask, y = (a[:n] for a in held_out(task, key=k_test, n=cfg["n_test"]))
    label = y[:, 0].astype(int)
    start = time.perf_counter()
    k_ev = jax.random.fold_in(k_mle, 1_000_003)
    evid = {
        m: evidence(sim, x, mask, prior=p, key=jax.random.fold_in(k_ev, i))
        for i, (m, (sim, p)) in enumerate(cands.items())
    }
    bayes_index, bayes_p = (np.asarray(a) for a in model_posterior(evid))
    out = {"setting": name, "n": int(len(label)), "bayes": {"error": float(np.mean(bayes_index != label)),
           "expected_error": float(np.mean(1 - bayes_p.max(1))), "seconds": time.perf_counter() - start}}  # fmt: skip
    print(json.dumps(out["bayes"]), flush=True)
    for v in variants:
        kwargs = {"steps": cfg["steps"], "batch_size": cfg["batch"], **VARIANTS[v]}
        start = time.perf_counter()
        est, _ = train(task, Classifier(), key=k_train, **kwargs)
        seconds = time.perf_counter() - start
        p = np.asarray(predict(est, x, mask).probabilities)
        choice = p.argmax(1)
        kl = np.sum(bayes_p * (np.log(np.maximum(bayes_p, 1e-12)) - np.log(np.maximum(p, 1e-12))), axis=1)
        out[v] = {
            "error": float(np.mean(choice != label)),
            "agrees_with_bayes": float(np.mean(choice == bayes_index)),
            "kl_from_bayes": float(np.mean(kl)),
            "seconds": seconds,
        }
        print(v, json.dumps(out[v]), flush=True)
    return out


if __name__ == "__main__":
    args = sys.argv[1:]
    setting = 0
    if args[:1] == ["--setting"]:
        setting = int(args[1])
        args = args[2:]
    n = int(args.pop(0)) if args and args[0].isdigit() else 1000
    unknown = [v for v in args if v not in VARIANTS]
    if unknown:
        raise SystemExit(f"Unknown variants {unknown}; choose from {list(VARIANTS)}.")
    main(n, args or list(VARIANTS), setting)
