"""The liquidation kernel: one price path, one book, one loss policy.

Written as plain Python and compiled with numba (``simulate_path``); with
``STRESS_DISABLE_NUMBA=1`` the same source runs uncompiled. The naive,
obviously-correct version of the same rules is
:mod:`stress.exchange.reference`; the tests check that both agree.

Why it is fast: while an account's position and collateral do not change,
every event that can happen to it (liquidation ``equity ≤ requirement``, its
stop-loss, its next margin alert) is triggered by the mark crossing a price;
the nearest of those prices is the account's threshold. The kernel keeps open
longs sorted by threshold (highest first) and shorts (lowest first); each
step walks each side from its head only while the mark crosses the
threshold, so a path costs O(steps + events) after an O(n log n) sort shared
by every policy and path that use the book. Each candidate is confirmed with
the exact tests, so the threshold only has to be a safe filter. When ADL, a
haircut, funding, a top-up or a partial liquidation changes an account, its
threshold is recomputed and it is checked on its own each step until the
next re-sort of the book.

Accounts are rows of a float64 array ``acct[n, N_ACCT]`` with the columns
below; the tier table is ``tt[4, k]`` (floor, cap with ``cap[-1] = inf``,
mmr, maintenance amount). Contracts are linear here: an inverse contract is
simulated as a linear one in the price ``1/P`` (see
:func:`stress.exchange.contracts`).
"""

from __future__ import annotations

import numpy as np

from stress._jit import njit
from stress.runner.variables import (ADL_COST, ADL_NOTIONAL, CASCADE_CAP_HITS,
                                     CASCADE_MOVE, CASCADE_ROUNDS, FUND_DEPLETED, FUND_FINAL,
                                     FUND_INFLOW, FUND_MIN, FUND_PAID, FUNDING_VOLUME,
                                     LIQUIDATED_NOTIONAL, MARK_INDEX_GAP, MAX_ALERTS, N_ADL,
                                     N_ALERTS_HIT, N_LIQUIDATIONS, N_METRICS, N_PARTIAL,
                                     N_SHORTFALLS, N_STOPS, N_TOPUPS, P, PARAMS,
                                     PLATFORM_LOSS, RESIDUAL, SHORTFALL, SHORTFALL_QUOTE,
                                     SOCIALISED_LOSS, STOP_NOTIONAL, TIME_TO_DEPLETION,
                                     TOPUP_VOLUME)

# Columns of the account array.
Q = 0  # signed quantity (base units; + long)
E = 1  # entry price
C = 2  # collateral backing the position (isolated margin, or the cross wallet)
THR = 3  # event threshold (price)
STOP = 4  # stop-loss trigger price, NaN = none
BUDGET = 5  # top-up budget left
ALERT = 6  # index of the next margin-alert level to cross
U = 7  # the account's uniform draw of the path, for top-up decisions
NTOP = 8  # top-up decisions made so far
N_ACCT = 9

# Rows of the tier array.
T_FLOOR = 0
T_CAP = 1
T_MMR = 2
T_AMT = 3

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
P_REQ_FEE = P["req_fee"]
P_MM_ENTRY = P["mm_entry"]
P_LIQ_STYLE = P["liq_style"]
P_PARTIAL_FRACTION = P["partial_fraction"]
P_PARTIAL_MIN_TIER = P["partial_min_tier"]
P_SURPLUS_TO_TRADER = P["surplus_to_trader"]
P_TOPUP_PROB = P["topup_prob"]
P_TOPUP_TARGET = P["topup_target"]
P_INVERSE = P["inverse"]
P_N_ALERTS = P["n_alerts"]
P_ALERT0 = P["alert0"]

LAYER_FUND = 0
LAYER_ADL = 1
LAYER_SOCIALISED = 2
LAYER_PLATFORM = 3

STYLE_FULL = 0
STYLE_PARTIAL = 1
STYLE_STEPWISE = 2

# Actions of a candidate account at the mark.
ACT_NONE = 0
ACT_STOP = 1
ACT_LIQUIDATE = 2
ACT_ALERT = 3

# Relative slack of the threshold filter; the exact tests decide.
_SLACK = 1e-9
# Largest price impact of one round's forced orders, fraction of the price.
MAX_IMPACT = 0.99
# Most partial-liquidation steps of one account in one round before it is closed.
MAX_PARTIAL_STEPS = 64
# Weyl increment (golden ratio) of an account's successive top-up decisions.
_PHI = 0.6180339887498949


@njit(cache=True)
def tier_index(notional, cap):
    """Tier holding ``notional`` (floor < n <= cap); ``cap[-1]`` is +inf."""
    k = 0
    while notional > cap[k]:
        k += 1
    return k


@njit(cache=True)
def requirement(qty, entry, mark, tt, req_fee, mm_entry):
    """Maintenance requirement at ``mark``: MM of the notional at the mark (or at entry,
    ``mm_entry``) plus ``req_fee`` × the notional at the mark."""
    aq = abs(qty)
    n = aq * entry if mm_entry else aq * mark
    k = tier_index(n, tt[T_CAP])
    return n * tt[T_MMR, k] - tt[T_AMT, k] + req_fee * aq * mark


