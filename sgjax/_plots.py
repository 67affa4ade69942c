"""Plots written by the command line and the main job (matplotlib, Agg backend)."""

import os
import pathlib

import numpy as np


def _pyplot():
    """`matplotlib.pyplot`, with the backend the user has: a library call never
    switches it (that turned a notebook's inline figures off after the first sgjax
    plot). The command line chooses Agg for itself (`sgjax._cli.main`)."""
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: pathlib.Path) -> None:
    """Save atomically (a temporary file, then rename) and close."""
    path = pathlib.Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, format="png", dpi=110)
    os.replace(tmp, path)
    _pyplot().close(fig)


def training_curve(history: dict, path) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(history["step"], history["loss"], lw=1, label="training loss")
    ax.plot(history["val_step"], history["val_loss"], "o-", ms=3, label="validation loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.legend()
    ax.set_title("Training on fresh simulations")
    fig.tight_layout()
    save_figure(fig, path)


def recovery(truth: dict, post, path, max_points: int = 400) -> None:
    """True value (name → `(n,)`) against the posterior median and 90% interval, for
    each label of `truth`."""
    plt = _pyplot()
    k = len(truth)
    cols = min(k, 3)
    rows = -(-k // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3.6 * rows), squeeze=False)
    lo, hi = post.interval(0.9)
    median = post.quantile(0.5)
    idx = np.arange(min(len(next(iter(truth.values()))), max_points))
    labels = list(truth)
    for j, ax in enumerate(axes.flat):
        if j >= k:
            ax.axis("off")
            continue
        label = labels[j]
        t, mid, low, high = (np.asarray(a[label])[idx] for a in (truth, median, lo, hi))
        yerr = np.maximum(0, [mid - low, high - mid])
        ax.errorbar(t, mid, yerr=yerr, fmt=".", ms=2, lw=0.4, alpha=0.5)
        span = [min(t.min(), low.min()), max(t.max(), high.max())]
        ax.plot(span, span, "k--", lw=0.8)
        ax.set_title(label)
        ax.set_xlabel("true")
        ax.set_ylabel("median (90% interval)")
    fig.suptitle("Recovery on held-out simulations")
    fig.tight_layout()
    save_figure(fig, path)


def predictive_bands(times, observed, predictive, path, title, ylabel="count", clean=None) -> None:
    """Observed data over posterior predictive bands (50% and 90%) and median.

    `predictive` is `(samples, time)`; `clean` optionally `(samples, time)` of the
    noise-free mean, drawn as a 90% band of lines.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    q = np.quantile(predictive, [0.05, 0.25, 0.5, 0.75, 0.95], axis=0)
    ax.fill_between(times, q[0], q[4], alpha=0.2, color="C0", label="90% predictive")
    ax.fill_between(times, q[1], q[3], alpha=0.35, color="C0", label="50% predictive")
    ax.plot(times, q[2], color="C0", lw=1.5, label="predictive median")
    if clean is not None:
        c = np.quantile(clean, [0.05, 0.95], axis=0)
        ax.plot(times, c[0], "C1:", lw=1)
        ax.plot(times, c[1], "C1:", lw=1, label="90% band of the expected count")
    ax.plot(times, observed, "ko", ms=4, label="observed")
    ax.set_xlabel("day")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)


def posterior_histograms(samples: dict, path, title: str) -> None:
    plt = _pyplot()
    k = len(samples)
    fig, axes = plt.subplots(1, k, figsize=(3.2 * k, 3), squeeze=False)
    for ax, (name, v) in zip(axes.flat, samples.items()):
        ax.hist(v, bins=50, density=True, color="C0", alpha=0.7)
        ax.axvline(np.median(v), color="k", lw=1)
        ax.set_title(name)
        ax.set_yticks([])
    fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, path)
