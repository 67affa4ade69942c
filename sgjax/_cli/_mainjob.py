"""The main job: an SGNN for the 1978 boarding-school influenza outbreak.

Train on an SIR model with under-reporting and negative-binomial counts, check
recovery on held-out simulations, then infer β, γ, R0 and the unobserved final size
from the 14 observed days, with posterior predictive bands.
"""

import json
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist

from .. import _plots, datasets, heads, models, nn, observation as obs
from .._inference import infer, Posterior, save, stack, unstack
from .._io import atomic_write, rounded, versions
from .._learning import Task
from .._simulation import Prior, simulate, Simulator, State
from .._training import fit
from ..diagnostics import held_out, recovery
from ._commands import _steps_per_call


#: The learned parameters; R0 and the final size follow from (β, γ) exactly.
PARAMETERS = ("beta", "gamma", "reporting", "dispersion")


def boarding_school_problem():
    """The simulator, prior and task of the main job.

    SIR for N = 763 boys with one infectious boy at day 0 (1978-01-21); the observed
    quantity is the number currently ill, `I(t)`, on days 1–14, of which a fraction
    `reporting` is confined to bed and counted with negative-binomial noise.
    """
    data = datasets.boarding_school()
    assert data.population is not None  # the school's 763 boys
    model = models.SIR(N=float(data.population), I0=1.0, observable=State("I"))
    observation = obs.ObservationModel(obs.NegativeBinomial("dispersion"), transforms=(obs.Reporting("reporting"),))
    simulator = Simulator(model, data.times, observation, t0=0.0)
    prior = Prior(
        beta=dist.LogUniform(0.5, 5.0),  # infections per infectious boy per day
        gamma=dist.LogUniform(0.1, 2.0),  # 1 / mean days ill: 0.5 to 10 days
        reporting=dist.Uniform(0.3, 1.0),  # fraction of the ill who are confined to bed
        dispersion=dist.LogUniform(2.0, 200.0),  # negative-binomial overdispersion
    )
    return data, simulator, prior, Task(simulator, PARAMETERS, prior)


def _derived(theta: dict, population: float) -> dict:
    """Push θ (name → array) forward to R0 and the final size (in people)."""
    r0 = theta["beta"] / theta["gamma"]
    z = np.asarray(models.final_size(jnp.asarray(r0), 1.0 - 1.0 / population))
    return {"R0": r0, "final_size": population * z}


def _with_derived(post: Posterior, population: float) -> Posterior:
    """The posterior with R0 and the final size pushed forward from its samples."""
    assert post.samples is not None  # a mixture-density head's posterior has samples
    samples = {**post.samples, **_derived(post.samples, population)}
    levels = sorted(post.quantiles)
    q = {k: np.quantile(v, levels, axis=1) for k, v in samples.items()}  # (levels, n) each
    quantiles = {lvl: {k: v[i] for k, v in q.items()} for i, lvl in enumerate(levels)}
    point = unstack(stack(samples).mean(1), tuple(samples))  # as one array: the same rounding as before
    return Posterior(
        labels=tuple(samples),
        point=point,
        quantiles=quantiles,
        samples=samples,
        probabilities=None,
        parameters=PARAMETERS,
    )