@njit(cache=True)
def is_breached(qty, entry, collateral, mark, tt, req_fee, mm_entry, scale):
    """Exact trigger: equity ≤ scale × requirement at the mark (scale 1: liquidation;
    1/level: the margin ratio reached an alert level)."""
    if qty == 0.0:
        return False
    equity = collateral + qty * (mark - entry)
    return equity <= scale * requirement(qty, entry, mark, tt, req_fee, mm_entry)


@njit(cache=True)
def threshold(qty, entry, collateral, tt, req_fee, mm_entry, scale):
    """Price bound of the trigger ``equity ≤ scale × requirement``, widened by a
    relative slack: a long can only be breached at ``mark <= threshold``, a short
    only at ``mark >= threshold``.

    Per tier, ``equity(p) − scale·requirement(p) = A + B·p`` is linear in p; the
    breached set of a long is bounded above by the largest in-bracket bound
    (below for a short). This holds for discontinuous tables too, where it is
    only a bound. With ``mm_entry`` the maintenance margin is a constant (the
    tier of the entry notional) and there is one piece.
    """
    q = abs(qty)
    floor = tt[T_FLOOR]
    cap = tt[T_CAP]
    mmr = tt[T_MMR]
    amt = tt[T_AMT]
    n = cap.shape[0]
    if mm_entry:
        k = tier_index(q * entry, cap)
        mm_e = q * entry * mmr[k] - amt[k]
        n = 1
    if qty > 0.0:
        best = -np.inf
        for k in range(n):
            if mm_entry:
                a = collateral - q * entry - scale * mm_e
                b = q * (1.0 - scale * req_fee)
                lo = 0.0
                hi = np.inf
            else:
                a = collateral - q * entry + scale * amt[k]
                b = q * (1.0 - scale * (mmr[k] + req_fee))
                lo = floor[k] / q
                hi = cap[k] / q
            if b > 0.0:
                root = -a / b
                if root > lo or k == 0:
                    c = root if root < hi else hi
                    if c > best:
                        best = c
            elif a + b * hi <= 0.0 or (b < 0.0 and hi == np.inf):
                # Equity falls no faster than the requirement: the top of the bracket
                # is breached (and with it everything above the root).
                if hi > best:
                    best = hi
        return best + _SLACK * abs(best)
    elif qty < 0.0:
        best = np.inf
        for k in range(n):
            if mm_entry:
                root = (collateral + q * entry - scale * mm_e) / (q * (1.0 + scale * req_fee))
                lo = 0.0
                hi = np.inf
            else:
                root = ((q * entry + collateral + scale * amt[k])
                        / (q * (1.0 + scale * (mmr[k] + req_fee))))
                lo = floor[k] / q
                hi = cap[k] / q
            if root <= hi:
                c = root if root > lo else lo
                if c < best:
                    best = c
        return best - _SLACK * abs(best)
    return np.nan


@njit(cache=True)
def liquidation_threshold(qty, entry, collateral, floor, cap, mmr, amt):
    """:func:`threshold` of the liquidation trigger with MM on the mark notional and
    no fee in the requirement (the tier table given as four arrays)."""
    tt = np.empty((4, cap.shape[0]))
    tt[T_FLOOR] = floor
    tt[T_CAP] = cap
    tt[T_MMR] = mmr
    tt[T_AMT] = amt
    return threshold(qty, entry, collateral, tt, 0.0, False, 1.0)


@njit(cache=True)
def liquidation_prices(acct, tt, params):
    """Each account's liquidation price (NaN for a closed position): the liquidation
    trigger's :func:`threshold` with the slack taken off."""
    n = acct.shape[0]
    out = np.empty(n)
    req_fee = params[P_REQ_FEE]
    mm_entry = params[P_MM_ENTRY] != 0.0
    for i in range(n):
        q = acct[i, Q]
        if q == 0.0:
            out[i] = np.nan
            continue
        thr = threshold(q, acct[i, E], acct[i, C], tt, req_fee, mm_entry, 1.0)
        out[i] = thr / (1.0 + _SLACK) if q > 0.0 else thr / (1.0 - _SLACK)
    return out


@njit(cache=True)
def breached_mask(acct, mark, tt, params):
    """Which accounts are liquidatable at ``mark`` (:func:`is_breached`)."""
    n = acct.shape[0]
    out = np.zeros(n, dtype=np.bool_)
    req_fee = params[P_REQ_FEE]
    mm_entry = params[P_MM_ENTRY] != 0.0
    for i in range(n):
        out[i] = is_breached(acct[i, Q], acct[i, E], acct[i, C], mark, tt, req_fee, mm_entry,
                             1.0)
    return out


@njit(cache=True)
def event_threshold(i, acct, tt, params):
    """The nearest price at which something happens to account ``i``: its
    liquidation, its stop-loss or its next margin alert."""
    q = acct[i, Q]
    if q == 0.0:
        return np.nan
    req_fee = params[P_REQ_FEE]
    mm_entry = params[P_MM_ENTRY] != 0.0
    thr = threshold(q, acct[i, E], acct[i, C], tt, req_fee, mm_entry, 1.0)
    stop = acct[i, STOP]
    if stop == stop:
        if (q > 0.0 and stop > thr) or (q < 0.0 and stop < thr):
            thr = stop
    a = int(acct[i, ALERT])
    if a < int(params[P_N_ALERTS]):
        t2 = threshold(q, acct[i, E], acct[i, C], tt, req_fee, mm_entry,
                       1.0 / params[P_ALERT0 + a])
        if (q > 0.0 and t2 > thr) or (q < 0.0 and t2 < thr):
            thr = t2
    return thr


