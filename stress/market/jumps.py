"""Jump-diffusions with exponential jump sizes: Kou and two-sided Hawkes.

Both add jumps to the log price of a geometric Brownian motion. A jump's log
size is ``+Exp`` (up) or ``−Exp`` (down), so crashes and squeezes can have
different sizes and rates.

* **Kou** (double-exponential): jumps arrive as a Poisson process of rate λ;
  each is up with probability ``p_up``, of log size ``Exp(rate η₁)``, or down,
  of log magnitude ``Exp(rate η₂)``.
* **Hawkes**: up and down jumps are two independent self-exciting processes.
  Each jump of a side raises that side's intensity by α (the excitation),
  which decays back to the baseline at rate β, so jumps cluster the way
  liquidation cascades do.

All random numbers come from the path's own ``Generator`` and are drawn
outside the compiled loop; the Hawkes recursion is sequential and runs in
:func:`hawkes_counts` (numba), written once in plain Python as
:func:`hawkes_counts_python`. Parameters are annual (a year of 365 days).

Discretisation of the Hawkes intensity
--------------------------------------
The state ``λ_k`` of a side is its mean intensity over step ``k`` (per year).
The step's jump count is ``N_k ~ Poisson(λ_k·dt)``, drawn by inversion from a
pre-drawn uniform, and the jumps are placed at the end of the step. Then ::

    λ_{k+1} = baseline + (λ_k − baseline)·exp(−β·dt) + α_dt·N_k,
    α_dt    = α·(1 − exp(−β·dt)) / (β·dt),

where ``α_dt`` is the kernel ``α·exp(−β·s)`` averaged over the next step
(``α_dt → α`` as ``dt → 0``; at one-minute steps and a 2-hour lifetime it is
α·0.9958). With this choice the discrete process has branching ratio exactly
α/β and stationary mean count rate exactly ``baseline / (1 − α/β)``, at any
step length. (Adding α itself, with ``N_k ~ Poisson(λ_k·dt)``, gives a
branching ratio ``α·dt / (1 − exp(−β·dt)) > α/β``: too many jumps at coarse
steps, and an explosive process once that ratio reaches 1.) Every path
starts at the stationary mean ``baseline / (1 − α/β)``.

Drift compensation
------------------
Kou: ``κ = p·η₁/(η₁ − 1) + (1 − p)·η₂/(η₂ + 1) − 1`` and the drift is
``mu − σ²/2 − λκ``, so ``E[S_t] = S_0·exp(mu·t)``.

Hawkes: ``κ_up = 1/(1 − m_up) − 1`` and ``κ_down = 1/(1 + m_down) − 1`` for
exponential sizes of mean ``m``, and the drift is the constant
``mu − σ²/2 − (λ̄_up·κ_up + λ̄_down·κ_down)``, with the stationary mean
intensities ``λ̄``. Since every step's expected count is ``λ̄·dt`` (the path
starts at ``λ̄``), this makes ``E[log S_t/S_0]`` the same as for Poisson jumps
at rate ``λ̄``, and ``E[S_t] = S_0·exp(mu·t)`` holds to first order in the jump
sizes. It is not exact: clustered counts are over-dispersed, so
``E[(1 + κ)^N]`` exceeds ``exp(λ̄·κ·t)``, and ``E[S_t]`` runs above
``S_0·exp(mu·t)``, by 0.07 % over one day, 0.6 % over a week and 2.6 % over
30 days at the default parameters (computed exactly for this discretisation
from the cluster generating function); the excess grows with the horizon,
the clustering and the jump sizes. An exact martingale would need the drift
of each step compensated by that step's intensity instead, which adds a
predictable counter-drift after every jump (at the defaults, +1.8 % per hour
right after a down jump, offsetting the expected further crashes): not how
prices behave after a liquidation cascade, so this generator does not do that.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from stress._jit import njit


# ------------------------------------------------------------------------ Kou
def kou_kappa(p_up: float, eta_up: float, eta_down: float) -> float:
    """``E[e^J] − 1`` for a double-exponential log jump ``J`` (needs ``eta_up > 1``)."""
    return p_up * eta_up / (eta_up - 1.0) + (1.0 - p_up) * eta_down / (eta_down + 1.0) - 1.0


def kou_jumps(steps: int, dt: float, jump_intensity: float, p_up: float, eta_up: float,
              eta_down: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Jump counts per step and signed log jump sizes of a Kou process.

    Parameters
    ----------
    steps : int
        Number of steps.
    dt : float
        Step length, years.
    jump_intensity : float
        Poisson rate λ, jumps per year.
    p_up : float
        Probability that a jump is upward.
    eta_up, eta_down : float
        Rates of the exponential laws of up sizes and down magnitudes.
    rng : numpy.random.Generator
        The path's stream. Draws, in order: ``steps`` Poisson counts, then
        one uniform (direction) and one standard exponential (size) per jump.

    Returns
    -------
    counts : ndarray of int64, shape (steps,)
        Jumps in each step.
    sizes : ndarray of float64, shape (counts.sum(),)
        Log jump sizes in step order: ``+Exp(eta_up)`` or ``−Exp(eta_down)``.
    """
    if jump_intensity <= 0:
        return np.zeros(steps, dtype=np.int64), np.empty(0)
    counts = rng.poisson(jump_intensity * dt, steps)
    total = int(counts.sum())
    if total == 0:  # drawing nothing would leave the stream as it is
        return counts, np.empty(0)
    up = rng.random(total) < p_up
    e = rng.standard_exponential(total)
    return counts, np.where(up, e / eta_up, -e / eta_down)