def run(
    out, *, fast: bool = False, seed: int = 0, steps: int | None = None, progress: bool = True, overwrite: bool = False
) -> dict:
    """Run the main job and write everything to the directory `out`.

    **Arguments:**

    - `out`: output directory; refused if it holds files, unless `overwrite`.
    - `fast`: a few hundred steps and small evaluation sets (for tests).
    - `seed`: the PRNG seed.
    - `steps`: training steps (default 3000, or 200 with `fast`).

    **Returns:** the metrics written to `metrics.json`.
    """
    out = pathlib.Path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"The output directory {out} is not empty; choose another or pass overwrite.")
    out.mkdir(parents=True, exist_ok=True)
    steps = (200 if fast else 3000) if steps is None else steps  # fit refuses 0 or less
    n_test, n_post, n_val = (256, 200, 512) if fast else (2000, 2000, 2048)
    key = jax.random.key(seed)
    k_fit, k_test, k_post, k_pred = jax.random.split(key, 4)
    data, simulator, prior, task = boarding_school_problem()
    assert data.population is not None

    start = time.perf_counter()
    estimator, history = fit(
        task,
        heads.MixtureDensity(3),
        nn.MLP,
        key=k_fit,
        steps=steps,
        batch_size=512,
        learning_rate=2e-3,
        eval_every=min(250, steps),
        steps_per_call=_steps_per_call(steps, min(250, steps)),
        validation_size=n_val,
        pilot_size=n_val * 2,
        progress=progress,
    )
    train_seconds = time.perf_counter() - start
    save(out / "estimator", estimator, overwrite=overwrite)

    # Recovery on held-out simulations, derived quantities pushed forward from samples.
    post, theta = held_out(estimator, task, n_test, key=k_test, n_samples=n_post)
    post = _with_derived(post, data.population)
    truth = {**theta, **_derived(theta, data.population)}
    rec = recovery(post, truth)
    _plots.recovery(truth, post, out / "recovery.png")
    _plots.training_curve(history, out / "training.png")

    # The real data.
    flu = _with_derived(infer(estimator, data.values, data.mask, key=k_post, n_samples=n_post), data.population)
    assert flu.samples is not None
    theta_post = {name: jnp.asarray(v) for name, v in flu.theta(0).items()}  # the model's parameters
    pred = simulate(simulator, key=k_pred, theta=theta_post, resample_failed=False)
    rho = flu.samples["reporting"][0]
    _plots.predictive_bands(
        data.times,
        data.values[:, 0],
        pred.observations[pred.valid, :, 0],
        out / "posterior_predictive.png",
        f"Boarding-school influenza, 1978: data and SGNN posterior predictive (N={data.population})",
        ylabel="boys confined to bed",
        clean=(pred.signal[:, :, 0] * rho[:, None])[pred.valid],
    )
    _plots.posterior_histograms(
        {label: v[0] for label, v in flu.samples.items()}, out / "posterior.png", "Posterior for the 1978 outbreak"
    )
    summary = {}
    for label, v in flu.samples.items():
        v = v[0]
        summary[label] = {
            "mean": float(v.mean()),
            "median": float(np.median(v)),
            "interval_90": [float(np.quantile(v, 0.05)), float(np.quantile(v, 0.95))],
        }
    covered = np.mean(
        (data.values[:, 0] >= np.quantile(pred.observations[pred.valid, :, 0], 0.05, axis=0))
        & (data.values[:, 0] <= np.quantile(pred.observations[pred.valid, :, 0], 0.95, axis=0))
    )
    metrics = {
        "job": "SGNN for the 1978 English boarding-school influenza outbreak",
        "data": {
            "source": data.source,
            "start": str(data.start),
            "population": data.population,
            "confined": data.values[:, 0].tolist(),
        },
        "training": {
            "steps": history["step"][-1],
            "batch_size": 512,
            "samples": history["step"][-1] * 512,
            "seconds_including_compile": round(train_seconds, 2),
            "samples_per_s_last_window": rounded(history["samples_per_s"][-1]),
            "final_validation_loss": history["val_loss"][-1],
        },
        "recovery_on_held_out_simulations": {"n": len(post), **rec},
        "posterior_boarding_school": summary,
        "posterior_predictive_90_covers_days": float(covered),
        "versions": versions(),
        "backend": jax.default_backend(),
    }
    atomic_write(out / "metrics.json", json.dumps(metrics, indent=2).encode())
    return metrics


def report(metrics: dict) -> str:
    """A short human-readable summary of the main job's metrics."""
    lines = [
        f"trained on {metrics['training']['samples']:,} fresh simulations in "
        f"{metrics['training']['seconds_including_compile']:.0f} s",
        "recovery on held-out simulations (R², 90% interval coverage):",
    ]
    for label, m in metrics["recovery_on_held_out_simulations"].items():
        if isinstance(m, dict):
            lines.append(f"  {label:>12}: R² = {m['r2']:.3f}, coverage = {m['coverage_90']:.3f}")
    lines.append("boarding school 1978 (posterior median [90% interval]):")
    for label, m in metrics["posterior_boarding_school"].items():
        lo, hi = m["interval_90"]
        lines.append(f"  {label:>12}: {m['median']:.3g} [{lo:.3g}, {hi:.3g}]")
    return "\n".join(lines)
