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

Detection has three interchangeable modes (the last entry of ``PARAMS``):
``DETECT_SORTED`` (the walk above), ``DETECT_SCAN`` (every open account's
threshold compared with the mark each step) and ``DETECT_NAIVE`` (the exact
margin test on every open account each step). They give bit-identical
results; the slower two exist for the tests and the benchmarks.

A path changes only the accounts it touches. Before its first change an
account's row is saved in a journal (``_touch``), so :class:`BookRunner`
undoes a path in O(changed accounts) and the next path or policy starts from
the same prepared, sorted book without a copy of it.

Socialised haircuts are lazy: a loss shared by one side adds to that side's
cumulative haircut per unit of position (``S_HL``/``S_HS``) instead of
writing every winner's collateral. An account's pending haircut,
``(H - H at its last settlement) · |qty|``, is settled into its collateral
when it is next touched, when the book is re-sorted and at the end of the
path. Detection widens its walk by the pending haircut per unit, so a
threshold that a haircut moved is never missed; the result equals, to rounding, the eager
(every winner charged at once) rules of the reference engine.

Accounts are rows of a float64 array ``acct[n, N_ACCT]`` with the columns
below; the tier table is ``tt[4, k]`` (floor, cap with ``cap[-1] = inf``,
mmr, maintenance amount). Contracts are linear here: an inverse contract is
simulated as a linear one in the price ``1/P`` (see
:func:`stress.exchange.contracts`).
"""

from __future__ import annotations

import numpy as np

from stress._jit import NUMBA_DISABLED, borrowed, leaf, njit
from stress.runner.variables import (ADL_COST, ADL_MAX_LOSS_FRACTION, ADL_NOTIONAL,
                                     ADL_RANKINGS, CASCADE_CAP_HITS, CASCADE_MOVE,
                                     CASCADE_ROUNDS, FEE_REVENUE, FUND_DEPLETED, FUND_FINAL,
                                     FUND_INFLOW, FUND_MIN, FUND_NEED, FUND_OVERFLOW, FUND_PAID,
                                     FUNDING_VOLUME, HAIRCUT_RATE, HAIRCUT_RATE_MAX,
                                     LIQUIDATED_NOTIONAL, LOSS_GINI, MARK_INDEX_GAP, MARKET_PNL,
                                     MAX_ALERTS, N_ACCOUNTS_HIT, N_ADL, N_ALERTS_HIT,
                                     N_LIQUIDATIONS, N_METRICS, N_PARTIAL, N_SHORTFALLS, N_STOPS,
                                     N_TOPUPS, P, PARAMS, PLATFORM_LOSS, PLATFORM_MAX_STEP,
                                     RESIDUAL, SHORTFALL, SHORTFALL_QUOTE, SOCIALISED_LOSS,
                                     STOP_NOTIONAL, TIME_TO_DEPLETION, TOPUP_VOLUME,
                                     TRADER_BALANCE_CHANGE)

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
P_FUND_CAP = P["fund_cap"]
P_ADL_RANKING = P["adl_ranking"]
P_SETTLE_EVERY = P["settle_every"]
P_RECORD_EVERY = P["record_every"]
P_DETECT = P["detect"]

LAYER_FUND = 0
LAYER_ADL = 1
LAYER_SOCIALISED = 2
LAYER_PLATFORM = 3

ADL_PRO_RATA = ADL_RANKINGS["pro_rata"]
ADL_LEVERAGE = ADL_RANKINGS["leverage"]
ADL_RISK_BASED = ADL_RANKINGS["risk_based"]

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


@leaf
def tier_index(notional, cap):
    """Tier holding ``notional`` (floor < n <= cap); ``cap[-1]`` is +inf."""
    k = 0
    while notional > cap[k]:
        k += 1
    return k


@leaf
def requirement(qty, entry, mark, tt, req_fee, mm_entry):
    """Maintenance requirement at ``mark``: MM of the notional at the mark (or at entry,
    ``mm_entry``) plus ``req_fee`` × the notional at the mark."""
    aq = abs(qty)
    n = aq * entry if mm_entry else aq * mark
    k = tier_index(n, tt[T_CAP])
    return n * tt[T_MMR, k] - tt[T_AMT, k] + req_fee * aq * mark


@leaf
def is_breached(qty, entry, collateral, mark, tt, req_fee, mm_entry, scale):
    """Exact trigger: equity ≤ scale × requirement at the mark (scale 1: liquidation;
    1/level: the margin ratio reached an alert level)."""
    if qty == 0.0:
        return False
    equity = collateral + qty * (mark - entry)
    return equity <= scale * requirement(qty, entry, mark, tt, req_fee, mm_entry)


@leaf
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
            elif (a + b * hi <= 0.0) if hi != np.inf else (b < 0.0 or a <= 0.0):
                # Equity falls no faster than the requirement: the top of the bracket
                # is breached (and with it everything above the root). In the open top
                # bracket with b = 0 the margin is a constant a: breached everywhere
                # or nowhere (a + 0·inf would be NaN, and the bracket missed).
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


@leaf
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


@leaf
def action(i, c, mark, acct, tt, params):
    """What happens to account ``i`` with cash ``c`` at ``mark``: liquidation (it takes
    precedence: the engine cancels the trader's orders), its stop-loss, a margin
    alert, or nothing."""
    q = acct[i, Q]
    if q == 0.0:
        return ACT_NONE
    e = acct[i, E]
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


@leaf
def _radix_passes(ka, kb, ia, ib, count):
    """Sort the unsigned keys ``ka`` by an LSD radix sort (11-bit digits, stable),
    moving the payload ``ia`` with them unless it is empty; ``kb``, ``ib`` are
    scratch of the same sizes, ``count`` of 2,049. A pass whose digit is the same
    for every key moves nothing and is skipped. Returns whether the result ended
    in ``kb``/``ib`` (an odd number of passes moved) rather than ``ka``/``ia``."""
    m = ka.shape[0]
    carry = ia.shape[0] > 0
    digit = np.uint64(2047)
    swapped = False
    if m == 0:
        return swapped
    for shift in range(0, 66, 11):
        sh = np.uint64(shift)
        count[:] = 0
        for k in range(m):
            count[((ka[k] >> sh) & digit) + 1] += 1
        if count[((ka[0] >> sh) & digit) + 1] == m:
            continue
        for d in range(2048):
            count[d + 1] += count[d]
        for k in range(m):
            d = (ka[k] >> sh) & digit
            j = count[d]
            kb[j] = ka[k]
            if carry:
                ib[j] = ia[k]
            count[d] = j + 1
        ka, kb = kb, ka
        ia, ib = ib, ia
        swapped = not swapped
    return swapped


# Most keys a sort spreads over buckets (:func:`_spread`); a radix sort above.
SPREAD_MAX = 4096
# A bucket of more keys than this is spread again over buckets of its own.
SPREAD_AGAIN = 16


@leaf
def _bucket_pass(sk, si, dk, di, s, e, count, carry):
    """Move the keys ``sk[s:e]`` (and the payload ``si`` with ``carry``) into
    ``dk[s:e]``/``di[s:e]`` grouped by bucket, stably: as many buckets as keys (a
    power of two, at most 2,048) over ``[min, max]``, by the top bits of ``key −
    min``. Returns the number of buckets; ``count[d]`` is then the end of bucket
    ``d`` (relative to ``s``)."""
    lo = sk[s]
    hi = sk[s]
    for k in range(s + 1, e):
        v = sk[k]
        if v < lo:
            lo = v
        elif v > hi:
            hi = v
    m = e - s
    nb = 1
    while nb < m and nb < 2048:
        nb *= 2
    span = hi - lo
    shift = 0
    while (span >> np.uint64(shift)) >= np.uint64(nb):
        shift += 1
    sh = np.uint64(shift)
    count[:nb + 1] = 0
    for k in range(s, e):
        count[((sk[k] - lo) >> sh) + 1] += 1
    for d in range(nb):
        count[d + 1] += count[d]
    for k in range(s, e):
        d = (sk[k] - lo) >> sh
        j = count[d]
        dk[s + j] = sk[k]
        if carry:
            di[s + j] = si[k]
        count[d] = j + 1
    return nb


@leaf
def _spread(ka, ia, kb, ib, count, ends):
    """Sort the unsigned keys ``ka``, stably, moving the payload ``ia`` with them
    unless it is empty; ``kb``, ``ib`` are scratch of the same sizes (``ka``/``ia``
    are overwritten), ``count`` of 2,049 and ``ends`` of 2,048. Returns whether the
    result is in ``kb``/``ib`` (else in ``ka``/``ia``).

    The keys are spread over as many buckets as keys by their value
    (:func:`_bucket_pass`); a bucket of more than :data:`SPREAD_AGAIN` keys (a
    cluster: scores of a book with a few leverage levels) is spread again over
    buckets of its own range; an insertion sort then orders what is left. About
    3x faster than :func:`_radix_passes` at 1,000 keys, whose 2,048-digit passes
    cost more than the keys. If the insertion sort's moves exceed 8 per key
    (keys still crowded), the radix sort finishes the job: never much slower."""
    m = ka.shape[0]
    if m == 0:
        return False
    carry = ia.shape[0] > 0
    nb = _bucket_pass(ka, ia, kb, ib, 0, m, count, carry)
    for d in range(nb):
        ends[d] = count[d]
    start = 0
    for d in range(nb):
        end = ends[d]
        if end - start > SPREAD_AGAIN:
            _bucket_pass(kb, ib, ka, ia, start, end, count, carry)
            for k in range(start, end):
                kb[k] = ka[k]
                if carry:
                    ib[k] = ia[k]
        start = end
    # The buckets are in order: an insertion sort moves keys within them only. It
    # never reorders equal keys, so the radix sort may take over from any point.
    moves = 0
    for k in range(1, m):
        v = kb[k]
        if kb[k - 1] <= v:
            continue
        p = ib[k] if carry else 0
        j = k - 1
        while j >= 0 and kb[j] > v:
            kb[j + 1] = kb[j]
            if carry:
                ib[j + 1] = ib[j]
            j -= 1
        kb[j + 1] = v
        if carry:
            ib[j + 1] = p
        moves += k - 1 - j
        if moves > 8 * m:
            return not _radix_passes(kb, ka, ib, ia, count)
    return True


@njit(cache=True)
def _sort_keys(ka, ia, kb, ib):
    """Sort the unsigned keys ``ka`` stably, with the payload ``ia`` unless it is empty,
    by :func:`_spread` up to :data:`SPREAD_MAX` keys, else by :func:`_radix_passes`;
    ``kb``, ``ib`` are scratch of the same sizes. Returns whether the result is in
    ``kb``/``ib`` (else in ``ka``/``ia``)."""
    count = np.empty(2049, np.int64)
    if ka.shape[0] <= SPREAD_MAX:
        return _spread(ka, ia, kb, ib, count, np.empty(2048, np.int64))
    return _radix_passes(ka, kb, ia, ib, count)


@njit(cache=True)
def argsort_stable(key):
    """The stable ascending order of ``key`` (float64): equal to ``np.argsort(key,
    kind="stable")``, NaN last, -0.0 equal to 0.0. The IEEE bit patterns mapped to
    order-preserving unsigned integers, sorted by :func:`_sort_keys` (the radix
    sort is 3x faster than numba's merge sort at 32,000 values)."""
    m = key.shape[0]
    if m < 8 or NUMBA_DISABLED:  # (pure Python: numpy's own stable sort)
        return np.argsort(key, kind="mergesort")
    ka = np.empty(m, dtype=np.uint64)
    ia = np.empty(m, dtype=np.int64)
    f = np.empty(1)
    bits = f.view(np.uint64)
    top = np.uint64(1) << np.uint64(63)
    nan = np.uint64(0xFFF8000000000000)  # above +inf's image: NaN sorts last
    for k in range(m):
        v = key[k]
        if v != v:
            ka[k] = nan
        else:
            f[0] = v + 0.0  # -0.0 + 0.0 = 0.0: the two zeros tie, as they compare
            b = bits[0]
            ka[k] = ~b if b & top else b | top
        ia[k] = k
    ib = np.empty(m, dtype=np.int64)
    return ib if _sort_keys(ka, ia, np.empty(m, dtype=np.uint64), ib) else ia


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
    perm = argsort_stable(key)
    tmp = lorder[:nl].copy()
    for j in range(nl):
        lorder[j] = tmp[perm[j]]
        lkey[j] = acct[lorder[j], THR]
    key = np.empty(ns)
    for j in range(ns):
        key[j] = acct[sorder[j], THR]
    perm = argsort_stable(key)
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


@njit(cache=True, inline="always")
def _moved(i, acct, touched):
    """Account ``i`` changed: record it, once until the next :func:`_loosen`, which
    recomputes its threshold (``touched[0]`` is the count, ``touched[1:n+1]`` the
    list, ``touched[n+1:]`` the flags). Only the walks and the loose accounts'
    bounds read a threshold, and a call of :func:`_loosen` comes between every
    change and them: an account ADL reduces many times in a round (the head of
    the queue, once per loss) gets one threshold, not one per change. A closed
    position's threshold is NaN at once and needs no record: the walks skip it."""
    if acct[i, Q] == 0.0:
        acct[i, THR] = np.nan
        return
    flag = 1 + acct.shape[0] + i
    if touched[flag] == 0:
        touched[flag] = 1
        touched[0] += 1
        touched[touched[0]] = i


# ----------------------------------------------------------------- path state
# Scalars of one path in a float array ``st`` (shared by the helpers below).
S_FUND = 0  # insurance fund balance
S_CUM_IN = 1  # cumulative inflows into the fund
S_CUM_OUT = 2  # cumulative amounts the fund was asked to pay
S_NEED = 3  # largest cumulative excess of asks over inflows (fund_need)
S_PERIOD = 4  # index of the socialised settlement period; -1 = no socialised layer
S_PMARK = 5  # mark at the start of the period
S_NELIG = 6  # number of accounts in the eligible list
S_ELIG_PROFIT = 7  # eligible profit summed over the settlements that charged a loss
S_NDIRTY = 8  # accounts changed on the path (the journal's length)
S_RESORTED = 9  # 1 if the book was re-sorted on the path (its orders changed)
# Socialised haircuts of the accounts that did not change in their period are
# charged lazily, per side: a long owes ``Q·(S_HL − F_H0)`` until it is next
# touched (shorts: S_HS). Its thresholds move by at most ``g·ΔH`` meanwhile, so
# the walks widen by that much instead of re-sorting the book.
S_HL = 10  # cumulative haircut per unit of long position (price units, rises)
S_HS = 11  # the same for shorts (falls)
S_HL0 = 12  # S_HL when the book was last sorted
S_HS0 = 13
S_GL = 14  # bound on a long threshold's rise per unit haircut; 0: lazy haircuts off
S_GS = 15  # the same for a short threshold's fall
S_QL = 16  # total long quantity open (kept from the first settlement on)
S_QS = 17  # total short quantity open (positive)
S_QREADY = 18  # 1 once S_QL and S_QS are kept
S_PENDING = 19  # 1 once a lazy haircut was charged on the path
S_NPLIST = 20  # accounts changed in the current settlement period (the list's length)
S_WIDE = 21  # 1 when the widened walks checked too many accounts: re-sort at step end
S_OWED = 22  # end of path: the lazy haircuts left in the book, in all (see _owed)
S_NL = 23  # open longs, counted (kept with S_QL: their side is exactly empty at 0)
S_NS = 24  # open shorts
# The marks at which a loose account may trigger (see _loosen): a loose long only at
# or below S_LHI, a loose short only at or above S_LLO (−inf / +inf: none).
S_LHI = 25
S_LLO = 26
S_OWED_C = 27  # end of path: the rounding compensation of S_OWED's running sum
# The ledger journal (see _log and simulate_policies).
S_T = 28  # the current step, for the journal
S_NLOG = 29  # the journal's length
S_LOGFULL = 30  # 1 if the journal ran out of room (it then stops)
S_DIVERGED = 31  # 1 once a loss reached an ADL or socialised layer (the book may differ)
S_LOG = 32  # 1: keep the journal. Set by the caller (simulate_path leaves it as it is)
# The book's open quantity per side before any path (book_sides), if the caller set
# S_QBOOK (BookRunner does): the first settlement then starts from them.
S_QBOOK = 33
S_QL0 = 34
S_QS0 = 35
# Forks (see simulate_policies). The undo log: while S_UNDO is set, _touch saves an
# account's row before it changes again, once per generation (_retouch).
S_UNDO = 36
S_GEN = 37  # the current generation (iwork[I_GEN] says when each row was last saved)
S_NUNDO = 38  # the undo log's length
S_UNDOFULL = 39  # 1 once the undo log ran out of room (the forks are then given up)
S_FORKING = 40  # fork candidates the path still tracks (simulate_policies sets them)
S_SNAP = 41  # 1: a socialised policy may fork: follow the settlement periods (S_PND)
S_RESUME = 42  # g + 1: resume the path from checkpoint g instead of starting it
S_FORKS = 43  # policies forked so far (a count for the benchmarks)
S_FORK_SLACK = 44  # losses the tracked candidates' funds surely cover (see _fork_slack)
# With S_SNAP, a primary takes no period snapshots (S_PERIOD −1) but keeps how many
# accounts had changed at the start of the period, and whether every account
# changed in it since was first changed in it, without a deposit (S_PCLEAN): then
# their snapshots are those of their base rows, in journal order (_period_from_base).
S_PND = 45
S_PCLEAN = 46
N_STATE = 47

# A round's shortfalls (scratch rows of ``fwork``, filled by _fills): the amount, the
# bankruptcy price, the fill and the side of each.
F_SHORT = 2
F_BP = 3
F_X = 4
F_SIDE = 5
# Per-account rows of ``fwork`` (zero on entry and on exit, except the scratch rows).
F_LOSS = 11  # loss borne on the path (ADL cost and haircuts)
F_ADLL = 12  # ADL cost borne
F_EQH = 13  # equity at the mark before the account's first ADL
F_EQP = 14  # equity at the start of the settlement period (valid when pid == period)
F_BASE = 15  # water-filling scratch: base, slope, cap, take (per eligible account)
F_SLOPE = 16
F_CAP = 17
F_TAKE = 18  # (also, in a settlement, each listed account's period profit: _socialise)
F_C0 = 19  # the account's cash before its first change on the path
F_H0 = 20  # the side's haircut per unit already in the account's cash (0 on entry)
F_LOG = 21  # the ledger journal's amounts: two rows, room for 2n entries (see _log)
F_UNDO = 23  # the undo log (see _retouch): a row's N_ACCT columns
N_FWORK = F_UNDO + N_ACCT
# Rows of ``iwork`` beyond the walks' scratch.
I_ELIG = 6  # eligible accounts (the list)
I_FLAG = 7  # 1 if the account is in the list
I_PID = 8  # period of the account's F_EQP snapshot (-1 on entry)
I_WHO = 9  # water-filling scratch: the eligible accounts of one ADL
I_DIRTY = 10  # the journal: accounts changed on the path, in order of first change
I_DFLAG = 11  # 1 if the account is in the journal
I_PLIST = 12  # accounts changed in the current settlement period
I_MARK = 13  # end of path: 1 at the size-order position of a changed or eligible account
I_LOG = 14  # the ledger journal's codes, ``step·4 + kind``: two rows (see _log)
I_UNDO = 16  # the undo log: the account of each entry
I_GEN = 17  # the generation in which the account's row was last saved in the undo log
N_IWORK = 18

# Detection of the accounts with something to do at a mark (``params["detect"]``).
DETECT_SORTED = 0  # walk the sorted book from its heads (the fast kernel)
DETECT_SCAN = 1  # compare every open account's threshold with the mark
DETECT_NAIVE = 2  # run the exact tests on every open account


@leaf
def _retouch(i, acct, fwork, iwork, st):
    """Account ``i``, changed before on the path, is about to change again while a
    fork may need the book as it was (``S_UNDO``) or a primary follows the
    settlement periods (``S_SNAP``): the period is no longer clean (see ``S_PND``),
    and the undo log saves the row as it is before its first change in this
    generation (an account first changed after a checkpoint was as in the base
    there). Room for ``n`` entries; past it the log stops and says so
    (``S_UNDOFULL``)."""
    st[S_PCLEAN] = 0.0
    if st[S_UNDO] == 0.0 or iwork[I_GEN, i] == int(st[S_GEN]):
        return
    iwork[I_GEN, i] = int(st[S_GEN])
    e = int(st[S_NUNDO])
    if e >= acct.shape[0]:
        st[S_UNDO] = 0.0
        st[S_UNDOFULL] = 1.0
        return
    for c in range(N_ACCT):
        fwork[F_UNDO + c, e] = acct[i, c]
    iwork[I_UNDO, e] = i
    st[S_NUNDO] = e + 1


@njit(cache=True, inline="always")
def _touch(i, acct, fwork, iwork, st):
    """Before account ``i`` changes: journal it on its first change of the path
    (with its cash then, for :func:`restore_book` and the traders' balance) and
    take the settlement-period snapshot (:func:`_snap`)."""
    if iwork[I_DFLAG, i] == 0:
        iwork[I_DFLAG, i] = 1
        k = int(st[S_NDIRTY])
        iwork[I_DIRTY, k] = i
        st[S_NDIRTY] = k + 1
        fwork[F_C0, i] = acct[i, C]
    elif st[S_UNDO] != 0.0 or st[S_SNAP] != 0.0:
        _retouch(i, acct, fwork, iwork, st)
    if st[S_PENDING] != 0.0:
        # Write the lazy haircut owed from earlier settlements into the cash.
        d = _pending(i, acct, fwork, st)
        if d != 0.0:
            acct[i, C] -= d
            fwork[F_LOSS, i] += d
            _eligible(i, iwork, st)
        fwork[F_H0, i] = st[S_HL] if acct[i, Q] > 0.0 else st[S_HS]
    _snap(i, acct, fwork, iwork, st)


@njit(cache=True, inline="always")
def _pending(i, acct, fwork, st):
    """The lazy socialised haircut account ``i`` owes (≥ 0): ``Q·(H − H0)`` of its side."""
    q = acct[i, Q]
    if q > 0.0:
        return q * (st[S_HL] - fwork[F_H0, i])
    if q < 0.0:
        return q * (st[S_HS] - fwork[F_H0, i])
    return 0.0


@njit(cache=True, inline="always")
def _cash_of(i, acct, fwork, st):
    """Account ``i``'s cash with its lazy haircut (``acct[i, C]`` when none is owed)."""
    return acct[i, C] - _pending(i, acct, fwork, st)


@njit(cache=True, inline="always")
def _set_qty(i, q_new, acct, st):
    """Change account ``i``'s position (only ever towards 0), keeping the side totals."""
    q = acct[i, Q]
    if st[S_QREADY] != 0.0:
        if q > 0.0:
            st[S_QL] += q_new - q
            if q_new == 0.0:
                st[S_NL] -= 1.0
        elif q < 0.0:
            st[S_QS] += q - q_new
            if q_new == 0.0:
                st[S_NS] -= 1.0
    acct[i, Q] = q_new


@leaf
def _haircut_gains(tt, params, st):
    """``S_GL``/``S_GS``: how far a haircut of ``h`` per unit can move an account's
    threshold (at most ``g·h``). A long's trigger ``equity ≤ s·requirement`` has
    slope ``Q·(1 − s·(mmr + fee))`` in the mark, so lowering its cash by ``Q·h``
    raises the trigger price by at most ``h / (1 − s·(mmr_max + fee))`` over the
    scales ``s`` (1 and the alert levels' ``1/a``); a short's falls by at most
    ``h``. Where a slope can vanish the bound does not exist and haircuts are
    charged at once (``S_GL`` = 0)."""
    fee = params[P_REQ_FEE]
    mm_entry = params[P_MM_ENTRY] != 0.0
    mmr = 0.0
    for k in range(tt.shape[1]):
        if tt[T_MMR, k] > mmr:
            mmr = tt[T_MMR, k]
    worst = 1.0
    for a in range(-1, int(params[P_N_ALERTS])):
        scale = 1.0 if a < 0 else 1.0 / params[P_ALERT0 + a]
        d = 1.0 - scale * (fee if mm_entry else mmr + fee)
        if d < worst:
            worst = d
    # The threshold's relative slack and rounding: a margin of 1e-6.
    st[S_GL] = (1.0 + 1e-6) / worst if worst > 1e-3 else 0.0
    st[S_GS] = 1.0 + 1e-6


@njit(cache=True, inline="always")
def _snap(i, acct, fwork, iwork, st):
    """Before account ``i`` changes: record its equity at the start of the socialised
    settlement period, once per period (an account that never changes in a period
    has that equity at the period's start mark)."""
    period = st[S_PERIOD]
    if period >= 0.0 and iwork[I_PID, i] != int(period):
        fwork[F_EQP, i] = acct[i, C] + acct[i, Q] * (st[S_PMARK] - acct[i, E])
        iwork[I_PID, i] = int(period)
        k = int(st[S_NPLIST])
        iwork[I_PLIST, k] = i
        st[S_NPLIST] = k + 1


@njit(cache=True, inline="always")
def _period_profit(i, mark, acct, fwork, iwork, st):
    """Account ``i``'s profit over the settlement period so far: realised plus
    unrealised, deposits excluded (equity at ``mark`` minus equity at the period start)."""
    eq = acct[i, C] + acct[i, Q] * (mark - acct[i, E])
    if iwork[I_PID, i] == int(st[S_PERIOD]):
        return eq - fwork[F_EQP, i]
    return acct[i, Q] * (mark - st[S_PMARK])


@njit(cache=True, inline="always")
def _eligible(i, iwork, st):
    """Account ``i`` was eligible to bear a loss (an ADL candidate, or in profit at a
    settlement): it counts in the fairness metrics."""
    if iwork[I_FLAG, i] == 0:
        iwork[I_FLAG, i] = 1
        k = int(st[S_NELIG])
        iwork[I_ELIG, k] = i
        st[S_NELIG] = k + 1


# Kinds of ledger journal entries (see _log).
K_FEE = 0  # a liquidation fee paid (split between the fund and the platform by _fee)
K_SURPLUS = 1  # a liquidation surplus paid into the fund (_fund_in)
K_LOSS = 2  # a shortfall sent down the waterfall


@njit(cache=True, inline="always")
def _log_start(st):
    """The ledger journal's next entry, or −1 when it is not kept (``st[S_LOG]``)."""
    return int(st[S_NLOG]) if st[S_LOG] != 0.0 else -1


@njit(cache=True, inline="always")
def _log_slot(k, n):
    """Where the journal of a book of ``n`` accounts keeps entry ``k``: ``(row offset,
    column)`` in its two rows of ``fwork`` (amounts, ``F_LOG``) and ``iwork`` (codes,
    ``I_LOG``)."""
    if k < n:
        return 0, k
    return 1, k - n


@njit(cache=True, inline="always")
def _log(k, amount, code, fwork, iwork, st):
    """Journal a flow the loss policy handles as entry ``k`` (from :func:`_log_start`;
    nothing when −1): ``amount`` and ``code`` = ``step·4 + K_*``, what :func:`_ride`
    needs to run the path's ledger under another policy. Returns the next entry.
    Room for ``2n`` entries; past it the journal stops and says so (``S_LOGFULL``).
    The caller keeps ``k`` and hands it back with :func:`_log_end`."""
    if k < 0:
        return k
    n = fwork.shape[1]
    if k >= 2 * n:
        st[S_LOG] = 0.0
        st[S_LOGFULL] = 1.0
        return -1
    r, j = _log_slot(k, n)
    fwork[F_LOG + r, j] = amount
    iwork[I_LOG + r, j] = code
    return k + 1


@njit(cache=True, inline="always")
def _log_end(k, st):
    """Store the journal's length ``k`` (:func:`_log`)."""
    if k >= 0:
        st[S_NLOG] = k


@njit(cache=True, inline="always")
def _fund_in(amount, params, out, st):
    """Pay ``amount`` into the insurance fund; above its cap the excess goes to the
    platform."""
    st[S_FUND], st[S_CUM_IN], out[FUND_INFLOW], out[FUND_OVERFLOW], _ = _paid_in(
        amount, False, 0.0, params[P_FUND_CAP], st[S_FUND], st[S_CUM_IN], out[FUND_INFLOW],
        out[FUND_OVERFLOW], 0.0)


@njit(cache=True, inline="always")
def _paid_in(amount, is_fee, share, cap, fund, cum_in, inflow, overflow, fee_revenue):
    """A liquidation fee (``is_fee``: ``share`` of it to the fund, the rest to the
    platform) or a surplus (all of it) paid into the fund, capped at ``cap`` (the
    excess to the platform): the new ``(fund, cum_in, inflow, overflow,
    fee_revenue)``. On scalars, so that :func:`_ride` keeps the ledger in
    registers; :func:`_fee` and :func:`_fund_in` are this on the path's arrays."""
    if is_fee:
        to_fund = amount * share
        fee_revenue += amount - to_fund
        amount = to_fund
    fund, over = _inflow(fund, amount, cap)
    cum_in += amount
    inflow += amount
    if over > 0.0:
        overflow += over
    return fund, cum_in, inflow, overflow, fee_revenue


@njit(cache=True, inline="always")
def _inflow(fund, amount, cap):
    """The fund after ``amount`` is paid in, capped at ``cap``, and the excess."""
    fund += amount
    if fund > cap:
        return cap, fund - cap
    return fund, 0.0


@njit(cache=True)
def _waterfill(base, slope, cap, m, need, take):
    """Takes ``clip(base + t·slope, 0, cap)`` (slope > 0) whose total is ``need``.

    The total is a non-decreasing piecewise-linear function of the level ``t``
    with breakpoints where an account leaves 0 or reaches its cap: sort them,
    find by bisection the segment holding ``need``, and interpolate on it, so
    the level is exact up to rounding. With ``need`` at or above the total cap,
    every account gives its cap.
    """
    total = 0.0
    for j in range(m):
        total += cap[j]
    if need >= total:
        for j in range(m):
            take[j] = cap[j]
        return
    if need <= 0.0:
        for j in range(m):
            take[j] = 0.0
        return
    bps = np.empty(2 * m)
    for j in range(m):
        bps[2 * j] = -base[j] / slope[j]
        bps[2 * j + 1] = (cap[j] - base[j]) / slope[j]
    bps.sort()
    # f(bps[0]) = 0 < need <= f(bps[-1]) = total: find the first breakpoint with f >= need.
    lo = 0
    hi = 2 * m - 1
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _filled(base, slope, cap, m, bps[mid]) >= need:
            hi = mid
        else:
            lo = mid
    fa = _filled(base, slope, cap, m, bps[lo])
    fb = _filled(base, slope, cap, m, bps[hi])
    t = bps[hi] if fb == fa else bps[lo] + (need - fa) * (bps[hi] - bps[lo]) / (fb - fa)
    for j in range(m):
        v = base[j] + t * slope[j]
        take[j] = 0.0 if v < 0.0 else (cap[j] if v > cap[j] else v)


@leaf
def _filled(base, slope, cap, m, t):
    f = 0.0
    for j in range(m):
        v = base[j] + t * slope[j]
        if v > 0.0:
            f += cap[j] if v > cap[j] else v
    return f


@njit(cache=True, inline="always")
def _adl_cap(i, bp, acct, fwork, st):
    """Most units of account ``i`` ADL may close at ``bp``: all of them, unless closing
    at ``bp`` realises a loss; then only what its margin pays (never bankrupt it)."""
    q = acct[i, Q]
    s = 1.0 if q > 0.0 else -1.0
    per_unit = s * (bp - acct[i, E])
    if per_unit >= 0.0:
        return abs(q)
    c = _cash_of(i, acct, fwork, st)
    if c <= 0.0:
        return 0.0
    cap = c / -per_unit
    return cap if cap < abs(q) else abs(q)


@njit(cache=True, inline="always")
def _adl_close(i, take, bp, x, mark, acct, touched, out, fwork, iwork, st):
    """Close ``take`` units of account ``i`` at the bankruptcy price ``bp``; returns the
    loss it bears against the market fill ``x``: ``take·|bp − x|``."""
    q = acct[i, Q]
    e = acct[i, E]
    s = 1.0 if q > 0.0 else -1.0
    _touch(i, acct, fwork, iwork, st)
    if fwork[F_ADLL, i] == 0.0:
        fwork[F_EQH, i] = acct[i, C] + q * (mark - e)
    realised = s * take * (bp - e)
    if realised < 0.0 and acct[i, C] + realised < 0.0:
        realised = -acct[i, C]  # margin-capped: exactly its margin (rounding)
    acct[i, C] += realised
    out[MARKET_PNL] += s * take * (x - e)
    cost = take * abs(bp - x)
    fwork[F_LOSS, i] += cost
    fwork[F_ADLL, i] += cost
    _set_qty(i, 0.0 if take >= abs(q) else q - s * take, acct, st)
    _moved(i, acct, touched)
    out[N_ADL] += 1.0
    out[ADL_NOTIONAL] += take * bp
    return cost


@leaf
def _winners(bside, mark, acct, who, iwork, st):
    """The counterparties of a bankrupt ``bside`` position: opposite-side accounts in
    profit at ``mark``, in account order, into ``who``; they become eligible to bear
    the loss. Returns their count."""
    m = 0
    for i in range(acct.shape[0]):
        q = acct[i, Q]
        if q * bside < 0.0 and q * (mark - acct[i, E]) > 0.0:
            who[m] = i
            _eligible(i, iwork, st)
            m += 1
    return m


@njit(cache=True)
def _adl_queue(bside, mark, acct, params, queue, score, fwork, iwork, st):
    """Rank the counterparties of a bankrupt ``bside`` position into ``queue``.

    Opposite-side accounts with positive uPnL at the mark, ranked by ``score``
    (PnL% × effective leverage, PnL% on collateral with ``adl_basis`` 0 or on
    entry value with 1) or ``leverage`` (effective leverage = mark notional /
    equity); highest first, ties in account order. Returns the queue length.
    """
    by_leverage = int(params[P_ADL_RANKING]) == ADL_LEVERAGE
    adl_basis = int(params[P_ADL_BASIS])
    m = _winners(bside, mark, acct, queue, iwork, st)
    for r in range(m):
        i = queue[r]
        q = acct[i, Q]
        upnl = q * (mark - acct[i, E])
        cash = _cash_of(i, acct, fwork, st)
        eq = cash + upnl
        base = cash if adl_basis == 0 else abs(q) * acct[i, E]
        # Negated so that an ascending stable sort puts the highest first and keeps
        # account order among ties. A winner without margin (spent by an earlier ADL,
        # or by funding) has infinite leverage.
        if eq <= 0.0 or (not by_leverage and base <= 0.0):
            score[r] = -np.inf
        elif by_leverage:
            score[r] = -(abs(q) * mark / eq)
        else:
            score[r] = -(upnl / base) * (abs(q) * mark / eq)
    perm = argsort_stable(score[:m])
    ranked = queue[:m].copy()
    for r in range(m):
        queue[r] = ranked[perm[r]]
    return m


@njit(cache=True, inline="always")
def _adl(bside, bp, x, need, mark, acct, params, queues, score, qstate, touched, out,
         fwork, iwork, st):
    """Close the uncovered part of a bankrupt position against opposite-side winners.

    ``need`` is the loss to cover; the bankrupt side is ``bside`` (+1 long).
    Counterparties close ``need / |bp − x|`` units in all at the bankruptcy price
    ``bp``; each unit costs its holder ``|bp − x|`` against the market fill ``x``.
    Queue rankings (``score``, ``leverage``): the step's queue for that side is
    ranked once per round, at its mark, on first use (``qstate[2k]`` is its
    length, −1 until ranked, ``qstate[2k+1]`` the position of its head) and
    consumed in order (:func:`_adl_take`). Allocations (``pro_rata``,
    ``risk_based``): the units are shared over every current winner by
    :func:`_waterfill`. Returns the loss covered.

    Inlined into its callers, with the queue's consumption (:func:`_adl_take`) and
    the closes (:func:`_adl_close`): only the ranking and the allocations are
    calls. A call of a helper holding a dozen arrays costs about what a close
    does (each array travels as a struct of seven or more words): inlining the
    two made fund+adl on the gap-down shocks 1.5x faster.
    """
    unit_cost = abs(bp - x)
    if unit_cost <= 0.0 or need <= 0.0:
        return 0.0
    need_qty = need / unit_cost
    ranking = int(params[P_ADL_RANKING])
    if ranking == ADL_PRO_RATA or ranking == ADL_RISK_BASED:
        return _adl_allocate(bside, bp, x, need, need_qty, mark, acct, params, touched,
                             out, fwork, iwork, st)
    k = 0 if bside > 0.0 else 1
    if qstate[2 * k] < 0:
        qstate[2 * k] = _adl_queue(bside, mark, acct, params, queues[k], score, fwork, iwork,
                                   st)
        qstate[2 * k + 1] = 0
    return _adl_take(k, bp, x, need, need_qty, mark, acct, queues, qstate, touched, out,
                     fwork, iwork, st)


@njit(cache=True, inline="always")
def _adl_take(k, bp, x, need, need_qty, mark, acct, queues, qstate, touched, out, fwork,
              iwork, st):
    """Take ``need_qty`` units from the ranked queue ``queues[k]`` from its head on
    (see :func:`_adl`); returns the loss covered."""
    m = qstate[2 * k]
    r = qstate[2 * k + 1]
    covered = 0.0
    met = False
    while r < m:
        i = queues[k, r]
        if acct[i, Q] == 0.0:
            r += 1
            continue
        cap = _adl_cap(i, bp, acct, fwork, st)
        take = cap
        if cap >= need_qty:
            take = need_qty
            met = True
        if take > 0.0:
            covered += _adl_close(i, take, bp, x, mark, acct, touched, out, fwork, iwork,
                                  st)
            need_qty -= take
        if met:
            break  # an account with units left stays at the head for the next loss
        r += 1  # exhausted (closed, or its margin spent)
    qstate[2 * k + 1] = r
    # A need met in full is covered exactly (the units were computed from it).
    return need if met or covered > need else covered


@njit(cache=True)
def _adl_allocate(bside, bp, x, need, need_qty, mark, acct, params, touched, out,
                  fwork, iwork, st):
    """``pro_rata``: units in proportion to each winner's uPnL; ``risk_based``: the
    leverage-draining optimum (Campbell, Hey, Moallemi & Nutz 2026), units taken
    from the most leveraged first so that the largest effective leverage left
    (remaining notional / equity at the mark before the ADL) is as small as
    possible; winners without positive equity go first. Caps: the position, and
    what the margin pays at ``bp``. Returns the loss covered."""
    who = iwork[I_WHO]
    base = fwork[F_BASE]
    slope = fwork[F_SLOPE]
    cap = fwork[F_CAP]
    take = fwork[F_TAKE]
    risk = int(params[P_ADL_RANKING]) == ADL_RISK_BASED
    found = _winners(bside, mark, acct, who, iwork, st)
    covered = 0.0
    m = 0  # the winners to water-fill, in account order (a prefix of ``who``)
    for r in range(found):
        i = who[r]
        q = acct[i, Q]
        upnl = q * (mark - acct[i, E])
        eq = _cash_of(i, acct, fwork, st) + upnl
        c = _adl_cap(i, bp, acct, fwork, st)
        if risk and eq <= 0.0:
            # Infinite leverage: closed first, as far as it goes.
            t = c if c < need_qty else need_qty
            if t > 0.0:
                need_qty -= t
                covered += _adl_close(i, t, bp, x, mark, acct, touched, out, fwork, iwork,
                                      st)
            continue
        who[m] = i
        base[m] = abs(q) if risk else 0.0
        slope[m] = eq / mark if risk else upnl
        cap[m] = c
        m += 1
    room = 0.0
    for j in range(m):
        room += cap[j]
    met = room >= need_qty
    _waterfill(base, slope, cap, m, need_qty, take)
    for j in range(m):
        if take[j] > 0.0:
            covered += _adl_close(who[j], take[j], bp, x, mark, acct, touched, out, fwork,
                                  iwork, st)
    return need if met or covered > need else covered


@njit(cache=True)
def _waterfall(start, remaining, t, layers, bside, bp, x, mark, acct, params, queues,
               score, qstate, touched, out, pend_rem, pend_next, pend_side, pend_bp, pend_x,
               n_pend, fwork, iwork, st):
    """Run ``remaining`` through ``layers[start:]``; returns the new pending count.

    A ``socialised`` layer defers the loss to the end of its settlement period
    (see :func:`_socialise`) and parks it in the pending buffers.
    """
    for li in range(start, layers.shape[0]):
        if remaining <= 0.0:
            break
        layer = layers[li]
        if layer == LAYER_FUND:
            remaining -= _fund_pays(remaining, t, params, out, st)
        elif layer == LAYER_ADL:
            c = _adl(bside, bp, x, remaining, mark, acct, params, queues, score, qstate,
                     touched, out, fwork, iwork, st)
            out[ADL_COST] += c
            remaining -= c
        elif layer == LAYER_SOCIALISED:
            n_pend = _park(remaining, li, bside, bp, x, pend_rem, pend_next, pend_side,
                           pend_bp, pend_x, n_pend)
            remaining = 0.0
        else:  # LAYER_PLATFORM
            out[PLATFORM_LOSS] += remaining
            remaining = 0.0
    if remaining > 0.0:
        out[RESIDUAL] += remaining
    return n_pend


@njit(cache=True, inline="always")
def _park(remaining, li, bside, bp, x, pend_rem, pend_next, pend_side, pend_bp, pend_x,
          n_pend):
    """Defer ``remaining`` of a loss that reached the socialised layer ``li`` to the end
    of its settlement period (the pending buffers); returns the new pending count."""
    pend_rem[n_pend] = remaining
    pend_next[n_pend] = li + 1
    pend_side[n_pend] = bside
    pend_bp[n_pend] = bp
    pend_x[n_pend] = x
    return n_pend + 1


@njit(cache=True, inline="always")
def _fund_pays(remaining, t, params, out, st):
    """The insurance fund pays what it can of ``remaining`` at step ``t``; returns it."""
    (st[S_FUND], st[S_CUM_OUT], st[S_NEED], out[FUND_PAID], out[FUND_MIN],
     out[FUND_DEPLETED], out[TIME_TO_DEPLETION], pay) = _payout(
        remaining, t, params[P_STEP_MINUTES], st[S_FUND], st[S_CUM_IN], st[S_CUM_OUT],
        st[S_NEED], out[FUND_PAID], out[FUND_MIN], out[FUND_DEPLETED],
        out[TIME_TO_DEPLETION])
    return pay


@njit(cache=True, inline="always")
def _payout(remaining, t, step_minutes, fund, cum_in, cum_out, need, paid, low, depleted,
            t_depleted):
    """The fund pays what it can of ``remaining`` at step ``t``: the new ``(fund,
    cum_out, need, paid, low, depleted, t_depleted)`` (the fund, the cumulative asks,
    ``fund_need``, ``fund_paid``, ``fund_min``, ``fund_depleted`` and
    ``time_to_depletion``), and the payment. Scalars, so that :func:`_ride` keeps
    them in registers."""
    cum_out += remaining
    if cum_out - cum_in > need:
        need = cum_out - cum_in
    pay = remaining if remaining <= fund else fund
    if remaining > fund and depleted == 0.0:
        depleted = 1.0
        t_depleted = t * step_minutes
    fund = fund - pay
    paid += pay
    if fund < low:
        low = fund
    return fund, cum_out, need, paid, low, depleted, t_depleted, pay


@njit(cache=True, inline="always")
def _plain_layers(start, remaining, t, layers, params, out, st):
    """Run ``remaining`` through the fund and platform layers from ``layers[start]``
    up to the first ADL or socialised layer; returns ``(that layer's index, what is
    left)`` (the index is ``len(layers)`` when none is left)."""
    li = start
    while li < layers.shape[0] and remaining > 0.0:
        layer = layers[li]
        if layer == LAYER_FUND:
            remaining -= _fund_pays(remaining, t, params, out, st)
        elif layer == LAYER_PLATFORM:
            out[PLATFORM_LOSS] += remaining
            remaining = 0.0
        else:
            return li, remaining
        li += 1
    return layers.shape[0], remaining


@njit(cache=True, inline="always")
def _haircut(i, charge, acct, touched, fwork, iwork, st):
    """Charge account ``i`` a socialised ``charge`` out of its cash now."""
    _eligible(i, iwork, st)
    _touch(i, acct, fwork, iwork, st)
    acct[i, C] -= charge
    fwork[F_LOSS, i] += charge
    if acct[i, Q] != 0.0:
        _moved(i, acct, touched)


@njit(cache=True, inline="always")
def _settled(pot, total, out, st):
    """Book a settlement of ``pot`` against ``total`` eligible profit; returns the
    amount charged."""
    charged = total if pot >= total else pot
    st[S_ELIG_PROFIT] += total
    rate = charged / total
    if not out[HAIRCUT_RATE_MAX] >= rate:  # NaN until the first settlement
        out[HAIRCUT_RATE_MAX] = rate
    return charged


@leaf
def book_sides(qval, n_qlong):
    """The total long and short (positive) quantity of a book's open positions by size
    (:func:`size_order`), summed in order."""
    ql = 0.0
    qs = 0.0
    for p in range(n_qlong):
        ql += qval[p]
    for p in range(n_qlong, qval.shape[0]):
        qs -= qval[p]
    return ql, qs


@leaf
def _socialise(pot, mark, acct, touched, out, fwork, iwork, st, qval, qpos, n_qlong):
    """Charge ``pot`` to the accounts in profit over the settlement period, pro rata to
    that profit and at most all of it. Returns the amount charged.

    An account that did not change in the period made ``Q·(mark − period start
    mark)``: the same profit per unit on its whole side. Those accounts are
    charged the same fraction of it, ``h`` per unit, lazily (``S_HL``/``S_HS``,
    written into their cash when they are next touched), so a settlement costs
    O(accounts changed in the period), not O(accounts). The accounts that changed
    are charged one by one. Without a bound on how far a haircut moves a
    threshold (``S_GL`` = 0) every account is charged at once.
    """
    if st[S_GL] == 0.0:
        return _socialise_all(pot, mark, acct, touched, out, fwork, iwork, st)
    if st[S_QREADY] == 0.0:
        # The open quantity per side: the book's (kept by the caller, or summed from
        # its positions by size), corrected by the accounts changed on the path so far.
        if st[S_QBOOK] != 0.0:
            ql = st[S_QL0]
            qs = st[S_QS0]
        else:
            ql, qs = book_sides(qval, n_qlong)
        nl = n_qlong
        ns = qval.shape[0] - n_qlong
        for j in range(int(st[S_NDIRTY])):
            i = iwork[I_DIRTY, j]
            p = qpos[i]
            q0 = qval[p] if p >= 0 else 0.0
            q = acct[i, Q]
            if q0 > 0.0:
                ql -= q0
                nl -= 1
            elif q0 < 0.0:
                qs += q0
                ns -= 1
            if q > 0.0:
                ql += q
                nl += 1
            elif q < 0.0:
                qs -= q
                ns += 1
        st[S_QL] = ql
        st[S_QS] = qs
        st[S_NL] = nl
        st[S_NS] = ns
        st[S_QREADY] = 1.0
    delta = mark - st[S_PMARK]
    plist = iwork[I_PLIST]
    k = int(st[S_NPLIST])
    profit = fwork[F_TAKE]  # (scratch: each listed account's profit, kept for the charges)
    total = 0.0
    changed = 0.0  # open quantity of the changed accounts on the side in profit
    n_changed = 0
    for r in range(k):
        i = plist[r]
        p = _period_profit(i, mark, acct, fwork, iwork, st)
        profit[r] = p
        if p > 0.0:
            total += p
        q = acct[i, Q]
        if q * delta > 0.0:
            changed += abs(q)
            n_changed += 1
    # The unchanged accounts' open quantity on the side in profit. Counted first: the
    # kept totals carry rounding, and a side whose accounts all changed must give
    # exactly nothing (not a 100 % haircut rate on 1e-15 of "profit").
    side = 0.0
    if delta > 0.0 and st[S_NL] > n_changed:
        side = st[S_QL] - changed
    elif delta < 0.0 and st[S_NS] > n_changed:
        side = st[S_QS] - changed
    unchanged = abs(delta) * side if side > 0.0 else 0.0
    total += unchanged
    if total <= 0.0:
        return 0.0
    everything = pot >= total
    for r in range(k):
        p = profit[r]  # (a charge changes only its own account's cash: the same profit)
        if p > 0.0:
            _haircut(plist[r], p if everything else pot * (p / total), acct, touched, fwork,
                     iwork, st)
    if unchanged > 0.0:
        h = delta if everything else (pot / total) * delta
        if delta > 0.0:
            st[S_HL] += h
            hnow = st[S_HL]
        else:
            st[S_HS] += h
            hnow = st[S_HS]
        st[S_PENDING] = 1.0
        for r in range(k):  # the changed accounts were charged above
            i = plist[r]
            if acct[i, Q] * delta > 0.0:
                fwork[F_H0, i] = hnow
    return _settled(pot, total, out, st)


@leaf
def _socialise_all(pot, mark, acct, touched, out, fwork, iwork, st):
    """:func:`_socialise` charging every account at once: O(accounts)."""
    n = acct.shape[0]
    total = 0.0
    for i in range(n):
        p = _period_profit(i, mark, acct, fwork, iwork, st)
        if p > 0.0:
            total += p
    if total <= 0.0:
        return 0.0
    everything = pot >= total
    for i in range(n):
        p = _period_profit(i, mark, acct, fwork, iwork, st)
        if p > 0.0:
            _haircut(i, p if everything else pot * (p / total), acct, touched, fwork, iwork,
                     st)
    return _settled(pot, total, out, st)


@njit(cache=True)
def _sort_nonnegative(x):
    """Sort ``x`` (finite, ≥ 0) in place, as integers (:func:`_sort_keys`): the IEEE
    bit patterns of non-negative floats order as their values (numba's own sort
    took 5 ms for 45,000 losses, the radix sort 0.6 ms). The result is the same
    sorted array either way."""
    m = x.shape[0]
    if m < 8 or NUMBA_DISABLED:  # (pure Python: numpy's own sort)
        x.sort()
        return
    keys = x.view(np.uint64)
    tmp = np.empty(m, dtype=np.uint64)
    none = np.empty(0, dtype=np.int64)
    if _sort_keys(keys, none, tmp, none):
        keys[:] = tmp


@njit(cache=True, inline="always")
def _mark_listed(flag, mark, qpos, iwork, n_dirty, n_elig):
    """Set ``mark`` to ``flag`` at the size-order places (``qpos``) of the accounts
    changed on the path and of the eligible ones (the accounts not streamed)."""
    for j in range(n_dirty):
        p = qpos[iwork[I_DIRTY, j]]
        if p >= 0:
            mark[p] = flag
    for r in range(n_elig):
        p = qpos[iwork[I_ELIG, r]]
        if p >= 0:
            mark[p] = flag


@njit(cache=True, inline="always")
def _run(x, i, n, bound, r, acc):
    """Add the values of ``x`` from ``i`` on while they are at most ``bound`` to the
    rank sum ``acc`` (ranks from ``r + 1``); returns the new ``(i, r, acc)``."""
    while i < n and x[i] <= bound:
        r += 1
        acc += r * x[i]
        i += 1
    return i, r, acc


@leaf
def _rank_sum(a, b, c, r0):
    """``Σ r·v`` over the values of the ascending arrays ``a``, ``b`` and ``c`` merged in
    ascending order, ``r`` = r0 + 1, r0 + 2, … (the rank after ``r0`` smaller values
    left out: zeros add nothing to the sum). Equal values may come in any order:
    the terms are the same. Merged in runs: from the array with the smallest head,
    every value up to the others' smallest head at once."""
    na = a.shape[0]
    nb = b.shape[0]
    nc = c.shape[0]
    m = r0 + na + nb + nc
    acc = 0.0
    r = r0
    i = 0
    j = 0
    k = 0
    while r < m:
        va = a[i] if i < na else np.inf
        vb = b[j] if j < nb else np.inf
        vc = c[k] if k < nc else np.inf
        if i < na and va <= vb and va <= vc:
            i, r, acc = _run(a, i, na, vb if vb < vc else vc, r, acc)
        elif j < nb and vb <= vc:
            j, r, acc = _run(b, j, nb, va if va < vc else vc, r, acc)
        elif k < nc:
            k, r, acc = _run(c, k, nc, va if va < vb else vb, r, acc)
        else:  # (only with NaN among the values: take the next one as it comes)
            r += 1
            if i < na:
                acc += r * a[i]
                i += 1
            else:
                acc += r * b[j]
                j += 1
    return acc


@njit(cache=True)
def _fairness(out, fwork, iwork, st, extra, qval, qpos, n_qlong, stream):
    """End of path: accounts hit, the largest ADL loss fraction and the Gini
    coefficient of losses over the eligible accounts, ``extra`` (the losses of
    changed accounts not in the list, all positive: see :func:`_owed`) and, with
    ``stream``, the accounts never changed on the path that owe lazy haircuts
    (``Q·H`` of their side), whose haircuts also complete the sum ``S_OWED``;
    resets the list's rows to zero.

    The Gini needs the losses in order. The listed ones are sorted; the streamed
    ones (often most of the book) come in order from ``qval``, the book's open
    positions by size (:func:`size_order`: ``qpos`` gives an account's place in
    it, the first ``n_qlong`` are the longs), and are merged in: O(n) instead of
    sorting them all (a quarter of a socialised path's time at 10^5 accounts).
    """
    m0 = int(st[S_NELIG])
    n_extra = extra.shape[0]
    hit = n_extra
    worst = 0.0
    total = 0.0
    for r in range(n_extra):
        total += extra[r]
    for r in range(m0):
        i = iwork[I_ELIG, r]
        loss = fwork[F_LOSS, i]
        if loss > 0.0:
            hit += 1
            total += loss
        if fwork[F_ADLL, i] > 0.0:
            eq = fwork[F_EQH, i]
            frac = fwork[F_ADLL, i] / eq if eq > 0.0 else np.inf
            if frac > worst:
                worst = frac
    # The streamed accounts: open at the start, never changed, not in the list. Their
    # losses, ascending per side (Q·H is monotone in |Q|: rounding is monotone), into
    # two scratch rows.
    mark = iwork[I_MARK]
    hl = st[S_HL]
    hs = st[S_HS]
    n_dirty = int(st[S_NDIRTY])
    stream_l = fwork[F_BASE]
    stream_s = fwork[F_SLOPE]
    n_sl = 0
    n_ss = 0
    owed = st[S_OWED]
    owed_c = st[S_OWED_C]
    # The listed losses in order; the zeros (eligible accounts that bore nothing)
    # come first and add nothing to the Gini's rank sum: only their count is needed.
    losses = np.empty(m0 + n_extra)
    n_pos = 0
    for r in range(m0):
        v = fwork[F_LOSS, iwork[I_ELIG, r]]
        if v > 0.0:
            losses[n_pos] = v
            n_pos += 1
    for r in range(n_extra):
        losses[n_pos] = extra[r]
        n_pos += 1
    r0 = m0 + n_extra - n_pos
    # With no positive listed loss and one side streamed (a crash charges one side),
    # the streamed losses are the whole ascending order: their rank sum is taken as
    # they come (the additions _rank_sum would make, in its order).
    alone = n_pos == 0 and (hl == 0.0 or hs == 0.0)
    acc = 0.0
    r = r0
    if stream:
        _mark_listed(1, mark, qpos, iwork, n_dirty, m0)
        # (A side without haircuts owes nothing: Q·0 = 0.)
        for p in range(0 if hl != 0.0 else n_qlong, qval.shape[0] if hs != 0.0 else n_qlong):
            if mark[p] == 0:
                d = qval[p] * (hl if p < n_qlong else hs)
                if d != 0.0:
                    total += d
                    owed, owed_c = _neumaier(owed, owed_c, d)
                    if alone:
                        r += 1
                        acc += r * d
                        n_sl += 1
                    elif p < n_qlong:
                        stream_l[n_sl] = d
                        n_sl += 1
                    else:
                        stream_s[n_ss] = d
                        n_ss += 1
    st[S_OWED] = owed + owed_c
    st[S_OWED_C] = 0.0
    n_stream = n_sl + n_ss
    m = m0 + n_extra + n_stream
    out[N_ACCOUNTS_HIT] = hit + n_stream
    out[ADL_MAX_LOSS_FRACTION] = worst
    if total > 0.0:
        if not alone:
            losses = losses[:n_pos]
            _sort_nonnegative(losses)
            acc = _rank_sum(losses, stream_l[:n_sl], stream_s[:n_ss], r0)
        out[LOSS_GINI] = 2.0 * acc / (m * total) - (m + 1.0) / m
    else:
        out[LOSS_GINI] = np.nan
    if stream:
        _mark_listed(0, mark, qpos, iwork, n_dirty, m0)
    for r in range(m0):
        i = iwork[I_ELIG, r]
        fwork[F_LOSS, i] = 0.0
        fwork[F_ADLL, i] = 0.0
        fwork[F_EQH, i] = 0.0
        iwork[I_FLAG, i] = 0
    st[S_NELIG] = 0.0


@njit(cache=True, inline="always")
def _reach(a, q, acct, fwork, st):
    """Account ``a``'s threshold (position ``q``) widened by the lazy haircuts charged
    since its cash last took them: a long can trigger only at or below it, a short
    only at or above. The one expression the detection and the loose accounts'
    bounds (:func:`_loosen`) both test, so that the bounds are exact."""
    if q > 0.0:
        return acct[a, THR] + (st[S_HL] - fwork[F_H0, a]) * st[S_GL]
    return acct[a, THR] - (fwork[F_H0, a] - st[S_HS]) * st[S_GS]


@njit(cache=True, inline="always")
def _widening(st):
    """How far the lazy haircuts charged since the last sort move the sort-time
    thresholds: ``(up for longs, down for shorts)``. :func:`_detect` stops its
    walks, and :func:`_quiet_bounds` bounds the quiet marks, on these numbers."""
    return (st[S_HL] - st[S_HL0]) * st[S_GL], (st[S_HS0] - st[S_HS]) * st[S_GS]


@njit(cache=True, inline="always")
def _detect(detect, mark, acct, tt, params, lorder, sorder, lkey, skey, lhead, shead, nl, ns,
            is_loose, loose, n_loose, cand, act, fwork, st):
    """Accounts with something to do at ``mark`` into ``cand`` (actions in ``act``), in
    account order; returns their count.

    Walk each sorted side from its head while the sort-time threshold, widened by
    the lazy haircuts charged since the sort, is crossed; then check the loose
    accounts; :func:`action` confirms each. (The two walks are written out: a
    shared walk with a side argument cost 8 % of a default run.) When the walks
    check many accounts in vain, ``S_WIDE`` asks for a re-sort. ``detect``
    :data:`DETECT_SCAN` compares every open account's threshold with the mark
    instead, :data:`DETECT_NAIVE` runs :func:`action` on every open account: the
    same candidates, at O(n) per mark.
    """
    m = 0
    if detect != DETECT_SORTED:
        for a in range(acct.shape[0]):
            q = acct[a, Q]
            if q == 0.0:
                continue
            if detect == DETECT_NAIVE:
                w = action(a, _cash_of(a, acct, fwork, st), mark, acct, tt, params)
                if w != ACT_NONE:
                    cand[m] = a
                    act[m] = w
                    m += 1
            elif q > 0.0:
                if mark <= _reach(a, q, acct, fwork, st):
                    w = action(a, _cash_of(a, acct, fwork, st), mark, acct, tt, params)
                    if w != ACT_NONE:
                        cand[m] = a
                        act[m] = w
                        m += 1
            elif mark >= _reach(a, q, acct, fwork, st):
                w = action(a, _cash_of(a, acct, fwork, st), mark, acct, tt, params)
                if w != ACT_NONE:
                    cand[m] = a
                    act[m] = w
                    m += 1
        return m
    walked = 0
    ascending = True  # (tracked as the candidates come: a pass over them saved)
    prev = -1
    off_l, off_s = _widening(st)
    i = lhead
    while i < nl:
        if lkey[i] + off_l < mark:
            break
        a = lorder[i]
        ua = np.uint64(a)  # (an unsigned row: no test for a negative index)
        if not is_loose[ua] and acct[ua, Q] > 0.0:
            w = action(ua, _cash_of(ua, acct, fwork, st), mark, acct, tt, params)
            if w != ACT_NONE:
                if a < prev:
                    ascending = False
                prev = a
                cand[m] = a
                act[m] = w
                m += 1
            walked += 1
        i += 1
    i = shead
    while i < ns:
        if skey[i] - off_s > mark:
            break
        a = sorder[i]
        ua = np.uint64(a)  # (an unsigned row: no test for a negative index)
        if not is_loose[ua] and acct[ua, Q] < 0.0:
            w = action(ua, _cash_of(ua, acct, fwork, st), mark, acct, tt, params)
            if w != ACT_NONE:
                if a < prev:
                    ascending = False
                prev = a
                cand[m] = a
                act[m] = w
                m += 1
            walked += 1
        i += 1
    if walked - m > 64 + (nl + ns) // 64:
        st[S_WIDE] = 1.0
    for j in range(n_loose):
        a = loose[j]
        q = acct[a, Q]
        if q > 0.0:
            if mark <= _reach(a, q, acct, fwork, st):
                w = action(a, _cash_of(a, acct, fwork, st), mark, acct, tt, params)
                if w != ACT_NONE:
                    if a < prev:
                        ascending = False
                    prev = a
                    cand[m] = a
                    act[m] = w
                    m += 1
        elif q < 0.0 and mark >= _reach(a, q, acct, fwork, st):
            w = action(a, _cash_of(a, acct, fwork, st), mark, acct, tt, params)
            if w != ACT_NONE:
                if a < prev:
                    ascending = False
                prev = a
                cand[m] = a
                act[m] = w
                m += 1
    if not ascending:  # (a book in walk order yields its candidates in account order)
        perm = np.argsort(cand[:m], kind="mergesort")
        c2 = cand[:m].copy()
        a2 = act[:m].copy()
        for j in range(m):
            cand[j] = c2[perm[j]]
            act[j] = a2[perm[j]]
    return m


@leaf
def _loosen(acct, tt, params, touched, is_loose, loose, n_loose, fwork, st):
    """The accounts changed since the last call (:func:`_moved`) get their thresholds
    recomputed and become loose; closed ones leave the list.

    Also bounds where the loose accounts can trigger, as :func:`_detect` tests
    them (``S_LHI``, ``S_LLO``), so that a step whose mark lies between the
    bounds and the sorted sides' heads skips the detection. Every change to a
    loose account's threshold or to the side's haircut is followed by a call
    (before the next detection); a position closed since only makes the bounds
    wider than they need be."""
    n = acct.shape[0]
    for j in range(1, touched[0] + 1):
        a = touched[j]
        touched[1 + n + a] = 0
        acct[a, THR] = event_threshold(a, acct, tt, params)
        if acct[a, Q] != 0.0 and not is_loose[a]:
            is_loose[a] = True
            loose[n_loose] = a
            n_loose += 1
    touched[0] = 0
    k = 0
    hi = -np.inf
    lo = np.inf
    for j in range(n_loose):
        a = loose[j]
        q = acct[a, Q]
        if q != 0.0:
            loose[k] = a
            k += 1
            v = _reach(a, q, acct, fwork, st)
            if q > 0.0:
                if v > hi:
                    hi = v
            elif v < lo:
                lo = v
        else:
            is_loose[a] = False
    st[S_LHI] = hi
    st[S_LLO] = lo
    return k


@njit(cache=True)
def _resort(acct, tt, params, lorder, sorder, lkey, skey, is_loose, loose, n_loose, fwork,
            iwork, st):
    """Re-sort the open book on the current thresholds (lazy haircuts written into the
    cash first); no account is loose after."""
    st[S_RESORTED] = 1.0
    st[S_WIDE] = 0.0
    if st[S_PENDING] != 0.0:
        for i in range(acct.shape[0]):
            if _pending(i, acct, fwork, st) != 0.0:
                _touch(i, acct, fwork, iwork, st)
                acct[i, THR] = event_threshold(i, acct, tt, params)
        st[S_HL0] = st[S_HL]
        st[S_HS0] = st[S_HS]
    nl, ns = sort_book(acct, lorder, sorder, lkey, skey)
    for j in range(n_loose):
        is_loose[loose[j]] = False
    return nl, ns


@leaf
def _alert(i, mark, acct, tt, params, out, fwork, iwork, st):
    """Account ``i``'s margin ratio crossed one or more alert levels at ``mark``.

    Counts the levels crossed; an account with budget left then tops up with
    probability ``topup_prob`` (its k-th decision compares ``frac(u + k·φ)`` with
    it, ``u`` its uniform draw of the path): it adds what brings the margin ratio
    back to ``topup_target`` (default half the deepest level crossed), at most its
    budget, and its alerts re-arm at the levels above the new ratio.
    """
    _touch(i, acct, fwork, iwork, st)
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
                fwork[F_EQP, i] += add  # a deposit is not profit of the period
                st[S_PCLEAN] = 0.0  # (see S_PND)
                acct[i, BUDGET] -= add
                out[N_TOPUPS] += 1.0
                out[TOPUP_VOLUME] += add
                eq += add
                a = 0
                while a < na and eq <= (1.0 / params[P_ALERT0 + a]) * req:
                    a += 1
                acct[i, ALERT] = a


@leaf
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


@leaf
def _reduce(i, x, mark, acct, tt, params, out, fwork, iwork, st):
    """Partial or stepwise liquidation of account ``i`` at fill ``x``.

    Closes the planned part (a fraction, or what exceeds the next-lower tier's
    cap at the mark), realises its PnL into the collateral, takes the fee on it,
    and re-checks at the mark; repeats until the account is healthy. Returns
    ``done``: False when the rest must be closed in full (the position is in the
    bottom tier, below the partial tier, would not survive the fill, or kept
    breaching).
    """
    req_fee = params[P_REQ_FEE]
    mm_entry = params[P_MM_ENTRY] != 0.0
    fee_rate = params[P_FEE_RATE]
    _touch(i, acct, fwork, iwork, st)
    for _ in range(MAX_PARTIAL_STEPS):
        q = acct[i, Q]
        aq = abs(q)
        dq = _planned(i, ACT_LIQUIDATE, mark, acct, tt, params)
        if dq >= aq:
            return False
        e = acct[i, E]
        fee = fee_rate * dq * x
        if acct[i, C] + q * (x - e) - fee <= 0.0:
            return False  # under water at the fill: a full close
        s = 1.0 if q > 0.0 else -1.0
        acct[i, C] += s * dq * (x - e) - fee
        _set_qty(i, q - s * dq, acct, st)
        out[MARKET_PNL] += s * dq * (x - e)
        _log_end(_log(_log_start(st), fee, int(st[S_T]) * 4 + K_FEE, fwork, iwork, st), st)
        _fee(fee, params, out, st)
        out[N_PARTIAL] += 1.0
        out[LIQUIDATED_NOTIONAL] += dq * mark
        if not is_breached(acct[i, Q], e, acct[i, C], mark, tt, req_fee, mm_entry, 1.0):
            return True
    return False


@njit(cache=True, inline="always")
def _fee(fee, params, out, st):
    """A liquidation fee paid: ``fee_share`` of it to the fund, the rest to the platform."""
    (st[S_FUND], st[S_CUM_IN], out[FUND_INFLOW], out[FUND_OVERFLOW],
     out[FEE_REVENUE]) = _paid_in(fee, True, params[P_FEE_SHARE], params[P_FUND_CAP],
                                  st[S_FUND], st[S_CUM_IN], out[FUND_INFLOW],
                                  out[FUND_OVERFLOW], out[FEE_REVENUE])


@leaf
def impact_fraction(notional, depth, k, gamma):
    """Price impact of forced orders of ``notional`` against ``depth``: k·(Q/D)^γ,
    at most :data:`MAX_IMPACT` (a fill, or a mark, never reaches zero)."""
    if notional <= 0.0 or k == 0.0:
        return 0.0
    if depth <= 0.0:
        return MAX_IMPACT
    f = k * (notional / depth) ** gamma
    return f if f < MAX_IMPACT else MAX_IMPACT


@leaf
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


@leaf
def _pay_funding(f, mark, acct, touched, fwork, iwork, st):
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
        _touch(i, acct, fwork, iwork, st)
        if (q > 0.0) == (f > 0.0):
            acct[i, C] -= abs(f) * n
        else:
            acct[i, C] += total * (n / receivers)
        _moved(i, acct, touched)
    return total


@njit(cache=True, inline="always")
def _quiet_bounds(lkey, skey, lhead, shead, nl, ns, n_loose, st):
    """``(lo, hi)``: nothing triggers at a mark strictly between them. The sorted
    sides' heads with the walks' widening by the lazy haircuts (as :func:`_detect`
    stops its walks), and the loose accounts' bounds (:func:`_loosen`); −inf / +inf
    where a side has none."""
    off_l, off_s = _widening(st)
    lo = -np.inf
    if lhead < nl:
        lo = lkey[lhead] + off_l
    hi = np.inf
    if shead < ns:
        hi = skey[shead] - off_s
    if n_loose > 0:
        if st[S_LHI] > lo:
            lo = st[S_LHI]
        if st[S_LLO] < hi:
            hi = st[S_LLO]
    return lo, hi


@leaf
def _quiet_steps(t, last, next_funding, next_record, next_settle, settle_every, mode, disp,
                 used_bid, used_ask, premium_sum, premium_n, permanent_decay, used_decay,
                 index, mark0, lo, hi, out, st):
    """Run the quiet steps from step ``t`` on: the steps before the last at which no
    funding is paid, no fund recorded, and the mark stays strictly between ``lo``
    and ``hi`` (:func:`_quiet_bounds`; no pending loss: the caller checks).
    Such a step only decays the mark's displacement and the depth used,
    accumulates the premium and closes a settlement period: exactly what
    :func:`simulate_path` would do with it, in a loop of its own (≈ 25 ns a step
    inside the kernel's body, whose state does not fit in registers; a few ns
    here). Returns the first step that is not quiet and the updated ``(disp,
    used_bid, used_ask, premium_sum, premium_n, next_settle)``."""
    gap = out[MARK_INDEX_GAP]
    while t < last and t != next_funding and t != next_record:
        d = disp
        if d != 1.0:
            d = 1.0 + (d - 1.0) * permanent_decay
        mark = mark0[t] * d
        if not (lo < mark and hi > mark):
            break
        disp = d
        used_bid *= used_decay
        used_ask *= used_decay
        premium = mark / index[t] - 1.0
        premium_sum += premium
        premium_n += 1
        if abs(premium) > gap:
            gap = abs(premium)
        if t == next_settle:
            next_settle += settle_every
            if mode == 1:  # (a socialised policy)
                st[S_PERIOD] += 1.0
                st[S_PMARK] = mark
                st[S_NPLIST] = 0.0
            elif mode == 2:  # (a primary following the periods: see S_PND)
                st[S_PMARK] = mark
                st[S_PND] = st[S_NDIRTY]
                st[S_PCLEAN] = 1.0
        t += 1
    out[MARK_INDEX_GAP] = gap
    return t, disp, used_bid, used_ask, premium_sum, premium_n, next_settle


def _fills_kernel(journal: bool):
    """:func:`_fills`, compiled with or without the ledger journal (``journal``, a
    constant of the compiled code): the journal's entries cost registers the fill
    loop needs, so the runs that keep no journal use a loop without them."""

    @leaf
    def fills(cand, act, n_orders, x_sell, x_buy, mark, acct, tt, params, touched, out, fwork,
               iwork, st):
        """Fill a round's orders (``cand[:n_orders]``, actions ``act``) at ``x_sell`` (longs)
        or ``x_buy`` (shorts): close each position, or reduce it (partial and stepwise
        liquidation), book its PnL, the liquidation fee and a surplus for the fund.
        Each negative balance is written off into the round's shortfall rows
        (``F_SHORT``, ``F_BP``, ``F_X``, ``F_SIDE``); returns their count.

        A function of its own so that the loop's state fits in registers: inside the
        kernel's body every pointer it needs was reloaded from the stack."""
        style = int(params[P_LIQ_STYLE])
        fee_rate = params[P_FEE_RATE]
        to_trader = params[P_SURPLUS_TO_TRADER] != 0.0
        log = -1
        t4 = 0
        if journal:
            log = _log_start(st)
            t4 = int(st[S_T]) * 4
        n_short = 0
        for j in range(n_orders):
            i = cand[j]
            q = acct[i, Q]
            x = x_sell if q > 0.0 else x_buy
            if act[j] == ACT_LIQUIDATE and style != STYLE_FULL:
                if journal:
                    _log_end(log, st)
                done = _reduce(i, x, mark, acct, tt, params, out, fwork, iwork, st)
                if journal:
                    log = _log_start(st)
                if done:
                    _moved(i, acct, touched)
                    continue
                q = acct[i, Q]
            _touch(i, acct, fwork, iwork, st)
            e = acct[i, E]
            c = acct[i, C]
            out[MARKET_PNL] += q * (x - e)
            cash = c + q * (x - e)  # the account's cash after the fill
            if act[j] == ACT_STOP:
                # The trader's own market order: no liquidation fee; a fill past the
                # bankruptcy price still leaves a shortfall.
                out[N_STOPS] += 1.0
                out[STOP_NOTIONAL] += abs(q) * mark
            else:
                if cash > 0.0:
                    fee = fee_rate * abs(q) * x
                    fee_paid = fee if cash >= fee else cash
                    if journal:
                        log = _log(log, fee_paid, t4 + K_FEE, fwork, iwork, st)
                    _fee(fee_paid, params, out, st)
                    cash -= fee_paid
                    if not to_trader and cash > 0.0:
                        if journal:
                            log = _log(log, cash, t4 + K_SURPLUS, fwork, iwork, st)
                        _fund_in(cash, params, out, st)
                        cash = 0.0
                out[N_LIQUIDATIONS] += 1.0
                out[LIQUIDATED_NOTIONAL] += abs(q) * mark
            if cash < 0.0:
                fwork[F_SHORT, n_short] = -cash
                fwork[F_BP, n_short] = e - c / q
                fwork[F_X, n_short] = x
                fwork[F_SIDE, n_short] = 1.0 if q > 0.0 else -1.0
                n_short += 1
                cash = 0.0  # the negative balance is written off; the waterfall pays it
            _set_qty(i, 0.0, acct, st)
            acct[i, C] = cash
        if journal:
            _log_end(log, st)
        return n_short

    return fills


_fills = _fills_kernel(False)
_fills_journal = _fills_kernel(True)  # (while the ledger journal is kept: st[S_LOG])


def simulate_path_python(index, mark0, depth_bid, depth_ask, gap_bid, gap_ask, acct, lorder,
                         sorder, lkey, skey, n_long, n_short, qval, qpos, n_qlong, tt, layers,
                         params, out, traj, fwork, iwork, touched, is_loose, st, fk):
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
        updated in place (the rows changed are journalled: see below). ``THR``
        from :func:`prepare_book`. ``C`` is the account's cash: a closed account
        keeps what is left to it.
    lorder, sorder, lkey, skey, n_long, n_short
        The book's sorted orders and their sort-time thresholds, from
        :func:`prepare_book` (re-sorted in place when many thresholds moved).
    qval, qpos, n_qlong
        The book's open positions by size, from :func:`size_order` (for the loss
        Gini of the accounts that owe lazy haircuts at the end of a path).
    tt : float64[4, tiers]
        Tier table rows floor, cap (``cap[-1]`` = +inf), mmr, maintenance amount.
    layers : int64[k]
        Loss waterfall (codes ``LAYER_*``).
    params : float64[N_PARAMS]
        Scalars in the order of :data:`stress.runner.variables.PARAMS`.
    out : float64[N_METRICS]
        Per-path metrics, filled in (see :mod:`stress.runner.variables`).
    traj : float64[k]
        The fund every ``record_every`` steps from step 0 (filled while it fits;
        empty when not recorded).
    fwork, iwork, touched, is_loose, st, fk
        Scratch arrays from :func:`workspace` (reused across calls, so that a
        path allocates nothing). On return, ``iwork[I_DIRTY, :st[S_NDIRTY]]``
        lists every account changed and ``st[S_RESORTED]`` tells whether the
        orders were re-sorted; :func:`restore_book` puts the book back as it was
        in O(changed accounts), so a path costs nothing per untouched account.
        ``fk`` and the slots of ``st`` from ``S_LOG`` on are the caller's: with
        ``st[S_RESUME]`` = g + 1 the path goes on from checkpoint g of ``fk``
        (a fork, set up by :func:`simulate_policies`) instead of starting.

    Each step: the mark's displacement by earlier forced orders decays, funding
    is paid at its interval, then rounds run at the mark. A round's candidates
    are found; margin alerts are counted and top-ups made; the stop-losses and
    liquidations form the round's orders, filled at ``mark·(1 ∓ (slippage + gap
    + impact))`` with impact ``k·(Q/D)^γ`` of the round's forced notional per
    side against the depth left. A stop closes the whole position; a
    liquidation closes it in full, or partially / stepwise with re-checks at the
    same fill. The permanent part of the impact moves the mark, and a new round
    starts while that triggers more accounts (up to the round cap). Shortfalls
    go down the waterfall round by round; a socialised layer's pot is charged
    at the end of its settlement period (and of the path).

    Money is accounted for: the kernel sums the traders' cash before and after
    and accumulates every flow (market PnL, deposits, fees, fund, platform,
    residual), so that :func:`stress.runner.shard.check_conservation` can check
    the balance sheet of every path.

    Cost: O(steps + events). Accounts whose threshold moves are checked on
    their own each step; when more than max(64, n/64) are, the book is re-sorted.
    With ``params["detect"]`` = :data:`DETECT_SCAN` or :data:`DETECT_NAIVE` every
    open account is checked at every mark instead (O(steps × n): the baselines
    of the benchmark; the results are the same).
    """
    # The caller owns every array for the whole call: borrowed, they cost no
    # reference counting in the helpers (≈ 40 % of a crash's time otherwise).
    index, mark0 = borrowed(index), borrowed(mark0)
    depth_bid, depth_ask = borrowed(depth_bid), borrowed(depth_ask)
    gap_bid, gap_ask = borrowed(gap_bid), borrowed(gap_ask)
    acct, lorder, sorder = borrowed(acct), borrowed(lorder), borrowed(sorder)
    lkey, skey, tt = borrowed(lkey), borrowed(skey), borrowed(tt)
    qval, qpos = borrowed(qval), borrowed(qpos)
    layers, params, out, traj = borrowed(layers), borrowed(params), borrowed(out), borrowed(traj)
    fwork, iwork, touched = borrowed(fwork), borrowed(iwork), borrowed(touched)
    is_loose, st, fk = borrowed(is_loose), borrowed(st), borrowed(fk)
    n = acct.shape[0]
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
    inverse = params[P_INVERSE] != 0.0
    settle_every = int(params[P_SETTLE_EVERY])
    if settle_every < 1:
        settle_every = 1
    record_every = int(params[P_RECORD_EVERY])
    last = index.shape[0] - 1

    detect = int(params[P_DETECT])
    n_alerts = int(params[P_N_ALERTS])
    has_fund = False
    social = False
    for li in range(layers.shape[0]):
        if layers[li] == LAYER_FUND:
            has_fund = True
        elif layers[li] == LAYER_SOCIALISED:
            social = True
    # (Only a socialised policy takes period snapshots; a primary that a socialised
    # policy may fork from follows the periods without them: S_SNAP, S_PND.)
    resume = int(st[S_RESUME])  # g + 1: the path goes on from checkpoint g

    liq_short = fwork[F_SHORT, :n]
    liq_bp = fwork[F_BP, :n]
    liq_x = fwork[F_X, :n]
    liq_side = fwork[F_SIDE, :n]
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
    for j in range(1, touched[0] + 1):
        touched[1 + n + touched[j]] = 0
    touched[0] = 0
    max_loose = 64 if n // 64 < 64 else n // 64
    qstate = np.empty(4, dtype=np.int64)
    n_pend = 0  # socialised losses waiting for the settlement
    if resume == 0:
        for k in range(out.shape[0]):
            out[k] = 0.0
        out[TIME_TO_DEPLETION] = np.nan
        out[HAIRCUT_RATE_MAX] = np.nan
        for k in range(S_LOG):  # (S_LOG and the slots after it are the caller's)
            st[k] = 0.0
        st[S_FUND] = params[P_FUND_INITIAL]
        out[FUND_MIN] = st[S_FUND]
        st[S_PERIOD] = 0.0 if social else -1.0
        st[S_PMARK] = mark0[0]
        st[S_PND] = 0.0
        st[S_PCLEAN] = 1.0
        if record_every > 0 and traj.shape[0] > 0:
            traj[0] = st[S_FUND]
        nl = n_long
        ns = n_short
        lhead = 0
        shead = 0
        # The walks stop on the sort-time thresholds (lkey, skey), so an account whose
        # threshold moved later cannot stop a walk early; such accounts are "loose"
        # and checked on their own each step until the next re-sort. No account is
        # loose on entry, and none is left loose on return.
        n_loose = 0
        disp = 1.0  # displacement of the mark by the permanent impact of forced orders
        used_bid = 0.0  # depth consumed by forced orders, refilling with the recovery half-life
        used_ask = 0.0
        premium_sum = 0.0
        premium_n = 0
        # The next step of a settlement, a fund record and a funding payment (-1: none).
        next_settle = settle_every
        next_record = record_every if record_every > 0 else -1
        next_funding = funding_every if funding_every > 0 else -1
        t = 1
        mark = mark0[0]
        step_mark = mark
        rounds = 0
        platform_before = 0.0
        imp_sell = 0.0
        imp_buy = 0.0
        n_short_round = 0
    else:
        # The state a primary saved (_checkpoint) after the fills of a round; the
        # caller has put the book, st and out back as they were there, this policy's
        # ledger in them (_fork_from).
        ck = _ck_base(resume - 1)
        t = int(fk[ck + CK_T])
        mark = fk[ck + CK_MARK]
        step_mark = fk[ck + CK_STEP_MARK]
        rounds = int(fk[ck + CK_ROUNDS])
        disp = fk[ck + CK_DISP]
        used_bid = fk[ck + CK_USED_BID]
        used_ask = fk[ck + CK_USED_ASK]
        premium_sum = fk[ck + CK_PREMIUM_SUM]
        premium_n = int(fk[ck + CK_PREMIUM_N])
        next_settle = int(fk[ck + CK_NEXT_SETTLE])
        next_funding = int(fk[ck + CK_NEXT_FUNDING])
        nl = int(fk[ck + CK_NL])
        ns = int(fk[ck + CK_NS])
        lhead = int(fk[ck + CK_LHEAD])
        shead = int(fk[ck + CK_SHEAD])
        imp_sell = fk[ck + CK_IMP_SELL]
        imp_buy = fk[ck + CK_IMP_BUY]
        n_short_round = int(fk[ck + CK_N_SHORT])
        n_loose = _ck_arrays(ck, fk, fwork, touched, is_loose, loose)
        platform_before = fk[FK_PLATFORM_BEFORE]
        next_record = int(fk[FK_NEXT_RECORD])
        if not social:
            st[S_PERIOD] = -1.0  # (set by the caller when it has snapshots)
    if social:
        _haircut_gains(tt, params, st)

    while t <= last:
        if st[S_RESUME] == 0.0:
            if detect == DETECT_SORTED and n_pend == 0 and st[S_WIDE] == 0.0:
                # The steps where nothing triggers and nothing is due, in a loop of their own.
                lo, hi = _quiet_bounds(lkey, skey, lhead, shead, nl, ns, n_loose, st)
                t, disp, used_bid, used_ask, premium_sum, premium_n, next_settle = _quiet_steps(
                    t, last, next_funding, next_record, next_settle, settle_every,
                    1 if social else (2 if st[S_SNAP] != 0.0 else 0), disp,
                    used_bid, used_ask, premium_sum, premium_n, permanent_decay, used_decay,
                    index, mark0, lo, hi, out, st)
            platform_before = out[PLATFORM_LOSS]
            if disp != 1.0:
                disp = 1.0 + (disp - 1.0) * permanent_decay
            used_bid *= used_decay
            used_ask *= used_decay
            mark = mark0[t] * disp
            if t == next_funding:
                next_funding += funding_every
                premium = premium_sum / premium_n if premium_n > 0 else 0.0
                f = funding_rate(funding_mode, params[P_FUNDING_RATE], premium,
                                 params[P_FUNDING_INTEREST], params[P_FUNDING_CLAMP],
                                 params[P_FUNDING_CAP])
                out[FUNDING_VOLUME] += _pay_funding(f, mark, acct, touched, fwork, iwork, st)
                if touched[0] > 0 or n_loose > 0:  # (a call saved when nothing moved)
                    n_loose = _loosen(acct, tt, params, touched, is_loose, loose, n_loose,
                                      fwork, st)
                premium_sum = 0.0
                premium_n = 0
                if n_loose > max_loose:
                    nl, ns = _resort(acct, tt, params, lorder, sorder, lkey, skey, is_loose,
                                     loose, n_loose, fwork, iwork, st)
                    n_loose, lhead, shead = 0, 0, 0
            step_mark = mark
            rounds = 0
        while True:
            if st[S_RESUME] == 0.0:
                # Most steps trigger nothing: the heads of the sorted sides tell, without
                # the call of _detect and its two dozen arguments (≈ 300 ns a step).
                if detect == DETECT_SORTED:
                    lo, hi = _quiet_bounds(lkey, skey, lhead, shead, nl, ns, n_loose, st)
                    if lo < mark and hi > mark:
                        break
                m = _detect(detect, mark, acct, tt, params, lorder, sorder, lkey, skey, lhead,
                            shead, nl, ns, is_loose, loose, n_loose, cand, act, fwork, st)
                # Alerts (and top-ups) first; the stops and liquidations are the orders.
                # (Without alert levels every candidate is an order: no pass over them.)
                n_orders = m if n_alerts == 0 else 0
                alerted = False
                for j in range(m if n_alerts > 0 else 0):
                    if act[j] == ACT_ALERT:
                        _alert(cand[j], mark, acct, tt, params, out, fwork, iwork, st)
                        _moved(cand[j], acct, touched)
                        alerted = True
                    else:
                        cand[n_orders] = cand[j]
                        act[n_orders] = act[j]
                        n_orders += 1
                if alerted:
                    if touched[0] > 0 or n_loose > 0:  # (a call saved when nothing moved)
                        n_loose = _loosen(acct, tt, params, touched, is_loose, loose, n_loose,
                                          fwork, st)
                if n_orders == 0:
                    break
                if rounds == max_rounds:
                    out[CASCADE_CAP_HITS] += 1.0  # the rest waits for the next step
                    break
                rounds += 1
                # The round's forced orders per side, and their fills.
                sell = 0.0
                buy = 0.0
                # (Without an impact coefficient the volumes move nothing: no pass.)
                for j in range(n_orders if impact_k != 0.0 else 0):
                    i = cand[j]
                    if style == STYLE_FULL or act[j] != ACT_LIQUIDATE:  # (saves a call)
                        vol = abs(acct[i, Q]) * mark
                    else:
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
                if st[S_LOG] == 0.0:
                    n_short_round = _fills(cand, act, n_orders, x_sell, x_buy, mark, acct, tt,
                                           params, touched, out, fwork, iwork, st)
                else:  # the ledger journal: the round's fees and surpluses, then its losses
                    st[S_T] = t
                    n_short_round = _fills_journal(cand, act, n_orders, x_sell, x_buy, mark,
                                                   acct, tt, params, touched, out, fwork,
                                                   iwork, st)
                    log = _log_start(st)
                    k_fills = log
                    for j in range(n_short_round):
                        log = _log(log, liq_short[j], t * 4 + K_LOSS, fwork, iwork, st)
                    _log_end(log, st)
                    if st[S_FORKING] != 0.0 and n_short_round > 0:
                        # Would a policy forking from this one see a loss reach its ADL or
                        # socialised layer now? Then it starts from here (_fork_check).
                        slack = st[S_FORK_SLACK]
                        for j in range(n_short_round):
                            slack -= liq_short[j]
                        st[S_FORK_SLACK] = slack
                        if slack < 0.0:
                            _fork_check(k_fills, t, mark, step_mark, rounds, disp, used_bid,
                                        used_ask, premium_sum, premium_n, next_settle,
                                        next_funding, nl, ns, lhead, shead, n_loose, imp_sell,
                                        imp_buy, n_short_round, out, fk, fwork, iwork, touched,
                                        loose, st)
            st[S_RESUME] = 0.0  # (a fork goes on as a path from here)
            qstate[0] = -1  # ADL queues are ranked at this round's mark on first use
            qstate[2] = -1
            for j in range(n_short_round):
                sf = liq_short[j]
                out[SHORTFALL] += sf
                out[SHORTFALL_QUOTE] += sf / mark if inverse else sf
                out[N_SHORTFALLS] += 1.0
                # The layers run here, not through _waterfall: a call of it, with its two
                # dozen arguments and their reference counts, cost ≈ 400 ns, most of a
                # crash's time when every liquidation leaves a shortfall. The fund and
                # platform layers up to the first ADL or socialised layer; a socialised
                # layer parks the loss for its settlement; ADL closes what it can, and
                # only what it leaves goes down _waterfall.
                li, sf = _plain_layers(0, sf, t, layers, params, out, st)
                if sf <= 0.0:
                    pass
                elif li == layers.shape[0]:
                    out[RESIDUAL] += sf
                elif layers[li] == LAYER_SOCIALISED:
                    st[S_DIVERGED] = 1.0
                    n_pend = _park(sf, li, liq_side[j], liq_bp[j], liq_x[j], pend_rem,
                                   pend_next, pend_side, pend_bp, pend_x, n_pend)
                else:  # LAYER_ADL
                    st[S_DIVERGED] = 1.0
                    c = _adl(liq_side[j], liq_bp[j], liq_x[j], sf, mark, acct, params,
                             queues, score, qstate, touched, out, fwork, iwork, st)
                    out[ADL_COST] += c
                    sf -= c
                    if sf > 0.0:  # the layers after ADL (and the residual), as _waterfall
                        n_pend = _waterfall(li + 1, sf, t, layers, liq_side[j], liq_bp[j],
                                            liq_x[j], mark, acct, params, queues, score,
                                            qstate, touched, out, pend_rem, pend_next,
                                            pend_side, pend_bp, pend_x, n_pend, fwork, iwork,
                                            st)
            if touched[0] > 0 or n_loose > 0:  # (a call saved when nothing moved)
                n_loose = _loosen(acct, tt, params, touched, is_loose, loose, n_loose, fwork, st)
            while lhead < nl and acct[np.uint64(lorder[lhead]), Q] == 0.0:
                lhead += 1
            while shead < ns and acct[np.uint64(sorder[shead]), Q] == 0.0:
                shead += 1
            move = 1.0 - permanent * imp_sell + permanent * imp_buy
            if move == 1.0:
                break  # the mark did not move: nothing new can trigger this step
            mark *= move
            disp *= move
        if rounds > out[CASCADE_ROUNDS]:
            out[CASCADE_ROUNDS] = rounds
        if rounds > 0:  # (otherwise the mark did not move)
            moved = abs(mark / step_mark - 1.0)
            if moved > out[CASCADE_MOVE]:
                out[CASCADE_MOVE] = moved
        premium = mark / index[t] - 1.0
        premium_sum += premium
        premium_n += 1
        if abs(premium) > out[MARK_INDEX_GAP]:
            out[MARK_INDEX_GAP] = abs(premium)
        # (Counters instead of t % k: an integer division per step cost ≈ 10 % of
        # a quiet step.)
        boundary = t == next_settle or t == last
        if t == next_settle:
            next_settle += settle_every
        if n_pend > 0 and boundary:
            pot = 0.0
            for p in range(n_pend):
                pot += pend_rem[p]
            charged = _socialise(pot, mark, acct, touched, out, fwork, iwork, st, qval, qpos,
                                 n_qlong)
            out[SOCIALISED_LOSS] += charged
            left = (pot - charged) / pot
            if charged > 0.0 or left > 0.0:
                # Haircuts changed the scores, and what they could not cover continues
                # down each waterfall: the ADL queues are ranked again at this mark.
                qstate[0] = -1
                qstate[2] = -1
            if left > 0.0:
                for p in range(n_pend):
                    _waterfall(pend_next[p], pend_rem[p] * left, t, layers, pend_side[p],
                               pend_bp[p], pend_x[p], mark, acct, params, queues, score,
                               qstate, touched, out, pend_rem, pend_next, pend_side, pend_bp,
                               pend_x, n_pend, fwork, iwork, st)
            n_pend = 0
            if touched[0] > 0 or n_loose > 0:  # (a call saved when nothing moved)
                n_loose = _loosen(acct, tt, params, touched, is_loose, loose, n_loose, fwork, st)
        if social and boundary:
            st[S_PERIOD] += 1.0
            st[S_PMARK] = mark
            st[S_NPLIST] = 0.0
        elif boundary and st[S_SNAP] != 0.0:
            st[S_PMARK] = mark
            st[S_PND] = st[S_NDIRTY]
            st[S_PCLEAN] = 1.0
        if st[S_FUND] < out[FUND_MIN]:
            out[FUND_MIN] = st[S_FUND]
        step_loss = out[PLATFORM_LOSS] - platform_before
        if step_loss > out[PLATFORM_MAX_STEP]:
            out[PLATFORM_MAX_STEP] = step_loss
        if t == next_record:
            if t // record_every < traj.shape[0]:
                traj[t // record_every] = st[S_FUND]
            next_record += record_every
        if n_loose > max_loose or st[S_WIDE] != 0.0:
            nl, ns = _resort(acct, tt, params, lorder, sorder, lkey, skey, is_loose, loose,
                             n_loose, fwork, iwork, st)
            n_loose, lhead, shead = 0, 0, 0
        # Skip the closed positions at the head of each side.
        while lhead < nl and acct[np.uint64(lorder[lhead]), Q] == 0.0:
            lhead += 1
        while shead < ns and acct[np.uint64(sorder[shead]), Q] == 0.0:
            shead += 1
        t += 1
    out[FUND_FINAL] = st[S_FUND]
    out[FUND_NEED] = st[S_NEED] if has_fund else np.nan
    if st[S_ELIG_PROFIT] > 0.0:
        out[HAIRCUT_RATE] = out[SOCIALISED_LOSS] / st[S_ELIG_PROFIT]
    else:
        out[HAIRCUT_RATE] = np.nan
    # The lazy haircuts still owed count as paid (losses, traders' cash) without
    # being written into the accounts: the book needs no restoring for them.
    stream = st[S_PENDING] != 0.0
    owed = _owed(acct, fwork, iwork, st, liq_short) if stream else 0
    _fairness(out, fwork, iwork, st, liq_short[:owed], qval, qpos, n_qlong, stream)
    out[TRADER_BALANCE_CHANGE] = _cash_change(acct, fwork, iwork, st)
    for j in range(n_loose):
        is_loose[loose[j]] = False
    return st[S_FUND]


@njit(cache=True, inline="always")
def _neumaier(total, comp, v):
    """One step of a compensated (Neumaier) sum: ``(total + v, its rounding error
    accumulated into comp)``; the sum is ``total + comp``."""
    t = total + v
    if abs(total) >= abs(v):
        comp += (total - t) + v
    else:
        comp += (v - t) + total
    return t, comp


@leaf
def _owed(acct, fwork, iwork, st, extra):
    """End of path: the lazy haircuts still owed by the listed accounts, as their
    losses. An eligible account's is added to its ``F_LOSS``; a changed one's goes
    into ``extra`` (their count is returned). The accounts never changed owe ``Q·H``
    of their side and are streamed in size order by :func:`_fairness`, which
    finishes the sum of all, compensated (``S_OWED``, ``S_OWED_C``), for
    :func:`_cash_change`. O(listed accounts)."""
    k = 0
    total = 0.0
    comp = 0.0
    for r in range(int(st[S_NELIG])):
        i = iwork[I_ELIG, r]
        d = _pending(i, acct, fwork, st)
        if d != 0.0:
            fwork[F_LOSS, i] += d
            total, comp = _neumaier(total, comp, d)
    for j in range(int(st[S_NDIRTY])):
        i = iwork[I_DIRTY, j]
        if iwork[I_FLAG, i] != 0:
            continue  # eligible: above
        d = _pending(i, acct, fwork, st)
        if d != 0.0:
            extra[k] = d
            k += 1
            total, comp = _neumaier(total, comp, d)
    st[S_OWED] = total
    st[S_OWED_C] = comp
    return k


@leaf
def _cash_change(acct, fwork, iwork, st):
    """The change of the traders' total cash over the path: summed over the
    journalled accounts only (the others did not change), less the lazy haircuts
    still owed (``S_OWED``), compensated (Neumaier) so that the balance sheet
    closes to rounding of the flows."""
    total = -st[S_OWED]
    comp = 0.0
    for j in range(int(st[S_NDIRTY])):
        i = iwork[I_DIRTY, j]
        v = acct[i, C] - fwork[F_C0, i]
        total, comp = _neumaier(total, comp, v)
    return total + comp


simulate_path = njit(cache=True)(simulate_path_python)


def make_params(fund_initial=0.0, fee_rate=0.0, fee_share=1.0, slippage=0.0,
                step_minutes=1.0, adl_basis=0, impact_k=0.0, impact_gamma=1.0, permanent=0.0,
                permanent_decay=1.0, used_decay=1.0, depth_floor=0.0, max_rounds=50,
                funding_every=0, funding_mode=0, funding_rate=0.0, funding_interest=0.0,
                funding_clamp=0.0, funding_cap=1.0, req_fee=0.0, mm_entry=0, liq_style=0,
                partial_fraction=0.5, partial_min_tier=1, surplus_to_trader=0, topup_prob=0.0,
                topup_target=0.0, inverse=0, alerts=(), fund_cap=np.inf, adl_ranking=0,
                settle_every=1, record_every=0, detect=DETECT_SORTED):
    """The kernel's ``params`` array from keyword values (defaults: no liquidity model,
    no funding, full liquidation, MM on the mark notional, no alerts, no fund cap,
    the ``score`` ADL queue, socialised losses settled every step, no fund
    trajectory).

    ``alerts`` are the margin-ratio alert levels, ascending (at most four);
    ``adl_ranking`` a code of :data:`stress.runner.variables.ADL_RANKINGS`;
    ``settle_every`` and ``record_every`` are in steps; ``detect`` one of the
    ``DETECT_*`` codes (the same results; for benchmarks and tests).
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
    """Scratch arrays of :func:`simulate_path` for books of ``n`` accounts:
    ``(fwork, iwork, touched, is_loose, st, fk)``. The kernel keeps its
    per-account loss rows at zero and the settlement-period marks at −1 between
    calls; :func:`restore_book` resets the journal."""
    iwork = np.zeros((N_IWORK, n), dtype=np.int64)
    iwork[I_PID] = -1
    return (np.zeros((N_FWORK, n)), iwork, np.zeros(2 * n + 1, dtype=np.int64),
            np.zeros(n, dtype=np.bool_), np.zeros(N_STATE), np.zeros(fork_size(n)))


