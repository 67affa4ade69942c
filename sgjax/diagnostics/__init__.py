"""Diagnostics for any posterior — an SGNN head, a flow, NUTS, ABC, SMC — in one data
convention: a posterior object (anything with `.samples`, a mapping name →
`(n, draws)`) or such a dict, and the truth as a dict name → `(n,)`. Stacked arrays
`(n, draws, k)` with `labels=` work too (`sgjax.stack(posterior.samples)`).

- A trained estimator on held-out simulations: [`diagnose`][] (recovery, coverage and
  SBC in one call and one figure), [`evaluate`][] (R², RMSE, coverage; also
  `sgjax.evaluate`), with [`held_out`][] and [`recovery`][] its building blocks.
- Calibration over simulations from the prior: [`sbc`][] (simulation-based
  calibration: rank histograms, χ² and the simultaneous ECDF-difference test),
  [`sbc_ranks`][], [`expected_coverage`][] of central credible intervals.
- Comparing two posteriors' draws: [`c2st`][], the classifier two-sample test
  (sbibm's accuracy: 0.5 indistinguishable, 1.0 separable).
- Checking a fit to an observation: [`posterior_predictive`][] (bands, the fraction
  of points inside, posterior predictive p-values) and [`MismatchScore`][] (is the
  observation inside the simulator's world?).

Each comes with a plot function (`plot_*`) that returns a matplotlib figure and saves
it as a PNG when given a path.
"""

from ._c2st import c2st as c2st
from ._coverage import Coverage as Coverage, expected_coverage as expected_coverage, plot_coverage as plot_coverage
from ._diagnose import diagnose as diagnose, Diagnosis as Diagnosis
from ._evaluate import evaluate as evaluate, held_out as held_out, recovery as recovery
from ._mismatch import embed as embed, MismatchScore as MismatchScore, mmd as mmd, SimulationBank as SimulationBank
from ._misspecification import plot_mismatch as plot_mismatch
from ._ppc import (
    plot_posterior_predictive as plot_posterior_predictive,
    posterior_predictive as posterior_predictive,
    PosteriorPredictive as PosteriorPredictive,
)
from ._sbc import (
    plot_sbc_ecdf as plot_sbc_ecdf,
    plot_sbc_histogram as plot_sbc_histogram,
    sbc as sbc,
    sbc_ranks as sbc_ranks,
    SBCResult as SBCResult,
)
