"""Index price paths: geometric Brownian motion, Merton, Kou and Hawkes jump-diffusions.

Kou and Hawkes (exponential jump sizes) live in :mod:`stress.market.jumps`.
All random numbers come from the path's own ``Generator``; generation is
vectorised over the steps of one path. Parameters are annual (a year of
365 days: crypto trades around the clock).
"""

from __future__ import annotations

import math

import numpy as np

from stress.market.jumps import hawkes_log_increments, kou_log_increments
from stress.market.shocks import martingale_noise, shock_path
# Re-exported, so that every generator's closed forms can be imported from here.
from stress.market.jumps import hawkes_stationary_intensity, kou_log_return_moments  # noqa: F401


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
        path = np.asarray(replay[: steps + 1], dtype=np.float64)
        noise = getattr(market, "noise", None)
        if noise is not None and noise.sigma > 0:
            # Only a noisy replay draws from rng: a plain replay stays bit-identical.
            with np.errstate(over="ignore", invalid="ignore"):
                path = path * martingale_noise(steps, dt, noise.sigma, rng)
        return path
    if market.kind == "shock":
        return shock_path(market, steps, dt, rng)
    if market.kind == "kou":
        inc = kou_log_increments(steps, dt, market.mu, market.sigma, market.jump_intensity,
                                 market.p_up, market.eta_up, market.eta_down, rng)
    elif market.kind == "hawkes":
        inc = hawkes_log_increments(steps, dt, market.mu, market.sigma, market.up, market.down,
                                    rng)
    else:  # gbm, merton
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
