"""Maximum-likelihood calibration of the jump-diffusions to a price series.

``fit(prices_or_returns, dt_years, model)`` estimates the parameters of a
``merton``, ``kou`` or ``hawkes`` market (the config's names and units: per
year, a year of 365 days) from the log returns of a price series sampled every
``dt_years``; ``load_prices`` reads such a series from a CSV. The command
``stress calibrate`` prints the fit and a ``market:`` block for a config.

Likelihoods
-----------
Each log return ``x`` over a period ``dt`` is ``m + σ√dt·Z + (jumps)``, with
the drift ``m = (mu − σ²/2 − λκ)·dt`` that makes ``E[S_t] = S_0·exp(mu·t)``,
as in :mod:`stress.market.paths` and :mod:`stress.market.jumps`.

* **merton** (exact up to truncation): a Poisson mixture of normals,
  ``Σ_n Poisson(n; λdt)·N(m + n·jump_mean, σ²dt + n·jump_std²)``, summed until
  the Poisson weight falls below 1e-12 (at most 100 terms);
  ``κ = exp(jump_mean + jump_std²/2) − 1``.
* **kou** (approximate): **at most one jump per period**, with probability
  ``λdt`` (so the expected count per period is exact). The density is
  ``(1 − λdt)·N(m, σ²dt) + λdt·[p·(N ⊗ Exp(η₁)) + (1 − p)·(N ⊗ −Exp(η₂))]``,
  the convolutions in closed form with the normal cdf. Two or more jumps in a
  period have probability ≈ ``(λdt)²/2``; the approximation is good for
  ``λdt ≲ 0.05`` (``FitResult.notes`` says when it is not).
  ``κ = p·η₁/(η₁ − 1) + (1 − p)·η₂/(η₂ + 1) − 1``.
* **hawkes** (approximate): each side jumps at most once per period, with
  probability ``q_t = 1 − exp(−λ_t·dt)``; up and down jumps are independent
  given the intensities, so a return is a mixture of four closed-form parts
  (no jump, up, down, both). The intensities follow the discretisation of
  :mod:`stress.market.jumps`, with the unobserved jump count replaced by its
  filtered probability::

      λ_{t+1} = baseline + (λ_t − baseline)·exp(−β·dt) + α_dt·P(jump at t | x_1..x_t),
      α_dt    = α·(1 − exp(−β·dt)) / (β·dt),

  starting at the stationary mean ``baseline / (1 − α/β)``. The exact
  likelihood sums over every jump history and is intractable; this filter is
  exact when jumps are plainly visible (a jump much larger than ``σ√dt``) and
  otherwise replaces the distribution of the intensity given the data by its
  mean. The kick ``α_dt`` (→ α as dt → 0) is the generator's, so the fitted
  parameters mean the same thing there. The drift uses the stationary
  intensities, as the generator does. The branching ratio α/β is kept below
  0.99.

Estimation
----------
Parameters are mapped to an unconstrained space (logs, logits; sizes and the
drift scaled by the sample standard deviation of the returns) and the mean
negative log-likelihood is minimised by L-BFGS-B (finite-difference
gradients). Starting points: ``sigma`` from the median absolute deviation
(robust to jumps), a grid of jump probabilities per period (0.002 to 0.15) and
jump sizes from the variance left over; ten iterations from each, then the
best is run to convergence. A wide box in the unconstrained space keeps the
search away from the degenerate corners of mixtures (a component of zero
variance on one return): from 0.1 jumps in the sample to 0.5 per period
(Merton: 2), a branching ratio up to 0.99, jump sizes from 0.3 to 100 return
standard deviations. ``FitResult.at_bound`` names an estimate on its edge.

Standard errors come from the inverse of a central-difference Hessian of the
negative log-likelihood in the natural parameters (scaled per parameter, so
the steps are relative). If that Hessian is not positive definite (a
parameter on the edge of the box, or one the data do not identify) the
standard errors are NaN and ``FitResult.hessian_ok`` is False: a moving-block
bootstrap (``fit(..., bootstrap=N)``, ``stress calibrate --bootstrap N``)
gives standard errors that need no Hessian and also hold when the model is
wrong (returns cluster in volatility, which none of these models has).

Goodness of fit: the probability integral transform ``u_t = F_t(x_t)`` of each
return under the fitted model (the model's cdf; for hawkes the one-step-ahead
predictive cdf given the filtered intensities) is tested for uniformity with
Kolmogorov–Smirnov. The parameters being estimated from the same data make
the p-value conservative (too large).

On real prices
--------------
None of these models has stochastic volatility, and on BTC the likelihood
explains volatility clusters by frequent mid-sized jumps: daily closes from
2015 give Merton ≈ 270 jumps a year of std ≈ 4 % (the profile log-likelihood
at 14 a year is ≈ 235 lower), hourly ones ≈ 2,700 a year of ≈ 1.2 %; Kou and
Hawkes push their jump rates to the 0.5-per-period edge. Threshold-based
studies count ≈ 14–36 crash jumps a year. For a crash stress test, read the
fitted rate of jumps beyond a threshold, not the raw intensity.
"""

from __future__ import annotations

import csv
import math
import re
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from scipy import optimize, special, stats

from stress._jit import njit
from stress.errors import StressError

YEAR_SECONDS = 365 * 86_400
TIME_COLUMNS = ("timestamp", "date", "unix", "open_time", "time")
MODELS = ("merton", "kou", "hawkes")
MIN_RETURNS = 30

