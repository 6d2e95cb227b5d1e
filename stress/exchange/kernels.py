"""The liquidation kernel: one price path, one book, one loss policy.

Written as plain Python and compiled with numba (``simulate_path``); with
``STRESS_DISABLE_NUMBA=1`` the same source runs uncompiled. The naive,
obviously-correct version of the same rules is
:mod:`stress.exchange.reference`; the tests check that both agree.

Why it is fast: while an account's position and collateral do not change,
its liquidation trigger ``equity ≤ MM`` is a price threshold (its liquidation
price). The kernel keeps open longs sorted by threshold (highest first) and
shorts (lowest first); each step walks each side from its head only while
the mark crosses the threshold, so a path costs O(steps + liquidations)
after an O(n log n) sort shared by every policy and path that use the book.
Each candidate is confirmed with the exact ``equity ≤ MM`` test, so the
threshold only has to be a safe filter. When ADL or a socialised haircut
changes an account's position or collateral, its threshold is recomputed and
it is checked on its own each step until the next re-sort of the book.
"""

from __future__ import annotations

import numpy as np

from stress._jit import njit
from stress.runner.variables import (ADL_COST, ADL_NOTIONAL, CASCADE_CAP_HITS,
                                     CASCADE_MOVE, CASCADE_ROUNDS, FUND_DEPLETED, FUND_FINAL,
                                     FUND_INFLOW, FUND_MIN, FUND_PAID, FUNDING_VOLUME,
                                     LIQUIDATED_NOTIONAL, MARK_INDEX_GAP, N_ADL,
                                     N_LIQUIDATIONS, N_METRICS,
                                     N_SHORTFALLS, P, PARAMS, PLATFORM_LOSS, RESIDUAL,
                                     SHORTFALL, SOCIALISED_LOSS, TIME_TO_DEPLETION)

P_FUND_INITIAL = P["fund_initial"]
P_FEE_RATE = P["fee_rate"]
P_FEE_SHARE = P["fee_share"]
P_SLIPPAGE = P["slippage"]
P_STEP_MINUTES = P["step_minutes"]
P_ADL_BASIS = P["adl_basis"]
P_IMPACT_K = P["impact_k"]
P_IMPACT_GAMMA = P["impact_gamma"]
P_PERMANENT = P["permanent"]
P_PERMANENT_DECAY = P["permanent_decay"]
P_USED_DECAY = P["used_decay"]
P_DEPTH_FLOOR = P["depth_floor"]
P_MAX_ROUNDS = P["max_rounds"]
P_FUNDING_EVERY = P["funding_every"]
P_FUNDING_MODE = P["funding_mode"]
P_FUNDING_RATE = P["funding_rate"]
P_FUNDING_INTEREST = P["funding_interest"]
P_FUNDING_CLAMP = P["funding_clamp"]
P_FUNDING_CAP = P["funding_cap"]

LAYER_FUND = 0
LAYER_ADL = 1
LAYER_SOCIALISED = 2
LAYER_PLATFORM = 3

# Relative slack of the threshold filter; the exact test decides.
_SLACK = 1e-9
# Largest price impact of one round's forced orders, fraction of the price.
MAX_IMPACT = 0.99


@njit(cache=True)
def tier_index(notional, cap):
    """Tier holding ``notional`` (floor < n <= cap); ``cap[-1]`` is +inf."""
    k = 0
    while notional > cap[k]:
        k += 1
    return k


@njit(cache=True)
def maintenance_margin(notional, cap, mmr, amt):
    k = tier_index(notional, cap)
    return notional * mmr[k] - amt[k]


@njit(cache=True)
def is_breached(qty, entry, collateral, mark, cap, mmr, amt):
    """Exact trigger: equity ≤ maintenance margin at the mark."""
    if qty == 0.0:
        return False
    equity = collateral + qty * (mark - entry)
    return equity <= maintenance_margin(abs(qty) * mark, cap, mmr, amt)


