"""Every claim of the paper as a runnable experiment: `sgjax reproduce NAME`.

Each experiment writes `NAME.md` (tables and figure links), `NAME.json` (every number
behind them) and `NAME-*.png` into one folder, and [`reproduce`][] assembles the
folder's `README.md`, the results page, from whatever experiments it holds.
"""

import importlib
import multiprocessing
import pathlib
import time
from concurrent.futures import ProcessPoolExecutor

from .._io import atomic_write
from ._report import cell, Report as Report


#: Command name → (module, one-line description), in the paper's order.
EXPERIMENTS = {
    "convergence": ("_convergence", "convergence to the Bayes-optimal predictor"),
    "recovery": ("_recovery", "latent parameter recovery against MLE and NUTS"),
    "unobservable": ("_unobservable", "quantities that never appear in the data"),
    "model-selection": ("_model_selection", "model selection against AIC and BIC"),
    "misspecification": ("_misspecification", "robustness under misspecification"),
    "attribution": ("_attribution", "mechanistic attribution back to simulations"),
}

#: Real-data case studies (a flow SGNN against NUTS), run by name or as
#: `case-studies`; not part of `all`.
CASE_STUDIES = {
    "boarding-school": (
        "_case_studies:run_boarding_school",
        "SIR/SEIR posteriors for the 1978 boarding-school outbreak",
    ),
    "hare-lynx": ("_case_studies:run_hudson_bay", "a Lotka–Volterra posterior for the Hudson's Bay pelts"),
}


#: Experiments that reuse each other's compiled programs and trained networks (one SIR
#: problem, one set of NUTS settings): with `jobs > 1` they share one process.
_SHARED = ("recovery", "misspecification", "attribution")


def _lanes(names: list[str], jobs: int) -> list[list[str]]:
    """Split `names` into at most `jobs` lists to run in separate processes, keeping
    `_SHARED` together in the first and dealing the others out over the rest."""
    if jobs <= 1 or len(names) <= 1:
        return [names]
    shared = [n for n in names if n in _SHARED]
    rest = [n for n in names if n not in _SHARED]
    lanes = [shared] if shared else []
    free = max(jobs - len(lanes), 1)
    lanes += [rest[i::free] for i in range(free)]
    return [lane for lane in lanes if lane]


def _run_lane(names: list[str], out: str, quick: bool, seed: int, progress: bool) -> None:
    out_dir = pathlib.Path(out)
    for name in names:
        t = time.perf_counter()
        report = _runner(name)(out_dir, quick=quick, seed=seed, progress=progress)
        report.write()
        print(f"{name}: {time.perf_counter() - t:.0f} s -> {out_dir / (name + '.md')}", flush=True)


def _runner(name: str):
    known = {**EXPERIMENTS, **CASE_STUDIES}
    if name not in known:
        from .._simulation import suggest

        raise ValueError(
            f"Unknown experiment {name!r}; choose from {', '.join(known)}, 'all' (the paper's "
            "claims) or 'case-studies'." + suggest(name, known)
        )
    module, _, function = known[name][0].partition(":")
    return getattr(importlib.import_module(f".{module}", __name__), function or "run")


def reproduce(
    names=("all",),
    out="results",
    *,
    quick: bool = False,
    seed: int = 0,
    overwrite: bool = False,
    progress: bool = False,
    jobs: int = 1,
) -> pathlib.Path:
    """Run experiments and write the results page.

    **Arguments:**

    - `names`: experiment names (see `EXPERIMENTS`), or `("all",)`.
    - `out`: the output folder; created if missing.
    - `quick`: the reduced versions that run in CI (minutes for all six together).
    - `seed`: every experiment is a deterministic function of it.
    - `overwrite`: replace an experiment's earlier results in `out`; without it, a
        folder that already holds them is refused before anything runs.
    - `progress`: show training progress bars.
    - `jobs`: how many experiments run at once, each group in its own process
        (experiments that share compiled programs stay in one; the case studies,
        which time the SGNN against NUTS, always run alone). The quick versions
        are mostly compilation, which XLA does on one core: 2 on a 2-core machine cut
        `all --quick` from 171 s to 136 s (88–181 s on 2026-12-02, depending on the
        machine and the hour), and `all` at default settings takes 16–18 min. Results
        do not depend on it (each experiment is a function of the seed); the times each
        experiment reports include the contention.

    **Returns:** the path of the results page, `out/README.md`.
    """
    groups = {"all": list(EXPERIMENTS), "case-studies": list(CASE_STUDIES)}
    names = list(dict.fromkeys(n for name in names for n in groups.get(name, [name])))
    runners = {name: _runner(name) for name in names}
    out = pathlib.Path(out)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"{out} exists and is not a folder; choose another --out.")
    clash = [str(out / f"{n}.{ext}") for n in names for ext in ("md", "json") if (out / f"{n}.{ext}").exists()]
    if clash and not overwrite:
        raise FileExistsError(
            f"{clash[0]} already exists: these results would be overwritten. Pass "
            "overwrite=True (--overwrite), or choose another output folder."
        )
    if not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"`jobs` must be a positive integer, got {jobs!r}.")
    out.mkdir(parents=True, exist_ok=True)
    # The case studies time the SGNN against NUTS: they run alone, after the others.
    lanes = _lanes([n for n in runners if n not in CASE_STUDIES], jobs)
    if len(lanes) > 1:
        # "spawn": a fresh interpreter per lane (JAX's threads do not survive a fork).
        with ProcessPoolExecutor(len(lanes), mp_context=multiprocessing.get_context("spawn")) as pool:
            for f in [pool.submit(_run_lane, lane, str(out), quick, seed, progress) for lane in lanes]:
                f.result()
    else:
        _run_lane(lanes[0], str(out), quick, seed, progress)
    _run_lane([n for n in runners if n in CASE_STUDIES], str(out), quick, seed, progress)
    return write_page(out)


def write_page(out) -> pathlib.Path:
    """Assemble `out/README.md` from the experiments' sections found in `out`."""
    import json

    out = pathlib.Path(out)
    rows, sections = [], []
    for name, (_, what) in {**EXPERIMENTS, **CASE_STUDIES}.items():
        md, js = out / f"{name}.md", out / f"{name}.json"
        if not (md.exists() and js.exists()):
            rows.append(f"| [{name}](#) | {what} | not run | – |")
            continue
        data = json.loads(js.read_text())
        mode = "quick" if data.get("quick") else "default"
        rows.append(
            f"| `{name}` | {cell(what)} | {cell(data.get('headline', ''))} | {data.get('seconds', 0):.0f} s ({mode}) |"
        )
        sections.append(md.read_text())
    page = [
        "# sgjax: the paper's claims, reproduced",
        "",
        "Every table and figure below is regenerated by one command:",
        "",
        "```bash",
        f"sgjax reproduce all --out {out.as_posix()} --overwrite",
        "```",
        "",
        "Each experiment alone: `sgjax reproduce NAME`; `--quick` runs the reduced "
        "versions that CI runs. Each writes `NAME.md`, `NAME.json` (every number) "
        "and `NAME-*.png`. The real-data case studies (a normalising-flow SGNN against "
        "NUTS) run with `sgjax reproduce case-studies`.",
        "",
        "| experiment | claim checked | headline | time |",
        "|---|---|---|---|",
        *rows,
        "",
        *sections,
    ]
    path = out / "README.md"
    atomic_write(path, "\n".join(page).encode())
    return path
