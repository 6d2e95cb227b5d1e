"""Risk statistics of a run, with confidence intervals.

Ruin probability of an insurance fund, value at risk and expected shortfall of
bad debt, the insurance fund a target ruin probability requires, and who bore
the loss. Every statistic reduces over the ``path`` dimension only: ``policy``
and any other dimension (a swept parameter, say) are kept.

Conventions
-----------
Quantiles are the empirical ``inverted_cdf`` quantile (numpy's name): the
smallest sample value ``x`` with ``F_n(x) >= q``, i.e. the ``k``-th smallest of
``n`` values with ``k = ceil(q n)``. The required fund is the same rule at level
``1 - ruin_probability``, so "smallest fund with at most that share of ruined
paths" and "quantile of fund_need" are one number.

Bootstrap intervals resample the ``path`` index with replacement, the same
resamples for every policy (the policies see the same market paths, so their
differences keep their pairing), from ``numpy.random.Generator(PCG64(seed))``;
the resampled indices depend only on ``(seed, n_paths, n_boot)``, so a policy's
interval does not change when other policies or dimensions are added. The
interval is the percentile interval: the ``(1 - ci)/2`` and ``(1 + ci)/2``
quantiles (numpy's default ``linear`` rule) of the resampled statistic.

A row (one policy, one value of each extra dimension) with NaN on any path
gives NaN: a policy without an insurance-fund layer has ``fund_need`` NaN.

Only the variables a function needs are read into memory (``ds[name]``, then
``.compute()``), so lazily opened or dask-backed Datasets stay lazy.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import xarray as xr

from stress._files import replace_atomically
from stress.errors import ConfigError, StressError
from stress.order_stats import FUZZ as _FUZZ
from stress.order_stats import rank as _rank
from stress.runner.variables import BEARERS  # bearer name -> the variable of what it paid

RUIN_METHODS = ("bootstrap", "wilson", "clopper_pearson")
FUND_METHODS = ("order_statistic", "bootstrap")
QUANTILE_RULE = "inverted_cdf"
# Most float64 values one bootstrap block gathers (32 MB); bounds the memory.
_BLOCK = 2 ** 22


# ---------------------------------------------------------------- checks
def _check_level(key: str, value: float) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ConfigError(key, "must be a number in (0, 1)", value) from None
    if not 0.0 < v < 1.0:
        raise ConfigError(key, "must be in (0, 1)", value)
    return v


def _number(key: str, value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ConfigError(key, "must be a number", value) from None


def _check_n_boot(n_boot: int) -> int:
    if isinstance(n_boot, bool) or not isinstance(n_boot, (int, np.integer)) or n_boot < 1:
        raise ConfigError("n_boot", "must be an integer >= 1", n_boot)
    return int(n_boot)


def _check_method(method: str, allowed: Sequence[str]) -> str:
    if method not in allowed:
        raise ConfigError("method", f"unknown method, expected one of {', '.join(allowed)}",
                          method)
    return method


def _pull(ds: xr.Dataset, name: str) -> xr.DataArray:
    """``ds[name]`` in memory as float64, ``path`` last; nothing else is loaded."""
    if name not in ds.variables:
        raise StressError(f"results have no variable {name!r} (written by an older version "
                          f"of stress?)")
    da = ds[name]
    if "path" not in da.dims:
        raise StressError(f"results variable {name!r} has no 'path' dimension, dims {da.dims}")
    if da.sizes["path"] == 0:
        raise StressError(f"results variable {name!r} has no paths")
    da = da.compute()
    return da.astype(np.float64).transpose(..., "path")


# ---------------------------------------------------------------- shapes
def _rows(da: xr.DataArray) -> np.ndarray:
    """The values of ``da`` (``path`` last) as a 2-D array (rows, paths)."""
    return np.asarray(da.values, dtype=np.float64).reshape(-1, da.sizes["path"])


def _unrows(values: np.ndarray, like: xr.DataArray) -> xr.DataArray:
    """Rows back into a DataArray with the dims and coords of ``like`` less ``path``."""
    dims = [d for d in like.dims if d != "path"]
    coords = {k: c for k, c in like.coords.items() if "path" not in c.dims}
    shape = [like.sizes[d] for d in dims]
    return xr.DataArray(np.asarray(values).reshape(shape), dims=dims, coords=coords)


# ------------------------------------------------------------ bootstrap
# Each statistic has a point estimate on the data and a bootstrap form that
# takes resamples as counts (how often each path was drawn). The reference
# ``bootstrap_reference`` gathers the resampled values and applies the point
# estimate to each resample; the tests check that both agree.

def _resamples(n: int, n_boot: int, seed: int):
    """Blocks of resampled path indices, shape (block, n); depend on (seed, n, n_boot) only."""
    rng = np.random.Generator(np.random.PCG64(seed))
    block = max(1, min(n_boot, _BLOCK // n))
    done = 0
    while done < n_boot:
        b = min(block, n_boot - done)
        yield rng.integers(0, n, size=(b, n))
        done += b


def _counts(idx: np.ndarray) -> np.ndarray:
    """How often each path appears in each resample: (block, n) from indices (block, n)."""
    b, n = idx.shape
    flat = (idx + n * np.arange(b)[:, None]).ravel()
    return np.bincount(flat, minlength=b * n).reshape(b, n)


def bootstrap_reference(x: np.ndarray, stat: Callable[[np.ndarray], np.ndarray], n_boot: int,
                        seed: int) -> np.ndarray:
    """``stat`` of each resample of each row of ``x`` (rows, paths): shape (rows, n_boot).

    Plain gather-and-apply; slow but obviously right. The public functions use
    the counts-based forms below, which draw the same resamples.
    """
    m, n = x.shape
    out = np.empty((m, n_boot))
    done = 0
    for idx in _resamples(n, n_boot, seed):
        b = idx.shape[0]
        rows = max(1, _BLOCK // idx.size)
        for r in range(0, m, rows):
            out[r:r + rows, done:done + b] = stat(x[r:r + rows][:, idx])
        done += b
    return out


class _Mean:
    """Mean over paths; resampled as ``counts @ x / n``."""

    def point(self, x: np.ndarray) -> np.ndarray:
        return x.mean(axis=-1)

    def boot(self, x: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
        m, n = x.shape
        out = np.empty((m, n_boot))
        done = 0
        for idx in _resamples(n, n_boot, seed):
            counts = _counts(idx)
            out[:, done:done + len(counts)] = x @ counts.T.astype(np.float64) / n
            done += len(counts)
        return out


class _UpperTail:
    """A statistic of the largest ``reach`` values of a sample (a high quantile, a tail mean).

    Resampled from counts: only the paths with the largest values are looked
    at, so a resample costs O(tail) per row after one O(n) count of all paths.
    """

    reach: int

    def from_tail(self, desc: np.ndarray, ct: np.ndarray, rc: np.ndarray) -> np.ndarray:
        """Statistic per resample from the top values ``desc`` (largest first), their
        counts ``ct`` (resamples, top) and cumulative counts ``rc``."""
        raise NotImplementedError

    def boot(self, x: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
        m, n = x.shape
        order = np.argsort(-x, axis=-1, kind="stable")
        desc = np.take_along_axis(x, order, axis=-1)
        # The resampled count within the top t paths is ~ Poisson(t): t = reach + 6 sd
        # almost always holds enough; when not, widen.
        start = min(n, self.reach + int(6 * math.sqrt(self.reach)) + 16)
        out = np.empty((m, n_boot))
        done = 0
        for idx in _resamples(n, n_boot, seed):
            counts = _counts(idx)
            for r in range(m):
                t = start
                while True:
                    ct = counts[:, order[r, :t]]
                    rc = np.cumsum(ct, axis=-1)
                    if t == n or rc[:, -1].min() >= self.reach:
                        break
                    t = min(n, 2 * t)
                out[r, done:done + len(counts)] = self.from_tail(desc[r, :t], ct, rc)
            done += len(counts)
        return out


def _kth_largest(desc: np.ndarray, rc: np.ndarray, k: int) -> np.ndarray:
    return desc[(rc >= k).argmax(axis=-1)]


def _largest_sum(desc: np.ndarray, ct: np.ndarray, rc: np.ndarray, k: int) -> np.ndarray:
    """Sum of the ``k`` largest resampled values."""
    if k == 0:
        return np.zeros(len(ct))
    t = (rc >= k).argmax(axis=-1)
    rows = np.arange(len(t))
    total = np.cumsum(ct * desc, axis=-1)[rows, t]
    return total - (rc[rows, t] - k) * desc[t]  # the last value may appear more often


class _Quantile(_UpperTail):
    """Inverted-cdf ``q``-quantile: the ``ceil(q n)``-th smallest value."""

    def __init__(self, q: float, n: int):
        self.k = _rank(q, n)
        self.reach = n - self.k + 1

    def point(self, x: np.ndarray) -> np.ndarray:
        return np.partition(x, self.k - 1, axis=-1)[..., self.k - 1]

    def from_tail(self, desc, ct, rc):
        return _kth_largest(desc, rc, self.reach)


class _TailMean(_UpperTail):
    """Mean of the worst ``1 - q`` share of the values (expected shortfall).

    With ``w = (1 - q) n``: the sum of the ``floor(w)`` largest values plus
    ``w - floor(w)`` times the next largest, divided by ``w`` (the tail mean of
    the empirical distribution, Acerbi and Tasche 2002). When ``w`` is a whole
    number it is the mean of the worst ``w`` paths; when ``w < 1``, the maximum.
    """

    def __init__(self, q: float, n: int):
        w = (1.0 - q) * n
        j = round(w) if abs(w - round(w)) <= _FUZZ * max(1.0, w) else math.floor(w)
        self.j = min(int(j), n - 1)
        self.frac = w - self.j if abs(w - self.j) > _FUZZ * max(1.0, w) else 0.0
        self.w = w
        self.reach = self.j + 1 if self.frac else self.j

    def point(self, x: np.ndarray) -> np.ndarray:
        n = x.shape[-1]
        part = np.partition(x, n - self.j - 1, axis=-1)
        top = part[..., n - self.j:].sum(axis=-1)
        return (top + self.frac * part[..., n - self.j - 1]) / self.w

    def from_tail(self, desc, ct, rc):
        top = _largest_sum(desc, ct, rc, self.j)
        if self.frac:
            top = top + self.frac * _kth_largest(desc, rc, self.j + 1)
        return top / self.w


def _percentile_ci(stats: np.ndarray, ci: float) -> tuple[np.ndarray, np.ndarray]:
    low, high = np.quantile(stats, [(1.0 - ci) / 2.0, (1.0 + ci) / 2.0], axis=-1)
    return low, high


def _estimate_and_ci(x: np.ndarray, stat, ci: float, n_boot: int,
                     seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Point estimate and percentile interval per row; NaN for rows holding a NaN."""
    est, low, high = (np.full(x.shape[0], np.nan) for _ in range(3))
    ok = ~np.isnan(x).any(axis=-1)
    if ok.any():
        est[ok] = stat.point(x[ok])
        low[ok], high[ok] = _percentile_ci(stat.boot(x[ok], n_boot, seed), ci)
    return est, low, high