@njit(cache=True)
def liquidation_threshold(qty, entry, collateral, floor, cap, mmr, amt):
    """Liquidation price widened by a relative slack: a long can only be breached
    at ``mark <= threshold``, a short only at ``mark >= threshold``.

    Per tier, ``equity(p) − MM(p)`` is linear in p; the liquidatable set of a
    long is bounded above by the largest in-bracket root (below for a short).
    This holds for discontinuous tables too, where it is only a bound.
    """
    q = abs(qty)
    n = cap.shape[0]
    if qty > 0.0:
        best = -np.inf
        for k in range(n):
            root = (q * entry - collateral - amt[k]) / (q * (1.0 - mmr[k]))
            lo = floor[k] / q
            hi = cap[k] / q
            if root > lo or k == 0:
                c = root if root < hi else hi
                if c > best:
                    best = c
        return best + _SLACK * abs(best)
    elif qty < 0.0:
        best = np.inf
        for k in range(n):
            root = (q * entry + collateral + amt[k]) / (q * (1.0 + mmr[k]))
            lo = floor[k] / q
            hi = cap[k] / q
            if root <= hi:
                c = root if root > lo else lo
                if c < best:
                    best = c
        return best - _SLACK * abs(best)
    return np.nan


@njit(cache=True)
def sort_book(qty, thr, lorder, sorder, lkey, skey):
    """Open longs by threshold, highest first, into ``lorder``; open shorts, lowest
    first, into ``sorder``; the thresholds at sorting time into ``lkey``/``skey``.
    Returns the counts ``(n_long, n_short)``."""
    nl = 0
    ns = 0
    for i in range(qty.shape[0]):
        if qty[i] > 0.0:
            lorder[nl] = i
            nl += 1
        elif qty[i] < 0.0:
            sorder[ns] = i
            ns += 1
    key = np.empty(nl)
    for j in range(nl):
        key[j] = -thr[lorder[j]]
    perm = np.argsort(key, kind="mergesort")
    tmp = lorder[:nl].copy()
    for j in range(nl):
        lorder[j] = tmp[perm[j]]
        lkey[j] = thr[lorder[j]]
    key = np.empty(ns)
    for j in range(ns):
        key[j] = thr[sorder[j]]
    perm = np.argsort(key, kind="mergesort")
    tmp = sorder[:ns].copy()
    for j in range(ns):
        sorder[j] = tmp[perm[j]]
        skey[j] = thr[sorder[j]]
    return nl, ns


@njit(cache=True)
def prepare_book(qty, entry, collateral, floor, cap, mmr, amt):
    """Thresholds and sorted orders of a book: ``(thr, lorder, sorder, n_long, n_short)``.

    Computed once per book and shared (copied) by every policy and path that uses it.
    """
    n = qty.shape[0]
    thr = np.empty(n)
    for i in range(n):
        thr[i] = liquidation_threshold(qty[i], entry[i], collateral[i], floor, cap, mmr, amt)
    lorder = np.empty(n, dtype=np.int64)
    sorder = np.empty(n, dtype=np.int64)
    nl, ns = sort_book(qty, thr, lorder, sorder, np.empty(n), np.empty(n))
    return thr, lorder, sorder, nl, ns


@njit(cache=True)
def _touch(i, qty, touched):
    """Record that account ``i``'s threshold changed (``touched[0]`` is the count; a
    closed position needs no record: the walks skip it)."""
    if qty[i] != 0.0:
        touched[0] += 1
        touched[touched[0]] = i


@njit(cache=True)
def _adl_queue(bside, mark, qty, entry, collateral, adl_basis, queue, score):
    """Rank the counterparties of a bankrupt ``bside`` position into ``queue``.

    Opposite-side accounts with positive uPnL at the mark, highest
    ``PnL% × effective leverage`` first (PnL% on collateral, ``adl_basis`` 0, or on
    entry value, 1; effective leverage = mark notional / equity); ties in
    account order. Returns the queue length.
    """
    m = 0
    for i in range(qty.shape[0]):
        q = qty[i]
        if q * bside < 0.0:
            upnl = q * (mark - entry[i])
            if upnl > 0.0:
                eq = collateral[i] + upnl
                base = collateral[i] if adl_basis == 0 else abs(q) * entry[i]
                queue[m] = i
                # Negated so that an ascending stable sort puts the highest score
                # first and keeps account order among ties. A winner without margin
                # (spent by an earlier ADL, or by funding) has infinite leverage.
                if base <= 0.0 or eq <= 0.0:
                    score[m] = -np.inf
                else:
                    score[m] = -(upnl / base) * (abs(q) * mark / eq)
                m += 1
    perm = np.argsort(score[:m], kind="mergesort")
    ranked = queue[:m].copy()
    for r in range(m):
        queue[r] = ranked[perm[r]]
    return m


