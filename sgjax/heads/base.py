"""The head interface: network outputs → loss and posterior summaries."""

import abc
from typing import ClassVar

import equinox as eqx
from jaxtyping import Array, Float, PRNGKeyArray


class AbstractHead(eqx.Module):
    """Turns the network's raw output for one observation into a loss against a
    target and into posterior summaries.

    Heads work in the *standardised* learning space (targets shifted and scaled by
    statistics of a pilot batch); [`sgjax.Estimator`][] maps their summaries back to
    natural units.
    """

    #: Whether the head classifies (model selection: `sgjax.ModelSelection`) rather
    #: than regresses; `fit` reads this instead of inspecting the head's class.
    classifies: ClassVar[bool] = False

    @abc.abstractmethod
    def n_outputs(self, k: int, n_classes: int) -> int:
        """How many network outputs the head reads for a `k`-dimensional target (or
        `n_classes` models)."""

    @abc.abstractmethod
    def loss(self, out: Float[Array, " m"], y: Float[Array, " k"]) -> Float[Array, ""]:
        """The loss of one sample; its expectation is minimised by the head's
        posterior quantity."""

    @abc.abstractmethod
    def summarise(self, out: Float[Array, " m"], k: int, key: PRNGKeyArray | None, n_samples: int) -> dict:
        """Posterior summaries of one sample in the standardised space: some of
        `mean (k,)`, `quantiles (levels, k)`, `samples (n_samples, k)`,
        `probabilities (n_classes,)`."""

    def build(self, k: int, key: PRNGKeyArray) -> "AbstractHead":
        """The head ready for a `k`-dimensional target. Heads with parameters of their
        own (a normalising flow) create them here; [`sgjax.fit`][] calls it and then
        trains the head's parameters together with the network's."""
        return self

    def config(self) -> dict:
        """A JSON description to rebuild the head: its kind and arguments."""
        return {"kind": type(self).__name__}

    @property
    def is_density(self) -> bool:
        """Whether the head gives a density that can be sampled."""
        return False


def head_from_config(config: dict) -> AbstractHead:
    """Rebuild a head from [`sgjax.heads.AbstractHead.config`][]; only sgjax's own heads
    are accepted."""
    from . import Classifier, Flow, Gaussian, MixtureDensity, Point, Quantile

    kinds = {c.__name__: c for c in (Point, Quantile, Gaussian, MixtureDensity, Classifier, Flow)}
    config = dict(config)
    kind = config.pop("kind", None)
    if kind not in kinds:
        raise ValueError(f"Unknown head kind {kind!r}; sgjax saves one of {sorted(kinds)}.")
    try:
        return kinds[kind](**config)
    except TypeError as e:
        raise ValueError(f"Bad arguments for head {kind}: {config} ({e}).") from None
