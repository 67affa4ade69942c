"""Model selection's default setting (epidemic, 60 days, noise unknown) scored on more
held-out series than the experiment's 400, for a tighter interval on SGNN / AIC.

The experiment's own `compare` with its default keys and settings; only `n_mle`, the
number of series that every method (SGNN, and MLE + AIC/AICc/BIC over all three
candidates) is scored on, changes. Run: `python benchmarks/model_selection_n.py 2000`
(≤ 2,000, the experiment's held-out set; ~6 minutes on 2 CPU cores at 2,000).
"""

import contextlib
import json
import sys
import time

import jax

from sgjax.reproduce._model_selection import _settings, compare, epidemic


def main(n_mle: int) -> dict:
    name, family, length, noise, cfg = _settings(False)[0]
    if not 1 <= n_mle <= cfg["n_test"]:
        raise SystemExit(f"n_mle must be between 1 and {cfg['n_test']} (the held-out set), got {n_mle}.")
    start = time.perf_counter()
    result = compare(epidemic(length, noise), key=jax.random.fold_in(jax.random.key(0), 0), progress=False,
                     phase=_phase, **dict(cfg, n_mle=n_mle))  # fmt: skip
    result["seconds"] = time.perf_counter() - start
    result["confusion"] = {m: c.tolist() for m, c in result["confusion"].items()}
    print(name, json.dumps(result, indent=1))
    return result


@contextlib.contextmanager
def _phase(what):
    start = time.perf_counter()
    yield
    print(f"{what}: {time.perf_counter() - start:.0f} s", flush=True)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 2000)