@njit(cache=True)
def _adl(bside, bp, x, need, mark, qty, entry, collateral, thr, floor, cap, mmr, amt,
         adl_basis, queues, score, qstate, touched, out):
    """Close the uncovered part of a bankrupt position against opposite-side winners.

    ``need`` is the loss to cover; the bankrupt side is ``bside`` (+1 long).
    The step's ADL queue for that side is ranked once, at the step's mark, on
    first use (``qstate[2k]`` is its length, −1 until ranked, ``qstate[2k+1]``
    the position of its head); counterparties close at the bankruptcy price
    ``bp``, in queue order, ``need / |bp − x|`` units in all. Each unit costs its
    holder ``|bp − x|`` against the fill the market gave. Returns the loss covered.
    """
    unit_cost = abs(bp - x)
    if unit_cost <= 0.0 or need <= 0.0:
        return 0.0
    k = 0 if bside > 0.0 else 1
    queue = queues[k]
    if qstate[2 * k] < 0:
        qstate[2 * k] = _adl_queue(bside, mark, qty, entry, collateral, adl_basis, queue,
                                   score)
        qstate[2 * k + 1] = 0
    m = qstate[2 * k]
    r = qstate[2 * k + 1]
    need_qty = need / unit_cost
    covered = 0.0
    while r < m:
        i = queue[r]
        q = qty[i]
        if q == 0.0:
            r += 1
            continue
        s = 1.0 if q > 0.0 else -1.0
        take = abs(q)
        full = False
        if take >= need_qty:
            take = need_qty
            full = True
        realised = s * take * (bp - entry[i])
        if collateral[i] + realised < 0.0:
            # Never make the counterparty bankrupt: close only what its margin pays.
            take = collateral[i] / abs(bp - entry[i])
            realised = -collateral[i]
            full = False
        if take > 0.0:
            collateral[i] += realised
            if take >= abs(q):
                qty[i] = 0.0
            else:
                qty[i] = q - s * take
            thr[i] = liquidation_threshold(qty[i], entry[i], collateral[i], floor, cap, mmr,
                                           amt)
            _touch(i, qty, touched)
            out[N_ADL] += 1.0
            out[ADL_NOTIONAL] += take * bp
            need_qty -= take
        if full:
            covered = need
            break
        covered += take * unit_cost
        # This account is exhausted (closed, or its margin is spent): next in queue.
        r += 1
        if need_qty <= 0.0:
            break
    qstate[2 * k + 1] = r
    if covered > need:
        covered = need
    return covered


@njit(cache=True)
def _waterfall(start, remaining, t, step_minutes, layers, bside, bp, x, mark, fund,
               qty, entry, collateral, thr, floor, cap, mmr, amt, adl_basis, queues, score,
               qstate, touched, out, pend_rem, pend_next, pend_side, pend_bp, pend_x, n_pend):
    """Run ``remaining`` through ``layers[start:]``; returns (fund, n_pend).

    A ``socialised`` layer defers the loss to the end of the step (see
    :func:`_socialise`) and parks it in the pending buffers.
    """
    for li in range(start, layers.shape[0]):
        if remaining <= 0.0:
            break
        layer = layers[li]
        if layer == LAYER_FUND:
            pay = remaining if remaining <= fund else fund
            if remaining > fund:
                if out[FUND_DEPLETED] == 0.0:
                    out[FUND_DEPLETED] = 1.0
                    out[TIME_TO_DEPLETION] = t * step_minutes
            fund -= pay
            remaining -= pay
            out[FUND_PAID] += pay
            if fund < out[FUND_MIN]:
                out[FUND_MIN] = fund
        elif layer == LAYER_ADL:
            c = _adl(bside, bp, x, remaining, mark, qty, entry, collateral, thr, floor, cap,
                     mmr, amt, adl_basis, queues, score, qstate, touched, out)
            out[ADL_COST] += c
            remaining -= c
        elif layer == LAYER_SOCIALISED:
            pend_rem[n_pend] = remaining
            pend_next[n_pend] = li + 1
            pend_side[n_pend] = bside
            pend_bp[n_pend] = bp
            pend_x[n_pend] = x
            n_pend += 1
            remaining = 0.0
        else:  # LAYER_PLATFORM
            out[PLATFORM_LOSS] += remaining
            remaining = 0.0
    if remaining > 0.0:
        out[RESIDUAL] += remaining
    return fund, n_pend


