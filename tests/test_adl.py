"""The ADL allocations of ``stress.policies.adl``: hand-built books, the risk-based
optimum against a linear program, pro rata against exhaustive search, and the
exactness of the water-filling solver."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import linprog

from stress.policies.adl import (RANKINGS, allocate, effective_leverage, pro_rata, queue,
                                 risk_based, take_queue, waterfill)

BIG = 1e9  # a cap that never binds


def _rng(seed: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(seed))


def _book(**kw):
    """An allocate() call's arguments; arrays default to values that do not matter."""
    n = len(kw["cap"])
    args = dict(size=np.full(n, BIG), profit=np.ones(n), equity=np.ones(n),
                score=np.zeros(n), mark=1.0)
    args.update(kw)
    return {k: np.asarray(v, dtype=float) if k != "mark" else v for k, v in args.items()}


# --- hand-built books -----------------------------------------------------------

def test_score_queue_takes_highest_score_first_and_ties_in_account_order():
    # Scores 1, 5, 3, 5 -> queue 1, 3 (tie with 1, later account), 2, 0.
    # need 2.5: account 1 gives its cap 1, account 3 its cap 1, account 2 the last 0.5.
    book = _book(score=[1.0, 5.0, 3.0, 5.0], cap=[2.0, 1.0, 1.0, 1.0])
    assert list(queue("score", book["score"], None)) == [1, 3, 2, 0]
    takes = allocate("score", need_qty=2.5, **book)
    np.testing.assert_array_equal(takes, [0.0, 1.0, 0.5, 1.0])


def test_leverage_queue_takes_most_levered_first():
    # mark 100: leverage = size·100/equity = 1·100/10 = 10, 2·100/5 = 40, 3·100/30 = 10.
    # Queue 1, 0, 2 (0 and 2 tie: account order). need 2: account 1 gives its cap 1.5,
    # account 0 the remaining 0.5, account 2 nothing, though its score is the highest.
    book = _book(size=[1.0, 2.0, 3.0], equity=[10.0, 5.0, 30.0], cap=[1.0, 1.5, 3.0],
                 score=[0.0, 0.0, 9.0], mark=100.0)
    np.testing.assert_allclose(effective_leverage(book["size"], book["equity"], 100.0),
                               [10.0, 40.0, 10.0])
    takes = allocate("leverage", need_qty=2.0, **book)
    np.testing.assert_array_equal(takes, [0.5, 1.5, 0.0])


def test_pro_rata_takes_in_proportion_to_profit():
    # Profits 1, 2, 3, need 3: λ = 3/6 = 0.5 -> 0.5, 1, 1.5.
    takes = allocate("pro_rata", need_qty=3.0, **_book(profit=[1.0, 2.0, 3.0], cap=[BIG] * 3))
    np.testing.assert_allclose(takes, [0.5, 1.0, 1.5], rtol=1e-15)


def test_pro_rata_spreads_a_capped_accounts_excess_over_the_others():
    # Profits 1, 2, 3, caps 10, 10, 1, need 3: λ = 0.5 would take 1.5 > 1 from account 2.
    # It gives its cap 1; the other 2 units go 1:2 -> λ = 2/3: 2/3, 4/3.
    takes = pro_rata([1.0, 2.0, 3.0], [10.0, 10.0, 1.0], 3.0)
    np.testing.assert_allclose(takes, [2 / 3, 4 / 3, 1.0], rtol=1e-15)


def test_risk_based_drains_the_two_most_levered_to_a_common_level():
    # mark 1, sizes 10, 6, 2, equities 2, 1, 1 -> leverages 5, 6, 2. need 3.
    # take_i = size_i − L·equity_i on accounts above L: (10 − 2L) + (6 − L) = 3 -> L = 13/3,
    # takes 10 − 26/3 = 4/3 and 6 − 13/3 = 5/3; account 2 (leverage 2 < 13/3) is untouched.
    size, equity = np.array([10.0, 6.0, 2.0]), np.array([2.0, 1.0, 1.0])
    takes = risk_based(size, equity, size, 1.0, 3.0)
    np.testing.assert_allclose(takes, [4 / 3, 5 / 3, 0.0], rtol=1e-14)
    np.testing.assert_allclose(effective_leverage(size - takes, equity, 1.0),
                               [13 / 3, 13 / 3, 2.0], rtol=1e-14)