def kou_log_increments(steps: int, dt: float, mu: float, sigma: float, jump_intensity: float,
                       p_up: float, eta_up: float, eta_down: float,
                       rng: np.random.Generator) -> np.ndarray:
    """Log-price increments of a Kou jump-diffusion over ``steps`` steps of ``dt`` years.

    ``d log S = (mu − σ²/2 − λκ) dt + σ dW + Σ J``, so that ``E[S_t] = S_0·exp(mu·t)``
    (``κ``: :func:`kou_kappa`). The normal draws come first, as for GBM and Merton,
    then :func:`kou_jumps`.
    """
    z = rng.standard_normal(steps)
    with np.errstate(over="ignore", invalid="ignore"):
        kappa = kou_kappa(p_up, eta_up, eta_down) if jump_intensity > 0 else 0.0
        inc = (mu - 0.5 * sigma ** 2 - jump_intensity * kappa) * dt + sigma * math.sqrt(dt) * z
        counts, sizes = kou_jumps(steps, dt, jump_intensity, p_up, eta_up, eta_down, rng)
        if sizes.size:
            inc += _per_step(counts, sizes, steps)
    return inc


def kou_log_return_moments(t: float, mu: float, sigma: float, lam: float, p_up: float,
                           eta_up: float, eta_down: float) -> tuple[float, float]:
    """Closed-form mean and variance of ``log(S_t / S_0)`` under Kou.

    Parameters
    ----------
    t : float
        Horizon, years.
    mu, sigma : float
        Drift (per year) and diffusion volatility (per √year).
    lam : float
        Jump rate, per year.
    p_up, eta_up, eta_down : float
        Jump-size law (see :func:`kou_jumps`).

    Returns
    -------
    mean, variance : float
        ``(mu − σ²/2 − λκ)·t + λt·E[J]`` and ``σ²t + λt·E[J²]``, with
        ``E[J] = p/η₁ − (1 − p)/η₂`` and ``E[J²] = 2p/η₁² + 2(1 − p)/η₂²``.
    """
    kappa = kou_kappa(p_up, eta_up, eta_down) if lam > 0 else 0.0
    mean_jump = p_up / eta_up - (1.0 - p_up) / eta_down
    second = 2.0 * p_up / eta_up ** 2 + 2.0 * (1.0 - p_up) / eta_down ** 2
    mean = (mu - 0.5 * sigma ** 2 - lam * kappa) * t + lam * t * mean_jump
    var = sigma ** 2 * t + lam * t * second
    return mean, var


# --------------------------------------------------------------------- Hawkes
def hawkes_stationary_intensity(baseline: float, excitation: float, decay: float) -> float:
    """Stationary mean intensity ``baseline / (1 − α/β)`` of a Hawkes process, per year.

    Raises
    ------
    ValueError
        If the branching ratio ``excitation / decay`` is not below 1 (no stationary state).
    """
    ratio = excitation / decay
    if not ratio < 1:
        raise ValueError(f"branching ratio excitation/decay = {ratio!r} must be < 1")
    return baseline / (1.0 - ratio)