@njit(cache=True)
def action(i, mark, acct, tt, params):
    """What happens to account ``i`` at ``mark``: liquidation (it takes precedence:
    the engine cancels the trader's orders), its stop-loss, a margin alert, or nothing."""
    q = acct[i, Q]
    if q == 0.0:
        return ACT_NONE
    e = acct[i, E]
    c = acct[i, C]
    req_fee = params[P_REQ_FEE]
    mm_entry = params[P_MM_ENTRY] != 0.0
    if is_breached(q, e, c, mark, tt, req_fee, mm_entry, 1.0):
        return ACT_LIQUIDATE
    stop = acct[i, STOP]
    if stop == stop and ((q > 0.0 and mark <= stop) or (q < 0.0 and mark >= stop)):
        return ACT_STOP
    a = int(acct[i, ALERT])
    if a < int(params[P_N_ALERTS]) and is_breached(q, e, c, mark, tt, req_fee, mm_entry,
                                                   1.0 / params[P_ALERT0 + a]):
        return ACT_ALERT
    return ACT_NONE


@njit(cache=True)
def sort_book(acct, lorder, sorder, lkey, skey):
    """Open longs by threshold, highest first, into ``lorder``; open shorts, lowest
    first, into ``sorder``; the thresholds at sorting time into ``lkey``/``skey``.
    Returns the counts ``(n_long, n_short)``."""
    nl = 0
    ns = 0
    for i in range(acct.shape[0]):
        if acct[i, Q] > 0.0:
            lorder[nl] = i
            nl += 1
        elif acct[i, Q] < 0.0:
            sorder[ns] = i
            ns += 1
    key = np.empty(nl)
    for j in range(nl):
        key[j] = -acct[lorder[j], THR]
    perm = np.argsort(key, kind="mergesort")
    tmp = lorder[:nl].copy()
    for j in range(nl):
        lorder[j] = tmp[perm[j]]
        lkey[j] = acct[lorder[j], THR]
    key = np.empty(ns)
    for j in range(ns):
        key[j] = acct[sorder[j], THR]
    perm = np.argsort(key, kind="mergesort")
    tmp = sorder[:ns].copy()
    for j in range(ns):
        sorder[j] = tmp[perm[j]]
        skey[j] = acct[sorder[j], THR]
    return nl, ns


@njit(cache=True)
def prepare_book(acct, tt, params):
    """Fill ``acct[:, THR]`` and sort the book: ``(lorder, sorder, n_long, n_short)``.

    Computed once per book and shared (copied) by every policy and path that use
    it (the thresholds depend on the exchange's rules in ``params``, not on the
    policy).
    """
    n = acct.shape[0]
    for i in range(n):
        acct[i, THR] = event_threshold(i, acct, tt, params)
    lorder = np.empty(n, dtype=np.int64)
    sorder = np.empty(n, dtype=np.int64)
    nl, ns = sort_book(acct, lorder, sorder, np.empty(n), np.empty(n))
    return lorder, sorder, nl, ns


@njit(cache=True)
def _moved(i, acct, tt, params, touched):
    """Account ``i`` changed: recompute its threshold and record it (``touched[0]`` is
    the count; a closed position needs no record: the walks skip it)."""
    acct[i, THR] = event_threshold(i, acct, tt, params)
    if acct[i, Q] != 0.0:
        touched[0] += 1
        touched[touched[0]] = i


