"""Order statistics shared by :mod:`stress.analysis` and the run summary (numpy only)."""

from __future__ import annotations

import math

import numpy as np

# Tolerance on q·n against floating-point rounding (0.07 * 100 = 7.000000000000001).
FUZZ = 1e-9


def rank(level: float, n: int) -> int:
    """``ceil(level n)`` (1-based rank of the inverted-cdf quantile), at least 1."""
    t = level * n
    k = round(t) if abs(t - round(t)) <= FUZZ * max(1.0, t) else math.ceil(t)
    return min(max(int(k), 1), n)


def inverted_cdf(rows: np.ndarray, level: float) -> np.ndarray:
    """The inverted-cdf ``level``-quantile of each row: its ``rank(level, n)``-th
    smallest value (NaN for a row holding a NaN)."""
    rows = np.atleast_2d(np.asarray(rows, dtype=float))
    out = np.full(rows.shape[0], np.nan)
    ok = ~np.isnan(rows).any(axis=-1)
    if ok.any() and rows.shape[1]:
        out[ok] = np.sort(rows[ok], axis=-1)[:, rank(level, rows.shape[1]) - 1]
    return out