@njit(cache=True)
def _socialise(pot, mark, qty, entry, collateral, thr, floor, cap, mmr, amt, touched):
    """Charge ``pot`` to accounts with positive uPnL, pro rata, each at most its uPnL.

    Returns the amount charged.
    """
    total = 0.0
    for i in range(qty.shape[0]):
        if qty[i] != 0.0:
            upnl = qty[i] * (mark - entry[i])
            if upnl > 0.0:
                total += upnl
    if total <= 0.0:
        return 0.0
    everything = pot >= total
    for i in range(qty.shape[0]):
        if qty[i] != 0.0:
            upnl = qty[i] * (mark - entry[i])
            if upnl > 0.0:
                charge = upnl if everything else pot * (upnl / total)
                collateral[i] -= charge
                thr[i] = liquidation_threshold(qty[i], entry[i], collateral[i], floor, cap,
                                               mmr, amt)
                _touch(i, qty, touched)
    return total if everything else pot


@njit(cache=True)
def _detect(mark, qty, entry, collateral, thr, lorder, sorder, lkey, skey, lhead, shead, nl,
            ns, is_loose, loose, n_loose, cap, mmr, amt, liq):
    """Breached accounts at ``mark`` into ``liq``, in account order; returns their count.

    Walk each sorted side from its head while the sort-time threshold is crossed,
    then check the loose accounts; the exact ``equity ≤ MM`` test confirms each.
    """
    m = 0
    i = lhead
    while i < nl:
        if lkey[i] < mark:
            break
        a = lorder[i]
        if not is_loose[a] and qty[a] > 0.0 and is_breached(qty[a], entry[a], collateral[a],
                                                            mark, cap, mmr, amt):
            liq[m] = a
            m += 1
        i += 1
    i = shead
    while i < ns:
        if skey[i] > mark:
            break
        a = sorder[i]
        if not is_loose[a] and qty[a] < 0.0 and is_breached(qty[a], entry[a], collateral[a],
                                                            mark, cap, mmr, amt):
            liq[m] = a
            m += 1
        i += 1
    for j in range(n_loose):
        a = loose[j]
        q = qty[a]
        if (q > 0.0 and mark <= thr[a]) or (q < 0.0 and mark >= thr[a]):
            if is_breached(q, entry[a], collateral[a], mark, cap, mmr, amt):
                liq[m] = a
                m += 1
    if m > 1:
        liq[:m] = np.sort(liq[:m])
    return m


@njit(cache=True)
def _loosen(qty, touched, is_loose, loose, n_loose):
    """Accounts whose thresholds moved become loose; closed ones leave the list."""
    for j in range(1, touched[0] + 1):
        a = touched[j]
        if qty[a] != 0.0 and not is_loose[a]:
            is_loose[a] = True
            loose[n_loose] = a
            n_loose += 1
    touched[0] = 0
    k = 0
    for j in range(n_loose):
        a = loose[j]
        if qty[a] != 0.0:
            loose[k] = a
            k += 1
        else:
            is_loose[a] = False
    return k


@njit(cache=True)
def _resort(qty, thr, lorder, sorder, lkey, skey, is_loose, loose, n_loose):
    """Re-sort the open book on the current thresholds; no account is loose after."""
    nl, ns = sort_book(qty, thr, lorder, sorder, lkey, skey)
    for j in range(n_loose):
        is_loose[loose[j]] = False
    return nl, ns