@njit(cache=True)
def _adl_queue(bside, mark, acct, adl_basis, queue, score):
    """Rank the counterparties of a bankrupt ``bside`` position into ``queue``.

    Opposite-side accounts with positive uPnL at the mark, highest
    ``PnL% × effective leverage`` first (PnL% on collateral, ``adl_basis`` 0, or on
    entry value, 1; effective leverage = mark notional / equity); ties in
    account order. Returns the queue length.
    """
    m = 0
    for i in range(acct.shape[0]):
        q = acct[i, Q]
        if q * bside < 0.0:
            upnl = q * (mark - acct[i, E])
            if upnl > 0.0:
                eq = acct[i, C] + upnl
                base = acct[i, C] if adl_basis == 0 else abs(q) * acct[i, E]
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
def _adl(bside, bp, x, need, mark, acct, tt, params, queues, score, qstate, touched, out):
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
        qstate[2 * k] = _adl_queue(bside, mark, acct, int(params[P_ADL_BASIS]), queue, score)
        qstate[2 * k + 1] = 0
    m = qstate[2 * k]
    r = qstate[2 * k + 1]
    need_qty = need / unit_cost
    covered = 0.0
    while r < m:
        i = queue[r]
        q = acct[i, Q]
        if q == 0.0:
            r += 1
            continue
        s = 1.0 if q > 0.0 else -1.0
        take = abs(q)
        full = False
        if take >= need_qty:
            take = need_qty
            full = True
        realised = s * take * (bp - acct[i, E])
        if acct[i, C] + realised < 0.0:
            # Never make the counterparty bankrupt: close only what its margin pays.
            take = acct[i, C] / abs(bp - acct[i, E])
            realised = -acct[i, C]
            full = False
        if take > 0.0:
            acct[i, C] += realised
            if take >= abs(q):
                acct[i, Q] = 0.0
            else:
                acct[i, Q] = q - s * take
            _moved(i, acct, tt, params, touched)
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
def _waterfall(start, remaining, t, layers, bside, bp, x, mark, fund, acct, tt, params,
               queues, score, qstate, touched, out, pend_rem, pend_next, pend_side, pend_bp,
               pend_x, n_pend):
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
                    out[TIME_TO_DEPLETION] = t * params[P_STEP_MINUTES]
            fund -= pay
            remaining -= pay
            out[FUND_PAID] += pay
            if fund < out[FUND_MIN]:
                out[FUND_MIN] = fund
        elif layer == LAYER_ADL:
            c = _adl(bside, bp, x, remaining, mark, acct, tt, params, queues, score, qstate,
                     touched, out)
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
def _socialise(pot, mark, acct, tt, params, touched):
    """Charge ``pot`` to accounts with positive uPnL, pro rata, each at most its uPnL.

    Returns the amount charged.
    """
    total = 0.0
    for i in range(acct.shape[0]):
        if acct[i, Q] != 0.0:
            upnl = acct[i, Q] * (mark - acct[i, E])
            if upnl > 0.0:
                total += upnl
    if total <= 0.0:
        return 0.0
    everything = pot >= total
    for i in range(acct.shape[0]):
        if acct[i, Q] != 0.0:
            upnl = acct[i, Q] * (mark - acct[i, E])
            if upnl > 0.0:
                charge = upnl if everything else pot * (upnl / total)
                acct[i, C] -= charge
                _moved(i, acct, tt, params, touched)
    return total if everything else pot


@njit(cache=True, inline="always")
def _candidate(a, mark, acct, tt, params, cand, act, m):
    """Append account ``a`` to the candidates if something happens to it at ``mark``;
    returns the new count."""
    w = action(a, mark, acct, tt, params)
    if w != ACT_NONE:
        cand[m] = a
        act[m] = w
        m += 1
    return m


@njit(cache=True)
def _detect(mark, acct, tt, params, lorder, sorder, lkey, skey, lhead, shead, nl, ns,
            is_loose, loose, n_loose, cand, act):
    """Accounts with something to do at ``mark`` into ``cand`` (actions in ``act``), in
    account order; returns their count.

    Walk each sorted side from its head while the sort-time threshold is crossed,
    then check the loose accounts; :func:`action` confirms each. (The two walks
    are written out: a shared walk with a side argument cost 8 % of a default run.)
    """
    m = 0
    i = lhead
    while i < nl:
        if lkey[i] < mark:
            break
        a = lorder[i]
        if not is_loose[a] and acct[a, Q] > 0.0:
            m = _candidate(a, mark, acct, tt, params, cand, act, m)
        i += 1
    i = shead
    while i < ns:
        if skey[i] > mark:
            break
        a = sorder[i]
        if not is_loose[a] and acct[a, Q] < 0.0:
            m = _candidate(a, mark, acct, tt, params, cand, act, m)
        i += 1
    for j in range(n_loose):
        a = loose[j]
        q = acct[a, Q]
        thr = acct[a, THR]
        if (q > 0.0 and mark <= thr) or (q < 0.0 and mark >= thr):
            m = _candidate(a, mark, acct, tt, params, cand, act, m)
    if m > 1:
        perm = np.argsort(cand[:m], kind="mergesort")
        c2 = cand[:m].copy()
        a2 = act[:m].copy()
        for j in range(m):
            cand[j] = c2[perm[j]]
            act[j] = a2[perm[j]]
    return m


@njit(cache=True)
def _loosen(acct, touched, is_loose, loose, n_loose):
    """Accounts whose thresholds moved become loose; closed ones leave the list."""
    for j in range(1, touched[0] + 1):
        a = touched[j]
        if acct[a, Q] != 0.0 and not is_loose[a]:
            is_loose[a] = True
            loose[n_loose] = a
            n_loose += 1
    touched[0] = 0
    k = 0
    for j in range(n_loose):
        a = loose[j]
        if acct[a, Q] != 0.0:
            loose[k] = a
            k += 1
        else:
            is_loose[a] = False
    return k


@njit(cache=True)
def _resort(acct, lorder, sorder, lkey, skey, is_loose, loose, n_loose):
    """Re-sort the open book on the current thresholds; no account is loose after."""
    nl, ns = sort_book(acct, lorder, sorder, lkey, skey)
    for j in range(n_loose):
        is_loose[loose[j]] = False
    return nl, ns


