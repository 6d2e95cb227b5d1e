"""Auto-deleveraging (ADL): who is closed, and by how much, in plain Python.

When a liquidation fills past the bankruptcy price and the insurance fund cannot
pay, the venue closes opposite-side profitable positions ("winners") at the
bankruptcy price. The caller computes how many units must be closed
(``need_qty``); every closed unit costs its holder the same amount, so
allocating units among the winners is allocating the loss. This module is the
reference the numba kernel is tested against: clarity first, but nothing
quadratic in the number of winners.

The inputs are arrays over the eligible winners, in account order:

``size``
    |position| in units.
``profit``
    unrealised PnL at the mark (> 0 for an eligible winner), quote.
``equity``
    collateral plus profit at the mark, quote. It may be ≤ 0 for an account
    whose margin was spent (by funding or an earlier ADL): its effective
    leverage is then infinite.
``cap``
    the most units that may be taken from the account (≤ ``size``; smaller
    when closing at the bankruptcy price would make it bankrupt).
``score``
    the venue's ADL score, for the ``"score"`` ranking.

and the scalar ``mark`` (mark price, > 0). Every allocation returns the units
taken from each account ("takes"), with ``0 ≤ take ≤ cap`` and
``Σ take = min(need_qty, Σ cap)``.

The four rankings
-----------------
``"score"``
    The queue of Binance and Bybit: winners are ranked by PnL percentage times
    effective leverage (``stress.exchange.margin.adl_score``), highest first,
    and closed in that order, each in full (up to its cap) before the next is
    touched. The most profitable and most levered trader is deleveraged first.
``"leverage"``
    The same queue, ranked by effective leverage alone
    (``size·mark / equity``, highest first): the positions closest to their own
    liquidation go first, whatever their profit.
``"pro_rata"``
    No queue: every winner gives up the same fraction of its profit, i.e.
    ``take_i = λ·profit_i`` with one ``λ`` for all, capped per account, the
    excess of a capped account spread over the others in the same proportion.
``"risk_based"``
    The optimum of Campbell, Hey, Moallemi & Nutz, "Risk-Based
    Auto-Deleveraging" (arXiv:2603.15963), single-asset isolated-margin case:
    minimise the largest effective leverage left after the ADL. Positions are
    reduced from the most levered down ("leverage draining"): every account
    touched and not capped ends at one common leverage ``L``, and accounts
    already at or below ``L`` are left alone.

Ties in a queue are broken in account order. The queue rankings are greedy
(:func:`take_queue`); the other two are instances of one water-filling solver
(:func:`waterfill`).
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike

RANKINGS = ("score", "leverage", "pro_rata", "risk_based")


def effective_leverage(size: ArrayLike, equity: ArrayLike, mark: float) -> np.ndarray:
    """Effective leverage ``size·mark / equity``, ``+inf`` where ``equity ≤ 0``.

    Parameters
    ----------
    size : array_like
        |position| in units.
    equity : array_like
        Collateral plus unrealised PnL at the mark, quote.
    mark : float
        Mark price, quote per unit.

    Returns
    -------
    numpy.ndarray
        Mark notional over equity (dimensionless).
    """
    size = np.asarray(size, dtype=float)
    equity = np.asarray(equity, dtype=float)
    notional = size * mark
    # An account without margin has no finite leverage: it ranks first.
    out = np.full(np.broadcast(notional, equity).shape, math.inf)
    np.divide(notional, equity, out=out, where=equity > 0)
    return out


def queue(ranking: str, score: ArrayLike, leverage: ArrayLike) -> np.ndarray:
    """The ADL queue: account indices, the first to be deleveraged first.

    Parameters
    ----------
    ranking : {"score", "leverage"}
        Rank by the venue's ADL ``score`` or by effective ``leverage``, highest
        first.
    score, leverage : array_like
        Per-account keys; only the one named by ``ranking`` is read.

    Returns
    -------
    numpy.ndarray
        A permutation of ``range(n)``; equal keys keep account order.
    """
    if ranking == "score":
        key = score
    elif ranking == "leverage":
        key = leverage
    else:
        raise ValueError(f"queue ranking must be 'score' or 'leverage', got {ranking!r}")
    # Negating keeps a stable sort stable: ties stay in account order.
    return np.argsort(-np.asarray(key, dtype=float), kind="stable")


def take_queue(order: ArrayLike, cap: ArrayLike, need_qty: float) -> np.ndarray:
    """Walk the queue and take ``min(cap_i, still needed)`` from each account.

    Parameters
    ----------
    order : array_like of int
        Account indices in queue order (see :func:`queue`); accounts not listed
        are not touched.
    cap : array_like
        Most units that may be taken from each account.
    need_qty : float
        Units to close.

    Returns
    -------
    numpy.ndarray
        Units taken per account, in account order.
    """
    cap = np.asarray(cap, dtype=float)
    takes = np.zeros(cap.shape)
    remaining = need_qty
    for i in order:
        if remaining <= 0:
            break
        takes[i] = min(cap[i], remaining)
        remaining -= takes[i]
    return takes


def waterfill(base: ArrayLike, slope: ArrayLike, cap: ArrayLike, need_qty: float) -> np.ndarray:
    """Water-filling: ``take_i = clip(base_i + t·slope_i, 0, cap_i)`` with ``Σ take = need_qty``.

    The total ``F(t) = Σ_i clip(base_i + t·slope_i, 0, cap_i)`` is continuous,
    non-decreasing and piecewise linear in the level ``t``; its breakpoints are
    where an account starts to be taken (``t = −base_i/slope_i``) and where it
    reaches its cap (``t = (cap_i − base_i)/slope_i``). The solver sorts the
    breakpoints, finds by binary search the segment on which ``F`` crosses
    ``need_qty`` (each evaluation of ``F`` is a sum, so O(n log n) in all), and
    on that segment, where the set of capped and of free accounts is fixed,
    solves the linear equation for ``t`` exactly:

        t = (need_qty − Σ_capped cap_i − Σ_free base_i) / Σ_free slope_i.

    There is no tolerance and no iteration count. What rounding leaves of
    ``need_qty − Σ take`` (a few ulps of the largest ``base`` per free account:
    ``base + t·slope`` cancels when a take is small beside its ``base``) is
    booked on the free accounts, largest take first, so that the takes add up
    to ``need_qty`` to the last ulp: money must add up.

    Parameters
    ----------
    base : array_like
        Take of each account at level ``t = 0`` before clipping, units.
    slope : array_like
        Rate at which each take grows with ``t``; must be > 0 where ``cap > 0``.
    cap : array_like
        Most units that may be taken from each account (≥ 0).
    need_qty : float
        Units to close.

    Returns
    -------
    numpy.ndarray
        Units taken per account: ``cap`` if ``need_qty ≥ Σ cap``, zeros if
        ``need_qty ≤ 0``.
    """
    base = np.asarray(base, dtype=float)
    slope = np.asarray(slope, dtype=float)
    cap = np.asarray(cap, dtype=float)
    takes = np.zeros(cap.shape)
    if need_qty <= 0:
        return takes
    # Accounts that cannot give anything take no part in the levels.
    live = np.flatnonzero(cap > 0)
    b, s, c = base[live], slope[live], cap[live]
    if np.any(s <= 0):
        raise ValueError("waterfill: slope must be > 0 where cap > 0")
    if need_qty >= c.sum():
        takes[live] = c
        return takes

    t_start = -b / s        # level at which the account starts to be taken
    t_full = (c - b) / s    # level at which it reaches its cap
    levels = np.unique(np.concatenate([t_start, t_full]))   # sorted, distinct

    def filled(t: float) -> float:
        """F(t), with accounts classified by their breakpoints, not by rounding."""
        free = (t_start < t) & (t < t_full)
        return c[t_full <= t].sum() + (b[free] + t * s[free]).sum()

    # Invariant: F(levels[lo]) < need_qty ≤ F(levels[hi]). F is 0 at the lowest
    # breakpoint and Σ cap > need_qty at the highest.
    lo, hi = 0, len(levels) - 1
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if filled(levels[mid]) < need_qty:
            lo = mid
        else:
            hi = mid
    # No breakpoint lies strictly between levels[lo] and levels[hi], so each
    # account is capped, free or untouched on the whole segment.
    capped = t_full <= levels[lo]
    free = (t_start <= levels[lo]) & (t_full >= levels[hi])
    live_takes = np.zeros(c.shape)
    live_takes[capped] = c[capped]
    if free.any():
        t = (need_qty - c[capped].sum() - b[free].sum()) / s[free].sum()
        live_takes[free] = np.clip(b[free] + t * s[free], 0.0, c[free])
    else:
        # F jumps over need_qty at levels[hi]: accounts whose cap is below the
        # rounding of their base (t_start == t_full) go from 0 to full there.
        # They share what is left, in account order, through the residual below.
        free = (t_start == levels[hi]) & (t_full == levels[hi])
    # Rounding leaves a residual of a few ulps of the largest base per free
    # account; book it on the free accounts, largest take first (the first
    # one nearly always absorbs it), so that the takes add up to need_qty.
    free_idx = np.flatnonzero(free)
    residual = need_qty - math.fsum(live_takes)
    for i in free_idx[np.argsort(-live_takes[free_idx], kind="stable")]:
        if residual == 0:
            break
        moved = min(max(live_takes[i] + residual, 0.0), c[i]) - live_takes[i]
        live_takes[i] += moved
        residual -= moved
    takes[live] = live_takes
    return takes


def pro_rata(profit: ArrayLike, cap: ArrayLike, need_qty: float) -> np.ndarray:
    """Takes proportional to profit: ``take_i = min(cap_i, λ·profit_i)``, ``Σ take = need_qty``.

    Parameters
    ----------
    profit : array_like
        Unrealised PnL at the mark, quote (> 0).
    cap : array_like
        Most units that may be taken from each account.
    need_qty : float
        Units to close.

    Returns
    -------
    numpy.ndarray
        Units taken per account.
    """
    profit = np.asarray(profit, dtype=float)
    return waterfill(np.zeros(profit.shape), profit, cap, need_qty)


def risk_based(size: ArrayLike, equity: ArrayLike, cap: ArrayLike, mark: float,
               need_qty: float) -> np.ndarray:
    """Leverage draining: the takes that minimise the largest post-ADL effective leverage.

    Solves

        minimise   max_i (size_i − take_i)·mark / equity_i
        subject to Σ take_i = need_qty,  0 ≤ take_i ≤ cap_i,

    with equity at the mark before the ADL (Campbell, Hey, Moallemi & Nutz,
    arXiv:2603.15963, single asset, isolated margin). Accounts with
    ``equity ≤ 0`` have infinite leverage whatever is taken, so they are taken
    first, up to their cap, in account order. The rest is the water-filling

        take_i = clip(size_i − L·equity_i/mark, 0, cap_i)

    with the common level ``L`` set so that the takes add up: every account
    touched and not capped ends at leverage ``L``, capped ones stay above it,
    untouched ones were at or below it. It is :func:`waterfill` with
    ``base = size``, ``slope = equity/mark`` and ``t = −L``.

    Parameters
    ----------
    size : array_like
        |position| in units.
    equity : array_like
        Collateral plus unrealised PnL at the mark, quote.
    cap : array_like
        Most units that may be taken from each account.
    mark : float
        Mark price (> 0).
    need_qty : float
        Units to close.

    Returns
    -------
    numpy.ndarray
        Units taken per account.
    """
    size = np.asarray(size, dtype=float)
    equity = np.asarray(equity, dtype=float)
    cap = np.asarray(cap, dtype=float)
    takes = np.zeros(cap.shape)
    spent = equity <= 0
    takes[spent] = take_queue(np.arange(spent.sum()), cap[spent], need_qty)
    spent_cap = cap[spent].sum()
    if need_qty <= spent_cap:
        return takes
    solvent = ~spent
    takes[solvent] = waterfill(size[solvent], equity[solvent] / mark, cap[solvent],
                               need_qty - spent_cap)
    return takes


def allocate(ranking: str, size: ArrayLike, profit: ArrayLike, equity: ArrayLike,
             cap: ArrayLike, score: ArrayLike, mark: float, need_qty: float) -> np.ndarray:
    """Units to close per winner under one of the four ADL rankings.

    Parameters
    ----------
    ranking : {"score", "leverage", "pro_rata", "risk_based"}
        See the module docstring.
    size, profit, equity, cap, score : array_like
        Per-account inputs, in account order (see the module docstring).
    mark : float
        Mark price (> 0).
    need_qty : float
        Units to close.

    Returns
    -------
    numpy.ndarray
        Units taken per account (float), ``0 ≤ take ≤ cap``,
        ``Σ take = min(need_qty, Σ cap)``.
    """
    if ranking == "score":
        return take_queue(queue("score", score, None), cap, need_qty)
    if ranking == "leverage":
        leverage = effective_leverage(size, equity, mark)
        return take_queue(queue("leverage", None, leverage), cap, need_qty)
    if ranking == "pro_rata":
        return pro_rata(profit, cap, need_qty)
    if ranking == "risk_based":
        return risk_based(size, equity, cap, mark, need_qty)
    raise ValueError(f"ADL ranking must be one of {RANKINGS}, got {ranking!r}")