def poisson_quantile_python(u, mean):
    """Smallest ``k`` with ``P(N ≤ k) > u`` for ``N ~ Poisson(mean)``: a draw by inversion.

    Linear search up from 0, a single comparison for the small means of one-minute
    steps. From a mean of 600 on, the search starts at ``mean − 40·√mean`` (the mass
    below is under ``exp(−800)``) and works in log space, where ``exp(−mean)`` would
    underflow.
    """
    if not mean > 0.0:
        return 0
    k = 0
    if mean < 600.0:
        if u < 1.0 - mean:  # P(N = 0) = exp(−mean) > 1 − mean: no exp needed (most steps)
            return 0
        p = math.exp(-mean)
        cdf = p
        while cdf <= u:
            k += 1
            p *= mean / k
            cdf += p
            if k > mean and p < 1e-17 * cdf:  # rounding: the rest of the tail adds nothing
                break
        return k
    # P(N < mean − 40·√mean) < exp(−800): start there rather than at 0.
    k = max(0, int(mean - 40.0 * math.sqrt(mean)))
    log_mean = math.log(mean)
    cdf = 0.0
    while True:
        p = math.exp(k * log_mean - mean - math.lgamma(k + 1.0))
        cdf += p
        if cdf > u or (k > mean and p < 1e-17 * cdf):
            return k
        k += 1


poisson_quantile = njit(cache=True)(poisson_quantile_python)


def hawkes_counts_python(uniforms, dt, baseline, decay_factor, kick, intensity0, counts,
                         intensity):
    """Jump counts and mean intensities of one side of a discretised Hawkes process.

    Parameters
    ----------
    uniforms : ndarray of float64, shape (steps,)
        Pre-drawn uniforms on [0, 1), one per step (the Poisson draws by inversion).
    dt : float
        Step length, years.
    baseline : float
        Baseline intensity, per year.
    decay_factor : float
        ``exp(−β·dt)``.
    kick : float
        ``α_dt = α·(1 − exp(−β·dt)) / (β·dt)``: what one jump adds to the next step's
        mean intensity, per year.
    intensity0 : float
        Mean intensity of the first step, per year.
    counts : ndarray of int64, shape (steps,)
        Output: jumps in each step.
    intensity : ndarray of float64, shape (steps,)
        Output: mean intensity over each step, per year.

    Returns
    -------
    int
        Total number of jumps, ``counts.sum()``.
    """
    # The state is the excess over the baseline: on the usual step without a jump the
    # loop-carried work is then a single multiplication, and the search is skipped
    # (u < 1 − mean < exp(−mean) = P(N = 0), as in poisson_quantile).
    excess = intensity0 - baseline
    total = 0
    for k in range(uniforms.shape[0]):
        lam = baseline + excess
        intensity[k] = lam
        mean = lam * dt
        n = 0
        if not uniforms[k] < 1.0 - mean:
            n = poisson_quantile(uniforms[k], mean)
        counts[k] = n
        excess *= decay_factor
        if n > 0:
            excess += kick * n
            total += n
    return total


hawkes_counts = njit(cache=True)(hawkes_counts_python)


@dataclass(frozen=True)
class HawkesJumps:
    """Jumps of one two-sided Hawkes path; arrays per step have length ``steps``."""

    counts_up: np.ndarray  # int64: up jumps per step
    counts_down: np.ndarray  # int64: down jumps per step
    intensity_up: np.ndarray  # mean up intensity over each step, per year
    intensity_down: np.ndarray  # mean down intensity over each step, per year
    sizes_up: np.ndarray  # up log sizes (> 0), in step order
    sizes_down: np.ndarray  # down log magnitudes (> 0; the jump is −size), in step order


def _side_counts(uniforms, dt, side):
    steps = uniforms.shape[0]
    counts = np.empty(steps, dtype=np.int64)
    intensity = np.empty(steps)
    x = side.decay * dt
    kick = side.excitation * (-math.expm1(-x) / x)
    lam0 = hawkes_stationary_intensity(side.baseline, side.excitation, side.decay)
    total = hawkes_counts(uniforms, dt, side.baseline, math.exp(-x), kick, lam0, counts,
                          intensity)
    return counts, intensity, total


def _exponentials(rng, n, mean):
    # Drawing nothing leaves the stream as it is: skipping the call changes no path.
    return rng.standard_exponential(n) * mean if n else np.empty(0)