@njit(cache=True)
def impact_fraction(notional, depth, k, gamma):
    """Price impact of forced orders of ``notional`` against ``depth``: k·(Q/D)^γ,
    at most :data:`MAX_IMPACT` (a fill, or a mark, never reaches zero)."""
    if notional <= 0.0 or k == 0.0:
        return 0.0
    if depth <= 0.0:
        return MAX_IMPACT
    f = k * (notional / depth) ** gamma
    return f if f < MAX_IMPACT else MAX_IMPACT


@njit(cache=True)
def funding_rate(mode, rate, premium, interest, clamp, cap):
    """Rate of one funding interval: constant, or premium + clamp(interest − premium)."""
    if mode == 1:
        f = rate
    else:
        d = interest - premium
        if d > clamp:
            d = clamp
        elif d < -clamp:
            d = -clamp
        f = premium + d
    if f > cap:
        f = cap
    elif f < -cap:
        f = -cap
    return f


@njit(cache=True)
def _pay_funding(f, mark, qty, entry, collateral, thr, floor, cap, mmr, amt, touched):
    """Longs pay shorts ``f`` × their notional (the reverse when ``f`` < 0); receivers
    share the payers' total pro rata to notional, so funding is zero-sum. Returns
    the amount transferred."""
    nl = 0.0
    ns = 0.0
    for i in range(qty.shape[0]):
        if qty[i] > 0.0:
            nl += qty[i] * mark
        elif qty[i] < 0.0:
            ns -= qty[i] * mark
    if f == 0.0 or nl == 0.0 or ns == 0.0:
        return 0.0
    payers = nl if f > 0.0 else ns
    receivers = ns if f > 0.0 else nl
    total = abs(f) * payers
    for i in range(qty.shape[0]):
        q = qty[i]
        if q == 0.0:
            continue
        n = abs(q) * mark
        if (q > 0.0) == (f > 0.0):
            collateral[i] -= abs(f) * n
        else:
            collateral[i] += total * (n / receivers)
        thr[i] = liquidation_threshold(q, entry[i], collateral[i], floor, cap, mmr, amt)
        _touch(i, qty, touched)
    return total


