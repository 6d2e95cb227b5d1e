"""Index price paths: geometric Brownian motion and Merton jump-diffusion.

All random numbers come from the path's own ``Generator``; generation is
vectorised over the steps of one path. Parameters are annual (a year of
365 days: crypto trades around the clock).
"""

from __future__ import annotations

import math

import numpy as np


def merton_log_increments(steps: int, dt: float, mu: float, sigma: float,
                          jump_intensity: float, jump_mean: float, jump_std: float,
                          rng: np.random.Generator) -> np.ndarray:
    """Log-price increments of a Merton jump-diffusion over ``steps`` steps of ``dt`` years.

    ``d log S = (mu − σ²/2 − λκ) dt + σ dW + Σ J``, ``J ~ N(jump_mean, jump_std²)``,
    ``κ = E[e^J] − 1``, so that ``E[S_t] = S_0·exp(mu·t)``. With ``λ = 0`` this is GBM.
    The normal draws come first, then the jump counts, then the jump sizes, so a
    GBM and a Merton path with the same seed share their diffusion part.
    """
    z = rng.standard_normal(steps)
    with np.errstate(over="ignore", invalid="ignore"):
        return _increments(z, steps, dt, mu, sigma, jump_intensity, jump_mean, jump_std, rng)


def _increments(z, steps, dt, mu, sigma, jump_intensity, jump_mean, jump_std, rng):
    kappa = math.exp(jump_mean + 0.5 * jump_std ** 2) - 1.0
    drift = (mu - 0.5 * sigma ** 2 - jump_intensity * kappa) * dt
    inc = drift + sigma * math.sqrt(dt) * z
    if jump_intensity > 0:
        counts = rng.poisson(jump_intensity * dt, steps)
        total = int(counts.sum())
        if total:
            # Sum of N normal jumps is N(N·m, N·s²); draw each jump for clarity.
            sizes = rng.normal(jump_mean, jump_std, total)
            owner = np.repeat(np.arange(steps), counts)
            inc += np.bincount(owner, weights=sizes, minlength=steps)
    return inc


def price_path(market, steps: int, dt: float, rng: np.random.Generator,
               replay: np.ndarray | None = None) -> np.ndarray:
    """Index price at the start and the end of every step (length ``steps + 1``)."""
    if market.kind == "replay":
        return np.asarray(replay[: steps + 1], dtype=np.float64)
    lam = getattr(market, "jump_intensity", 0.0)
    inc = merton_log_increments(steps, dt, market.mu, market.sigma, lam,
                                getattr(market, "jump_mean", 0.0),
                                getattr(market, "jump_std", 0.0), rng)
    log_path = np.empty(steps + 1)
    log_path[0] = 0.0
    with np.errstate(over="ignore", invalid="ignore"):
        # Absurd parameters overflow; the runner rejects non-finite paths.
        np.cumsum(inc, out=log_path[1:])
        return market.s0 * np.exp(log_path)


def merton_log_return_moments(t: float, mu: float, sigma: float, jump_intensity: float,
                              jump_mean: float, jump_std: float) -> tuple[float, float]:
    """Closed-form mean and variance of ``log(S_t / S_0)`` under Merton (GBM for λ = 0)."""
    kappa = math.exp(jump_mean + 0.5 * jump_std ** 2) - 1.0
    mean = (mu - 0.5 * sigma ** 2 - jump_intensity * kappa) * t + jump_intensity * t * jump_mean
    var = sigma ** 2 * t + jump_intensity * t * (jump_mean ** 2 + jump_std ** 2)
    return mean, var