# --------------------------------------------------------------- output
def _dataset(like: xr.DataArray, est, low, high, *, units: str, long_name: str,
             attrs: dict) -> xr.Dataset:
    """A Dataset of ``estimate``, ``ci_low`` and ``ci_high`` shaped like ``like`` less path."""
    ci = attrs["ci"]
    out = xr.Dataset({
        "estimate": _unrows(est, like).assign_attrs(units=units, long_name=long_name),
        "ci_low": _unrows(low, like).assign_attrs(
            units=units, long_name=f"lower end of the {ci:g} confidence interval"),
        "ci_high": _unrows(high, like).assign_attrs(
            units=units, long_name=f"upper end of the {ci:g} confidence interval"),
    })
    out.attrs.update(attrs, n_paths=int(like.sizes["path"]))
    return out


def _boot_attrs(method: str, ci: float, n_boot: int, seed: int, **extra) -> dict:
    attrs = {"method": method, "ci": ci, "n_boot": n_boot if method == "bootstrap" else 0,
             "seed": int(seed)}
    if method == "bootstrap":
        attrs["interval"] = "percentile bootstrap over paths (linear percentiles)"
    attrs.update(extra)
    return attrs


# ---------------------------------------------------- ruin probability
def _wilson(k: np.ndarray, n: int, ci: float) -> tuple[np.ndarray, np.ndarray]:
    from scipy.stats import norm
    z = norm.ppf((1.0 + ci) / 2.0)
    p = k / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z / denom * np.sqrt(p * (1.0 - p) / n + z * z / (4.0 * n * n))
    # exact ends at k = 0 and k = n (the formula leaves rounding dust there)
    return (np.where(k == 0, 0.0, np.clip(centre - half, 0.0, 1.0)),
            np.where(k == n, 1.0, np.clip(centre + half, 0.0, 1.0)))