def simulate_path_python(index, mark0, depth_bid, depth_ask, gap_bid, gap_ask, qty, entry,
                         collateral, thr, lorder, sorder, n_long, n_short, floor, cap, mmr,
                         amt, layers, params, out):
    """Step one book through one price path under one loss policy.

    Parameters
    ----------
    index : float64[steps + 1]
        Index price at the start (0) and the end of every step.
    mark0, depth_bid, depth_ask, gap_bid, gap_ask : float64[steps + 1]
        Mark before forced-order impact, book depth per side (quote within the
        reference band; +inf = no impact) and empty bands beyond the mark
        (:func:`stress.market.liquidity.path_liquidity`).
    qty, entry, collateral : float64[n]
        The book (signed base quantity, entry price, isolated collateral in
        quote). ``qty`` and ``collateral`` are updated in place.
    thr, lorder, sorder, n_long, n_short
        The book's thresholds and sorted orders from :func:`prepare_book`
        (``thr``, ``lorder``, ``sorder`` are updated in place: pass copies).
    floor, cap, mmr, amt : float64[tiers]
        Tier table; ``cap[-1]`` must be +inf.
    layers : int64[k]
        Loss waterfall (codes ``LAYER_*``).
    params : float64[N_PARAMS]
        Scalars in the order of :data:`stress.runner.variables.PARAMS`.
    out : float64[N_METRICS]
        Per-path metrics, filled in (see :mod:`stress.runner.variables`).

    Each step: the mark's displacement by earlier forced orders decays, funding
    is paid at its interval, then liquidation rounds run at the mark: the
    round's breached positions are closed at ``mark·(1 ∓ (slippage + gap +
    impact))`` with impact ``k·(Q/D)^γ`` of the round's forced notional per side
    against the depth left; the permanent part of the impact moves the mark,
    and a new round starts while that breaches more accounts (up to the round
    cap). Shortfalls go down the waterfall round by round; a socialised layer
    settles at the end of the step.

    Cost: O(steps + liquidations). Accounts whose threshold moves (partial ADL,
    socialised haircut, funding) are checked on their own each step; when more
    than max(64, n/64) are, the book is re-sorted.
    """
    n = qty.shape[0]
    fund_initial = params[P_FUND_INITIAL]
    fee_rate = params[P_FEE_RATE]
    fee_share = params[P_FEE_SHARE]
    slippage = params[P_SLIPPAGE]
    step_minutes = params[P_STEP_MINUTES]
    adl_basis = int(params[P_ADL_BASIS])
    impact_k = params[P_IMPACT_K]
    impact_gamma = params[P_IMPACT_GAMMA]
    permanent = params[P_PERMANENT]
    permanent_decay = params[P_PERMANENT_DECAY]
    used_decay = params[P_USED_DECAY]
    depth_floor = params[P_DEPTH_FLOOR]
    max_rounds = int(params[P_MAX_ROUNDS])
    funding_every = int(params[P_FUNDING_EVERY])
    funding_mode = int(params[P_FUNDING_MODE])

    for k in range(out.shape[0]):
        out[k] = 0.0
    out[TIME_TO_DEPLETION] = np.nan
    fund = fund_initial
    out[FUND_MIN] = fund
    nl = n_long
    ns = n_short
    lhead = 0
    shead = 0
    # Sort-time thresholds: the walks stop on these, so an account whose threshold
    # moved later cannot stop a walk early; such accounts are "loose" and checked
    # on their own each step until the next re-sort.
    lkey = np.empty(n)
    skey = np.empty(n)
    for j in range(nl):
        lkey[j] = thr[lorder[j]]
    for j in range(ns):
        skey[j] = thr[sorder[j]]
    is_loose = np.zeros(n, dtype=np.bool_)
    loose = np.empty(n, dtype=np.int64)
    n_loose = 0
    max_loose = 64 if n // 64 < 64 else n // 64
    touched = np.zeros(4 * n + 1, dtype=np.int64)

    liq = np.empty(n, dtype=np.int64)
    liq_short = np.empty(n)
    liq_bp = np.empty(n)
    liq_x = np.empty(n)
    liq_side = np.empty(n)
    queues = np.empty((2, n), dtype=np.int64)
    qstate = np.empty(4, dtype=np.int64)
    score = np.empty(n)
    pend_rem = np.empty(n)
    pend_next = np.empty(n, dtype=np.int64)
    pend_side = np.empty(n)
    pend_bp = np.empty(n)
    pend_x = np.empty(n)

    disp = 1.0  # displacement of the mark by the permanent impact of forced orders
    used_bid = 0.0  # depth consumed by forced orders, refilling with the recovery half-life
    used_ask = 0.0
    premium_sum = 0.0
    premium_n = 0

    for t in range(1, index.shape[0]):
        if disp != 1.0:
            disp = 1.0 + (disp - 1.0) * permanent_decay
        used_bid *= used_decay
        used_ask *= used_decay
        mark = mark0[t] * disp
        if funding_every > 0 and t % funding_every == 0:
            premium = premium_sum / premium_n if premium_n > 0 else 0.0
            f = funding_rate(funding_mode, params[P_FUNDING_RATE], premium,
                             params[P_FUNDING_INTEREST], params[P_FUNDING_CLAMP],
                             params[P_FUNDING_CAP])
            out[FUNDING_VOLUME] += _pay_funding(f, mark, qty, entry, collateral, thr, floor,
                                                cap, mmr, amt, touched)
            n_loose = _loosen(qty, touched, is_loose, loose, n_loose)
            premium_sum = 0.0
            premium_n = 0
            if n_loose > max_loose:
                nl, ns = _resort(qty, thr, lorder, sorder, lkey, skey, is_loose, loose, n_loose)
                n_loose, lhead, shead = 0, 0, 0
        step_mark = mark
        rounds = 0
        n_pend = 0
        while True:
            m = _detect(mark, qty, entry, collateral, thr, lorder, sorder, lkey, skey, lhead,
                        shead, nl, ns, is_loose, loose, n_loose, cap, mmr, amt, liq)
            if m == 0:
                break
            if rounds == max_rounds:
                out[CASCADE_CAP_HITS] += 1.0  # the rest waits for the next step
                break
            rounds += 1
            # The round's forced orders per side, and their fills.
            sell = 0.0
            buy = 0.0
            for j in range(m):
                q = qty[liq[j]]
                if q > 0.0:
                    sell += q * mark
                else:
                    buy -= q * mark
            d_bid = depth_bid[t] - used_bid
            if d_bid < depth_floor:
                d_bid = depth_floor
            d_ask = depth_ask[t] - used_ask
            if d_ask < depth_floor:
                d_ask = depth_floor
            imp_sell = impact_fraction(sell, d_bid, impact_k, impact_gamma)
            imp_buy = impact_fraction(buy, d_ask, impact_k, impact_gamma)
            away_sell = slippage + gap_bid[t] + imp_sell
            if away_sell > 0.99:
                away_sell = 0.99
            x_sell = mark * (1.0 - away_sell)
            x_buy = mark * (1.0 + (slippage + gap_ask[t] + imp_buy))
            used_bid += sell
            used_ask += buy
            # Close every breached position; surpluses and fees reach the fund
            # before any shortfall of the round is paid.
            for j in range(m):
                i = liq[j]
                q = qty[i]
                s = 1.0 if q > 0.0 else -1.0
                x = x_sell if q > 0.0 else x_buy
                eq_x = collateral[i] + q * (x - entry[i])
                fee = fee_rate * abs(q) * x
                fee_paid = 0.0
                if eq_x > 0.0:
                    fee_paid = fee if eq_x >= fee else eq_x
                surplus = eq_x - fee if eq_x > fee else 0.0
                inflow = fee_paid * fee_share + surplus
                fund += inflow
                out[FUND_INFLOW] += inflow
                liq_short[j] = -eq_x if eq_x < 0.0 else 0.0
                liq_bp[j] = entry[i] - collateral[i] / q
                liq_x[j] = x
                liq_side[j] = s
                out[N_LIQUIDATIONS] += 1.0
                out[LIQUIDATED_NOTIONAL] += abs(q) * mark
                qty[i] = 0.0
                collateral[i] = 0.0
            qstate[0] = -1  # ADL queues are ranked at this round's mark on first use
            qstate[2] = -1
            for j in range(m):
                sf = liq_short[j]
                if sf > 0.0:
                    out[SHORTFALL] += sf
                    out[N_SHORTFALLS] += 1.0
                    fund, n_pend = _waterfall(0, sf, t, step_minutes, layers, liq_side[j],
                                              liq_bp[j], liq_x[j], mark, fund, qty, entry,
                                              collateral, thr, floor, cap, mmr, amt,
                                              adl_basis, queues, score, qstate, touched, out,
                                              pend_rem, pend_next, pend_side, pend_bp,
                                              pend_x, n_pend)
            n_loose = _loosen(qty, touched, is_loose, loose, n_loose)
            while lhead < nl and qty[lorder[lhead]] == 0.0:
                lhead += 1
            while shead < ns and qty[sorder[shead]] == 0.0:
                shead += 1
            move = 1.0 - permanent * imp_sell + permanent * imp_buy
            if move == 1.0:
                break  # the mark did not move: nothing new can breach this step
            mark *= move
            disp *= move
        if rounds > out[CASCADE_ROUNDS]:
            out[CASCADE_ROUNDS] = rounds
        moved = abs(mark / step_mark - 1.0)
        if moved > out[CASCADE_MOVE]:
            out[CASCADE_MOVE] = moved
        premium = mark / index[t] - 1.0
        premium_sum += premium
        premium_n += 1
        if abs(premium) > out[MARK_INDEX_GAP]:
            out[MARK_INDEX_GAP] = abs(premium)
        if n_pend > 0:
            pot = 0.0
            for p in range(n_pend):
                pot += pend_rem[p]
            charged = _socialise(pot, mark, qty, entry, collateral, thr, floor, cap, mmr, amt,
                                 touched)
            if charged > 0.0:
                qstate[0] = -1  # haircuts changed the scores: rank again if needed
                qstate[2] = -1
            out[SOCIALISED_LOSS] += charged
            left = (pot - charged) / pot
            if left > 0.0:
                # What the haircut could not cover continues down each waterfall.
                for p in range(n_pend):
                    fund, _ = _waterfall(pend_next[p], pend_rem[p] * left, t,
                                         step_minutes, layers, pend_side[p], pend_bp[p],
                                         pend_x[p], mark, fund, qty, entry, collateral,
                                         thr, floor, cap, mmr, amt, adl_basis, queues,
                                         score, qstate, touched, out, pend_rem, pend_next,
                                         pend_side, pend_bp, pend_x, n_pend)
            n_loose = _loosen(qty, touched, is_loose, loose, n_loose)
        if fund < out[FUND_MIN]:
            out[FUND_MIN] = fund
        if n_loose > max_loose:
            nl, ns = _resort(qty, thr, lorder, sorder, lkey, skey, is_loose, loose, n_loose)
            n_loose, lhead, shead = 0, 0, 0
        # Skip the closed positions at the head of each side.
        while lhead < nl and qty[lorder[lhead]] == 0.0:
            lhead += 1
        while shead < ns and qty[sorder[shead]] == 0.0:
            shead += 1
    out[FUND_FINAL] = fund
    return fund