@njit(cache=True)
def _alert(i, mark, acct, tt, params, out):
    """Account ``i``'s margin ratio crossed one or more alert levels at ``mark``.

    Counts the levels crossed; an account with budget left then tops up with
    probability ``topup_prob`` (its k-th decision compares ``frac(u + k·φ)`` with
    it, ``u`` its uniform draw of the path): it adds what brings the margin ratio
    back to ``topup_target`` (default half the deepest level crossed), at most its
    budget, and its alerts re-arm at the levels above the new ratio.
    """
    q = acct[i, Q]
    e = acct[i, E]
    req = requirement(q, e, mark, tt, params[P_REQ_FEE], params[P_MM_ENTRY] != 0.0)
    eq = acct[i, C] + q * (mark - e)
    na = int(params[P_N_ALERTS])
    a = int(acct[i, ALERT])
    level = 0.0
    while a < na and eq <= (1.0 / params[P_ALERT0 + a]) * req:
        level = params[P_ALERT0 + a]
        out[N_ALERTS_HIT] += 1.0
        a += 1
    acct[i, ALERT] = a
    prob = params[P_TOPUP_PROB]
    if acct[i, BUDGET] > 0.0 and prob > 0.0 and level > 0.0:
        v = acct[i, U] + acct[i, NTOP] * _PHI
        v -= np.floor(v)
        acct[i, NTOP] += 1.0
        if v < prob:
            target = params[P_TOPUP_TARGET]
            if target <= 0.0:
                target = 0.5 * level
            add = req / target - eq
            if add > acct[i, BUDGET]:
                add = acct[i, BUDGET]
            if add > 0.0:
                acct[i, C] += add
                acct[i, BUDGET] -= add
                out[N_TOPUPS] += 1.0
                out[TOPUP_VOLUME] += add
                eq += add
                a = 0
                while a < na and eq <= (1.0 / params[P_ALERT0 + a]) * req:
                    a += 1
                acct[i, ALERT] = a


@njit(cache=True)
def _planned(i, act_i, mark, acct, tt, params):
    """Quantity the round's first order for account ``i`` closes (for its impact)."""
    aq = abs(acct[i, Q])
    if act_i != ACT_LIQUIDATE:
        return aq
    style = int(params[P_LIQ_STYLE])
    if style == STYLE_FULL:
        return aq
    k = tier_index(aq * mark, tt[T_CAP])
    if style == STYLE_PARTIAL:
        if k + 1 < params[P_PARTIAL_MIN_TIER]:
            return aq
        return params[P_PARTIAL_FRACTION] * aq
    if k == 0:
        return aq
    return aq - tt[T_CAP, k - 1] / mark


@njit(cache=True)
def _reduce(i, x, mark, fund, acct, tt, params, out):
    """Partial or stepwise liquidation of account ``i`` at fill ``x``.

    Closes the planned part (a fraction, or what exceeds the next-lower tier's
    cap at the mark), realises its PnL into the collateral, takes the fee on it,
    and re-checks at the mark; repeats until the account is healthy. Returns
    ``(fund, done)``: ``done`` is False when the rest must be closed in full (the
    position is in the bottom tier, below the partial tier, would not survive the
    fill, or kept breaching).
    """
    req_fee = params[P_REQ_FEE]
    mm_entry = params[P_MM_ENTRY] != 0.0
    fee_rate = params[P_FEE_RATE]
    for _ in range(MAX_PARTIAL_STEPS):
        q = acct[i, Q]
        aq = abs(q)
        dq = _planned(i, ACT_LIQUIDATE, mark, acct, tt, params)
        if dq >= aq:
            return fund, False
        e = acct[i, E]
        fee = fee_rate * dq * x
        if acct[i, C] + q * (x - e) - fee <= 0.0:
            return fund, False  # under water at the fill: a full close
        s = 1.0 if q > 0.0 else -1.0
        acct[i, C] += s * dq * (x - e) - fee
        acct[i, Q] = q - s * dq
        inflow = fee * params[P_FEE_SHARE]
        fund += inflow
        out[FUND_INFLOW] += inflow
        out[N_PARTIAL] += 1.0
        out[LIQUIDATED_NOTIONAL] += dq * mark
        if not is_breached(acct[i, Q], e, acct[i, C], mark, tt, req_fee, mm_entry, 1.0):
            return fund, True
    return fund, False


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
def _pay_funding(f, mark, acct, tt, params, touched):
    """Longs pay shorts ``f`` × their notional (the reverse when ``f`` < 0); receivers
    share the payers' total pro rata to notional, so funding is zero-sum. Returns
    the amount transferred."""
    nl = 0.0
    ns = 0.0
    for i in range(acct.shape[0]):
        q = acct[i, Q]
        if q > 0.0:
            nl += q * mark
        elif q < 0.0:
            ns -= q * mark
    if f == 0.0 or nl == 0.0 or ns == 0.0:
        return 0.0
    payers = nl if f > 0.0 else ns
    receivers = ns if f > 0.0 else nl
    total = abs(f) * payers
    for i in range(acct.shape[0]):
        q = acct[i, Q]
        if q == 0.0:
            continue
        n = abs(q) * mark
        if (q > 0.0) == (f > 0.0):
            acct[i, C] -= abs(f) * n
        else:
            acct[i, C] += total * (n / receivers)
        _moved(i, acct, tt, params, touched)
    return total