def _clopper_pearson(k: np.ndarray, n: int, ci: float) -> tuple[np.ndarray, np.ndarray]:
    from scipy.stats import beta
    a = 1.0 - ci
    low = np.where(k > 0, beta.ppf(a / 2, np.maximum(k, 1), n - k + 1), 0.0)
    high = np.where(k < n, beta.ppf(1 - a / 2, k + 1, np.maximum(n - k, 1)), 1.0)
    return low, high


def _fund_sizes(fund_size) -> xr.DataArray:
    if isinstance(fund_size, xr.DataArray):
        if "path" in fund_size.dims:
            raise ConfigError("fund_size", "must not vary along 'path'")
        return fund_size.compute().astype(np.float64)
    arr = np.asarray(fund_size, dtype=np.float64)
    if arr.ndim == 0:
        return xr.DataArray(arr)
    if arr.ndim == 1:
        return xr.DataArray(arr, dims="fund_size", coords={"fund_size": arr},
                            attrs={"units": "quote", "long_name": "insurance fund size"})
    raise ConfigError("fund_size", "must be a number, a 1-D sequence or a DataArray",
                      fund_size)


def ruin_probability(ds: xr.Dataset, fund_size, *, ci: float = 0.95, n_boot: int = 2000,
                     seed: int = 0, method: str = "bootstrap") -> xr.Dataset:
    """Share of paths on which an insurance fund of ``fund_size`` would have run dry.

    A path ruins a fund ``F`` when ``fund_need > F`` (``fund_need`` is the
    smallest initial fund that never runs dry on that path).

    Parameters
    ----------
    ds : xarray.Dataset
        Results with ``fund_need`` (dims ``policy``, ``path`` and possibly more).
    fund_size : float, sequence of float or xarray.DataArray
        Initial fund, quote. A sequence adds a dimension ``fund_size``; a
        DataArray (e.g. ``ds.fund_initial``) broadcasts against the results.
    ci : float
        Confidence level of the interval, in (0, 1).
    n_boot : int
        Bootstrap resamples (``method="bootstrap"`` only).
    seed : int
        Seed of the bootstrap.
    method : {"bootstrap", "wilson", "clopper_pearson"}
        ``bootstrap``: percentile bootstrap over paths (the default). It is
        degenerate in the tail: with no ruined path the interval is [0, 0], with
        a few it is too narrow. ``wilson``: Wilson score interval, close to the
        nominal coverage on average and never degenerate. ``clopper_pearson``:
        the exact binomial interval, conservative (coverage never below ``ci``).
        Prefer ``wilson`` (or ``clopper_pearson`` for a bound that must hold)
        whenever fewer than about ten paths ruin the fund.

    Returns
    -------
    xarray.Dataset
        ``estimate``, ``ci_low``, ``ci_high`` (probabilities) per policy (and
        ``fund_size`` and extra dims); NaN for a policy without an insurance
        fund (``fund_need`` all NaN) or where ``fund_size`` is NaN.
    """
    ci = _check_level("ci", ci)
    method = _check_method(method, RUIN_METHODS)
    n_boot = _check_n_boot(n_boot)
    need = _pull(ds, "fund_need")
    fund = _fund_sizes(fund_size)
    ruined = xr.where(need.isnull() | fund.isnull(), np.nan, need > fund).transpose(..., "path")
    x = _rows(ruined)
    n = x.shape[1]
    if method == "bootstrap":
        est, low, high = _estimate_and_ci(x, _Mean(), ci, n_boot, seed)
    else:
        interval = _wilson if method == "wilson" else _clopper_pearson
        est, low, high = (np.full(x.shape[0], np.nan) for _ in range(3))
        ok = ~np.isnan(x).any(axis=-1)
        k = x[ok].sum(axis=-1)
        est[ok] = k / n
        low[ok], high[ok] = interval(k, n, ci)
    attrs = _boot_attrs(method, ci, n_boot, seed, statistic="P(fund_need > fund_size)")
    return _dataset(ruined, est, low, high, units="1",
                    long_name="probability that the insurance fund runs dry", attrs=attrs)


