"""Mark price, book depth and gaps along one path.

The exogenous part of liquidity is computed here, per path, before the
kernel runs: the mark (the index, optionally smoothed), the depth per side
(baseline, thinned after jumps and when realised volatility is high,
recovering with a half-life; multiplied by scripted events) and the gaps
(bands beyond the mark where the book is empty). The kernel adds the
endogenous part: depth consumed by forced orders and the mark's displacement
by their permanent impact.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from stress._jit import njit
from stress.config import MINUTES_PER_YEAR


@dataclass(frozen=True)
class PathLiquidity:
    """Per-step arrays (length steps + 1) that the kernel reads."""

    mark: np.ndarray  # mark price before forced-order impact
    depth_bid: np.ndarray  # quote notional within the band, where longs are sold
    depth_ask: np.ndarray  # where shorts are bought back
    gap_bid: np.ndarray  # empty band below the mark, fraction of the price
    gap_ask: np.ndarray  # empty band above the mark


def smooth_mark(index: np.ndarray, half_life_steps: float) -> np.ndarray:
    """Exponential average of the index with the given half-life (0 = the index)."""
    if half_life_steps <= 0:
        return index
    return _ema(index, 0.5 ** (1.0 / half_life_steps))


@njit(cache=True)
def _ema(x, decay):
    out = np.empty_like(x)
    out[0] = x[0]
    for t in range(1, x.shape[0]):
        out[t] = decay * out[t - 1] + (1.0 - decay) * x[t]
    return out


@njit(cache=True)
def depth_factor_path(index, recovery, jump_threshold, jump_thinning, vol_decay,
                      ref_var, elasticity):
    """Depth as a fraction of baseline, per step.

    ``f`` recovers towards 1 by ``recovery`` per step (``1 − f ← (1 − f)·recovery``)
    and is multiplied by ``jump_thinning`` after a step whose absolute log return
    exceeds ``jump_threshold``. Realised variance is an exponential average of
    squared returns (started at ``ref_var``); depth is further multiplied by
    ``min(1, ref_var / var)^(elasticity/2)``.
    """
    n = index.shape[0]
    out = np.empty(n)
    f = 1.0
    var = ref_var
    out[0] = 1.0
    for t in range(1, n):
        r = math.log(index[t] / index[t - 1])
        f = 1.0 - (1.0 - f) * recovery
        if abs(r) > jump_threshold:
            f *= jump_thinning
        var = vol_decay * var + (1.0 - vol_decay) * r * r
        v = 1.0
        if var > ref_var and elasticity > 0.0:
            v = (ref_var / var) ** (0.5 * elasticity)
        out[t] = f * v
    return out


def _window(steps: int, start_minute: float, duration: float, step_minutes: float):
    """Steps t (1..steps) whose time t·step_minutes lies in [start, start + duration)."""
    t = np.arange(steps + 1) * step_minutes
    return (t >= start_minute) & (t < start_minute + duration)


def path_liquidity(index: np.ndarray, liq, mark_smoothing_minutes: float, step_minutes: float,
                   rng: np.random.Generator | None) -> PathLiquidity:
    """Mark, depth and gaps for one path; ``liq`` is a LiquidityConfig or None.

    Random gap events draw from ``rng`` after the price path, so adding them does
    not change the prices of a path.
    """
    steps = index.shape[0] - 1
    mark = smooth_mark(index, mark_smoothing_minutes / step_minutes)
    if liq is None:
        inf = np.full(steps + 1, np.inf)
        zero = np.zeros(steps + 1)
        return PathLiquidity(mark, inf, inf, zero, zero)
    dt = step_minutes / MINUTES_PER_YEAR
    factor = depth_factor_path(
        np.ascontiguousarray(index, dtype=np.float64),
        0.5 ** (step_minutes / liq.recovery_half_life_minutes), liq.jump_threshold,
        liq.jump_thinning, 0.5 ** (step_minutes / liq.vol_half_life_minutes),
        liq.reference_vol ** 2 * dt, liq.vol_elasticity)
    bid = liq.depth * factor
    ask = bid.copy()
    gap_bid = np.zeros(steps + 1)
    gap_ask = np.zeros(steps + 1)
    events = [(e.start_minute, e.duration_minutes, e.depth_factor, e.gap, e.side)
              for e in liq.events]
    g = liq.gaps
    if g.rate_per_day > 0 and rng is not None:
        days = steps * step_minutes / 1440.0
        for start in np.sort(rng.uniform(0.0, steps * step_minutes,
                                         rng.poisson(g.rate_per_day * days))):
            events.append((float(start), g.duration_minutes, 1.0, g.width, g.side))
    for start, duration, depth_factor, gap, side in events:
        w = _window(steps, start, duration, step_minutes)
        if side in ("both", "bid"):
            bid[w] *= depth_factor
            gap_bid[w] = np.maximum(gap_bid[w], gap)
        if side in ("both", "ask"):
            ask[w] *= depth_factor
            gap_ask[w] = np.maximum(gap_ask[w], gap)
    floor = liq.depth * liq.depth_floor
    return PathLiquidity(mark, np.maximum(bid, floor), np.maximum(ask, floor), gap_bid, gap_ask)