def simulate_path_python(index, mark0, depth_bid, depth_ask, gap_bid, gap_ask, acct, lorder,
                         sorder, n_long, n_short, tt, layers, params, out, fwork, iwork,
                         touched, is_loose):
    """Step one book through one price path under one loss policy.

    Parameters
    ----------
    index : float64[steps + 1]
        Index price at the start (0) and the end of every step.
    mark0, depth_bid, depth_ask, gap_bid, gap_ask : float64[steps + 1]
        Mark before forced-order impact, book depth per side (quote within the
        reference band; +inf = no impact) and empty bands beyond the mark
        (:func:`stress.market.liquidity.path_liquidity`).
    acct : float64[n, N_ACCT]
        The accounts (columns ``Q, E, C, THR, STOP, BUDGET, ALERT, U, NTOP``),
        updated in place: pass a copy. ``THR`` from :func:`prepare_book`.
    lorder, sorder, n_long, n_short
        The book's sorted orders from :func:`prepare_book` (updated in place:
        pass copies).
    tt : float64[4, tiers]
        Tier table rows floor, cap (``cap[-1]`` = +inf), mmr, maintenance amount.
    layers : int64[k]
        Loss waterfall (codes ``LAYER_*``).
    params : float64[N_PARAMS]
        Scalars in the order of :data:`stress.runner.variables.PARAMS`.
    out : float64[N_METRICS]
        Per-path metrics, filled in (see :mod:`stress.runner.variables`).
    fwork, iwork, touched, is_loose
        Scratch arrays from :func:`workspace` (reused across calls, so that a
        path allocates nothing).

    Each step: the mark's displacement by earlier forced orders decays, funding
    is paid at its interval, then rounds run at the mark. A round's candidates
    are found; margin alerts are counted and top-ups made; the stop-losses and
    liquidations form the round's orders, filled at ``mark·(1 ∓ (slippage + gap
    + impact))`` with impact ``k·(Q/D)^γ`` of the round's forced notional per
    side against the depth left. A stop closes the whole position; a
    liquidation closes it in full, or partially / stepwise with re-checks at the
    same fill. The permanent part of the impact moves the mark, and a new round
    starts while that triggers more accounts (up to the round cap). Shortfalls
    go down the waterfall round by round; a socialised layer settles at the end
    of the step.

    Cost: O(steps + events). Accounts whose threshold moves are checked on
    their own each step; when more than max(64, n/64) are, the book is re-sorted.
    """
    n = acct.shape[0]
    fee_rate = params[P_FEE_RATE]
    fee_share = params[P_FEE_SHARE]
    slippage = params[P_SLIPPAGE]
    impact_k = params[P_IMPACT_K]
    impact_gamma = params[P_IMPACT_GAMMA]
    permanent = params[P_PERMANENT]
    permanent_decay = params[P_PERMANENT_DECAY]
    used_decay = params[P_USED_DECAY]
    depth_floor = params[P_DEPTH_FLOOR]
    max_rounds = int(params[P_MAX_ROUNDS])
    funding_every = int(params[P_FUNDING_EVERY])
    funding_mode = int(params[P_FUNDING_MODE])
    style = int(params[P_LIQ_STYLE])
    to_trader = params[P_SURPLUS_TO_TRADER] != 0.0
    inverse = params[P_INVERSE] != 0.0

    for k in range(out.shape[0]):
        out[k] = 0.0
    out[TIME_TO_DEPLETION] = np.nan
    fund = params[P_FUND_INITIAL]
    out[FUND_MIN] = fund
    nl = n_long
    ns = n_short
    lhead = 0
    shead = 0
    # Sort-time thresholds: the walks stop on these, so an account whose threshold
    # moved later cannot stop a walk early; such accounts are "loose" and checked
    # on their own each step until the next re-sort.
    lkey = fwork[0, :n]
    skey = fwork[1, :n]
    liq_short = fwork[2, :n]
    liq_bp = fwork[3, :n]
    liq_x = fwork[4, :n]
    liq_side = fwork[5, :n]
    score = fwork[6, :n]
    pend_rem = fwork[7, :n]
    pend_side = fwork[8, :n]
    pend_bp = fwork[9, :n]
    pend_x = fwork[10, :n]
    loose = iwork[0, :n]
    cand = iwork[1, :n]
    act = iwork[2, :n]
    pend_next = iwork[3, :n]
    queues = iwork[4:6, :n]
    for j in range(nl):
        lkey[j] = acct[lorder[j], THR]
    for j in range(ns):
        skey[j] = acct[sorder[j], THR]
    for j in range(n):
        is_loose[j] = False
    touched[0] = 0
    n_loose = 0
    max_loose = 64 if n // 64 < 64 else n // 64
    qstate = np.empty(4, dtype=np.int64)

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
            out[FUNDING_VOLUME] += _pay_funding(f, mark, acct, tt, params, touched)
            n_loose = _loosen(acct, touched, is_loose, loose, n_loose)
            premium_sum = 0.0
            premium_n = 0
            if n_loose > max_loose:
                nl, ns = _resort(acct, lorder, sorder, lkey, skey, is_loose, loose, n_loose)
                n_loose, lhead, shead = 0, 0, 0
        step_mark = mark
        rounds = 0
        n_pend = 0
        while True:
            m = _detect(mark, acct, tt, params, lorder, sorder, lkey, skey, lhead, shead, nl,
                        ns, is_loose, loose, n_loose, cand, act)
            # Alerts (and top-ups) first; the stops and liquidations are the orders.
            n_orders = 0
            alerted = False
            for j in range(m):
                if act[j] == ACT_ALERT:
                    _alert(cand[j], mark, acct, tt, params, out)
                    _moved(cand[j], acct, tt, params, touched)
                    alerted = True
                else:
                    cand[n_orders] = cand[j]
                    act[n_orders] = act[j]
                    n_orders += 1
            if alerted:
                n_loose = _loosen(acct, touched, is_loose, loose, n_loose)
            if n_orders == 0:
                break
            if rounds == max_rounds:
                out[CASCADE_CAP_HITS] += 1.0  # the rest waits for the next step
                break
            rounds += 1
            # The round's forced orders per side, and their fills.
            sell = 0.0
            buy = 0.0
            for j in range(n_orders):
                i = cand[j]
                vol = _planned(i, act[j], mark, acct, tt, params) * mark
                if acct[i, Q] > 0.0:
                    sell += vol
                else:
                    buy += vol
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
            # Close or reduce every position; surpluses and fees reach the fund
            # before any shortfall of the round is paid.
            n_short_round = 0
            for j in range(n_orders):
                i = cand[j]
                q = acct[i, Q]
                x = x_sell if q > 0.0 else x_buy
                if act[j] == ACT_LIQUIDATE and style != STYLE_FULL:
                    fund, done = _reduce(i, x, mark, fund, acct, tt, params, out)
                    if done:
                        _moved(i, acct, tt, params, touched)
                        continue
                    q = acct[i, Q]
                e = acct[i, E]
                c = acct[i, C]
                eq_x = c + q * (x - e)
                if act[j] == ACT_STOP:
                    # The trader's own market order: no liquidation fee; a fill past
                    # the bankruptcy price still leaves a shortfall.
                    out[N_STOPS] += 1.0
                    out[STOP_NOTIONAL] += abs(q) * mark
                else:
                    fee = fee_rate * abs(q) * x
                    fee_paid = 0.0
                    if eq_x > 0.0:
                        fee_paid = fee if eq_x >= fee else eq_x
                    inflow = fee_paid * fee_share
                    if not to_trader and eq_x > fee:
                        inflow += eq_x - fee
                    fund += inflow
                    out[FUND_INFLOW] += inflow
                    out[N_LIQUIDATIONS] += 1.0
                    out[LIQUIDATED_NOTIONAL] += abs(q) * mark
                if eq_x < 0.0:
                    liq_short[n_short_round] = -eq_x
                    liq_bp[n_short_round] = e - c / q
                    liq_x[n_short_round] = x
                    liq_side[n_short_round] = 1.0 if q > 0.0 else -1.0
                    n_short_round += 1
                acct[i, Q] = 0.0
                acct[i, C] = 0.0
            qstate[0] = -1  # ADL queues are ranked at this round's mark on first use
            qstate[2] = -1
            for j in range(n_short_round):
                sf = liq_short[j]
                out[SHORTFALL] += sf
                out[SHORTFALL_QUOTE] += sf / mark if inverse else sf
                out[N_SHORTFALLS] += 1.0
                fund, n_pend = _waterfall(0, sf, t, layers, liq_side[j], liq_bp[j], liq_x[j],
                                          mark, fund, acct, tt, params, queues, score, qstate,
                                          touched, out, pend_rem, pend_next, pend_side,
                                          pend_bp, pend_x, n_pend)
            n_loose = _loosen(acct, touched, is_loose, loose, n_loose)
            while lhead < nl and acct[lorder[lhead], Q] == 0.0:
                lhead += 1
            while shead < ns and acct[sorder[shead], Q] == 0.0:
                shead += 1
            move = 1.0 - permanent * imp_sell + permanent * imp_buy
            if move == 1.0:
                break  # the mark did not move: nothing new can trigger this step
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
            charged = _socialise(pot, mark, acct, tt, params, touched)
            if charged > 0.0:
                qstate[0] = -1  # haircuts changed the scores: rank again if needed
                qstate[2] = -1
            out[SOCIALISED_LOSS] += charged
            left = (pot - charged) / pot
            if left > 0.0:
                # What the haircut could not cover continues down each waterfall.
                for p in range(n_pend):
                    fund, _ = _waterfall(pend_next[p], pend_rem[p] * left, t, layers,
                                         pend_side[p], pend_bp[p], pend_x[p], mark, fund,
                                         acct, tt, params, queues, score, qstate, touched,
                                         out, pend_rem, pend_next, pend_side, pend_bp,
                                         pend_x, n_pend)
            n_loose = _loosen(acct, touched, is_loose, loose, n_loose)
        if fund < out[FUND_MIN]:
            out[FUND_MIN] = fund
        if n_loose > max_loose:
            nl, ns = _resort(acct, lorder, sorder, lkey, skey, is_loose, loose, n_loose)
            n_loose, lhead, shead = 0, 0, 0
        # Skip the closed positions at the head of each side.
        while lhead < nl and acct[lorder[lhead], Q] == 0.0:
            lhead += 1
        while shead < ns and acct[sorder[shead], Q] == 0.0:
            shead += 1
    out[FUND_FINAL] = fund
    return fund