# ------------------------------------------------- value at risk and ES
def var(ds: xr.Dataset, q: float = 0.99, *, variable: str = "shortfall", ci: float = 0.95,
        n_boot: int = 2000, seed: int = 0) -> xr.Dataset:
    """Value at risk: the ``q``-quantile of ``variable`` over paths, with a bootstrap interval.

    Parameters
    ----------
    ds : xarray.Dataset
        Results.
    q : float
        Quantile level, in (0, 1).
    variable : str
        Per-path variable (default ``shortfall``, quote).
    ci, n_boot, seed
        Confidence level, bootstrap resamples and seed of the percentile
        bootstrap interval.

    Returns
    -------
    xarray.Dataset
        ``estimate``, ``ci_low``, ``ci_high`` per policy (and extra dims). The
        quantile is the ``inverted_cdf`` rule: the ``ceil(q n)``-th smallest of
        the ``n`` path values (``numpy.quantile(..., method="inverted_cdf")``).
    """
    return _tail_statistic(ds, q, variable, ci, n_boot, seed, _Quantile,
                           "{q:g}-quantile of {variable} over paths",
                           statistic="value at risk", quantile_rule=QUANTILE_RULE)


def expected_shortfall(ds: xr.Dataset, q: float = 0.99, *, variable: str = "shortfall",
                       ci: float = 0.95, n_boot: int = 2000, seed: int = 0) -> xr.Dataset:
    """Expected shortfall (tail mean): the mean of the worst ``1 - q`` share of paths.

    Parameters
    ----------
    ds : xarray.Dataset
        Results.
    q : float
        Tail level, in (0, 1).
    variable : str
        Per-path variable (default ``shortfall``, quote).
    ci, n_boot, seed
        Confidence level, bootstrap resamples and seed of the percentile
        bootstrap interval.

    Returns
    -------
    xarray.Dataset
        ``estimate``, ``ci_low``, ``ci_high`` per policy (and extra dims).

    Notes
    -----
    With ``n`` paths and ``w = (1 - q) n``, the estimate is the sum of the
    ``floor(w)`` largest values plus ``w - floor(w)`` times the next largest,
    divided by ``w``: the expected shortfall of the empirical distribution
    (Acerbi and Tasche 2002). When ``w`` is whole (1,000 paths at q = 0.99)
    it is the mean of the worst ``w`` paths; when ``w < 1`` it is the worst
    path. It is never below :func:`var` at the same ``q``.
    """
    return _tail_statistic(ds, q, variable, ci, n_boot, seed, _TailMean,
                           "mean of {variable} in the worst {tail:g} of paths",
                           statistic="expected shortfall",
                           tail_rule="mean of the worst (1-q)·n paths, fractional path "
                                     "weighted")


