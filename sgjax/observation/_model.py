import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float
from numpyro.distributions import constraints

from .._custom_types import Key, Params
from .base import AbstractMissing, AbstractNoise, AbstractTransform


class ObservationModel(eqx.Module):
    """How a clean signal becomes data: transforms of the mean (reporting, delays,
    day-of-week), then noise, then missingness.

    **Arguments:**

    - `noise`: an [`sgjax.observation.AbstractNoise`][], e.g. `Poisson()` or
        `NegativeBinomial(dispersion="phi")`.
    - `transforms`: transforms applied in order to the clean signal, e.g.
        `(Reporting("rho"), Delay(kernel))`.
    - `missing`: optional [`sgjax.observation.AbstractMissing`][].

    Parameters given as strings are read from `θ`, so they can have priors.
    """

    noise: AbstractNoise
    transforms: tuple[AbstractTransform, ...] = ()
    missing: AbstractMissing | None = None

    def __check_init__(self):
        if not isinstance(self.noise, AbstractNoise):
            raise TypeError(f"`noise` must be an sgjax noise model such as Poisson(), got {self.noise!r}.")
        for t in self.transforms:
            if not isinstance(t, AbstractTransform):
                raise TypeError(f"Each transform must be an sgjax transform such as Reporting(0.5), got {t!r}.")
        if self.missing is not None and not isinstance(self.missing, AbstractMissing):
            raise TypeError(f"`missing` must be e.g. MissingAtRandom(0.1), got {self.missing!r}.")

    @property
    def _pieces(self):
        return (*self.transforms, self.noise) + (() if self.missing is None else (self.missing,))

    @property
    def param_names(self) -> tuple[str, ...]:
        """Names of the `θ` entries the observation model reads."""
        out = []
        for p in self._pieces:
            out += [n for n in p.param_names if n not in out]
        return tuple(out)

    def parameter_support(self, name: str) -> constraints.Constraint:
        """Where the `θ` entry `name` may lie: the support its first piece declares
        (e.g. [0, 1] for `Reporting("rho")`'s `rho`), any real value if none does."""
        for p in self._pieces:
            support = p.parameter_support(name)
            if support is not constraints.real:
                return support
        return constraints.real

    def default_priors(self) -> dict:
        out = {}
        for p in self._pieces:
            out.update(p.default_priors())
        return out

    def check(self, ts) -> None:
        for p in self._pieces:
            p.check(ts)

    def mean(self, signal: Float[Array, "time channels"], theta: Params, ts) -> Float[Array, "time channels"]:
        """The expected observation of one trajectory."""
        for t in self.transforms:
            signal = t(signal, theta, ts)
        return signal

    def sample(self, key: Key, signal: Float[Array, "time channels batch"], theta: Params, ts):
        """Noisy observations `x` and mask for a batch, batch last (so that `θ`
        entries of shape `(batch,)` broadcast); missing entries of `x` are 0."""
        mean = jax.vmap(self.mean, in_axes=(-1, 0, None), out_axes=-1)(signal, theta, ts)
        knoise, kmiss = jax.random.split(key)
        x = self.noise.sample(knoise, mean, theta)
        if self.missing is None:
            return x, jnp.ones(x.shape, bool)
        mask = self.missing.sample(kmiss, x.shape, theta, ts)
        return jnp.where(mask, x, 0.0), mask

    def log_prob(self, x, signal, theta: Params, ts, mask=None) -> Float[Array, ""]:
        """Log likelihood of one observed series `x` `(time, channels)` given the clean
        signal of one trajectory; entries with `mask == False` are left out."""
        lp = self.noise.log_prob(x, self.mean(signal, theta, ts), theta)
        if mask is not None:
            lp = jnp.where(mask, lp, 0.0)
        return jnp.sum(lp)

    def check_data(self, x) -> None:
        """Refuse data this observation model cannot have produced, with a message
        that says what to do: negative or fractional counts for a count model."""
        x = np.asarray(x, dtype=float)
        if np.isnan(x).any():
            raise ValueError(
                "The observations contain NaN. Mark missing entries with a mask "
                "(True = observed) and put any finite value, e.g. 0, in their place."
            )
        if self.noise.is_count:
            if (x < 0).any():
                raise ValueError(
                    f"{type(self.noise).__name__} observes counts, but the data has "
                    f"negative values (min {x.min():g}). Check the data or use a "
                    "Gaussian noise model."
                )
            if not np.allclose(x, np.round(x)):
                raise ValueError(
                    f"{type(self.noise).__name__} observes whole counts, but the data has "
                    "fractional values. Round them, or use a Gaussian/LogNormal noise model."
                )