def test_risk_based_with_a_binding_cap():
    # As above with account 1 capped at 1 (drained freely it would give 5/3):
    # it gives 1 and stays at leverage 5; account 0 gives the other 2: 10 − 2L = 2 -> L = 4.
    size, equity = np.array([10.0, 6.0, 2.0]), np.array([2.0, 1.0, 1.0])
    takes = risk_based(size, equity, [10.0, 1.0, 2.0], 1.0, 3.0)
    np.testing.assert_allclose(takes, [2.0, 1.0, 0.0], rtol=1e-14)
    np.testing.assert_allclose(effective_leverage(size - takes, equity, 1.0), [4.0, 5.0, 2.0],
                               rtol=1e-14)


def test_risk_based_takes_accounts_without_equity_first():
    # Account 0 has equity −0.5 (infinite leverage): it gives its cap 0.5 first.
    # The other 1.5 units: leverages 4/2 = 2 and 3/1 = 3; at L ≥ 2 only account 2 would
    # give, 3 − L = 1.5 -> L = 1.5 < 2, so both: (4 − 2L) + (3 − L) = 1.5 -> L = 11/6,
    # takes 4 − 11/3 = 1/3 and 3 − 11/6 = 7/6.
    takes = allocate("risk_based", need_qty=2.0,
                     **_book(size=[1.0, 4.0, 3.0], equity=[-0.5, 2.0, 1.0], cap=[0.5, 4.0, 3.0]))
    np.testing.assert_allclose(takes, [0.5, 1 / 3, 7 / 6], rtol=1e-14)


def test_risk_based_spent_accounts_in_account_order_when_they_suffice():
    takes = risk_based([1.0, 5.0, 2.0, 3.0], [0.0, 1.0, -1.0, 1.0], [1.0, 5.0, 2.0, 3.0],
                       1.0, 2.5)
    np.testing.assert_array_equal(takes, [1.0, 0.0, 1.5, 0.0])


# --- edge cases, every ranking ---------------------------------------------------

@pytest.mark.parametrize("ranking", RANKINGS)
def test_single_account_gives_what_is_needed(ranking):
    book = _book(size=[2.0], profit=[3.0], equity=[4.0], cap=[1.0], score=[7.0], mark=50.0)
    np.testing.assert_allclose(allocate(ranking, need_qty=0.3, **book), [0.3], rtol=1e-15)
    np.testing.assert_array_equal(allocate(ranking, need_qty=5.0, **book), [1.0])


@pytest.mark.parametrize("ranking", RANKINGS)
def test_all_accounts_capped_when_need_exceeds_the_caps(ranking):
    book = _book(size=[2.0, 3.0, 1.0], profit=[1.0, 5.0, 2.0], equity=[1.0, -1.0, 3.0],
                 cap=[1.5, 3.0, 0.25], score=[1.0, 2.0, 3.0], mark=10.0)
    np.testing.assert_array_equal(allocate(ranking, need_qty=4.75, **book), book["cap"])
    np.testing.assert_array_equal(allocate(ranking, need_qty=100.0, **book), book["cap"])
    np.testing.assert_array_equal(allocate(ranking, need_qty=0.0, **book), np.zeros(3))


def test_accounts_without_equity_lead_the_leverage_queue():
    lev = effective_leverage([1.0, 1.0, 1.0, 1.0], [2.0, 0.0, -1.0, 0.5], 100.0)
    np.testing.assert_array_equal(lev, [50.0, math.inf, math.inf, 200.0])
    assert list(queue("leverage", None, lev)) == [1, 2, 3, 0]


def test_zero_cap_accounts_are_skipped():
    book = _book(size=[1.0, 1.0, 1.0], equity=[1.0, 0.1, 1.0], cap=[1.0, 0.0, 1.0],
                 score=[0.0, 9.0, 0.0])
    for ranking in RANKINGS:
        takes = allocate(ranking, need_qty=0.5, **book)
        assert takes[1] == 0.0 and math.isclose(takes.sum(), 0.5, rel_tol=1e-15), ranking


def test_unknown_ranking_is_an_error():
    with pytest.raises(ValueError, match="ranking"):
        allocate("random", need_qty=1.0, **_book(cap=[1.0]))


def test_take_queue_only_touches_listed_accounts():
    np.testing.assert_array_equal(take_queue([2, 0], [1.0, 1.0, 1.0], 5.0), [1.0, 0.0, 1.0])


# --- risk_based against a linear program -----------------------------------------