def hawkes_jumps(steps: int, dt: float, up, down, rng: np.random.Generator) -> HawkesJumps:
    """Jumps of a two-sided Hawkes process, started at its stationary mean intensity.

    Parameters
    ----------
    steps : int
        Number of steps.
    dt : float
        Step length, years.
    up, down : HawkesSide
        Each side's ``baseline``, ``excitation`` (α) and ``decay`` (β), per year, and
        ``mean_size`` (mean of the exponential law of the log size or magnitude).
    rng : numpy.random.Generator
        The path's stream. Draws, in order: ``2·steps`` uniforms (up, then down),
        then the up sizes, then the down sizes (standard exponentials).

    Returns
    -------
    HawkesJumps
        See the module docstring for the discretisation.
    """
    u = rng.random((2, steps))
    counts_up, lam_up, n_up = _side_counts(u[0], dt, up)
    counts_down, lam_down, n_down = _side_counts(u[1], dt, down)
    sizes_up = _exponentials(rng, n_up, up.mean_size)
    sizes_down = _exponentials(rng, n_down, down.mean_size)
    return HawkesJumps(counts_up, counts_down, lam_up, lam_down, sizes_up, sizes_down)


def hawkes_kappas(up_mean_size: float, down_mean_size: float) -> tuple[float, float]:
    """``E[e^J] − 1`` of an up jump ``+Exp(mean m_up)`` and a down jump ``−Exp(mean m_down)``."""
    return 1.0 / (1.0 - up_mean_size) - 1.0, 1.0 / (1.0 + down_mean_size) - 1.0


def hawkes_log_increments(steps: int, dt: float, mu: float, sigma: float, up, down,
                          rng: np.random.Generator) -> np.ndarray:
    """Log-price increments of a two-sided Hawkes jump-diffusion.

    ``d log S = (mu − σ²/2 − λ̄_up·κ_up − λ̄_down·κ_down) dt + σ dW + Σ J``, with the
    stationary mean intensities ``λ̄`` (:func:`hawkes_stationary_intensity`) and
    ``κ`` from :func:`hawkes_kappas`: ``E[S_t] ≈ S_0·exp(mu·t)`` (see the module
    docstring for how close). The normal draws come first, as for GBM, then
    :func:`hawkes_jumps`.
    """
    z = rng.standard_normal(steps)
    jumps = hawkes_jumps(steps, dt, up, down, rng)
    k_up, k_down = hawkes_kappas(up.mean_size, down.mean_size)
    lam_up = hawkes_stationary_intensity(up.baseline, up.excitation, up.decay)
    lam_down = hawkes_stationary_intensity(down.baseline, down.excitation, down.decay)
    with np.errstate(over="ignore", invalid="ignore"):
        drift = (mu - 0.5 * sigma ** 2 - lam_up * k_up - lam_down * k_down) * dt
        inc = drift + sigma * math.sqrt(dt) * z
        if jumps.sizes_up.size:
            inc += _per_step(jumps.counts_up, jumps.sizes_up, steps)
        if jumps.sizes_down.size:
            inc -= _per_step(jumps.counts_down, jumps.sizes_down, steps)
    return inc


def hawkes_log_return_mean(t: float, mu: float, sigma: float, up, down) -> float:
    """``E[log(S_t / S_0)]`` of :func:`hawkes_log_increments`, exact for this discretisation.

    Every step's expected count is ``λ̄·dt``, so the mean is that of Poisson jumps at the
    stationary rates: ``(mu − σ²/2 − Σ λ̄κ)·t + (λ̄_up·m_up − λ̄_down·m_down)·t``.
    """
    k_up, k_down = hawkes_kappas(up.mean_size, down.mean_size)
    lam_up = hawkes_stationary_intensity(up.baseline, up.excitation, up.decay)
    lam_down = hawkes_stationary_intensity(down.baseline, down.excitation, down.decay)
    return ((mu - 0.5 * sigma ** 2 - lam_up * k_up - lam_down * k_down) * t
            + (lam_up * up.mean_size - lam_down * down.mean_size) * t)


def _per_step(counts, sizes, steps):
    """Sum of each step's jumps, given the counts per step and the sizes in step order."""
    owner = np.repeat(np.arange(steps), counts)
    return np.bincount(owner, weights=sizes, minlength=steps)
