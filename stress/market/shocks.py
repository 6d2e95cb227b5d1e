"""Hypothetical shocks: a gap, a wick, a staircase crash or a short squeeze.

A shock is a deterministic price profile ``s0·(1 + size·g(t))`` with ``g`` a
shape in [0, 1] of the time ``t`` in minutes, evaluated at the step times.
Optional GBM noise multiplies it by a mean-one martingale, so the expected
price stays the profile; with ``sigma = 0`` no random number is drawn and every
Monte Carlo path is the same shock.
"""

from __future__ import annotations

import math

import numpy as np

from stress.config import MINUTES_PER_YEAR

# Step times are k·dt·MINUTES_PER_YEAR; rounding to 1e-9 minute removes the
# float round trip through years, so a shock at minute 60 is at step 60 exactly.
_TIME_DECIMALS = 9


def martingale_noise(steps: int, dt: float, sigma: float,
                     rng: np.random.Generator) -> np.ndarray:
    """``exp(σ·W_t − σ²t/2)`` at the ``steps + 1`` step times, ``W_0 = 0``.

    Its expectation is 1 at every time, so multiplying a path by it keeps the
    path's expected value. Draws ``steps`` standard normals from ``rng``.
    """
    z = rng.standard_normal(steps)
    log_noise = np.empty(steps + 1)
    log_noise[0] = 0.0
    np.cumsum(sigma * math.sqrt(dt) * z - 0.5 * sigma ** 2 * dt, out=log_noise[1:])
    return np.exp(log_noise)


def shock_profile(shape: str, minutes: np.ndarray, at_minute: float, duration_minutes: float,
                  steps_count: int) -> np.ndarray:
    """Fraction ``g(t)`` of the shock's size reached at each time (minutes), in [0, 1]."""
    u = (minutes - at_minute) / duration_minutes
    if shape == "gap":
        return np.where(minutes >= at_minute, 1.0, 0.0)
    if shape == "wick":
        # Down (or up) to the extreme at half the duration, back by its end.
        return np.where((u <= 0) | (u >= 1), 0.0, 1.0 - np.abs(2.0 * u - 1.0))
    if shape == "staircase":
        # Stair j (j = 0..n−1) happens at at_minute + j·duration/n.
        stairs = np.floor(np.round(u * steps_count, _TIME_DECIMALS)) + 1.0
        return np.where(minutes >= at_minute, np.minimum(stairs, steps_count) / steps_count, 0.0)
    if shape == "squeeze":
        return np.clip(u, 0.0, 1.0)
    raise ValueError(f"unknown shock shape {shape!r}")


def shock_path(market, steps: int, dt: float, rng: np.random.Generator) -> np.ndarray:
    """Index price at the ``steps + 1`` step times of a :class:`~stress.config.ShockMarket`.

    ``dt`` is the step length in years; the shock's times are in minutes.
    """
    minutes = np.round(np.arange(steps + 1) * (dt * MINUTES_PER_YEAR), _TIME_DECIMALS)
    g = shock_profile(market.shape, minutes, market.at_minute, market.duration_minutes,
                      market.steps_count)
    path = market.s0 * (1.0 + market.size * g)
    if market.sigma > 0:
        with np.errstate(over="ignore", invalid="ignore"):
            path = path * martingale_noise(steps, dt, market.sigma, rng)
    return path