def _tail_statistic(ds, q, variable, ci, n_boot, seed, kind, long_name, **rule):
    """A tail statistic ``kind(q, n)`` of ``variable`` over paths with its percentile
    bootstrap interval (:func:`var`, :func:`expected_shortfall`); ``long_name`` is a
    template of ``q``, ``tail`` (1 − q) and ``variable``."""
    q = _check_level("q", q)
    ci = _check_level("ci", ci)
    n_boot = _check_n_boot(n_boot)
    da = _pull(ds, variable)
    x = _rows(da)
    est, low, high = _estimate_and_ci(x, kind(q, x.shape[1]), ci, n_boot, seed)
    attrs = _boot_attrs("bootstrap", ci, n_boot, seed, q=q, variable=variable, **rule)
    return _dataset(da, est, low, high, units=ds[variable].attrs.get("units", ""),
                    long_name=long_name.format(q=q, tail=1 - q, variable=variable),
                    attrs=attrs)


# ------------------------------------------------------- required fund
def _order_statistic_ranks(n: int, level: float, ci: float) -> tuple[int, int]:
    """1-based ranks ``(l, u)`` with ``P(X_(l) <= xi <= X_(u)) >= ci`` for the level-quantile.

    Equal-tailed: ``P(Bin(n, level) < l) <= (1 - ci)/2`` and
    ``P(Bin(n, level) >= u) <= (1 - ci)/2``. ``l = 0`` means no lower bound
    and ``u = n + 1`` no upper bound at this ``ci`` with ``n`` paths.
    """
    # scipy.special.bdtr is binom.cdf without importing scipy.stats (≈ 0.8 s at start-up).
    from scipy.special import bdtr
    a = (1.0 - ci) / 2.0
    cdf = bdtr(np.arange(n + 1), n, level)
    low = int(np.searchsorted(cdf, a, side="right"))
    high = int(np.searchsorted(cdf, 1.0 - a, side="left")) + 1
    return low, high


def _min_paths_for_upper_bound(ruin: float, ci: float) -> int:
    # X_(n) bounds the (1-p)-quantile from above with confidence 1 - a/2 iff (1-p)^n <= a/2.
    return math.ceil(math.log((1.0 - ci) / 2.0) / math.log1p(-ruin))