PARAM_NAMES = {
    "merton": ("mu", "sigma", "jump_intensity", "jump_mean", "jump_std"),
    "kou": ("mu", "sigma", "jump_intensity", "p_up", "eta_up", "eta_down"),
    "hawkes": ("mu", "sigma", "up.baseline", "up.excitation", "up.decay", "up.mean_size",
               "down.baseline", "down.excitation", "down.decay", "down.mean_size"),
}

# What the optimiser searches over (one per parameter, in order); used to name an estimate
# stuck on the edge of the search box.
_SEARCH_NAMES = {
    "merton": PARAM_NAMES["merton"],
    "kou": PARAM_NAMES["kou"],
    "hawkes": ("mu", "sigma") + tuple(
        f"{side}.{name}" for side in ("up", "down")
        for name in ("stationary_intensity", "branching_ratio", "decay", "mean_size")),
}

_LOG_2PI = math.log(2.0 * math.pi)
_MAX_RATIO = 0.99  # Hawkes branching ratio cap
_BAD = 1e10  # mean NLL returned for invalid parameters (L-BFGS-B needs a finite value)


class CalibrationError(StressError, ValueError):
    """Bad input to the calibration (file, column, prices, model name): one line."""


# ====================================================================== data
def _fail_row(name: str, row: int, line: int, column: str, message: str, raw) -> CalibrationError:
    return CalibrationError(f"{name} row {row} (line {line}), column {column}: {message}, "
                            f"got {raw!r}")


def _find_column(header: list[str], wanted: str) -> int | None:
    if wanted in header:
        return header.index(wanted)
    folded = [i for i, c in enumerate(header) if c.lower() == wanted.lower()]
    return folded[0] if len(folded) == 1 else None


def _parse_times(raw: list[str], name: str, rows: list[int], lines: list[int],
                 column: str) -> np.ndarray:
    """Time stamps as int64 milliseconds since the epoch (UTC)."""
    try:
        values = np.asarray([float(v) for v in raw])
    except ValueError:
        values = None
    if values is not None:
        if not np.all(np.isfinite(values)):
            i = int(np.flatnonzero(~np.isfinite(values))[0])
            raise _fail_row(name, rows[i], lines[i], column, "not a finite time stamp", raw[i])
        # Epoch unit from the magnitude: seconds until the year 5138, then ms, µs, ns.
        big = float(np.median(np.abs(values)))
        scale = 1e3 if big < 1e11 else 1.0 if big < 1e14 else 1e-3 if big < 1e17 else 1e-6
        return np.round(values * scale).astype(np.int64)
    out = np.empty(len(raw), dtype=np.int64)
    for i, v in enumerate(raw):
        try:
            t = datetime.fromisoformat(v)
        except ValueError:
            raise _fail_row(name, rows[i], lines[i], column,
                            "not an epoch number or an ISO date/time", v) from None
        if t.tzinfo is None:
            t = t.replace(tzinfo=timezone.utc)
        out[i] = round(t.timestamp() * 1000.0)
    return out


_FREQ = re.compile(r"^\s*(\d+(?:\.\d+)?)?\s*(s|sec|min|t|h|hr|hour|d|day|w|week)s?\s*$",
                   re.IGNORECASE)
_FREQ_SECONDS = {"s": 1, "sec": 1, "min": 60, "t": 60, "h": 3600, "hr": 3600, "hour": 3600,
                 "d": 86_400, "day": 86_400, "w": 604_800, "week": 604_800}


def parse_freq(freq: str) -> float:
    """Seconds in a frequency such as ``1h``, ``15min``, ``1d``, ``30s``, ``1w``."""
    m = _FREQ.match(str(freq))
    if not m:
        raise CalibrationError(f"--freq: expected a number and a unit (s, min, h, d, w) such as "
                               f"1h, 15min or 1d, got {freq!r}")
    seconds = float(m.group(1) or 1.0) * _FREQ_SECONDS[m.group(2).lower()]
    if not seconds > 0:
        raise CalibrationError(f"--freq: must be a positive step, got {freq!r}")
    return seconds


def resample_last(times: np.ndarray, prices: np.ndarray,
                  step_seconds: float) -> tuple[np.ndarray, np.ndarray, int]:
    """Last price in each bin of ``step_seconds`` (bins aligned to the epoch, UTC).

    Returns the bin start times (``datetime64[ms]``), the prices and the number
    of empty bins inside the range, which carry the previous price forward
    (a zero return: a gap in the data is not a flat market, so check this count).
    """
    t = np.asarray(times).astype("datetime64[ms]").astype(np.int64)
    step = int(round(step_seconds * 1000))
    bins = np.floor_divide(t, step)
    last = np.flatnonzero(np.r_[bins[1:] != bins[:-1], True])
    b, p = bins[last], np.asarray(prices, dtype=np.float64)[last]
    grid = np.arange(b[0], b[-1] + 1)
    pos = np.searchsorted(b, grid, side="right") - 1  # index of the last filled bin ≤ grid
    return (grid * step).astype("datetime64[ms]"), p[pos], int(grid.size - b.size)


