"""Moved to `sgjax/_internal/random.py`; this shim keeps old imports working until the
package regroup (issue 25) updates them."""

from ._internal.random import (
    binomial as binomial,
    gamma as gamma,
    negative_binomial as negative_binomial,
    poisson as poisson,
)
