"""Built-in mechanistic models, each a final [`sgjax.AbstractODEModel`][] with named
parameters and states, a default observable and a default prior.

- Epidemics (`epidemics.py`): [`SIR`][], [`SEIR`][], [`SIRS`][], [`SIRIntervention`][],
  and the exact SIR/SEIR [`final_size`][].
- Growth (`growth.py`): [`Exponential`][], [`Logistic`][], [`Gompertz`][], [`Richards`][].
- Ecology (`ecology.py`): [`LotkaVolterra`][], [`Competition`][].
- Dynamics (`dynamics.py`): [`DampedOscillator`][], [`VanDerPol`][],
  [`FitzHughNagumo`][], [`Lorenz`][].
"""

from .dynamics import (
    DampedOscillator as DampedOscillator,
    FitzHughNagumo as FitzHughNagumo,
    Lorenz as Lorenz,
    VanDerPol as VanDerPol,
)
from .ecology import Competition as Competition, LotkaVolterra as LotkaVolterra
from .epidemics import (
    final_size as final_size,
    SEIR as SEIR,
    SIR as SIR,
    SIRIntervention as SIRIntervention,
    SIRS as SIRS,
)
from .growth import (
    Exponential as Exponential,
    Gompertz as Gompertz,
    Logistic as Logistic,
    Richards as Richards,
)