def required_fund(ds: xr.Dataset, ruin_probability: float = 1e-3, *, ci: float = 0.95,
                  method: str = "order_statistic", n_boot: int = 2000,
                  seed: int = 0) -> xr.Dataset:
    """Smallest initial insurance fund whose ruin probability is at most ``ruin_probability``.

    The estimate is the smallest ``F`` with ``share(fund_need > F) <= p``:
    the ``ceil((1 - p) n)``-th smallest ``fund_need`` (the ``inverted_cdf``
    ``(1 - p)``-quantile).

    Parameters
    ----------
    ds : xarray.Dataset
        Results with ``fund_need``; the coordinate ``fund_initial`` (on
        ``policy``) is used for the ``beyond_configured_fund`` flag.
    ruin_probability : float
        Target ruin probability ``p``, in (0, 1).
    ci : float
        Confidence level of the interval.
    method : {"order_statistic", "bootstrap"}
        ``order_statistic`` (default): the distribution-free binomial interval
        ``[X_(l), X_(u)]`` of order statistics, whose coverage is at least
        ``ci`` for any distribution (exactly computable, not asymptotic).
        ``bootstrap``: percentile bootstrap of the order statistic; it cannot
        reach beyond the largest sample and undercovers for extreme levels, so
        prefer the default there.
    n_boot, seed
        Bootstrap resamples and seed (``method="bootstrap"`` only).

    Returns
    -------
    xarray.Dataset
        ``estimate``, ``ci_low``, ``ci_high`` (quote) and the bool
        ``beyond_configured_fund`` per policy (and extra dims).

    Notes
    -----
    With fewer than ``attrs["min_paths_for_finite_ci_high"]`` paths (about
    ``3.7 / p`` at ci 0.95) the data cannot bound the fund from above: ``ci_high``
    is ``inf`` and ``attrs["ci_high_unbounded"]`` says so. When ``p n < 1``
    the estimate is the largest ``fund_need`` seen.

    ``fund_need`` is exact only up to the configured fund: on a path where the
    configured fund ran dry, the later path changed (ADL, socialisation and
    their effect on the cascade), so the fund it would have needed is an
    extrapolation. ``beyond_configured_fund`` is true where the estimate
    exceeds ``fund_initial``; such estimates should be confirmed by a run with
    a larger fund.
    """
    p = _check_level("ruin_probability", ruin_probability)
    ci = _check_level("ci", ci)
    method = _check_method(method, FUND_METHODS)
    n_boot = _check_n_boot(n_boot)
    need = _pull(ds, "fund_need")
    x = _rows(need)
    n = x.shape[1]
    level = 1.0 - p
    if method == "bootstrap":
        est, low, high = _estimate_and_ci(x, _Quantile(level, n), ci, n_boot, seed)
    else:
        est, low, high = (np.full(x.shape[0], np.nan) for _ in range(3))
        ok = ~np.isnan(x).any(axis=-1)
        if ok.any():
            s = np.sort(x[ok], axis=-1)
            est[ok] = s[:, _rank(level, n) - 1]
            lo, hi = _order_statistic_ranks(n, level, ci)
            low[ok] = s[:, lo - 1] if lo >= 1 else -np.inf
            high[ok] = s[:, hi - 1] if hi <= n else np.inf
    min_paths = _min_paths_for_upper_bound(p, ci)
    unbounded = ""
    if n < min_paths:
        high = np.where(np.isnan(high), np.nan, np.inf)
        unbounded = (f"ci_high is inf: {n} paths cannot bound the {level:g}-quantile from "
                     f"above at confidence {ci:g}; at least {min_paths} are needed")
    attrs = _boot_attrs(method, ci, n_boot, seed, statistic="required insurance fund",
                        ruin_probability=p, quantile_rule=QUANTILE_RULE,
                        min_paths_for_finite_ci_high=min_paths, ci_high_unbounded=unbounded)
    if method == "order_statistic":
        attrs["interval"] = "distribution-free binomial interval of order statistics"
    out = _dataset(need, est, low, high, units="quote",
                   long_name=f"smallest insurance fund with ruin probability <= {p:g}",
                   attrs=attrs)
    out["beyond_configured_fund"] = _beyond(out["estimate"], need)
    return out


def _beyond(estimate: xr.DataArray, need: xr.DataArray) -> xr.DataArray:
    flag = xr.zeros_like(estimate, dtype=bool)
    note = ("true where the estimate exceeds the configured fund (coordinate fund_initial): "
            "fund_need is exact only up to the configured fund")
    if "fund_initial" in need.coords:
        fund = need.coords["fund_initial"].astype(np.float64)
        flag = (estimate > fund).fillna(False).astype(bool)
        flag = flag.drop_vars([c for c in flag.coords if c not in estimate.coords])
    else:
        note = "no fund_initial coordinate in the results: flag not computed (all false)"
    return flag.transpose(*estimate.dims).assign_attrs(long_name=note)


# -------------------------------------------------------- loss bearers
def _totals(ds: xr.Dataset, name: str) -> xr.DataArray:
    return _pull(ds, name).sum("path")


def _share(part: xr.DataArray, whole: xr.DataArray) -> xr.DataArray:
    """``part / whole``, NaN (and no warning) where ``whole`` is 0."""
    part, whole = xr.broadcast(part, whole)
    out = np.divide(part.values, whole.values, out=np.full(part.shape, np.nan),
                    where=whole.values != 0)
    return part.copy(data=out)