@njit(cache=True)
def restore_book(acct, base, lorder, sorder, lkey, skey, lorder0, sorder0, lkey0, skey0,
                 fwork, iwork, st):
    """Undo a path: the journalled rows of ``acct`` from ``base``, and the orders from
    their pristine copies if the path re-sorted them. O(changed accounts)."""
    for j in range(int(st[S_NDIRTY])):
        i = iwork[I_DIRTY, j]
        for c in range(acct.shape[1]):
            acct[i, c] = base[i, c]
        iwork[I_DFLAG, i] = 0
        iwork[I_PID, i] = -1
        fwork[F_H0, i] = 0.0
    st[S_NDIRTY] = 0.0
    if st[S_RESORTED] != 0.0:
        lorder[:] = lorder0
        sorder[:] = sorder0
        lkey[:] = lkey0
        skey[:] = skey0
        st[S_RESORTED] = 0.0


# The metrics a path's ledger sets (the fund, the platform and the residual): all a
# policy changes on a path where no loss reached an ADL or socialised layer.
LEDGER_METRICS = np.array([FUND_PAID, PLATFORM_LOSS, RESIDUAL, FUND_INFLOW, FUND_FINAL,
                           FUND_MIN, FUND_DEPLETED, TIME_TO_DEPLETION, FUND_NEED,
                           FUND_OVERFLOW, PLATFORM_MAX_STEP, FEE_REVENUE], dtype=np.int64)
