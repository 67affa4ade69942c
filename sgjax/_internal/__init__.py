"""Code that exists for speed alone: each piece has a plain equivalent that gives the
same results (up to rounding, or the same law for random draws). What each buys,
where it was measured and when it can go: `README.md` beside this file."""

from ._random import binomial as binomial, gamma as gamma, negative_binomial as negative_binomial, poisson as poisson
from ._scalarize import lanes as lanes, Scalarized as Scalarized
from ._unrolled import unrolled as unrolled, UnrolledERK as UnrolledERK