def _index_dims(da: xr.DataArray) -> list[str]:
    """``policy`` first, then the other non-path dims in their order."""
    dims = [d for d in da.dims if d != "path"]
    return (["policy"] if "policy" in dims else []) + [d for d in dims if d != "policy"]


def loss_bearers(ds: xr.Dataset):
    """Who bore the bad debt: one row per (policy, bearer), summed over paths.

    Parameters
    ----------
    ds : xarray.Dataset
        Results with ``shortfall`` and the bearer variables (:data:`BEARERS`).

    Returns
    -------
    pandas.DataFrame
        Columns ``policy`` (then any extra dims), ``bearer`` (fund, adl,
        socialised, platform, residual), ``total`` (quote, summed over paths),
        ``share`` (of the policy's total shortfall; NaN when that is 0),
        ``mean_per_path`` (quote), ``paths_bearing`` (paths where the bearer
        paid > 0) and ``frequency`` (``paths_bearing / n_paths``). Rows follow
        the order of the results' policies.
    """
    shortfall = _pull(ds, "shortfall")
    paid = _stack_bearers(ds, shortfall)
    n = paid.sizes["path"]
    total = paid.sum("path")
    bearing = (paid > 0).sum("path").astype(np.int64)
    table = xr.Dataset({
        "total": total,
        "share": _share(total, shortfall.sum("path")),
        "mean_per_path": total / n,
        "paths_bearing": bearing,
        "frequency": bearing / n,
    }).reset_coords(drop=True)
    return table.to_dataframe(dim_order=_index_dims(shortfall) + ["bearer"]).reset_index()


def _stack_bearers(ds: xr.Dataset, like: xr.DataArray) -> xr.DataArray:
    """The bearer variables stacked on a ``bearer`` dim before ``path``."""
    values = [_pull(ds, name).transpose(*like.dims).values for name in BEARERS.values()]
    dims = like.dims[:-1] + ("bearer", "path")
    coords = {d: like[d].values for d in like.dims if d in like.coords and d != "path"}
    return xr.DataArray(np.stack(values, axis=-2), dims=dims,
                        coords={**coords, "bearer": list(BEARERS)})


# -------------------------------------------------------------- compare
def _path_mean(ds: xr.Dataset, name: str, how: str = "mean") -> xr.DataArray:
    """Mean, max or NaN-aware mean over paths (all-NaN rows give NaN without a warning)."""
    da = _pull(ds, name)
    if how == "max":
        return da.isel(path=0, drop=True).copy(data=np.fmax.reduce(da.values, axis=-1))
    if how == "nanmean":
        valid = da.notnull()
        return _share(da.where(valid, 0.0).sum("path"), valid.sum("path").astype(np.float64))
    return da.mean("path")