def load_prices(path: str | Path, column: str = "close", time_column: str | None = None,
                freq: str | None = None, *, start: str | None = None,
                end: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Time stamps and prices of a CSV, in increasing time.

    Parameters
    ----------
    path : str or Path
        CSV with a header row. A first line that is not CSV (one field, such as
        the URL line of CryptoDataDownload files) is skipped.
    column : str
        Price column (an exact match, else a unique case-insensitive one).
    time_column : str, optional
        Time column; by default the first of ``timestamp``, ``date``, ``unix``,
        ``open_time``, ``time`` present. Epoch numbers (s, ms, µs or ns, told
        apart by size) or ISO dates/times; naive times are UTC.
    freq : str, optional
        Resample to this step (``1h``, ``1d``, ``15min``): last price per bin,
        bins labelled by their start; empty bins carry the last price forward.
    start, end : str, optional
        Keep rows with ``start ≤ time < end`` (ISO dates, UTC).

    Returns
    -------
    times : ndarray of datetime64[ms]
    prices : ndarray of float64

    Rows are sorted by time (newest-first files are common) and a repeated time
    keeps its first row in file order. Raises :class:`CalibrationError` (one
    line naming the file, and the row and the column for a bad value) for a
    missing file or column, a NaN, empty or non-positive price, an unreadable
    time, or fewer than two rows.
    """
    path = Path(path)
    name = path.name
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            table = list(csv.reader(fh))
    except FileNotFoundError:
        raise CalibrationError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise CalibrationError(f"{path}: is a directory, not a CSV file") from None
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise CalibrationError(f"{path}: cannot read: {e}") from None
    skip = 1 if len(table) > 1 and len(table[0]) <= 1 and len(table[1]) > 1 else 0
    if len(table) <= skip:
        raise CalibrationError(f"{name}: empty file")
    header = [c.strip() for c in table[skip]]
    ci = _find_column(header, column)
    if ci is None:
        raise CalibrationError(f"{name}: no column {column!r} (columns: {', '.join(header)})")
    if time_column is not None:
        ti = _find_column(header, time_column)
        if ti is None:
            raise CalibrationError(f"{name}: no time column {time_column!r} "
                                   f"(columns: {', '.join(header)})")
    else:
        found = [_find_column(header, c) for c in TIME_COLUMNS]
        found = [i for i in found if i is not None]
        if not found:
            raise CalibrationError(f"{name}: no time column (looked for "
                                   f"{', '.join(TIME_COLUMNS)}); name it with --time-column")
        ti = found[0]
    price_name, time_name = header[ci], header[ti]
    prices, raw_times, rows, lines = [], [], [], []
    for k, rec in enumerate(table[skip + 1:]):
        if not any(c.strip() for c in rec):
            continue  # blank line
        row, line = k + 1, skip + k + 2
        raw = rec[ci].strip() if ci < len(rec) else ""
        try:
            v = float(raw)
        except ValueError:
            raise _fail_row(name, row, line, price_name,
                            "missing value" if raw == "" else "not a number", raw) from None
        if not (math.isfinite(v) and v > 0):
            raise _fail_row(name, row, line, price_name, "price must be a finite number > 0",
                            raw)
        rt = rec[ti].strip() if ti < len(rec) else ""
        if rt == "":
            raise _fail_row(name, row, line, time_name, "missing time", rt)
        prices.append(v)
        raw_times.append(rt)
        rows.append(row)
        lines.append(line)
    if len(prices) < 2:
        raise CalibrationError(f"{name}: {len(prices)} data row(s); at least 2 prices are needed")
    t = _parse_times(raw_times, name, rows, lines, time_name)
    p = np.asarray(prices)
    order = np.argsort(t, kind="stable")
    t, p = t[order], p[order]
    keep = np.r_[True, t[1:] != t[:-1]]
    t, p = t[keep], p[keep]
    times = t.astype("datetime64[ms]")
    if start is not None or end is not None:
        sel = np.ones(times.size, dtype=bool)
        for bound, op in ((start, np.greater_equal), (end, np.less)):
            if bound is None:
                continue
            try:
                b = datetime.fromisoformat(str(bound))
            except ValueError:
                raise CalibrationError(f"not an ISO date: {bound!r}") from None
            if b.tzinfo is None:
                b = b.replace(tzinfo=timezone.utc)
            sel &= op(t, round(b.timestamp() * 1000.0))
        times, p = times[sel], p[sel]
        if times.size < 2:
            raise CalibrationError(f"{name}: {times.size} row(s) between {start or 'the start'} "
                                   f"and {end or 'the end'}; at least 2 prices are needed")
    if freq is not None:
        times, p, _ = resample_last(times, p, parse_freq(freq))
    return times, p


def median_step_seconds(times: np.ndarray) -> float:
    """Median time between consecutive stamps, seconds."""
    d = np.diff(np.asarray(times).astype("datetime64[ms]").astype(np.int64))
    return float(np.median(d)) / 1000.0


# ================================================================= densities
def _logsumexp0(a):
    """``log Σ exp`` over axis 0 (the parts of a mixture); each column has a finite entry."""
    top = a.max(axis=0)
    return top + np.log(np.exp(a - top).sum(axis=0))


def _norm_logpdf(x, mean, var):
    return -0.5 * (_LOG_2PI + np.log(var)) - 0.5 * (x - mean) ** 2 / var


def _exp_conv_logpdf(y, sd, eta):
    """log density of ``N(0, sd²) + Exp(rate eta)`` at ``y`` (use ``−y`` for ``−Exp``)."""
    return np.log(eta) + 0.5 * (eta * sd) ** 2 - eta * y + special.log_ndtr(y / sd - eta * sd)


def _exp_conv_cdf_up(y, sd, eta):
    """cdf of ``N(0, sd²) + Exp(eta)``: ``Φ(y/sd) − exp(η²sd²/2 − ηy)·Φ(y/sd − η·sd)``."""
    return special.ndtr(y / sd) - np.exp(0.5 * (eta * sd) ** 2 - eta * y
                                         + special.log_ndtr(y / sd - eta * sd))


def _exp_conv_cdf_down(y, sd, eta):
    """cdf of ``N(0, sd²) − Exp(eta)``: ``Φ(y/sd) + exp(η²sd²/2 + ηy)·Φ(−y/sd − η·sd)``."""
    return special.ndtr(y / sd) + np.exp(0.5 * (eta * sd) ** 2 + eta * y
                                         + special.log_ndtr(-y / sd - eta * sd))


def _poisson_terms(mean: float) -> int:
    """Largest jump count kept: the Poisson weight has fallen below 1e-12 (≤ 100, ≥ 1)."""
    n, logw = 0, -mean
    log_mean = math.log(mean) if mean > 0 else -math.inf
    while n < 100:
        n += 1
        logw += log_mean - math.log(n)
        if n > mean and logw < math.log(1e-12):
            break
    return n


# ------------------------------------------------------------------ merton
def _merton_parts(p, dt):
    mu, sigma, lam, jm, js = p
    kappa = math.exp(jm + 0.5 * js * js) - 1.0
    m = (mu - 0.5 * sigma ** 2 - lam * kappa) * dt
    L = lam * dt
    n = np.arange(_poisson_terms(L) + 1)
    logw = -L + n * math.log(L) - special.gammaln(n + 1) if L > 0 else np.where(n == 0, 0.0,
                                                                                  -np.inf)
    return m, n, logw


def _merton_loglik(p, x, dt):
    mu, sigma, lam, jm, js = p
    if not (sigma > 0 and lam >= 0 and js >= 0):
        return -math.inf
    m, n, logw = _merton_parts(p, dt)
    mean = m + n[:, None] * jm
    var = sigma ** 2 * dt + n[:, None] * js ** 2
    return float(np.sum(_logsumexp0(logw[:, None] + _norm_logpdf(x, mean, var))))


def _merton_pit(p, x, dt):
    mu, sigma, lam, jm, js = p
    m, n, logw = _merton_parts(p, dt)
    sd = np.sqrt(sigma ** 2 * dt + n[:, None] * js ** 2)
    return np.exp(logw) @ special.ndtr((x - m - n[:, None] * jm) / sd)


# --------------------------------------------------------------------- kou
def _kou_kappa(p_up, eta_up, eta_down):
    return p_up * eta_up / (eta_up - 1.0) + (1.0 - p_up) * eta_down / (eta_down + 1.0) - 1.0


def _kou_loglik(p, x, dt):
    mu, sigma, lam, pu, e1, e2 = p
    L = lam * dt
    if not (sigma > 0 and 0 <= L < 1 and 0 <= pu <= 1 and e1 > 1 and e2 > 0):
        return -math.inf
    m = (mu - 0.5 * sigma ** 2 - lam * _kou_kappa(pu, e1, e2)) * dt
    sd = sigma * math.sqrt(dt)
    y = x - m
    with np.errstate(divide="ignore"):
        parts = np.stack([
            math.log1p(-L) + _norm_logpdf(y, 0.0, sd * sd),
            math.log(L * pu) + _exp_conv_logpdf(y, sd, e1),
            math.log(L * (1.0 - pu)) + _exp_conv_logpdf(-y, sd, e2),
        ])
    return float(np.sum(_logsumexp0(parts)))


def _kou_pit(p, x, dt):
    mu, sigma, lam, pu, e1, e2 = p
    L = lam * dt
    m = (mu - 0.5 * sigma ** 2 - lam * _kou_kappa(pu, e1, e2)) * dt
    sd = sigma * math.sqrt(dt)
    y = x - m
    return ((1.0 - L) * special.ndtr(y / sd) + L * pu * _exp_conv_cdf_up(y, sd, e1)
            + L * (1.0 - pu) * _exp_conv_cdf_down(y, sd, e2))


# ------------------------------------------------------------------ hawkes
_SQRT2 = math.sqrt(2.0)


def log_ndtr_python(z):
    """``log Φ(z)`` of a standard normal, accurate in both tails (scalar, numba-friendly)."""
    if z > 0.0:
        return math.log1p(-0.5 * math.erfc(z / _SQRT2))
    if z > -37.0:
        return math.log(0.5 * math.erfc(-z / _SQRT2))
    # Asymptotic series; below z = −37 its error is under 1e-16.
    w = 1.0 / (z * z)
    series = 1.0 - w * (1.0 - 3.0 * w * (1.0 - 5.0 * w * (1.0 - 7.0 * w)))
    return -0.5 / w - math.log(-z) - 0.5 * _LOG_2PI + math.log(series)


log_ndtr = njit(cache=True)(log_ndtr_python)


def hawkes_filter_python(y, sd, eta_up, eta_down, dt, base_u, decay_u, kick_u, lam_u,
                         base_d, decay_d, kick_d, lam_d, q_up, q_down):
    """Filtered log-likelihood of the discrete two-sided Hawkes model (see the module docstring).

    Parameters
    ----------
    y : ndarray of float64, shape (n,)
        Log returns minus the drift per period.
    sd : float
        Diffusive standard deviation per period, ``σ·√dt``.
    eta_up, eta_down : float
        Rates of the exponential jump sizes (``1 / mean_size``).
    dt : float
        Period, years.
    base_u, decay_u, kick_u, lam_u : float
        Up side: baseline (per year), ``exp(−β·dt)``, ``α_dt`` and the first intensity.
    base_d, decay_d, kick_d, lam_d : float
        The same for the down side.
    q_up, q_down : ndarray of float64, shape (n,)
        Output: each period's jump probabilities ``1 − exp(−λ·dt)``.

    Returns
    -------
    float
        The log-likelihood; −inf if a return has zero density.
    """
    c0 = -0.5 * _LOG_2PI - math.log(sd)
    cu = math.log(eta_up) + 0.5 * (eta_up * sd) ** 2
    cd = math.log(eta_down) + 0.5 * (eta_down * sd) ** 2
    # Up minus down exponential = pb·(+Exp(eta_up)) + (1 − pb)·(−Exp(eta_down)).
    pb = eta_down / (eta_up + eta_down)
    total = 0.0
    for t in range(y.shape[0]):
        r = y[t] / sd
        l0 = c0 - 0.5 * r * r
        lu = cu - eta_up * y[t] + log_ndtr(r - eta_up * sd)
        ld = cd + eta_down * y[t] + log_ndtr(-r - eta_down * sd)
        top = max(l0, max(lu, ld))
        f0 = math.exp(l0 - top)
        fu = math.exp(lu - top)
        fd = math.exp(ld - top)
        qu = -math.expm1(-lam_u * dt)
        qd = -math.expm1(-lam_d * dt)
        q_up[t] = qu
        q_down[t] = qd
        a0 = (1.0 - qu) * (1.0 - qd) * f0
        au = qu * (1.0 - qd) * fu
        ad = (1.0 - qu) * qd * fd
        ab = qu * qd * (pb * fu + (1.0 - pb) * fd)
        like = a0 + au + ad + ab
        if not like > 0.0:
            return -math.inf
        total += top + math.log(like)
        lam_u = base_u + (lam_u - base_u) * decay_u + kick_u * ((au + ab) / like)
        lam_d = base_d + (lam_d - base_d) * decay_d + kick_d * ((ad + ab) / like)
    return total


hawkes_filter = njit(cache=True)(hawkes_filter_python)


def _hawkes_side(base, alpha, beta, dt):
    x = beta * dt
    return math.exp(-x), alpha * (-math.expm1(-x) / x), base / (1.0 - alpha / beta)


def _hawkes_run(p, x, dt, kernel=None):
    """Log-likelihood, jump probabilities per period and the parts needed by the pit."""
    mu, sigma, bu, au, betu, mu_u, bd, ad, betd, md = p
    ok = (sigma > 0 and bu >= 0 and bd >= 0 and au >= 0 and ad >= 0 and betu > 0 and betd > 0
          and au < _MAX_RATIO * betu * (1 + 1e-9) and ad < _MAX_RATIO * betd * (1 + 1e-9)
          and 0 < mu_u < 1 and md > 0)
    if not ok:
        return -math.inf, None
    dec_u, kick_u, lbar_u = _hawkes_side(bu, au, betu, dt)
    dec_d, kick_d, lbar_d = _hawkes_side(bd, ad, betd, dt)
    k_u, k_d = 1.0 / (1.0 - mu_u) - 1.0, 1.0 / (1.0 + md) - 1.0
    m = (mu - 0.5 * sigma ** 2 - lbar_u * k_u - lbar_d * k_d) * dt
    sd = sigma * math.sqrt(dt)
    y = x - m
    e1, e2 = 1.0 / mu_u, 1.0 / md
    qu, qd = np.empty(x.size), np.empty(x.size)
    ll = (kernel or hawkes_filter)(y, sd, e1, e2, dt, bu, dec_u, kick_u, lbar_u, bd, dec_d,
                                   kick_d, lbar_d, qu, qd)
    return ll, (qu, qd, y, sd, e1, e2, e2 / (e1 + e2))


def _hawkes_loglik(p, x, dt):
    return _hawkes_run(p, x, dt)[0]


def _hawkes_pit(p, x, dt):
    _, (qu, qd, y, sd, e1, e2, pb) = _hawkes_run(p, x, dt)
    cu, cd = _exp_conv_cdf_up(y, sd, e1), _exp_conv_cdf_down(y, sd, e2)
    return ((1 - qu) * (1 - qd) * special.ndtr(y / sd) + qu * (1 - qd) * cu
            + (1 - qu) * qd * cd + qu * qd * (pb * cu + (1 - pb) * cd))


# ============================================================ parametrisation
@dataclass(frozen=True)
class _Scale:
    """Sample facts that set the scale of the unconstrained parameters."""

    n: int
    dt: float
    s: float  # standard deviation of the returns per period
    s_robust: float  # 1.4826 × MAD: the diffusive part, little moved by jumps
    mean: float


def _logit(p):
    return math.log(p / (1.0 - p))


def _expit(z):
    return 1.0 / (1.0 + math.exp(-z))


def _to_natural(model: str, z: np.ndarray, c: _Scale) -> np.ndarray:
    s, dt = c.s, c.dt
    mu = z[0] * s / dt
    sigma = math.exp(z[1]) * s / math.sqrt(dt)
    if model == "merton":
        return np.array([mu, sigma, math.exp(z[2]) / dt, z[3] * s, math.exp(z[4]) * s])
    if model == "kou":
        return np.array([mu, sigma, math.exp(z[2]) / dt, _expit(z[3]),
                         1.0 + math.exp(z[4]) / s, math.exp(z[5]) / s])
    out = [mu, sigma]
    for k in (2, 6):
        # z[k] is the stationary intensity, better determined than the baseline.
        beta, ratio = math.exp(z[k + 2]) / dt, _MAX_RATIO * _expit(z[k + 1])
        out += [math.exp(z[k]) / dt * (1.0 - ratio), ratio * beta, beta, math.exp(z[k + 3]) * s]
    return np.array(out)


def _from_natural(model: str, p: np.ndarray, c: _Scale) -> np.ndarray:
    s, dt = c.s, c.dt
    head = [p[0] * dt / s, math.log(p[1] * math.sqrt(dt) / s)]
    if model == "merton":
        return np.array(head + [math.log(p[2] * dt), p[3] / s, math.log(p[4] / s)])
    if model == "kou":
        return np.array(head + [math.log(p[2] * dt), _logit(p[3]), math.log((p[4] - 1.0) * s),
                                math.log(p[5] * s)])
    for k in (2, 6):
        head += [math.log(p[k] / (1.0 - p[k + 1] / p[k + 2]) * dt),
                 _logit(p[k + 1] / p[k + 2] / _MAX_RATIO),
                 math.log(p[k + 2] * dt), math.log(p[k + 3] / s)]
    return np.array(head)


def _bounds(model: str, c: _Scale) -> list[tuple[float, float]]:
    rate = (math.log(0.1 / c.n), math.log(0.5))  # 0.1 jumps in the sample .. 0.5 per period
    size = (math.log(0.3), math.log(100.0))  # jump sizes 0.3 .. 100 return std
    head = [(-1.0, 1.0), (math.log(0.01), math.log(2.0))]
    if model == "merton":
        return head + [(rate[0], math.log(2.0)), (-100.0, 100.0), (math.log(0.05), size[1])]
    if model == "kou":
        eta = (-size[1], -size[0])  # log(η·s) = −log(mean size / s)
        return head + [rate, (-10.0, 10.0), eta, eta]
    # Hawkes searches log(mean_size / s); an up mean size must stay below 1 (0.95 here).
    up_size = (size[0], min(size[1], math.log(0.95 / c.s)))
    side = [rate, (-12.0, 12.0), (math.log(1e-3), math.log(10.0))]
    return head + side + [up_size] + side + [size]


def _natural_jacobian(model: str, p: np.ndarray, c: _Scale) -> np.ndarray:
    """A natural scale of each parameter (about ``|dp_i/dz_i|``): the Hessian's step unit."""
    if model == "merton":
        return np.array([c.s / c.dt, p[1], p[2], c.s, p[4]])
    if model == "kou":
        return np.array([c.s / c.dt, p[1], p[2], p[3] * (1 - p[3]), p[4] - 1.0, p[5]])
    out = [c.s / c.dt, p[1]]
    for k in (2, 6):
        r = p[k + 1] / p[k + 2] / _MAX_RATIO
        out += [p[k], p[k + 1] * (1.0 - r), p[k + 2], p[k + 3]]
    return np.array(out)


def _starts(model: str, c: _Scale) -> list[np.ndarray]:
    """Starting points: moment-based sigma and a grid of jump probabilities per period."""
    var_d = min(c.s_robust, 0.95 * c.s) ** 2
    grid = [L for L in (0.002, 0.01, 0.04, 0.15) if L >= 2.0 / c.n] or [2.0 / c.n]
    starts = []
    for L in grid:
        jump_second = max(c.s ** 2 - var_d, 0.1 * c.s ** 2) / L  # E[J²]
        sigma = math.sqrt(var_d / c.dt)
        mu = c.mean / c.dt
        if model == "merton":
            p = [mu, sigma, L / c.dt, 0.0, math.sqrt(jump_second)]
        elif model == "kou":
            size = math.sqrt(jump_second / 2.0)
            p = [mu, sigma, L / c.dt, 0.5, 1.0 + 1.0 / size, 1.0 / size]
        else:
            size = min(math.sqrt(jump_second / 2.0), 0.5)
            ratio, beta = 0.3, 0.1 / c.dt
            side = [0.5 * L * (1 - ratio) / c.dt, ratio * beta, beta]  # λ̄ = L/2 per side
            p = [mu, sigma] + side + [size] + side + [size]
        z = _from_natural(model, np.array(p), c)
        lo, hi = np.array(_bounds(model, c)).T
        starts.append(np.clip(z, lo + 1e-6, hi - 1e-6))
    return starts


_LOGLIK = {"merton": _merton_loglik, "kou": _kou_loglik, "hawkes": _hawkes_loglik}
_PIT = {"merton": _merton_pit, "kou": _kou_pit, "hawkes": _hawkes_pit}


def loglik(model: str, params: dict[str, float], returns: np.ndarray, dt_years: float) -> float:
    """Log-likelihood of log returns under a model with the given (natural) parameters."""
    _check_model(model)
    p = np.array([params[k] for k in PARAM_NAMES[model]], dtype=np.float64)
    return _safe_loglik(model, p, np.asarray(returns, dtype=np.float64), dt_years)


def _safe_loglik(model, p, x, dt):
    with np.errstate(all="ignore"):
        try:
            v = _LOGLIK[model](p, x, dt)
        except (OverflowError, ValueError, ZeroDivisionError):
            return -math.inf
    return v if math.isfinite(v) else -math.inf


# ================================================================ estimation
@dataclass
class FitResult:
    """A maximum-likelihood fit (parameters per year, in the config's names and units)."""

    model: str
    params: dict[str, float]
    stderr: dict[str, float]
    loglik: float
    aic: float
    bic: float
    ks_stat: float
    ks_pvalue: float
    n: int
    dt_years: float
    hessian_ok: bool = True
    bootstrap_stderr: dict[str, float] | None = None
    bootstrap_samples: int = 0
    at_bound: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def k(self) -> int:
        """Number of estimated parameters."""
        return len(self.params)

    def to_yaml(self, s0: float) -> str:
        """A ``market:`` block for a config: ``kind``, ``s0`` and the fitted parameters."""
        lines = [f"# stress calibrate: {self.model} MLE on {self.n} log returns "
                 f"(dt = {format_step(self.dt_years)}), log-likelihood {self.loglik:.1f}, "
                 f"AIC {self.aic:.1f}",
                 "market:", f"  kind: {self.model}", f"  s0: {_yaml_number(s0)}"]
        sides: dict[str, list[str]] = {}
        for key, v in self.params.items():
            if "." in key:
                side, name = key.split(".", 1)
                sides.setdefault(side, []).append(f"    {name}: {_yaml_number(v)}")
            else:
                lines.append(f"  {key}: {_yaml_number(v)}")
        for side, rows in sides.items():
            lines += [f"  {side}:"] + rows
        return "\n".join(lines) + "\n"


def _yaml_number(v: float) -> str:
    text = f"{float(v):.6g}"
    mant, _, exp = text.partition("e")
    if exp and "." not in mant:  # YAML 1.1 (PyYAML) reads 1e-05 as a string, 1.0e-05 as a float
        text = f"{mant}.0e{exp}"
    return text


def format_step(dt_years: float) -> str:
    """A step in years as ``1d``, ``4h``, ``15min`` (or seconds)."""
    seconds = dt_years * YEAR_SECONDS
    for unit, size in (("d", 86_400), ("h", 3600), ("min", 60)):
        if seconds >= size and abs(seconds / size - round(seconds / size)) < 1e-6:
            return f"{round(seconds / size)}{unit}"
    return f"{seconds:g} s"


def _check_model(model: str) -> None:
    if model not in MODELS:
        raise CalibrationError(f"unknown model {model!r}, expected one of {', '.join(MODELS)}")


def _returns(data, is_returns: bool | None) -> np.ndarray:
    a = np.asarray(data, dtype=np.float64).ravel()
    if not np.all(np.isfinite(a)):
        raise CalibrationError("prices or returns must all be finite numbers")
    if is_returns is None:
        is_returns = not np.all(a > 0)
    if is_returns:
        return a
    if not np.all(a > 0):
        raise CalibrationError("prices must all be > 0")
    return np.diff(np.log(a))


def _minimise(model, x, c, starts, screen=10):
    lo_hi = _bounds(model, c)

    def objective(z):
        v = _safe_loglik(model, _to_natural(model, z, c), x, c.dt)
        return -v / c.n if math.isfinite(v) else _BAD

    best = None
    with warnings.catch_warnings():
        # Finite-difference steps probe overflowing corners; those points are rejected above.
        warnings.simplefilter("ignore", RuntimeWarning)
        warnings.simplefilter("ignore", optimize.OptimizeWarning)
        if len(starts) > 1:
            # Screen: a few iterations from every start, then run the best one to convergence.
            for z0 in starts:
                r = optimize.minimize(objective, z0, method="L-BFGS-B", bounds=lo_hi,
                                      options={"maxiter": screen})
                if best is None or r.fun < best.fun:
                    best = r
            starts = [best.x]
        for _ in range(2):  # the second run restarts L-BFGS-B's memory from the first's end
            r = optimize.minimize(objective, starts[0], method="L-BFGS-B", bounds=lo_hi,
                                  options={"maxiter": 3000, "ftol": 1e-10, "gtol": 1e-7})
            if best is None or r.fun <= best.fun:
                best = r
            starts = [best.x]
    return best


def _hessian(fun, p: np.ndarray, scale: np.ndarray, h: float = 1e-3) -> np.ndarray:
    """Central-difference Hessian of ``fun`` at ``p`` in the natural parameters.

    Steps are ``h·scale_i``; the Hessian is computed for ``p + scale∘u`` and
    rescaled, which is exact for this linear change of variables.
    """
    k = p.size
    f0 = fun(p)
    H = np.empty((k, k))

    def at(*moves):
        q = p.copy()
        for i, sgn in moves:
            q[i] += sgn * h * scale[i]
        return fun(q)

    for i in range(k):
        H[i, i] = (at((i, 1)) - 2.0 * f0 + at((i, -1))) / h ** 2
        for j in range(i):
            H[i, j] = H[j, i] = (at((i, 1), (j, 1)) - at((i, 1), (j, -1))
                                 - at((i, -1), (j, 1)) + at((i, -1), (j, -1))) / (4 * h * h)
    return H / np.outer(scale, scale)


def _stderr(model, p, x, c) -> tuple[np.ndarray, bool]:
    scale = _natural_jacobian(model, p, c)

    def nll(q):
        return -_safe_loglik(model, q, x, c.dt)

    H = _hessian(nll, p, scale)
    if not np.all(np.isfinite(H)):
        return np.full(p.size, np.nan), False
    # Invert in the scaled coordinates, where the matrix is well conditioned.
    Hs = H * np.outer(scale, scale)
    try:
        chol = np.linalg.cholesky(Hs)
    except np.linalg.LinAlgError:
        return np.full(p.size, np.nan), False
    inv = np.linalg.inv(chol)
    cov_s = inv.T @ inv
    return np.sqrt(np.diag(cov_s)) * scale, True


def _scale(x: np.ndarray, dt: float) -> _Scale:
    s = float(np.std(x))
    mad = 1.4826 * float(np.median(np.abs(x - np.median(x))))
    return _Scale(n=x.size, dt=dt, s=s, s_robust=mad if mad > 0 else s, mean=float(np.mean(x)))


def fit(prices_or_returns, dt_years: float, model: str, *, is_returns: bool | None = None,
        bootstrap: int = 0, block: int | None = None, seed: int = 0) -> FitResult:
    """Maximum-likelihood fit of a jump-diffusion to a price series.

    Parameters
    ----------
    prices_or_returns : array_like
        Prices in time order (all > 0), or their log returns.
    dt_years : float
        Time between observations, years (of 365 days).
    model : {"merton", "kou", "hawkes"}
        Model; see the module docstring for each likelihood.
    is_returns : bool, optional
        Whether the data are log returns; by default, prices if all are > 0.
    bootstrap : int
        Moving-block bootstrap samples for standard errors (0: Hessian only).
        Each sample is refitted from the estimate.
    block : int, optional
        Block length of the bootstrap, returns; default ``round(n^(1/3))``, at least 10.
    seed : int
        Seed of the bootstrap's resampling.

    Returns
    -------
    FitResult
        ``params`` and ``stderr`` keyed by the config's names (``up.baseline``
        for a Hawkes side), ``loglik``, ``aic``, ``bic``, the KS statistic and
        p-value of the probability integral transform, ``n`` returns.
    """
    _check_model(model)
    if not (isinstance(dt_years, (int, float)) and math.isfinite(dt_years) and dt_years > 0):
        raise CalibrationError(f"dt_years must be a positive number, got {dt_years!r}")
    x = _returns(prices_or_returns, is_returns)
    if x.size < MIN_RETURNS:
        raise CalibrationError(f"{x.size} returns; at least {MIN_RETURNS} are needed to fit "
                               f"{model}")
    c = _scale(x, float(dt_years))
    if not c.s > 0:
        raise CalibrationError("the returns are all equal: nothing to fit")
    best = _minimise(model, x, c, _starts(model, c))
    p = _to_natural(model, best.x, c)
    ll = _safe_loglik(model, p, x, c.dt)
    names = PARAM_NAMES[model]
    se, ok = _stderr(model, p, x, c)
    lo, hi = np.array(_bounds(model, c)).T
    at_bound = [_SEARCH_NAMES[model][i] for i in range(len(names))
                if min(best.x[i] - lo[i], hi[i] - best.x[i]) < 1e-4]
    with np.errstate(all="ignore"):
        u = np.clip(_PIT[model](p, x, c.dt), 0.0, 1.0)
    ks = stats.kstest(u, "uniform")
    k = len(names)
    res = FitResult(model=model, params={n: float(v) for n, v in zip(names, p)},
                    stderr={n: float(v) for n, v in zip(names, se)}, loglik=ll,
                    aic=2 * k - 2 * ll, bic=k * math.log(x.size) - 2 * ll,
                    ks_stat=float(ks.statistic), ks_pvalue=float(ks.pvalue), n=int(x.size),
                    dt_years=float(dt_years), hessian_ok=ok, at_bound=at_bound)
    if not ok:
        res.notes.append("the Hessian of the negative log-likelihood is not positive definite "
                         "at the estimate (a parameter on the edge or not identified by the "
                         "data): no Hessian standard errors; "
                         + ("see the bootstrap ones" if bootstrap > 0 else
                            "use a bootstrap (--bootstrap N) instead"))
    if at_bound:
        res.notes.append(f"at the edge of the search box: {', '.join(at_bound)}. The box allows "
                         f"0.1 jumps per sample to 0.5 per period (2 for merton), a branching "
                         f"ratio up to 0.99 and jump sizes of 0.3 to 100 return standard "
                         f"deviations; an estimate on its edge is constrained and its standard "
                         f"error is not meaningful")
    if model == "kou" and p[2] * c.dt > 0.05:
        res.notes.append(f"λ·dt = {p[2] * c.dt:.3g}: the one-jump-per-period approximation of "
                         f"the Kou likelihood is coarse here; use more frequent prices")
    if model == "hawkes":
        res.notes.append("hawkes: approximate (filtered) likelihood, at most one jump per side "
                         "and period")
    if bootstrap > 0:
        res.bootstrap_stderr = _bootstrap(model, x, c, best.x, bootstrap, block, seed)
        res.bootstrap_samples = int(bootstrap)
    return res


def _bootstrap(model, x, c, z_hat, samples, block, seed) -> dict[str, float]:
    """Standard deviation of the estimates over moving-block resamples of the returns."""
    n = x.size
    b = int(block) if block else max(10, int(round(n ** (1 / 3))))
    b = min(b, n)
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed)))
    lo, hi = np.array(_bounds(model, c)).T
    draws = []
    for _ in range(samples):
        starts = rng.integers(0, n - b + 1, size=-(-n // b))
        xb = np.concatenate([x[s:s + b] for s in starts])[:n]
        cb = _scale(xb, c.dt)
        # Same natural starting point, expressed in the resample's scaling.
        z0 = _from_natural(model, _to_natural(model, z_hat, c), cb)
        lo_b, hi_b = np.array(_bounds(model, cb)).T
        r = _minimise(model, xb, cb, [np.clip(z0, lo_b + 1e-6, hi_b - 1e-6)])
        draws.append(_to_natural(model, r.x, cb))
    d = np.array(draws)
    sd = d.std(axis=0, ddof=1) if samples > 1 else np.full(d.shape[1], np.nan)
    return {name: float(v) for name, v in zip(PARAM_NAMES[model], sd)}