simulate_path = njit(cache=True)(simulate_path_python)


def make_params(fund_initial=0.0, fee_rate=0.0, fee_share=1.0, slippage=0.0,
                step_minutes=1.0, adl_basis=0, impact_k=0.0, impact_gamma=1.0, permanent=0.0,
                permanent_decay=1.0, used_decay=1.0, depth_floor=0.0, max_rounds=50,
                funding_every=0, funding_mode=0, funding_rate=0.0, funding_interest=0.0,
                funding_clamp=0.0, funding_cap=1.0):
    """The kernel's ``params`` array from keyword values (defaults: no liquidity model,
    no funding)."""
    values = dict(locals())
    return np.array([float(values[name]) for name in PARAMS])


def simulate(prices, book, tiers, layers, fund_initial, fee_rate=0.0, fee_share=1.0,
             slippage=0.0, step_minutes=1.0, adl_basis=0, prepared=None, liquidity=None,
             **params):
    """Run one path on a copy of ``book``; returns the metrics array.

    ``prepared`` is :func:`prepare_book`'s result for this book (computed if
    not given); it is copied, so it can be shared between calls. ``liquidity``
    is a :class:`stress.market.liquidity.PathLiquidity` (default: mark = index,
    infinite depth, no gaps); further keywords go to :func:`make_params`.
    """
    floor, cap = tiers.floor, tiers.kernel_cap
    mmr, amt = tiers.mmr, tiers.maint_amount
    if prepared is None:
        prepared = prepare_book(book.qty, book.entry, book.collateral, floor, cap, mmr, amt)
    thr, lorder, sorder, nl, ns = prepared
    index = np.ascontiguousarray(prices, dtype=np.float64)
    if liquidity is None:
        inf = np.full(index.shape[0], np.inf)
        zero = np.zeros(index.shape[0])
        mark0, d_bid, d_ask, g_bid, g_ask = index, inf, inf, zero, zero
    else:
        mark0, d_bid, d_ask = liquidity.mark, liquidity.depth_bid, liquidity.depth_ask
        g_bid, g_ask = liquidity.gap_bid, liquidity.gap_ask
    p = make_params(fund_initial=fund_initial, fee_rate=fee_rate, fee_share=fee_share,
                    slippage=slippage, step_minutes=step_minutes, adl_basis=adl_basis,
                    **params)
    out = np.empty(N_METRICS)
    simulate_path(index, mark0, d_bid, d_ask, g_bid, g_ask, book.qty.copy(), book.entry,
                  book.collateral.copy(), thr.copy(), lorder.copy(), sorder.copy(), nl, ns,
                  floor, cap, mmr, amt, np.asarray(layers, dtype=np.int64), p, out)
    return out