simulate_path = njit(cache=True)(simulate_path_python)


def make_params(fund_initial=0.0, fee_rate=0.0, fee_share=1.0, slippage=0.0,
                step_minutes=1.0, adl_basis=0, impact_k=0.0, impact_gamma=1.0, permanent=0.0,
                permanent_decay=1.0, used_decay=1.0, depth_floor=0.0, max_rounds=50,
                funding_every=0, funding_mode=0, funding_rate=0.0, funding_interest=0.0,
                funding_clamp=0.0, funding_cap=1.0, req_fee=0.0, mm_entry=0, liq_style=0,
                partial_fraction=0.5, partial_min_tier=1, surplus_to_trader=0, topup_prob=0.0,
                topup_target=0.0, inverse=0, alerts=()):
    """The kernel's ``params`` array from keyword values (defaults: no liquidity model,
    no funding, full liquidation, MM on the mark notional, no alerts).

    ``alerts`` are the margin-ratio alert levels, ascending (at most four).
    """
    values = dict(locals())
    alerts = [float(a) for a in values.pop("alerts")]
    if len(alerts) > MAX_ALERTS or any(b <= a for a, b in zip(alerts, alerts[1:])):
        raise ValueError(f"alerts must be at most {MAX_ALERTS} ascending levels, got {alerts}")
    values["n_alerts"] = len(alerts)
    for k in range(MAX_ALERTS):
        values[f"alert{k}"] = alerts[k] if k < len(alerts) else 0.0
    return np.array([float(values[name]) for name in PARAMS])