# The parameters that act only on the ledger, or only in ADL and socialised layers
# (which a path that rides never reaches).
LEDGER_PARAMS = np.zeros(len(PARAMS), dtype=np.bool_)
for _name in ("fund_initial", "fund_cap", "fee_share", "adl_basis", "adl_ranking",
              "settle_every"):
    LEDGER_PARAMS[P[_name]] = True


@njit(cache=True)
def ledger_class(layers):
    """0: only fund and platform layers; 1: ADL too; 2: a socialised layer."""
    k = 0
    for li in range(layers.shape[0]):
        if layers[li] == LAYER_SOCIALISED:
            return 2
        if layers[li] == LAYER_ADL:
            k = 1
    return k


@njit(cache=True)
def _rides(p, q, params):
    """Policy ``q`` may take its results from policy ``p``'s ledger journal: their
    parameters differ only in ``LEDGER_PARAMS``."""
    for k in range(params.shape[1]):
        a = params[p, k]
        b = params[q, k]
        if not (LEDGER_PARAMS[k] or a == b or (a != a and b != b)):
            return False
    return True


# Scalars of a ledger replayed from the journal (_replay): a float array ``sh``.
SH_FUND = 0
SH_CUM_IN = 1
SH_CUM_OUT = 2
SH_NEED = 3
SH_PAID = 4
SH_LOW = 5
SH_DEPLETED = 6
SH_T_DEPLETED = 7
SH_INFLOW = 8
SH_OVERFLOW = 9
SH_FEE_REVENUE = 10
SH_PLATFORM = 11
SH_RESIDUAL = 12
SH_PLATFORM_MAX = 13
SH_STEP = 14  # the step of the entries being replayed (-1: none yet)
SH_PLATFORM_BEFORE = 15  # the platform's loss at the start of that step
SH_NEXT_RECORD = 16  # the next step whose fund is recorded
N_SH = 17
_NEVER = 1 << 62  # (a step no path reaches)