def _random_book(rng: np.random.Generator):
    n = int(rng.integers(1, 7))
    mark = float(rng.uniform(10.0, 1000.0))
    # Half the books draw leverages from a short list, so that ties occur.
    lev = (rng.choice([2.0, 5.0, 10.0, 20.0], n) if rng.random() < 0.5
           else rng.uniform(1.0, 50.0, n))
    equity = rng.uniform(1.0, 100.0, n)
    size = lev * equity / mark
    cap = np.where(rng.random(n) < 0.3, rng.uniform(0.0, 1.0, n) * size, size)
    spent = rng.random(n) < 0.1
    equity[spent] = -rng.uniform(0.0, 1.0, spent.sum()) * equity[spent]
    need = float(rng.uniform(0.0, 1.0) * cap.sum())
    return size, equity, cap, mark, need


def _lp_min_max_leverage(size, equity, cap, mark, need):
    """min L s.t. size_i − take_i ≤ L·equity_i/mark, Σ take = need, 0 ≤ take ≤ cap."""
    n = len(size)
    c = np.r_[np.zeros(n), 1.0]
    a_ub = np.c_[-np.eye(n), -(equity / mark)]
    res = linprog(c, A_ub=a_ub, b_ub=-size, A_eq=np.r_[np.ones(n), 0.0][None, :],
                  b_eq=[need], bounds=[(0.0, ci) for ci in cap] + [(None, None)],
                  method="highs", options={"primal_feasibility_tolerance": 1e-10,
                                           "dual_feasibility_tolerance": 1e-10})
    assert res.status == 0, res.message
    return res.fun


def test_risk_based_matches_the_lp_optimum_and_drains_leverage():
    rng = _rng(20260316)
    checked = 0
    for _ in range(300):
        size, equity, cap, mark, need = _random_book(rng)
        takes = risk_based(size, equity, cap, mark, need)

        # Feasible, and the total is what was needed.
        assert np.all(takes >= 0) and np.all(takes <= cap)
        assert math.isclose(takes.sum(), need, rel_tol=1e-12, abs_tol=1e-300)

        # Accounts without equity first, in account order.
        spent = equity <= 0
        need_rest = need - cap[spent].sum()
        if need_rest <= 0:
            np.testing.assert_array_equal(takes[~spent], 0.0)
            continue
        np.testing.assert_array_equal(takes[spent], cap[spent])

        ok = ~spent
        s, e, k, t = size[ok], equity[ok], cap[ok], takes[ok]
        post = (s - t) * mark / e
        optimum = _lp_min_max_leverage(s, e, k, mark, need_rest)
        assert math.isclose(post.max(), optimum, rel_tol=1e-9), (post.max(), optimum)

        # Leverage draining: the free accounts share one level L, the untouched ones
        # were at or below it, the capped ones stay at or above it.
        eps = 1e-12 * s.max()
        free = (t > eps) & (t < k - eps)
        untouched = t <= eps
        capped = t >= k - eps
        before = s * mark / e
        if free.any():
            level = post[free].mean()
            np.testing.assert_allclose(post[free], level, rtol=1e-9)
            assert np.all(before[untouched] <= level * (1 + 1e-9))
            assert np.all(post[capped] >= level * (1 - 1e-9))
        elif untouched.any() and capped.any():
            assert before[untouched].max() <= post[capped].min() * (1 + 1e-9)
        checked += 1
    assert checked >= 200


# --- pro rata against exhaustive search ------------------------------------------

def _pro_rata_exhaustive(profit, cap, need):
    """Try every set of capped accounts; return the takes of the consistent one."""
    n = len(profit)
    for capped in itertools.product([False, True], repeat=n):
        capped = np.array(capped)
        if capped.all():
            continue
        lam = (need - cap[capped].sum()) / profit[~capped].sum()
        tol = 1e-12 * max(1.0, cap.max())
        if (np.all(lam * profit[capped] >= cap[capped] - tol)
                and np.all(lam * profit[~capped] <= cap[~capped] + tol)):
            return np.where(capped, cap, lam * profit)
    raise AssertionError("no consistent capped set")


def test_pro_rata_matches_exhaustive_search():
    rng = _rng(7)
    for _ in range(300):
        n = int(rng.integers(1, 7))
        profit = rng.uniform(0.01, 10.0, n)
        cap = rng.uniform(0.0, 5.0, n)
        need = float(rng.uniform(0.0, 1.0) * cap.sum())
        takes = pro_rata(profit, cap, need)
        np.testing.assert_allclose(takes, _pro_rata_exhaustive(profit, cap, need),
                                   rtol=1e-10, atol=1e-12)
        assert math.isclose(takes.sum(), need, rel_tol=1e-12, abs_tol=1e-300)
        # Proportional to profit among the accounts below their cap.
        uncapped = takes < cap - 1e-12
        if uncapped.any():
            ratio = takes[uncapped] / profit[uncapped]
            np.testing.assert_allclose(ratio, ratio[0], rtol=1e-10)
            assert np.all(cap[~uncapped] <= ratio[0] * profit[~uncapped] * (1 + 1e-10))


