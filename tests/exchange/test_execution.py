"""Execution against a thin book: gaps, price impact, in-step cascades, funding.
Hand-computed cases, the golden funding vectors, and kernel == reference with
liquidity and funding switched on."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from conftest import close, flat_tiers, golden_cases, jump_prices, random_book
from stress.exchange.kernels import funding_rate, simulate
from stress.exchange.reference import ReferenceEngine
from stress.market.liquidity import PathLiquidity
from stress.population import Book
from stress.runner.variables import INDEX, LAYER_CODES

NBP = [LAYER_CODES["platform"]]


def liquidity(index, depth, gap_bid=0.0, gap_ask=0.0, mark=None):
    n = len(index)
    full = lambda v: np.full(n, float(v))  # noqa: E731
    return PathLiquidity(np.asarray(mark if mark is not None else index, dtype=float),
                         full(depth), full(depth), full(gap_bid), full(gap_ask))


def m(out, name):
    return out[INDEX[name]]


def test_gap_fills_forced_sells_beyond_the_empty_band():
    # Long 1 @ 100 with 10 (bankrupt at 90), breached at 91; the bid is empty over 5 %:
    # the fill is 91·(1 − 0.05) = 86.45, shortfall 3.55.
    book = Book.from_arrays([1.0], [100.0], [10.0])
    prices = [100.0, 91.0]
    out = simulate(prices, book, flat_tiers(0.02, max_leverage=25), NBP, 0.0,
                   liquidity=liquidity(prices, np.inf, gap_bid=0.05))
    assert m(out, "shortfall") == pytest.approx(90.0 - 91.0 * 0.95, rel=1e-12)


def test_square_root_impact_of_the_forced_order():
    # Long 10 @ 100 with 100 sold at mark 91 into 2,275 of depth: Q/D = 910/2275 = 0.4,
    # impact 0.05·√0.4 = 3.16 %, fill 91·(1 − 0.0316), shortfall 10·(90 − fill).
    book = Book.from_arrays([10.0], [100.0], [100.0])
    prices = [100.0, 91.0]
    out = simulate(prices, book, flat_tiers(0.02, max_leverage=25), NBP, 0.0,
                   liquidity=liquidity(prices, 2275.0), impact_k=0.05, impact_gamma=0.5)
    fill = 91.0 * (1 - 0.05 * math.sqrt(0.4))
    assert m(out, "shortfall") == pytest.approx(10 * (90.0 - fill), rel=1e-12)
    assert m(out, "cascade_rounds") == 1 and m(out, "cascade_move") == 0.0


def test_permanent_impact_cascades_within_the_step():
    # A: long 10 @ 100 with 100 (liquidated at 91). B: long 1 @ 100 with 12 — safe at 91
    # (equity 3 > MM 1.82) but breached once A's sale moves the mark: linear impact
    # 0.1·(910/1000) = 9.1 %, all permanent, mark → 91·(1 − 0.091) = 82.719.
    book = Book.from_arrays([10.0, 1.0], [100.0, 100.0], [100.0, 12.0])
    prices = [100.0, 91.0]
    out = simulate(prices, book, flat_tiers(0.02, max_leverage=25), NBP, 0.0,
                   liquidity=liquidity(prices, 1000.0), impact_k=0.1, impact_gamma=1.0,
                   permanent=1.0)
    assert m(out, "n_liquidations") == 2
    assert m(out, "cascade_rounds") == 2
    mark2 = 91.0 * (1 - 0.091)
    # B's 1 unit sold in round 2 at mark2 into the depth left (1000 − 910 = 90).
    fill_b = mark2 * (1 - 0.1 * (mark2 / 90.0))
    fill_a = 91.0 * (1 - 0.091)
    expect = 10 * (90.0 - fill_a) + (88.0 - fill_b)
    assert m(out, "shortfall") == pytest.approx(expect, rel=1e-12)
    move_b = 0.1 * (mark2 / 90.0)
    assert m(out, "cascade_move") == pytest.approx(1 - (1 - 0.091) * (1 - move_b), rel=1e-12)
    # The mark (index 91 times the displacement) ends the step that far from the index.
    assert m(out, "mark_index_gap") == pytest.approx(m(out, "cascade_move"), rel=1e-12)
    # Without the permanent part, B survives the step.
    out = simulate(prices, book, flat_tiers(0.02, max_leverage=25), NBP, 0.0,
                   liquidity=liquidity(prices, 1000.0), impact_k=0.1, impact_gamma=1.0,
                   permanent=0.0)
    assert m(out, "n_liquidations") == 1 and m(out, "cascade_rounds") == 1


def test_impact_is_capped_so_prices_stay_positive():
    # A sale 100x the depth under a linear law would move the price by 1,000 %: the fill
    # stops at 99 % below the mark (91 → 0.91) and the mark stays positive. The moved
    # mark breaches the second long, sold in round 2 at 0.0091 into no depth at all.
    book = Book.from_arrays([10.0, 1.0], [100.0, 50.0], [100.0, 45.0])
    prices = [100.0, 91.0, 91.0]
    out = simulate(prices, book, flat_tiers(0.02, max_leverage=25), NBP, 0.0,
                   liquidity=liquidity(prices, 9.1), impact_k=0.1, impact_gamma=1.0,
                   permanent=1.0)
    assert m(out, "shortfall") == pytest.approx(10 * (90.0 - 0.91) + (5.0 - 0.0091), rel=1e-12)
    assert m(out, "cascade_rounds") == 2
    assert m(out, "cascade_move") == pytest.approx(1 - 0.01 * 0.01, rel=1e-12)


def test_cascade_round_cap_is_reported():
    # Thirty longs a dime of margin apart: each round's sale breaches the next few. The
    # uncapped cascade takes 5 rounds; capped at 3, the step stops (reported) and the
    # rest go in the next step, at the mark the cascade left (the displacement stays).
    n = 30
    book = Book.from_arrays(np.ones(n), np.full(n, 100.0), 10.0 + 0.1 * np.arange(n))
    prices = [100.0, 91.0, 91.0]
    kw = dict(liquidity=liquidity(prices, 1e4), impact_k=0.1, impact_gamma=1.0, permanent=1.0)
    tiers = flat_tiers(0.02, max_leverage=25)
    free = simulate(prices, book, tiers, NBP, 0.0, **kw)
    assert m(free, "cascade_rounds") == 5 and m(free, "cascade_cap_hits") == 0
    assert m(free, "n_liquidations") == n
    capped = simulate(prices, book, tiers, NBP, 0.0, max_rounds=3, **kw)
    assert m(capped, "cascade_rounds") == 3 and m(capped, "cascade_cap_hits") == 1
    assert m(capped, "n_liquidations") == n


def test_displacement_decays_back_to_the_index():
    # The mark displaced by a forced sale returns to the index with the half-life, so an
    # account breached only by the displaced mark is not liquidated once it has decayed.
    book = Book.from_arrays([10.0, 1.0], [100.0, 100.0], [100.0, 12.0])
    prices = [100.0, 91.0, 91.0]
    liq = liquidity(prices, 1e4)
    out = simulate(prices, book, flat_tiers(0.02, max_leverage=25), NBP, 0.0, liquidity=liq,
                   impact_k=0.1, impact_gamma=1.0, permanent=1.0, permanent_decay=0.0)
    assert m(out, "n_liquidations") == 1  # 0.91 % move: 91·0.9909 = 90.17 > B's 89.80


@pytest.mark.parametrize("case", golden_cases("funding.json"), ids=lambda c: c["id"])
def test_funding_payment_golden(case):
    # One position against an opposite one of equal notional: it receives exactly
    # −s·notional·rate (the golden "payment"), the other the opposite.
    i = case["inputs"]
    s = 1.0 if i["side"] == "long" else -1.0
    q = s * i["qty"]
    price = i["mark_price"]
    book = Book.from_arrays([q, -q], [price, price], [1e9, 1e9])
    out, coll = _funding_run(book, [price, price], i["funding_rate"])
    assert close(coll[0] - 1e9, case["expected"]["payment"], case["tolerance"])
    assert coll[0] + coll[1] == pytest.approx(2e9, rel=1e-15)


def _funding_run(book, prices, rate):
    from stress.exchange.kernels import C
    out, acct = simulate(prices, book, flat_tiers(0.005), NBP, 0.0, return_accounts=True,
                         funding_every=1, funding_mode=1, funding_rate=rate, funding_cap=1.0)
    return out, acct[:, C]


def test_funding_is_zero_sum_with_unbalanced_sides():
    # Longs 3 units, shorts 1 unit at 100, rate 1 %: longs pay 3, the short receives 3.
    book = Book.from_arrays([1.0, 2.0, -1.0], [100.0] * 3, [50.0] * 3)
    out, coll = _funding_run(book, [100.0, 100.0], 0.01)
    np.testing.assert_allclose(coll, [49.0, 48.0, 53.0], rtol=1e-14)
    assert m(out, "funding_volume") == pytest.approx(3.0, rel=1e-14)


def test_funding_can_trigger_liquidation():
    # A 50x long just above maintenance is pushed under it by a 1 % funding payment.
    book = Book.from_arrays([1.0, -5.0], [100.0, 100.0], [2.5, 500.0])
    out, _ = _funding_run(book, [100.0, 100.0, 100.0], 0.01)
    assert m(out, "n_liquidations") == 1


def test_premium_funding_rate_formula():
    # Binance-style: F = P + clamp(I − P, ±0.05 %), capped.
    assert funding_rate(2, 0.0, 0.0002, 0.0001, 0.0005, 0.0075) == pytest.approx(0.0001)
    assert funding_rate(2, 0.0, 0.003, 0.0001, 0.0005, 0.0075) == pytest.approx(0.0025)
    assert funding_rate(2, 0.0, -0.02, 0.0001, 0.0005, 0.0075) == pytest.approx(-0.0075)
    assert funding_rate(1, 0.0004, 0.5, 0.0, 0.0, 0.0075) == pytest.approx(0.0004)


LAYERS = [["insurance_fund", "adl"], ["socialised", "platform"], ["platform"],
          ["insurance_fund", "socialised", "adl"]]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 80), layers=st.sampled_from(LAYERS),
       depth=st.sampled_from([50.0, 500.0, 5e3]), gamma=st.sampled_from([0.5, 1.0]),
       permanent=st.sampled_from([0.0, 0.5, 1.0]), decay=st.sampled_from([1.0, 0.8]),
       funding=st.sampled_from([(0, 0), (1, 5), (2, 7)]), rounds=st.sampled_from([2, 50]))
# Found by hypothesis: an impact above 100 % drove the mark negative (now capped at 99 %).
@example(seed=82, n=26, layers=["socialised", "platform"], depth=50.0, gamma=1.0,
         permanent=0.5, decay=1.0, funding=(0, 0), rounds=2)
# Found by hypothesis: every account on the side in profit had changed in the period, and
# the kept side total's rounding (1e-15) made a 100 % haircut rate on "profit" of nothing.
@example(seed=0, n=32, layers=["socialised", "platform"], depth=50.0, gamma=1.0,
         permanent=0.5, decay=0.8, funding=(0, 0), rounds=50)
def test_kernel_equals_reference_with_liquidity_and_funding(seed, n, layers, depth, gamma,
                                                            permanent, decay, funding, rounds):
    rng = np.random.default_rng(seed)
    book = random_book(rng, n)
    steps = 100
    index = jump_prices(rng, steps, vol=0.008, rate=0.06, jump_mean=-0.04, jump_std=0.07)
    mark = index * (1 + 0.002 * rng.standard_normal(steps + 1))
    d = depth * np.exp(0.5 * rng.standard_normal(steps + 1))
    gaps = np.where(rng.random(steps + 1) < 0.1, 0.02, 0.0)
    liq = PathLiquidity(mark, d, d * 1.3, gaps, gaps[::-1].copy())
    mode, every = funding
    kw = dict(fee_rate=0.001, fee_share=0.8, slippage=0.001, step_minutes=1.0,
              impact_k=0.02, impact_gamma=gamma, permanent=permanent, permanent_decay=decay,
              used_decay=0.9, depth_floor=5.0, max_rounds=rounds, funding_every=every,
              funding_mode=mode, funding_rate=0.002, funding_interest=0.0001,
              funding_clamp=0.0005, funding_cap=0.01)
    tiers = flat_tiers(0.01, max_leverage=50)
    codes = [LAYER_CODES[x] for x in layers]
    out = simulate(index, book, tiers, codes, 10.0, liquidity=liq, **kw)
    ref = ReferenceEngine(index, book.qty, book.entry, book.collateral, tiers, layers, 10.0,
                          liquidity=liq, **kw).run()
    np.testing.assert_allclose(out, ref, rtol=1e-9, atol=1e-9)
