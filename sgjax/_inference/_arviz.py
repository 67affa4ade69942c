"""Posterior samples as ArviZ `InferenceData`, so that users keep their usual plots
and diagnostics (`az.plot_posterior`, `az.summary`, `az.plot_pair`, ...)."""

from typing import Any

import numpy as np


def _arviz():
    try:
        import arviz
    except ImportError:
        raise ImportError(
            "Exporting to ArviZ needs arviz, an optional dependency: pip install 'sgjax[arviz]' (or pip install arviz)."
        ) from None
    return arviz


def _draws(posterior) -> tuple[dict[str, np.ndarray], int]:
    """name → `(n_series, chains × draws)` and the number of chains, from any sgjax
    posterior with samples."""
    from ._posterior import AbstractPosterior

    if not isinstance(posterior, AbstractPosterior):
        raise TypeError(
            "`posterior` must be an sgjax posterior (an sgjax.AbstractPosterior: sgjax.infer's, or a baseline's "
            f"from sgjax.baselines.nuts or rejection_abc), got {type(posterior).__name__}."
        )
    if getattr(posterior, "probabilities", None) is not None:
        posterior._need_samples("Exporting to ArviZ")  # a classifier's: it says it holds probabilities
    if posterior.samples is None:
        raise ValueError(
            "This posterior has no samples: its head gives a point estimate or quantiles. Train with a "
            "density head (Gaussian, MixtureDensity, Flow) and call sgjax.infer with a key and n_samples."
        )
    return {k: np.asarray(v) for k, v in posterior.samples.items()}, int(getattr(posterior, "num_chains", 1))


def to_arviz(posterior, series: int | None = None, *, observed=None):
    """Posterior samples as an ArviZ `InferenceData`.

    **Arguments:**

    - `posterior`: any [`sgjax.AbstractPosterior`][] with samples: an
        [`sgjax.Posterior`][] of a density head, or a baseline's
        ([`sgjax.baselines.nuts`][], whose chains are kept apart for R-hat, or
        [`sgjax.baselines.rejection_abc`][]).
    - `series`: which observed series to export; `None` keeps them all along a
        `series` dimension.
    - `observed`: optionally the observed data, `(time, channels)`, stored in the
        `observed_data` group.

    **Returns:** an `arviz.InferenceData` with a `posterior` group: one variable per
    parameter, dimensions `(chain, draw)` (and `series` when `series=None`).
    """
    az = _arviz()
    draws, chains = _draws(posterior)
    n = next(iter(draws.values())).shape[0]
    if series is not None and not (isinstance(series, (int, np.integer)) and -n <= series < n):
        raise ValueError(f"`series` must be an index into the {n} observed series, got {series!r}.")
    groups, dims = {}, {}
    for name, d in draws.items():
        d = d.reshape(n, chains, -1)  # chain after chain
        if series is None:
            groups[name] = np.moveaxis(d, 0, -1)  # (chain, draw, series)
            dims[name] = ["series"]
        else:
            groups[name] = d[series]
    kwargs: dict[str, Any] = {"dims": dims}
    if observed is not None:
        observed = np.asarray(observed)
        kwargs["observed_data"] = {"x": observed}
        kwargs["dims"]["x"] = ["time", "channel"][: observed.ndim]
    try:
        return az.from_dict(posterior=groups, **kwargs)
    except TypeError:  # ArviZ ≥ 1.0 takes the groups as one dict
        data = {"posterior": groups}
        if "observed_data" in kwargs:
            data["observed_data"] = kwargs["observed_data"]
        return az.from_dict(data, dims=kwargs["dims"])