@leaf
def _replay_start(sh, fund, record_every, traj):
    """A ledger at the start of a path (:func:`_replay`): the fund ``fund``, recorded
    every ``record_every`` steps into ``traj`` (none when 0)."""
    for k in range(N_SH):
        sh[k] = 0.0
    sh[SH_FUND] = fund
    sh[SH_LOW] = fund
    sh[SH_T_DEPLETED] = np.nan
    sh[SH_STEP] = -1.0
    sh[SH_NEXT_RECORD] = record_every if record_every > 0 else _NEVER
    if record_every > 0 and traj.shape[0] > 0:
        traj[0] = fund


@leaf
def _replay_step(sh, t, record_every, traj):
    """The replayed ledger ``sh`` reaches step ``t``: the end of its last step as the
    kernel closes a step (the fund's low, the platform's largest step), and the
    fund records of the steps before ``t``."""
    step = sh[SH_STEP]
    if step == t:
        return
    if step >= 0.0:
        if sh[SH_FUND] < sh[SH_LOW]:  # (a fund above its cap drops to it on an inflow)
            sh[SH_LOW] = sh[SH_FUND]
        if sh[SH_PLATFORM] - sh[SH_PLATFORM_BEFORE] > sh[SH_PLATFORM_MAX]:
            sh[SH_PLATFORM_MAX] = sh[SH_PLATFORM] - sh[SH_PLATFORM_BEFORE]
    next_record = int(sh[SH_NEXT_RECORD])
    while next_record < t:  # the records up to the step before
        if next_record // record_every < traj.shape[0]:
            traj[next_record // record_every] = sh[SH_FUND]
        next_record += record_every
    sh[SH_NEXT_RECORD] = next_record
    sh[SH_STEP] = t
    sh[SH_PLATFORM_BEFORE] = sh[SH_PLATFORM]


@leaf
def _replay(sh, k0, k1, layers, share, cap, step_minutes, record_every, traj, fwork, iwork):
    """Run the ledger journal's entries ``k0`` to ``k1`` (:func:`_log`) through the
    waterfall ``layers`` with the kernel's rules (:func:`_paid_in`, :func:`_payout`,
    :func:`_plain_layers`) in the kernel's order, on the scalars ``sh``
    (:func:`_replay_start`). Returns −1, or the first entry whose loss reaches an
    ADL or socialised layer (``sh`` is then part-way through it): from there the
    policy's book would differ from the journal's."""
    n = fwork.shape[1]
    fund = sh[SH_FUND]
    cum_in = sh[SH_CUM_IN]
    cum_out = sh[SH_CUM_OUT]
    need = sh[SH_NEED]
    paid = sh[SH_PAID]
    low = sh[SH_LOW]
    depleted = sh[SH_DEPLETED]
    t_depleted = sh[SH_T_DEPLETED]
    inflow = sh[SH_INFLOW]
    overflow = sh[SH_OVERFLOW]
    fee_revenue = sh[SH_FEE_REVENUE]
    platform = sh[SH_PLATFORM]
    residual = sh[SH_RESIDUAL]
    failed = -1
    step = sh[SH_STEP]
    for k in range(k0, k1):
        r, j = _log_slot(k, n)
        code = iwork[I_LOG + r, j]
        t = code >> 2
        if t != step:
            sh[SH_FUND] = fund
            sh[SH_LOW] = low
            sh[SH_PLATFORM] = platform
            _replay_step(sh, t, record_every, traj)
            low = sh[SH_LOW]
            step = t
        amount = fwork[F_LOG + r, j]
        kind = code & 3
        if kind != K_LOSS:  # as _fee or _fund_in
            fund, cum_in, inflow, overflow, fee_revenue = _paid_in(
                amount, kind == K_FEE, share, cap, fund, cum_in, inflow, overflow, fee_revenue)
            continue
        for li in range(layers.shape[0]):  # as _plain_layers
            if amount <= 0.0:
                break
            if layers[li] == LAYER_FUND:
                fund, cum_out, need, paid, low, depleted, t_depleted, pay = _payout(
                    amount, t, step_minutes, fund, cum_in, cum_out, need, paid, low,
                    depleted, t_depleted)
                amount -= pay
            elif layers[li] == LAYER_PLATFORM:
                platform += amount
                amount = 0.0
            else:
                failed = k
                break
        if failed >= 0:
            break
        if amount > 0.0:
            residual += amount
    sh[SH_FUND] = fund
    sh[SH_CUM_IN] = cum_in
    sh[SH_CUM_OUT] = cum_out
    sh[SH_NEED] = need
    sh[SH_PAID] = paid
    sh[SH_LOW] = low
    sh[SH_DEPLETED] = depleted
    sh[SH_T_DEPLETED] = t_depleted
    sh[SH_INFLOW] = inflow
    sh[SH_OVERFLOW] = overflow
    sh[SH_FEE_REVENUE] = fee_revenue
    sh[SH_PLATFORM] = platform
    sh[SH_RESIDUAL] = residual
    return failed


@leaf
def _replay_out(sh, layers, out):
    """The replayed ledger ``sh`` into the metrics ``out`` (``LEDGER_METRICS``)."""
    has_fund = False
    for li in range(layers.shape[0]):
        if layers[li] == LAYER_FUND:
            has_fund = True
    out[FUND_PAID] = sh[SH_PAID]
    out[PLATFORM_LOSS] = sh[SH_PLATFORM]
    out[RESIDUAL] = sh[SH_RESIDUAL]
    out[FUND_INFLOW] = sh[SH_INFLOW]
    out[FUND_FINAL] = sh[SH_FUND]
    out[FUND_MIN] = sh[SH_LOW]
    out[FUND_DEPLETED] = sh[SH_DEPLETED]
    out[TIME_TO_DEPLETION] = sh[SH_T_DEPLETED]
    out[FUND_NEED] = sh[SH_NEED] if has_fund else np.nan
    out[FUND_OVERFLOW] = sh[SH_OVERFLOW]
    out[PLATFORM_MAX_STEP] = sh[SH_PLATFORM_MAX]
    out[FEE_REVENUE] = sh[SH_FEE_REVENUE]


@njit(cache=True)
def _ride(n_log, last, layers, params, src, out, traj, fwork, iwork, sh):
    """Policy ``layers``/``params`` on a path already run under another policy,
    ``src`` its metrics, that wrote the ledger journal (:func:`_log`) and whose
    losses reached no ADL or socialised layer: as long as this policy's do not
    either, the book goes through the same
    states, so the path's fees, surpluses and shortfalls are the same, and only
    the fund, the platform and the residual differ (``LEDGER_METRICS``, ``traj``).
    Replays them through ``layers`` (:func:`_replay`; ``sh`` is its scratch), so
    the results are bit-identical to a run of their own. Returns False, with
    ``out`` and ``traj`` part-written, if a loss reaches an ADL or socialised
    layer (the book would change): the policy must then be run (or forked)."""
    layers, params, src, out = borrowed(layers), borrowed(params), borrowed(src), borrowed(out)
    traj, fwork, iwork, sh = borrowed(traj), borrowed(fwork), borrowed(iwork), borrowed(sh)
    for k in range(out.shape[0]):
        out[k] = src[k]
    record_every = int(params[P_RECORD_EVERY])
    _replay_start(sh, params[P_FUND_INITIAL], record_every, traj)
    if _replay(sh, 0, n_log, layers, params[P_FEE_SHARE], params[P_FUND_CAP],
               params[P_STEP_MINUTES], record_every, traj, fwork, iwork) >= 0:
        return False
    _replay_step(sh, last + 1, record_every, traj)
    _replay_out(sh, layers, out)
    return True


# ---------------------------------------------------------------------- forks
# A policy that rides on a primary's journal (_rides) but whose loss reaches an ADL or
# socialised layer saw the primary's book until the round of that loss: it is forked
# there instead of run from step 0. The primary tracks such candidates (_fork_check)
# and saves its state after the fills of the round (_checkpoint); from then on, its
# changes to the book go into the undo log (_retouch), so that simulate_policies can
# put the book back as it was there (_rollback) and run the candidate from it.
# Their scratch is a float array ``fk`` (workspace): a header, the candidates, the
# checkpoints and a pool for a checkpoint's lists.
FK_NCAND = 0  # candidates
FK_NCKPT = 1  # checkpoints taken
FK_POOL = 2  # the pool's length
FK_PLATFORM_BEFORE = 3  # a fork's start: the platform's loss at the start of its step
FK_NEXT_RECORD = 4  # and the next step whose fund it records
FK_SH = 8  # a replay's scalars (N_SH)
FK_CAND0 = 32
MAX_CAND = 8
C_Q = 0  # the candidate's policy
C_CK = 1  # its checkpoint: −1 none yet, −2 none possible (it will be run)
C_K = 2  # journal entries its ledger has replayed
C_NL = 3  # its waterfall: the number of layers, then their codes
C_LAY = 4
MAX_FORK_LAYERS = 8
C_SHARE = C_LAY + MAX_FORK_LAYERS
C_CAP = C_SHARE + 1
C_STEP_MINUTES = C_SHARE + 2
C_SOCIAL = C_SHARE + 3  # 1 if its waterfall has a socialised layer
C_SH = C_SHARE + 4  # its ledger's scalars (N_SH)
CAND_SIZE = C_SH + N_SH
FK_CK0 = FK_CAND0 + MAX_CAND * CAND_SIZE
MAX_CK = 4
CK_T = 0
CK_MARK = 1
CK_STEP_MARK = 2
CK_ROUNDS = 3
CK_DISP = 4
CK_USED_BID = 5
CK_USED_ASK = 6
CK_PREMIUM_SUM = 7
CK_PREMIUM_N = 8
CK_NEXT_SETTLE = 9
CK_NEXT_FUNDING = 10
CK_NL = 11
CK_NS = 12
CK_LHEAD = 13
CK_SHEAD = 14
CK_N_LOOSE = 15
CK_IMP_SELL = 16
CK_IMP_BUY = 17
CK_N_SHORT = 18  # the round's shortfalls (in the pool: amount, bankruptcy price, fill, side)
CK_N_TOUCHED = 19  # accounts changed in the round, not yet loosened (in the pool)
CK_N_PLIST = 20  # accounts of the settlement period (the journal's from CK_PND on)
CK_UNDO = 21  # the undo log's length
CK_KF = 22  # the journal's length after the round's fills
CK_POOL = 23  # where its lists start in the pool
CK_PND = 24  # the journal's length at the start of the settlement period
CK_ST = 25  # st[:S_LOG]
CK_OUT = CK_ST + S_LOG  # out
CK_SIZE = CK_OUT + N_METRICS
FK_POOL0 = FK_CK0 + MAX_CK * CK_SIZE
POOL_PER_ACCOUNT = 8


def fork_size(n: int) -> int:
    """Length of the fork scratch ``fk`` for a book of ``n`` accounts."""
    return FK_POOL0 + POOL_PER_ACCOUNT * n


@njit(cache=True, inline="always")
def _ck_base(g):
    return FK_CK0 + g * CK_SIZE


@njit(cache=True)
def _fork_setup(p, layers, n_layers, params, done, fk, st):
    """Before policy ``p`` runs as a primary: the policies that ride on it and have an
    ADL or socialised layer become fork candidates (a socialised one needs ``p``'s
    settlement period: ``p`` then takes the period snapshots). Returns their count."""
    n_c = 0
    snap = False
    for q in range(params.shape[0]):
        if done[q] or q == p or not _rides(p, q, params):
            continue
        kind = ledger_class(layers[q, :n_layers[q]])
        if kind == 0 or n_layers[q] > MAX_FORK_LAYERS or n_c == MAX_CAND:
            continue
        if kind == 2:
            if params[q, P_SETTLE_EVERY] != params[p, P_SETTLE_EVERY]:
                continue
            snap = True
        b = FK_CAND0 + n_c * CAND_SIZE
        fk[b + C_Q] = q
        fk[b + C_CK] = -1.0
        fk[b + C_K] = 0.0
        fk[b + C_NL] = n_layers[q]
        for li in range(n_layers[q]):
            fk[b + C_LAY + li] = layers[q, li]
        fk[b + C_SHARE] = params[q, P_FEE_SHARE]
        fk[b + C_CAP] = params[q, P_FUND_CAP]
        fk[b + C_STEP_MINUTES] = params[q, P_STEP_MINUTES]
        fk[b + C_SOCIAL] = 1.0 if kind == 2 else 0.0
        _replay_start(fk[b + C_SH:b + C_SH + N_SH], params[q, P_FUND_INITIAL], 0, fk[:0])
        n_c += 1
    st[S_FORK_SLACK] = _fork_slack(n_c, fk)
    fk[FK_NCAND] = n_c
    fk[FK_NCKPT] = 0.0
    fk[FK_POOL] = 0.0
    st[S_FORKING] = n_c
    st[S_SNAP] = 1.0 if snap else 0.0
    st[S_UNDO] = 0.0
    st[S_NUNDO] = 0.0
    st[S_UNDOFULL] = 0.0
    return n_c


@leaf
def _fork_slack(n_c, fk):
    """How much more loss the tracked candidates (the first ``n_c``) surely take
    without one reaching an ADL or socialised layer: their ledgers need replaying
    (:func:`_fork_check`) only once the primary's losses since their last replay
    exceed it. A loss passes a waterfall's first fund and platform layers only if
    they hold no platform layer and it exceeds the fund; fees and surpluses never
    leave the fund below ``min(fund, cap)`` (:func:`_inflow`), so that bound less
    the losses since is a floor of the fund (a relative 1e-9 for its rounding).
    0 for a waterfall whose first layer is ADL or socialised."""
    slack = np.inf
    for c in range(n_c):
        b = FK_CAND0 + c * CAND_SIZE
        if fk[b + C_CK] != -1.0:
            continue
        bound = 0.0
        for li in range(int(fk[b + C_NL])):
            code = fk[b + C_LAY + li]
            if code == LAYER_PLATFORM:
                bound = np.inf
                break
            if code != LAYER_FUND:
                break
            fund = fk[b + C_SH + SH_FUND]
            cap = fk[b + C_CAP]
            bound = (fund if fund < cap else cap) * (1.0 - 1e-9)
        if bound < slack:
            slack = bound
    return slack


@leaf
def _checkpoint(k_fills, t, mark, step_mark, rounds, disp, used_bid, used_ask, premium_sum,
                premium_n, next_settle, next_funding, nl, ns, lhead, shead, n_loose, imp_sell,
                imp_buy, n_short_round, out, fk, fwork, iwork, touched, loose, st):
    """Save the primary's state after a round's fills (see :func:`_fork_check`) and
    start the undo log's generation for it. Returns the checkpoint, or −1 when none
    can be taken: the book was re-sorted (its orders are not the pristine ones), no
    room is left, or the undo log or the journal ran out."""
    g = int(fk[FK_NCKPT])
    n_touched = touched[0]
    pool = int(fk[FK_POOL])
    size = 4 * n_short_round + n_touched + n_loose
    n = loose.shape[0]
    if (st[S_RESORTED] != 0.0 or st[S_UNDOFULL] != 0.0 or st[S_LOGFULL] != 0.0
            or g == MAX_CK or pool + size > POOL_PER_ACCOUNT * n):
        return -1
    # (Without S_PCLEAN a socialised policy cannot fork from it: see _fork_check.)
    n_plist = int(st[S_NDIRTY] - st[S_PND]) if st[S_SNAP] != 0.0 else 0
    ck = _ck_base(g)
    fk[ck + CK_T] = t
    fk[ck + CK_MARK] = mark
    fk[ck + CK_STEP_MARK] = step_mark
    fk[ck + CK_ROUNDS] = rounds
    fk[ck + CK_DISP] = disp
    fk[ck + CK_USED_BID] = used_bid
    fk[ck + CK_USED_ASK] = used_ask
    fk[ck + CK_PREMIUM_SUM] = premium_sum
    fk[ck + CK_PREMIUM_N] = premium_n
    fk[ck + CK_NEXT_SETTLE] = next_settle
    fk[ck + CK_NEXT_FUNDING] = next_funding
    fk[ck + CK_NL] = nl
    fk[ck + CK_NS] = ns
    fk[ck + CK_LHEAD] = lhead
    fk[ck + CK_SHEAD] = shead
    fk[ck + CK_N_LOOSE] = n_loose
    fk[ck + CK_IMP_SELL] = imp_sell
    fk[ck + CK_IMP_BUY] = imp_buy
    fk[ck + CK_N_SHORT] = n_short_round
    fk[ck + CK_N_TOUCHED] = n_touched
    fk[ck + CK_N_PLIST] = n_plist
    fk[ck + CK_UNDO] = st[S_NUNDO]
    fk[ck + CK_KF] = k_fills
    fk[ck + CK_POOL] = pool
    fk[ck + CK_PND] = st[S_PND]
    for k in range(S_LOG):
        fk[ck + CK_ST + k] = st[k]
    for k in range(N_METRICS):
        fk[ck + CK_OUT + k] = out[k]
    a = FK_POOL0 + pool
    for r in range(4):
        for j in range(n_short_round):
            fk[a + j] = fwork[F_SHORT + r, j]
        a += n_short_round
    for j in range(n_touched):
        fk[a + j] = touched[1 + j]
    a += n_touched
    for j in range(n_loose):
        fk[a + j] = loose[j]
    fk[FK_POOL] = pool + size
    fk[FK_NCKPT] = g + 1
    st[S_GEN] += 1.0
    st[S_UNDO] = 1.0
    return g


@leaf
def _ck_arrays(ck, fk, fwork, touched, is_loose, loose):
    """A fork's start: the round's shortfalls, the accounts it changed (``touched``
    empty before) and the loose accounts as checkpoint ``ck`` saved them. Returns
    the loose accounts' count."""
    n = loose.shape[0]
    n_short = int(fk[ck + CK_N_SHORT])
    n_touched = int(fk[ck + CK_N_TOUCHED])
    n_loose = int(fk[ck + CK_N_LOOSE])
    a = FK_POOL0 + int(fk[ck + CK_POOL])
    for r in range(4):
        for j in range(n_short):
            fwork[F_SHORT + r, j] = fk[a + j]
        a += n_short
    for j in range(n_touched):
        i = int(fk[a + j])
        touched[1 + j] = i
        touched[1 + n + i] = 1
    touched[0] = n_touched
    a += n_touched
    for j in range(n_loose):
        i = int(fk[a + j])
        loose[j] = i
        is_loose[i] = True
    return n_loose


@leaf
def _fork_check(k_fills, t, mark, step_mark, rounds, disp, used_bid, used_ask, premium_sum,
                premium_n, next_settle, next_funding, nl, ns, lhead, shead, n_loose, imp_sell,
                imp_buy, n_short_round, out, fk, fwork, iwork, touched, loose, st):
    """After a primary's round with shortfalls (journalled: its fees and surpluses up
    to entry ``k_fills``, then its losses): each candidate's ledger replays the new
    entries (:func:`_replay`). A candidate whose loss reaches its ADL or socialised
    layer in this round forks here: the round's checkpoint (:func:`_checkpoint`,
    shared by the candidates that fork in the same round). Returns whether any
    candidate is still tracked."""
    k_end = int(st[S_NLOG])
    ck = -2
    live = 0
    for c in range(int(fk[FK_NCAND])):
        b = FK_CAND0 + c * CAND_SIZE
        if fk[b + C_CK] != -1.0:
            continue
        if st[S_LOGFULL] != 0.0:  # the journal stopped: the ledger cannot be followed
            fk[b + C_CK] = -2.0
            continue
        sh = fk[b + C_SH:b + C_SH + N_SH]
        lay = fk[b + C_LAY:b + C_LAY + int(fk[b + C_NL])]
        share = fk[b + C_SHARE]
        cap = fk[b + C_CAP]
        minutes = fk[b + C_STEP_MINUTES]
        # The round's fees and surpluses, then its losses (from a copy: a fork goes on
        # from the ledger after the fills, _fork_from).
        _replay(sh, int(fk[b + C_K]), k_fills, lay, share, cap, minutes, 0, fk[:0], fwork, iwork)
        trial = fk[FK_SH:FK_SH + N_SH]
        for k in range(N_SH):
            trial[k] = sh[k]
        if _replay(trial, k_fills, k_end, lay, share, cap, minutes, 0, fk[:0], fwork,
                   iwork) < 0:
            for k in range(N_SH):
                sh[k] = trial[k]
            fk[b + C_K] = k_end
            live += 1
            continue
        fk[b + C_K] = k_fills
        if ck == -2:
            ck = _checkpoint(k_fills, t, mark, step_mark, rounds, disp, used_bid, used_ask,
                             premium_sum, premium_n, next_settle, next_funding, nl, ns, lhead,
                             shead, n_loose, imp_sell, imp_buy, n_short_round, out, fk, fwork,
                             iwork, touched, loose, st)
        # A socialised policy needs the period's snapshots from the base rows (S_PND).
        social = fk[b + C_SOCIAL] != 0.0
        fk[b + C_CK] = ck if ck >= 0 and not (social and st[S_PCLEAN] == 0.0) else -2.0
    st[S_FORKING] = live
    st[S_FORK_SLACK] = _fork_slack(int(fk[FK_NCAND]), fk)
    return live > 0


@leaf
def _rollback(g, acct, base, lorder, sorder, lkey, skey, lorder0, sorder0, lkey0, skey0,
              fwork, iwork, st, fk):
    """Put the book back as it was at checkpoint ``g``: the rows changed then and since,
    from the undo log (newest first, so each row ends as its oldest saved state);
    those first changed since, from ``base`` (the journal of changed accounts is cut
    to its length then); the pristine orders, and ``st[:S_LOG]``. A primary keeps
    no lazy haircuts and no period snapshots: none are left."""
    ck = _ck_base(g)
    low = int(fk[ck + CK_UNDO])
    for e in range(int(st[S_NUNDO]) - 1, low - 1, -1):
        i = iwork[I_UNDO, e]
        for c in range(N_ACCT):
            acct[i, c] = fwork[F_UNDO + c, e]
    st[S_NUNDO] = low
    nd = int(fk[ck + CK_ST + S_NDIRTY])
    for j in range(int(st[S_NDIRTY])):
        i = iwork[I_DIRTY, j]
        fwork[F_H0, i] = 0.0
        iwork[I_PID, i] = -1
        if j >= nd:
            for c in range(N_ACCT):
                acct[i, c] = base[i, c]
            iwork[I_DFLAG, i] = 0
    if st[S_RESORTED] != 0.0:
        for j in range(lorder.shape[0]):
            lorder[j] = lorder0[j]
            sorder[j] = sorder0[j]
            lkey[j] = lkey0[j]
            skey[j] = skey0[j]
    for k in range(S_LOG):
        st[k] = fk[ck + CK_ST + k]


@leaf
def _period_from_base(g, base, fwork, iwork, st, fk):
    """A socialised policy forking at checkpoint ``g`` (the book put back there): the
    settlement period's snapshots, which its primary did not take. Every account
    changed in the period was first changed in it (S_PCLEAN), so its snapshot is
    its base row's equity at the period's start mark, and the period's list is the
    journal's entries since its start, in order (as :func:`_snap` would have them)."""
    ck = _ck_base(g)
    pnd = int(fk[ck + CK_PND])
    k = int(fk[ck + CK_N_PLIST])
    pmark = st[S_PMARK]
    for j in range(k):
        i = iwork[I_DIRTY, pnd + j]
        iwork[I_PLIST, j] = i
        fwork[F_EQP, i] = base[i, C] + base[i, Q] * (pmark - base[i, E])
        iwork[I_PID, i] = 0
    st[S_NPLIST] = k
    st[S_PERIOD] = 0.0


@leaf
def _fork_from(g, b, layers, params, out, traj, fwork, iwork, st, fk):
    """Set up policy ``layers``/``params`` (candidate ``b``, see :func:`_fork_setup`) to
    go on from checkpoint ``g`` (the book already put back there): its ledger up to the
    round's fills, the path's other metrics as the primary had them, and
    ``S_RESUME``. The ledger is the one the primary followed (:func:`_fork_check`),
    or, when the fund is recorded, replayed from the journal (:func:`_replay`) for
    the records."""
    ck = _ck_base(g)
    record_every = int(params[P_RECORD_EVERY])
    if record_every > 0 and traj.shape[0] > 0:
        sh = fk[FK_SH:FK_SH + N_SH]
        _replay_start(sh, params[P_FUND_INITIAL], record_every, traj)
        _replay(sh, 0, int(fk[ck + CK_KF]), layers, params[P_FEE_SHARE], params[P_FUND_CAP],
                params[P_STEP_MINUTES], record_every, traj, fwork, iwork)
    else:
        sh = fk[b + C_SH:b + C_SH + N_SH]
    _replay_step(sh, int(fk[ck + CK_T]), record_every, traj)
    for k in range(N_METRICS):
        out[k] = fk[ck + CK_OUT + k]
    _replay_out(sh, layers, out)
    st[S_FUND] = sh[SH_FUND]
    st[S_CUM_IN] = sh[SH_CUM_IN]
    st[S_CUM_OUT] = sh[SH_CUM_OUT]
    st[S_NEED] = sh[SH_NEED]
    fk[FK_PLATFORM_BEFORE] = sh[SH_PLATFORM_BEFORE]
    fk[FK_NEXT_RECORD] = sh[SH_NEXT_RECORD] if record_every > 0 and traj.shape[0] > 0 else -1.0
    st[S_RESUME] = g + 1


@njit(cache=True)
def simulate_policies(index, mark0, depth_bid, depth_ask, gap_bid, gap_ask, acct, base, lorder,
                      sorder, lkey, skey, lorder0, sorder0, lkey0, skey0, n_long, n_short, qval,
                      qpos, n_qlong, tt, layers, n_layers, params, out, traj, fwork, iwork,
                      touched, is_loose, st, fk):
    """One path under every policy, in order: :func:`simulate_path` for policy ``p``
    (``layers[p, :n_layers[p]]``, ``params[p]``, ``out[p]``, ``traj[p]``), then
    :func:`restore_book`. One call instead of two per policy: each call from
    Python unboxes every array argument (≈ 0.1 µs apiece), which at a few
    thousand accounts cost as much as the path itself. The arguments are those
    of the two kernels (see :class:`BookRunner`).

    A policy rides on another whose parameters differ only in ``LEDGER_PARAMS``
    (:func:`_rides`). Fund and platform layers pay a loss without touching an
    account, so while no loss reaches an ADL or socialised layer in either, the
    two see the same book (a socialised layer that never gets a loss only keeps
    scratch: period snapshots), and the second's results come from the first's
    ledger journal (:func:`_ride`) at a fraction of a path's cost, bit-identical
    to a run of its own. It is run when a loss would reach its ADL or socialised
    layer. Policies with only fund and platform layers run first, then those with
    ADL, then those with a socialised layer (``ledger_class``), so that a fund +
    ADL policy whose fund never runs dry, or any policy on a path without a
    shortfall, costs almost nothing.

    A rider whose loss does reach its ADL or socialised layer saw the primary's
    book up to that round's fills, so it is forked there instead of run from step
    0 (a primary with only fund and platform layers tracks such candidates:
    :func:`_fork_setup`, :func:`_fork_check`). The primary saves its state after
    the round's fills (:func:`_checkpoint`) and, from then on, every account row it
    changes again into the undo log (:func:`_retouch`; a row first changed later was
    as in ``base``). After it, the latest checkpoint first, the book is put back
    (:func:`_rollback`), the candidate's ledger replayed from the journal up to
    the round (:func:`_fork_from`) and the path goes on under the candidate's
    policy; a socialised one gets its settlement period's snapshots from the base
    rows (:func:`_period_from_base`), which needs every account changed in the
    period to have been first changed in it, without a deposit. No checkpoint is
    taken once the book was re-sorted, and when the undo log (room for ``n`` rows)
    runs out the forks left are given up: those policies are run. Bit-identical to
    a run of their own either way. Returns the number of policies that rode
    (``st[S_FORKS]`` counts the forks)."""
    n_pol = params.shape[0]
    rode = 0
    done = np.zeros(n_pol, dtype=np.bool_)
    last = index.shape[0] - 1
    sh = fk[FK_SH:FK_SH + N_SH]
    for kind in range(3):
        for p in range(n_pol):
            if done[p] or ledger_class(layers[p, :n_layers[p]]) != kind:
                continue
            riders = False
            for q in range(n_pol):
                if not done[q] and q != p and _rides(p, q, params):
                    riders = True
            st[S_LOG] = 1.0 if riders else 0.0
            n_cand = 0
            if riders and kind == 0:
                n_cand = _fork_setup(p, layers, n_layers, params, done, fk, st)
            simulate_path(index, mark0, depth_bid, depth_ask, gap_bid, gap_ask, acct, lorder,
                          sorder, lkey, skey, n_long, n_short, qval, qpos, n_qlong, tt,
                          layers[p, :n_layers[p]], params[p], out[p], traj[p], fwork, iwork,
                          touched, is_loose, st, fk)
            done[p] = True
            st[S_FORKING] = 0.0
            st[S_SNAP] = 0.0
            forks = n_cand > 0 and fk[FK_NCKPT] > 0.0 and st[S_UNDOFULL] == 0.0
            if riders and st[S_DIVERGED] == 0.0 and st[S_LOGFULL] == 0.0:
                for q in range(n_pol):
                    if not done[q] and _rides(p, q, params) and not _forked(q, fk, forks):
                        done[q] = _ride(int(st[S_NLOG]), last, layers[q, :n_layers[q]],
                                        params[q], out[p], out[q], traj[q], fwork, iwork, sh)
                        if done[q]:
                            rode += 1
            if forks:
                _run_forks(index, mark0, depth_bid, depth_ask, gap_bid, gap_ask, acct, base,
                           lorder, sorder, lkey, skey, lorder0, sorder0, lkey0, skey0, n_long,
                           n_short, qval, qpos, n_qlong, tt, layers, n_layers, params, out,
                           traj, fwork, iwork, touched, is_loose, st, fk, done)
            st[S_UNDO] = 0.0
            restore_book(acct, base, lorder, sorder, lkey, skey, lorder0, sorder0, lkey0,
                         skey0, fwork, iwork, st)
    st[S_LOG] = 0.0
    return rode


@njit(cache=True)
def simulate_batch(markets, draws, acct, base, lorder, sorder, lkey, skey, lorder0, sorder0,
                   lkey0, skey0, n_long, n_short, qval, qpos, n_qlong, tt, layers, n_layers,
                   params, out, traj, fwork, iwork, touched, is_loose, st, fk):
    """Many paths of one book, each under every policy (:func:`simulate_policies`), in
    one call: ``markets`` float64[paths, 6, steps + 1] (index, mark, depth bid and
    ask, gap bid and ask of each path), ``out`` float64[paths, policies, N_METRICS],
    ``traj`` float64[paths, policies, k]. ``draws`` float64[paths, n] are the
    accounts' top-up draws per path (column ``U`` of ``acct`` and ``base``, in
    their row order), or of shape (0, n) to leave the column as it is. The same
    results as a call of :func:`simulate_policies` per path, without a call from
    Python per path (each unboxes 33 arguments, ≈ 9 µs). Returns the number of
    policies that rode."""
    rode = 0
    with_draws = draws.shape[0] > 0
    for k in range(markets.shape[0]):
        if with_draws:
            for i in range(acct.shape[0]):
                base[i, U] = draws[k, i]
                acct[i, U] = draws[k, i]
        m = markets[k]
        rode += simulate_policies(m[0], m[1], m[2], m[3], m[4], m[5], acct, base, lorder,
                                  sorder, lkey, skey, lorder0, sorder0, lkey0, skey0, n_long,
                                  n_short, qval, qpos, n_qlong, tt, layers, n_layers, params,
                                  out[k], traj[k], fwork, iwork, touched, is_loose, st, fk)
    return rode


@leaf
def _forked(q, fk, forks):
    """Policy ``q`` has a checkpoint to fork from (:func:`_fork_check`)."""
    if not forks:
        return False
    for c in range(int(fk[FK_NCAND])):
        b = FK_CAND0 + c * CAND_SIZE
        if int(fk[b + C_Q]) == q:
            return fk[b + C_CK] >= 0.0
    return False


@njit(cache=True)
def _run_forks(index, mark0, depth_bid, depth_ask, gap_bid, gap_ask, acct, base, lorder, sorder,
               lkey, skey, lorder0, sorder0, lkey0, skey0, n_long, n_short, qval, qpos, n_qlong,
               tt, layers, n_layers, params, out, traj, fwork, iwork, touched, is_loose, st, fk,
               done):
    """After a primary that took checkpoints: each candidate with one goes on from it
    (:func:`_fork_from`), the latest checkpoint first. Each fork's changes go into
    the undo log too, so that the book can be put back to its checkpoint for the
    next (:func:`_rollback`); the last leaves the book to :func:`restore_book`. If the
    undo log runs out, the forks left are given up: those policies are run."""
    n_c = int(fk[FK_NCAND])
    left = 0
    for c in range(n_c):
        if fk[FK_CAND0 + c * CAND_SIZE + C_CK] >= 0.0:
            left += 1
    for g in range(int(fk[FK_NCKPT]) - 1, -1, -1):
        for c in range(n_c):
            b = FK_CAND0 + c * CAND_SIZE
            if int(fk[b + C_CK]) != g:
                continue
            if st[S_UNDOFULL] != 0.0:
                return
            q = int(fk[b + C_Q])
            _rollback(g, acct, base, lorder, sorder, lkey, skey, lorder0, sorder0, lkey0,
                      skey0, fwork, iwork, st, fk)
            _fork_from(g, b, layers[q, :n_layers[q]], params[q], out[q], traj[q], fwork,
                       iwork, st, fk)
            if fk[b + C_SOCIAL] != 0.0:
                _period_from_base(g, base, fwork, iwork, st, fk)
            left -= 1
            st[S_LOG] = 0.0
            st[S_UNDO] = 1.0 if left > 0 else 0.0
            st[S_GEN] += 1.0
            simulate_path(index, mark0, depth_bid, depth_ask, gap_bid, gap_ask, acct, lorder,
                          sorder, lkey, skey, n_long, n_short, qval, qpos, n_qlong, tt,
                          layers[q, :n_layers[q]], params[q], out[q], traj[q], fwork, iwork,
                          touched, is_loose, st, fk)
            st[S_RESUME] = 0.0
            st[S_FORKS] += 1.0
            done[q] = True


class BookRunner:
    """One book, ready to run many paths and policies.

    Holds the book's accounts with their thresholds (``base``), its sorted sides
    (:func:`prepare_book`), a working copy and the kernel's scratch. Each
    :meth:`run` changes the working copy and then undoes its changes
    (:func:`restore_book`), so a path costs O(steps + events), not O(accounts).

    ``acct`` is taken over (its ``THR`` column is filled); ``params`` are the
    exchange rules the thresholds depend on (any policy's). ``prepared`` is
    :func:`prepare_book`'s result if already computed (``acct[:, THR]`` filled).

    With ``reorder``, the rows are stored in the order the walks visit them
    (longs by falling threshold, then shorts by rising threshold, then closed
    accounts), so that a crash reads and writes memory in sequence: about 1.5×
    faster per liquidation at 10^5 accounts. The results are exactly those of
    the book with its rows in that order (the kernel processes the accounts of
    a round, and breaks ranking ties, in row order), whatever order the caller
    gave; ``perm`` maps the stored rows to the caller's. :meth:`set_column` and
    ``keep`` use the caller's order.
    """

    def __init__(self, acct: np.ndarray, tt: np.ndarray, params: np.ndarray, prepared=None,
                 reorder: bool = False):
        self.tt = tt
        if prepared is None:
            prepared = prepare_book(acct, tt, params)
        self.perm = None
        if reorder:
            _, _, nl, ns = prepared
            self.perm = walk_permutation(prepared, len(acct))
            acct = acct[self.perm]
            lorder = np.arange(len(acct), dtype=np.int64)
            sorder = np.empty(len(acct), dtype=np.int64)
            sorder[:ns] = np.arange(nl, nl + ns)
            prepared = (lorder, sorder, nl, ns)
        self.base = acct
        lorder, sorder, self.n_long, self.n_short = prepared
        self.lorder0 = lorder.copy()
        self.sorder0 = sorder.copy()
        self.lkey0 = np.full(len(acct), np.nan)
        self.skey0 = np.full(len(acct), np.nan)
        self.lkey0[:self.n_long] = acct[lorder[:self.n_long], THR]
        self.skey0[:self.n_short] = acct[sorder[:self.n_short], THR]
        self.qval, self.qpos, self.n_qlong = size_order(acct)
        self.acct = acct.copy()
        self.lorder, self.sorder = lorder.copy(), sorder.copy()
        self.lkey, self.skey = self.lkey0.copy(), self.skey0.copy()
        self.work = workspace(len(acct))
        st = self.work[4]
        st[S_QL0], st[S_QS0] = book_sides(self.qval, self.n_qlong)
        st[S_QBOOK] = 1.0

    def set_column(self, column: int, values: np.ndarray) -> None:
        """Set a column that no threshold depends on (``U``: a path's draws), in the
        caller's account order."""
        if self.perm is not None:
            values = np.asarray(values)[self.perm]
        self.base[:, column] = values
        self.acct[:, column] = values

    def run_policies(self, market, layers, n_layers, params, out, traj):
        """One path under several policies (:func:`simulate_policies`): ``layers``
        int64[policies, k] (row ``p``'s first ``n_layers[p]`` codes), ``params``
        float64[policies, N_PARAMS]; fills ``out[policies, N_METRICS]`` and
        ``traj[policies, k]`` (C-contiguous). The same results as :meth:`run` for
        each policy in turn, in one kernel call. Returns how many policies took
        their results from another's ledger journal (:func:`simulate_policies`)."""
        fwork, iwork, touched, is_loose, st, fk = self.work
        return simulate_policies(*market, self.acct, self.base, self.lorder, self.sorder,
                                 self.lkey, self.skey, self.lorder0, self.sorder0, self.lkey0,
                                 self.skey0, self.n_long, self.n_short, self.qval, self.qpos,
                                 self.n_qlong, self.tt, layers, n_layers, params, out, traj,
                                 fwork, iwork, touched, is_loose, st, fk)

    def run_batch(self, markets, layers, n_layers, params, out, traj, draws=None):
        """Many paths under several policies in one kernel call (:func:`simulate_batch`):
        ``markets`` float64[paths, 6, steps + 1] (each path's six market arrays, as
        :meth:`run` takes them), ``out[paths, policies, N_METRICS]``,
        ``traj[paths, policies, k]`` (C-contiguous); ``draws`` float64[paths,
        accounts], each path's column ``U`` in the caller's account order (None:
        the column as it is). The same results as :meth:`run_policies` path by
        path. Returns how many policies rode on another's journal."""
        n = len(self.base)
        if draws is None:
            draws = np.empty((0, n))
        else:
            draws = np.asarray(draws, dtype=np.float64)
            if self.perm is not None:
                draws = draws[:, self.perm]
            draws = np.ascontiguousarray(draws)
        return simulate_batch(np.ascontiguousarray(markets, dtype=np.float64), draws,
                              self.acct, self.base, self.lorder, self.sorder, self.lkey,
                              self.skey, self.lorder0, self.sorder0, self.lkey0, self.skey0,
                              self.n_long, self.n_short, self.qval, self.qpos, self.n_qlong,
                              self.tt, layers, n_layers, params, out, traj, *self.work)

    def run(self, market, layers, params, out, traj, keep: bool = False):
        """One path: ``market`` is ``(index, mark0, depth_bid, depth_ask, gap_bid,
        gap_ask)``; fills ``out`` and ``traj`` (see :func:`simulate_path`). With
        ``keep``, returns a copy of the accounts at the end of the path."""
        simulate_path(*market, self.acct, self.lorder, self.sorder, self.lkey, self.skey,
                      self.n_long, self.n_short, self.qval, self.qpos, self.n_qlong, self.tt,
                      layers, params, out, traj, *self.work)
        final = None
        fwork, iwork, touched, is_loose, st, _ = self.work
        if keep:
            final = self.acct.copy()
            if st[S_PENDING] != 0.0:  # the lazy haircuts still owed, into the cash
                q = final[:, Q]
                h = np.where(q > 0.0, st[S_HL], st[S_HS])
                final[:, C] -= np.where(q != 0.0, q * (h - fwork[F_H0, :len(q)]), 0.0)
            if self.perm is not None:
                final[self.perm] = final.copy()
        restore_book(self.acct, self.base, self.lorder, self.sorder, self.lkey, self.skey,
                     self.lorder0, self.sorder0, self.lkey0, self.skey0, fwork, iwork, st)
        return final


def layer_table(layers) -> tuple[np.ndarray, np.ndarray]:
    """Several policies' waterfalls (``int64[k]`` each) as :func:`simulate_policies`
    takes them: ``(int64[policies, max k], int64[policies])``, rows padded with 0."""
    n = np.array([len(lay) for lay in layers], dtype=np.int64)
    table = np.zeros((len(layers), max(1, int(n.max(initial=0)))), dtype=np.int64)
    for p, lay in enumerate(layers):
        table[p, :len(lay)] = lay
    return table, n


def walk_permutation(prepared, n: int) -> np.ndarray:
    """The rows of a book of ``n`` accounts in the order the kernel's walks visit
    them: open longs by falling threshold, open shorts by rising threshold, then
    the closed accounts (``prepared``: :func:`prepare_book`'s result)."""
    lorder, sorder, nl, ns = prepared
    walked = np.concatenate([lorder[:nl], sorder[:ns]])
    rest = np.ones(n, dtype=bool)
    rest[walked] = False
    return np.concatenate([walked, np.flatnonzero(rest)])


def size_order(acct: np.ndarray):
    """The book's open positions by size: ``(qval, qpos, n_qlong)``. ``qval`` holds
    the longs' ``Q`` ascending, then the shorts' ``Q`` by ``|Q|`` ascending (ties in
    row order); ``qpos[i]`` is account ``i``'s place in it (−1: closed); the first
    ``n_qlong`` are the longs."""
    q = acct[:, Q]
    longs = np.flatnonzero(q > 0.0)
    shorts = np.flatnonzero(q < 0.0)
    order = np.concatenate([longs[argsort_stable(q[longs])],
                            shorts[argsort_stable(-q[shorts])]])
    qpos = np.full(len(q), -1, dtype=np.int64)
    qpos[order] = np.arange(len(order))
    return np.ascontiguousarray(q[order]), qpos, len(longs)


def trajectory_length(steps: int, record_every: int) -> int:
    """Length of the fund trajectory of a path of ``steps`` steps recorded every
    ``record_every`` steps (0: not recorded)."""
    return steps // record_every + 1 if record_every > 0 else 0


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
             acct=None, u=None, return_accounts=False, return_fund=False, **params):
    """Run one path on a copy of ``book`` (linear contracts); returns the metrics array
    (and the final accounts with ``return_accounts``, the fund trajectory with
    ``return_fund``).

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
    traj = np.full(trajectory_length(index.shape[0] - 1, int(p[P_RECORD_EVERY])), np.nan)
    runner = BookRunner(acct, tt, p, (lorder.copy(), sorder.copy(), nl, ns))
    final = runner.run((index, mark0, d_bid, d_ask, g_bid, g_ask),
                       np.asarray(layers, dtype=np.int64), p, out, traj, keep=return_accounts)
    extra = ((final,) if return_accounts else ()) + ((traj,) if return_fund else ())
    return (out, *extra) if extra else out


def book_accounts(book, u=None) -> np.ndarray:
    """:func:`account_array` of a linear :class:`stress.population.Book`."""
    return account_array(book.qty, book.entry, book.margin_balance, book.stop,
                         book.topup_budget, u)