def compare(ds: xr.Dataset, *, q: float = 0.99, ruin: float = 1e-3, fund_size=None,
            ci: float = 0.95, n_boot: int = 2000, seed: int = 0,
            ruin_method: str = "wilson"):
    """The risk desk's comparison of policies: one row per policy (and extra dims).

    Parameters
    ----------
    ds : xarray.Dataset
        Results.
    q : float
        Level of the value at risk and expected shortfall of ``shortfall``.
    ruin : float
        Target ruin probability of the required fund.
    fund_size : float, optional
        Fund at which the ruin probability is estimated (quote); default each
        policy's configured ``fund_initial``.
    ci, n_boot, seed
        Confidence level, bootstrap resamples and seed of every interval.
    ruin_method : str
        Interval of the ruin probability (see :func:`ruin_probability`);
        ``wilson`` by default since ruin is a tail event.

    Returns
    -------
    pandas.DataFrame
        Columns, ``_quote`` marking money in quote units:
        ``policy`` (and extra dims), ``layers``, ``n_paths``,
        ``fund_initial_quote``, ``mean_shortfall_quote``, ``q``,
        ``var_shortfall_quote`` and ``es_shortfall_quote`` with their
        ``_ci_low_quote``/``_ci_high_quote``, ``mean_residual_quote``,
        ``p_fund_depleted``, ``fund_size_quote``, ``ruin_probability`` with
        ``_ci_low``/``_ci_high``, ``ruin_target``, ``required_fund_quote`` with
        ``_ci_low_quote``/``_ci_high_quote``, ``beyond_configured_fund``,
        ``mean_n_adl``, ``mean_n_accounts_hit``, ``max_adl_max_loss_fraction``,
        ``max_haircut_rate_max``, ``mean_loss_gini`` (over paths where someone
        bore a loss) and ``share_fund``, ``share_adl``, ``share_socialised``,
        ``share_platform``, ``share_residual`` (of the total shortfall over all
        paths). A column whose variable the results lack is NaN, and the
        variable is listed in ``DataFrame.attrs["missing_variables"]``.
    """
    q = _check_level("q", q)
    ruin = _check_level("ruin", ruin)
    shortfall = _pull(ds, "shortfall")
    n = shortfall.sizes["path"]
    nan = xr.full_like(shortfall.isel(path=0, drop=True), np.nan, dtype=np.float64)
    missing: list[str] = []

    def need(*names: str) -> bool:
        absent = [v for v in names if v not in ds.variables]
        missing.extend(v for v in absent if v not in missing)
        return not absent

    boot = {"ci": ci, "n_boot": n_boot, "seed": seed}
    cols: dict[str, xr.DataArray] = {}
    if "layers" in ds.coords:
        cols["layers"] = ds.coords["layers"].compute().astype(str)
    cols["n_paths"] = xr.full_like(nan, n, dtype=np.int64)
    fund_initial = (ds.coords["fund_initial"].compute().astype(np.float64)
                    if "fund_initial" in ds.coords else nan)
    cols["fund_initial_quote"] = fund_initial
    cols["mean_shortfall_quote"] = shortfall.mean("path")
    cols["q"] = xr.full_like(nan, q)
    _interval_columns(cols, "var_shortfall", "_quote", var(ds, q, **boot), nan)
    _interval_columns(cols, "es_shortfall", "_quote", expected_shortfall(ds, q, **boot), nan)
    cols["mean_residual_quote"] = _path_mean(ds, "residual") if need("residual") else nan
    cols["p_fund_depleted"] = (_path_mean(ds, "fund_depleted") if need("fund_depleted")
                               else nan)
    fund = fund_initial if fund_size is None else xr.full_like(nan, _number("fund_size",
                                                                            fund_size))
    cols["fund_size_quote"] = fund
    has_need = need("fund_need")
    r = ruin_probability(ds, fund, method=ruin_method, **boot) if has_need else None
    _interval_columns(cols, "ruin_probability", "", r, nan)
    cols["ruin_target"] = xr.full_like(nan, ruin)
    r = required_fund(ds, ruin, **boot) if has_need else None
    _interval_columns(cols, "required_fund", "_quote", r, nan)
    cols["beyond_configured_fund"] = (xr.full_like(nan, False, dtype=bool) if r is None
                                      else r["beyond_configured_fund"])
    for col, name, how in (("mean_n_adl", "n_adl", "mean"),
                           ("mean_n_accounts_hit", "n_accounts_hit", "mean"),
                           ("max_adl_max_loss_fraction", "adl_max_loss_fraction", "max"),
                           ("max_haircut_rate_max", "haircut_rate_max", "max"),
                           ("mean_loss_gini", "loss_gini", "nanmean")):
        cols[col] = _path_mean(ds, name, how) if need(name) else nan
    total = shortfall.sum("path")
    for bearer, name in BEARERS.items():
        cols[f"share_{bearer}"] = _share(_totals(ds, name), total) if need(name) else nan
    return _table(cols, _index_dims(shortfall), missing, q=q, ruin=ruin, ci=ci,
                  n_boot=n_boot, seed=seed, ruin_method=ruin_method,
                  min_paths_for_finite_ci_high=_min_paths_for_upper_bound(ruin, ci))


def _interval_columns(cols: dict, name: str, unit: str, result: xr.Dataset | None,
                      nan: xr.DataArray) -> None:
    """``name``, ``name_ci_low``, ``name_ci_high`` (each + ``unit``) from a result, or NaN."""
    for suffix, var_name in (("", "estimate"), ("_ci_low", "ci_low"), ("_ci_high", "ci_high")):
        cols[f"{name}{suffix}{unit}"] = nan if result is None else result[var_name]


def _table(cols: dict[str, xr.DataArray], dims: list[str], missing: list[str], **attrs):
    """The columns as a DataFrame with the index dims as leading columns."""
    table = xr.Dataset({k: v.reset_coords(drop=True) if isinstance(v, xr.DataArray) else v
                        for k, v in cols.items()})
    table = table.reset_coords(drop=True)
    df = table.to_dataframe(dim_order=dims).reset_index()
    df = df[dims + list(cols)]
    df.attrs.update(attrs, missing_variables=list(missing),
                    quantile_rule=QUANTILE_RULE)
    return df


def write_csv(table, path) -> Path:
    """Write a DataFrame to ``path`` as CSV atomically (a temporary file, then a rename).

    A reader never sees a half-written file, and a failed write leaves none.
    """
    return replace_atomically(path, lambda tmp: table.to_csv(tmp, index=False))