def workspace(n: int):
    """Scratch arrays of :func:`simulate_path` for books of up to ``n`` accounts:
    ``(fwork, iwork, touched, is_loose)``."""
    return (np.empty((11, n)), np.empty((6, n), dtype=np.int64),
            np.zeros(4 * n + 1, dtype=np.int64), np.zeros(n, dtype=np.bool_))


def tier_array(tiers) -> np.ndarray:
    """The kernel's ``tt[4, k]`` from a :class:`~stress.exchange.tiers.TierTable`."""
    return np.ascontiguousarray(np.stack([tiers.floor, tiers.kernel_cap, tiers.mmr,
                                          tiers.maint_amount]))


def account_array(qty, entry, collateral, stop=None, budget=None, u=None) -> np.ndarray:
    """The kernel's ``acct[n, N_ACCT]`` from per-account arrays (kernel space: linear,
    collateral already including a cross account's wallet). ``THR`` is left for
    :func:`prepare_book`."""
    n = len(qty)
    acct = np.zeros((n, N_ACCT))
    acct[:, Q] = qty
    acct[:, E] = entry
    acct[:, C] = collateral
    acct[:, STOP] = np.nan if stop is None else stop
    if budget is not None:
        acct[:, BUDGET] = budget
    if u is not None:
        acct[:, U] = u
    return acct


def simulate(prices, book, tiers, layers, fund_initial, fee_rate=0.0, fee_share=1.0,
             slippage=0.0, step_minutes=1.0, adl_basis=0, prepared=None, liquidity=None,
             acct=None, u=None, return_accounts=False, **params):
    """Run one path on a copy of ``book`` (linear contracts); returns the metrics array.

    ``book`` is a :class:`stress.population.Book` (cross accounts' free balance is
    added to their collateral, stops and top-up budgets are taken from it), or
    ``acct`` a ready account array. ``prepared`` is :func:`prepare_book`'s result
    for these accounts and parameters (computed if not given; the thresholds
    must then already be in ``acct``). ``liquidity`` is a
    :class:`stress.market.liquidity.PathLiquidity` (default: mark = index,
    infinite depth, no gaps); ``u`` the accounts' uniform draws for top-up
    decisions; further keywords go to :func:`make_params`. With
    ``return_accounts`` the final account array is returned too.
    """
    tt = tier_array(tiers)
    p = make_params(fund_initial=fund_initial, fee_rate=fee_rate, fee_share=fee_share,
                    slippage=slippage, step_minutes=step_minutes, adl_basis=adl_basis,
                    **params)
    if acct is None:
        acct = book_accounts(book, u)
    acct = acct.copy()
    if prepared is None:
        prepared = prepare_book(acct, tt, p)
    lorder, sorder, nl, ns = prepared
    index = np.ascontiguousarray(prices, dtype=np.float64)
    if liquidity is None:
        inf = np.full(index.shape[0], np.inf)
        zero = np.zeros(index.shape[0])
        mark0, d_bid, d_ask, g_bid, g_ask = index, inf, inf, zero, zero
    else:
        mark0, d_bid, d_ask = liquidity.mark, liquidity.depth_bid, liquidity.depth_ask
        g_bid, g_ask = liquidity.gap_bid, liquidity.gap_ask
    out = np.empty(N_METRICS)
    simulate_path(index, mark0, d_bid, d_ask, g_bid, g_ask, acct, lorder.copy(),
                  sorder.copy(), nl, ns, tt, np.asarray(layers, dtype=np.int64), p, out,
                  *workspace(len(acct)))
    return (out, acct) if return_accounts else out


def book_accounts(book, u=None) -> np.ndarray:
    """:func:`account_array` of a linear :class:`stress.population.Book`."""
    return account_array(book.qty, book.entry, book.margin_balance, book.stop,
                         book.topup_budget, u)
