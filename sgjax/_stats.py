"""Closed-form statistics shared by the diagnostics and the paper's experiments
(NumPy, float64)."""

import math

import numpy as np


def chi2_sf(x, dof: int) -> np.ndarray:
    """P(χ²_dof ≥ x) in closed form (a finite series for integer `dof`)."""
    x = np.asarray(x, float)
    h = x / 2
    out = []
    for v in h.ravel():
        if dof % 2 == 0:
            term, total = math.exp(-v), 0.0
            for i in range(dof // 2):
                total += term
                term *= v / (i + 1)
        else:
            total = math.erfc(math.sqrt(v))
            term = math.exp(-v) * math.sqrt(v) / math.gamma(1.5) if v > 0 else 0.0
            for i in range(dof // 2):
                total += term
                term *= v / (i + 1.5)
        out.append(min(total, 1.0))
    return np.asarray(out).reshape(x.shape)