# --- the water-filling solver ----------------------------------------------------

@st.composite
def waterfill_inputs(draw):
    n = draw(st.integers(1, 12))
    num = st.floats(-10.0, 10.0, allow_nan=False)
    base = np.array(draw(st.lists(num, min_size=n, max_size=n)))
    slope = np.array(draw(st.lists(st.floats(1e-3, 10.0), min_size=n, max_size=n)))
    cap = np.array(draw(st.lists(st.one_of(st.just(0.0), st.floats(1e-6, 10.0)),
                                 min_size=n, max_size=n)))
    frac = draw(st.floats(1e-9, 1.0, exclude_max=True))
    return base, slope, cap, frac * cap.sum()


@settings(deadline=None, max_examples=300)
@given(waterfill_inputs())
def test_waterfill_is_exact(inputs):
    base, slope, cap, need = inputs
    takes = waterfill(base, slope, cap, need)
    assert np.all(takes >= 0) and np.all(takes <= cap)
    if need == 0:
        np.testing.assert_array_equal(takes, 0.0)
        return
    assert abs(takes.sum() - need) <= 1e-12 * need
    # The takes are clip(base + t·slope, 0, cap) for one level t.
    free = (takes > 0) & (takes < cap)
    if free.any():
        t = (takes[free] - base[free]) / slope[free]
        np.testing.assert_allclose(t, t[0], rtol=1e-9, atol=1e-9)
        scale = 1e-9 * (1 + np.abs(base) + np.abs(t[0] * slope))
        zero, full = (takes == 0) & (cap > 0), (takes == cap) & (cap > 0)
        assert np.all(base[zero] + t[0] * slope[zero] <= scale[zero])
        assert np.all(base[full] + t[0] * slope[full] >= cap[full] - scale[full])


def test_waterfill_returns_cap_when_need_exceeds_it_and_zeros_for_no_need():
    base, slope, cap = [1.0, -2.0, 0.5], [1.0, 2.0, 3.0], [2.0, 1.0, 0.0]
    np.testing.assert_array_equal(waterfill(base, slope, cap, 3.0), cap)
    np.testing.assert_array_equal(waterfill(base, slope, cap, 7.0), cap)
    np.testing.assert_array_equal(waterfill(base, slope, cap, 0.0), np.zeros(3))


def test_waterfill_rejects_a_non_positive_slope():
    with pytest.raises(ValueError, match="slope"):
        waterfill([0.0, 0.0], [1.0, 0.0], [1.0, 1.0], 1.0)


def test_waterfill_is_exact_on_a_large_book_with_cancellation():
    # risk_based on 10^4 accounts needing a sliver: takes are differences of sizes and
    # L·equity/mark that nearly cancel, and must still add up to the need.
    # The worst case: every account at the same leverage 20, so all of them are free
    # with takes of ~1e-13 next to sizes of ~10.
    rng = _rng(11)
    n = 10_000
    equity = rng.uniform(1.0, 100.0, n)
    for leverage in (rng.uniform(1.0, 50.0, n), np.full(n, 20.0)):
        size = leverage * equity / 100.0
        for need in (1e-9, 1e-6, 1.0, 0.5 * size.sum()):
            takes = risk_based(size, equity, size, 100.0, need)
            assert abs(math.fsum(takes) - need) <= 1e-12 * need
            assert np.all(takes >= 0) and np.all(takes <= size)


def test_waterfill_with_caps_below_the_rounding_of_their_base():
    # cap 1 next to base −1e20: in floats the account jumps from 0 to its cap at one
    # level (t_start == t_full), and the need may fall inside that jump.
    takes = waterfill([-1e20, 0.0], [1.0, 1.0], [1.0, 1.0], 1.5)
    np.testing.assert_array_equal(takes, [0.5, 1.0])
    # risk_based with a dust cap (closing more would bankrupt the account).
    size, equity = np.array([10.0, 10.0, 1.0]), np.array([1.0, 2.0, 1.0])
    takes = risk_based(size, equity, [1e-20, 10.0, 1.0], 1.0, 3.0)
    assert takes[0] == 1e-20 and math.isclose(takes.sum(), 3.0, rel_tol=1e-15)
