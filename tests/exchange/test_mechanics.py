"""Exchange mechanics in the kernel: margin conventions against the venues' vectors,
partial and stepwise liquidation, stop-losses, margin alerts and top-ups, cross
margin, inverse contracts; each on hand-computed cases, and the kernel against
the plain-Python reference on random books with every rule switched on."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import (GOLDEN, flat_tiers, golden_cases, jump_prices, random_book,
                      small_tiers)
from stress.exchange.contracts import kernel_accounts
from stress.exchange.kernels import (C, Q, _SLACK, account_array, make_params, simulate,
                                     threshold, tier_array)
from stress.exchange.reference import ReferenceEngine
from stress.exchange.tiers import TierTable, read_tier_csv
from stress.population import Book
from stress.runner.shard import check_identity
from stress.runner.variables import INDEX, LAYER_CODES

PLATFORM = [LAYER_CODES["platform"]]


def run(prices, acct, tiers, layers=PLATFORM, fund=0.0, **kw):
    out, after = simulate(prices, None, tiers, layers, fund, acct=acct, return_accounts=True,
                          **kw)
    return {name: out[k] for name, k in INDEX.items()}, after


def one(qty, entry, coll, stop=math.nan, budget=0.0, u=0.0):
    return account_array([qty], [entry], [coll], [stop], [budget], [u])


# ------------------------------------------------------ thresholds vs the venues
def _golden_lp_cases():
    cases = []
    for c in golden_cases(*(p.name for p in sorted(GOLDEN.glob("*.json")))):
        i = c["inputs"]
        if (c["kind"] == "liquidation_price" and "liquidation_price" in c["expected"]
                and i.get("fee_basis") is None):
            cases.append(c)
    return cases


LP_CASES = _golden_lp_cases()


def _case_tiers(i) -> TierTable:
    if "tiers" in i:
        t = i["tiers"]
        return (read_tier_csv(GOLDEN / t) if isinstance(t, str)
                else TierTable.from_rows(t))
    mmr = i.get("mmr", 1.0 / (2.0 * i["max_leverage"]) if "max_leverage" in i else None)
    return TierTable(*(np.array([v]) for v in (0.0, np.inf, mmr, i.get("maint_amount", 0.0),
                                               1.0 / mmr - 1e-9)))


@pytest.mark.parametrize("case", LP_CASES, ids=[c["id"] for c in LP_CASES])
def test_kernel_liquidation_threshold_matches_the_venues(case):
    # The kernel's trigger price (slack removed) is the venue's liquidation price, for
    # mark- and entry-basis MM, fees in the requirement, cross wallets, and inverse
    # contracts (a linear position in 1/P).
    i = case["inputs"]
    s = 1.0 if i["side"] == "long" else -1.0
    if i.get("margin_mode") == "cross":
        coll = (i["wallet_balance"] - i.get("other_positions_mm", 0.0)
                + i.get("other_positions_upnl", 0.0))
    else:
        coll = i["collateral"]
    inverse = case["contract"] == "inverse"
    qty = s * i["qty"] * i.get("contract_multiplier", 1.0)
    entry = i["entry_price"]
    if inverse:
        qty, entry = -qty, 1.0 / entry
    thr = threshold(qty, entry, coll, tier_array(_case_tiers(i)), i.get("fee_rate", 0.0),
                    i.get("mm_basis", "mark") == "entry", 1.0)
    lp = thr / (1.0 + math.copysign(_SLACK, qty))
    if inverse:
        lp = 1.0 / lp
    exp = case["expected"]["liquidation_price"]
    tol = case["tolerance"]
    assert abs(lp - exp) <= max(tol["abs"], tol["rel"] * abs(exp), 1e-9 * abs(exp))


def test_enough_venue_liquidation_prices_are_checked():
    venues = {c["venue"] for c in LP_CASES}
    assert len(LP_CASES) >= 25
    assert {"binance_usdm", "bybit_linear", "okx_linear", "gate_linear", "hyperliquid",
            "bitmex_inverse", "bybit_inverse", "dydx_v4"} <= venues


@settings(max_examples=200, deadline=None)
@given(long=st.booleans(), lev=st.floats(1.5, 100), move=st.floats(-0.5, 0.5),
       fee=st.sampled_from([0.0, 0.0005, 0.002]), entry_basis=st.booleans(),
       level=st.sampled_from([1.0, 0.8, 0.5, 0.2]))
def test_threshold_bounds_every_trigger(long, lev, move, fee, entry_basis, level):
    # Wherever the exact test fires, the threshold says it may: it is a safe filter.
    t = read_tier_csv(GOLDEN / "tiers/gate_btcusdt_risk_limit.csv")
    tt = tier_array(t)
    qty = (1.0 if long else -1.0) * 30.0
    entry = 60_000.0 * (1.0 + move)
    coll = abs(qty) * entry / lev
    thr = threshold(qty, entry, coll, tt, fee, entry_basis, 1.0 / level)
    from stress.exchange.kernels import is_breached
    for p in np.linspace(0.2, 2.0, 400) * entry:
        if is_breached(qty, entry, coll, p, tt, fee, entry_basis, 1.0 / level):
            assert (p <= thr) if long else (p >= thr)


def test_threshold_of_a_margin_that_does_not_move_with_the_price():
    # Long 1 @ 100, 50 of collateral, one 50 % tier, alert at half the margin ratio
    # (scale 2): equity − 2·MM = 50 + (p − 100) − 2·0.5·p = −50 at every price, so the
    # account is breached at any mark and its threshold is +inf. With 150 of
    # collateral it is +50 everywhere: never breached.
    tt = tier_array(flat_tiers(0.5, max_leverage=1.5))
    from stress.exchange.kernels import is_breached
    assert threshold(1.0, 100.0, 50.0, tt, 0.0, False, 2.0) == math.inf
    assert all(is_breached(1.0, 100.0, 50.0, p, tt, 0.0, False, 2.0) for p in (1.0, 1e6))
    assert not any(is_breached(1.0, 100.0, 150.0, p, tt, 0.0, False, 2.0)
                   for p in (1.0, 100.0, 1e6))


# ------------------------------------------------------------------ stop-losses
def test_stop_loss_across_a_gap_fills_at_the_gap_price():
    # Long 1 @ 100 with 10 (LP ≈ 90.45), stop at 95. The price gaps from 100 to 92:
    # the stop fires at the mark and fills at 92, not at 95; the trader keeps 2.
    tiers = flat_tiers(0.005)
    m, after = run([100.0, 100.0, 92.0], one(1.0, 100.0, 10.0, stop=95.0), tiers)
    assert (m["n_stops"], m["n_liquidations"], m["shortfall"]) == (1, 0, 0.0)
    assert m["stop_notional"] == pytest.approx(92.0, rel=1e-12)
    assert after[0, Q] == 0.0
    # Gradually, it fills at the first mark at or below the stop: 94.9, keeping 4.9.
    m, _ = run([100.0, 97.0, 94.9, 92.0], one(1.0, 100.0, 10.0, stop=95.0), tiers)
    assert m["stop_notional"] == pytest.approx(94.9, rel=1e-12)
    # Without a stop the same gap is only a loss on paper (no liquidation at 92).
    m, after = run([100.0, 100.0, 92.0], one(1.0, 100.0, 10.0), tiers)
    assert (m["n_stops"], m["n_liquidations"]) == (0, 0)
    assert after[0, C] == 10.0


def test_stop_fill_past_bankruptcy_leaves_a_shortfall_and_liquidation_takes_precedence():
    tiers = flat_tiers(0.0)
    # No maintenance margin: bankrupt at 90. Mark 91 fires the stop (not breached), the
    # fill with 2 % slippage is 89.18: equity 10 − 10.82 = −0.82.
    m, _ = run([100.0, 91.0], one(1.0, 100.0, 10.0, stop=95.0), tiers, slippage=0.02)
    assert m["n_stops"] == 1 and m["n_shortfalls"] == 1
    assert m["shortfall"] == pytest.approx(0.82, rel=1e-9)
    # A gap below the liquidation price: the liquidation engine takes over.
    m, _ = run([100.0, 85.0], one(1.0, 100.0, 10.0, stop=95.0), flat_tiers(0.005))
    assert (m["n_stops"], m["n_liquidations"]) == (0, 1)
    assert m["shortfall"] == pytest.approx(5.0, rel=1e-12)


def test_short_stop_triggers_on_the_way_up():
    m, after = run([100.0, 104.0, 106.0], one(-2.0, 100.0, 20.0, stop=105.0),
                   flat_tiers(0.005), slippage=0.001)
    assert m["n_stops"] == 1 and after[0, Q] == 0.0
    assert m["stop_notional"] == pytest.approx(2 * 106.0, rel=1e-12)


# --------------------------------------------------------- alerts and top-ups
ALERT_PATH = [100.0, 95.0, 90.8, 89.0, 95.0]


def test_top_up_averts_a_liquidation_that_happens_without_it():
    # Long 1 @ 100 with 10, mmr 0.5 %. At 90.8 equity is 0.8 and MM 0.454: the margin
    # ratio 0.5675 crosses the 0.5 alert. Without a top-up the account is liquidated at
    # 89 with a shortfall of 1.
    tiers = flat_tiers(0.005)
    m, _ = run(ALERT_PATH, one(1.0, 100.0, 10.0), tiers, alerts=[0.5])
    assert (m["n_margin_alerts"], m["n_topups"], m["n_liquidations"]) == (1, 0, 1)
    assert m["shortfall"] == pytest.approx(1.0, rel=1e-9)
    # With a budget and a target ratio of 5 %, it adds 0.454 / 0.05 − 0.8 = 8.28 and
    # survives the dip to 89 (equity 7.28 > 0.445).
    m, after = run(ALERT_PATH, one(1.0, 100.0, 10.0, budget=20.0), tiers, alerts=[0.5],
                   topup_prob=1.0, topup_target=0.05)
    assert (m["n_margin_alerts"], m["n_topups"], m["n_liquidations"]) == (1, 1, 0)
    assert m["topup_volume"] == pytest.approx(8.28, rel=1e-9)
    assert after[0, C] == pytest.approx(18.28, rel=1e-9) and after[0, Q] == 1.0
    # A budget too small to restore the target is spent in full, and is not enough.
    m, _ = run(ALERT_PATH, one(1.0, 100.0, 10.0, budget=0.1), tiers, alerts=[0.5],
               topup_prob=1.0, topup_target=0.05)
    assert m["topup_volume"] == pytest.approx(0.1, rel=1e-12)
    assert m["n_liquidations"] == 1 and m["shortfall"] == pytest.approx(0.9, rel=1e-9)


def test_top_up_decisions_follow_the_accounts_draw():
    # Probability 0.5; the k-th decision tops up when frac(u + k·φ) < 0.5. With u = 0.7
    # the first decision (0.7) declines; with u = 0.2 it tops up.
    tiers = flat_tiers(0.005)
    kw = dict(alerts=[0.5], topup_prob=0.5, topup_target=0.05)
    m, _ = run(ALERT_PATH, one(1.0, 100.0, 10.0, budget=20.0, u=0.7), tiers, **kw)
    assert (m["n_topups"], m["n_liquidations"]) == (0, 1)
    m, _ = run(ALERT_PATH, one(1.0, 100.0, 10.0, budget=20.0, u=0.2), tiers, **kw)
    assert (m["n_topups"], m["n_liquidations"]) == (1, 0)


def test_alert_levels_are_counted_once_until_re_armed():
    # Levels 0.3 and 0.6 at MM 0.5 %: at 92 the ratio is 0.46/2 = 0.23 (none); at 90.9
    # it is 0.4545/0.9 = 0.505 (the first); at 90.7, 0.4535/0.7 = 0.648 (the second).
    tiers = flat_tiers(0.005)
    m, _ = run([100.0, 92.0, 90.9, 90.8, 90.7, 95.0], one(1.0, 100.0, 10.0), tiers,
               alerts=[0.3, 0.6])
    assert m["n_margin_alerts"] == 2 and m["n_liquidations"] == 0


# -------------------------------------------------------- partial and stepwise
TWO_TIERS = TierTable.from_rows([
    {"notional_floor": 0, "notional_cap": 1000, "mmr": 0.01, "maint_amount": 0,
     "max_leverage": 50},
    {"notional_floor": 1000, "notional_cap": None, "mmr": 0.05, "maint_amount": 40,
     "max_leverage": 10}])


def test_partial_liquidation_closes_a_fraction_and_re_checks():
    # Long 20 @ 100 with 200 (tier 2). At 92.5: equity 50 ≤ MM(1850) = 52.5. Half is
    # closed at 92.5 (collateral 200 − 75 = 125); the rest, 10 (notional 925, tier 1),
    # has equity 50 > MM 9.25. At 88 it breaches again (equity 5 ≤ 8.8) in tier 1,
    # below the partial tier: closed in full, the 5 left to the fund.
    acct = account_array([20.0], [100.0], [200.0])
    kw = dict(liq_style=1, partial_fraction=0.5, partial_min_tier=2)
    m, after = run([100.0, 95.0, 92.5], acct, TWO_TIERS, **kw)
    assert (m["n_partial_liquidations"], m["n_liquidations"]) == (1, 0)
    assert after[0, Q] == 10.0 and after[0, C] == pytest.approx(125.0, rel=1e-12)
    assert m["liquidated_notional"] == pytest.approx(925.0, rel=1e-12)
    m, _ = run([100.0, 95.0, 92.5, 88.0], acct, TWO_TIERS, **kw)
    assert (m["n_partial_liquidations"], m["n_liquidations"], m["shortfall"]) == (1, 1, 0.0)
    assert m["fund_inflow"] == pytest.approx(5.0, rel=1e-9)
    # The same account under full liquidation is closed at 92.5.
    m, _ = run([100.0, 95.0, 92.5], acct, TWO_TIERS)
    assert (m["n_partial_liquidations"], m["n_liquidations"]) == (0, 1)


def test_stepwise_liquidation_on_the_gate_table_closes_what_the_tiers_imply():
    # Gate BTC_USDT risk limits. Long 10 @ 50,100 with 2,000. At 50,000 the notional
    # 500k is in tier 5 (MM 4,165) and equity is 1,000: breached. Step 1 keeps what
    # fits tier 4's cap, 200k / 50k = 4 BTC, closing 6 (the golden tier_reduction
    # vector); equity is unchanged at the mark, 1,000 ≤ MM(200k) = 1,165: step 2 keeps
    # 100k / 50k = 2, closing 2; now MM(100k) = 465 < 1,000 and the account is healthy.
    gate = read_tier_csv(GOLDEN / "tiers/gate_btcusdt_risk_limit.csv")
    acct = account_array([10.0], [50_100.0], [2_000.0])
    m, after = run([50_500.0, 50_500.0, 50_000.0], acct, gate, liq_style=2)
    assert (m["n_partial_liquidations"], m["n_liquidations"]) == (2, 0)
    assert after[0, Q] == pytest.approx(2.0, rel=1e-12)
    assert after[0, C] == pytest.approx(2_000.0 - 8 * 100.0, rel=1e-12)
    assert m["liquidated_notional"] == pytest.approx(8 * 50_000.0, rel=1e-12)
    # Deeper: with equity 100 at 50,000 every step breaches down to tier 1 (closing
    # 6, 2, 1, 0.6 BTC), where the last 0.4 BTC (MM 80 < 100) survive.
    acct = account_array([10.0], [50_190.0], [2_000.0])
    m, after = run([50_800.0, 50_800.0, 50_000.0], acct, gate, liq_style=2)
    assert (m["n_partial_liquidations"], m["n_liquidations"]) == (4, 0)
    assert after[0, Q] == pytest.approx(0.4, rel=1e-9)


def test_surplus_goes_back_to_the_trader_when_the_venue_says_so():
    # Long 1 @ 100 with 10: at 90.2 equity 0.2 ≤ MM 0.451, liquidated; of the 0.2 left,
    # the fee 0.0902 goes to the fund and the surplus 0.1098 to the fund (default) or
    # back to the trader.
    acct = one(1.0, 100.0, 10.0)
    m, _ = run([100.0, 90.2], acct, flat_tiers(0.005), fee_rate=0.001)
    assert m["fund_inflow"] == pytest.approx(0.2, rel=1e-9)
    m, _ = run([100.0, 90.2], acct, flat_tiers(0.005), fee_rate=0.001, surplus_to_trader=1)
    assert m["fund_inflow"] == pytest.approx(0.0902, rel=1e-9)


def test_entry_basis_and_requirement_fee_move_the_trigger():
    # Bybit's isolated USDT formula: MM on the entry notional: LP = 20,000 − 400 + 100
    # = 19,700 (golden bybit-off-usdt-iso-long-lp); the mark basis gives 19,698.49.
    tt = tier_array(flat_tiers(0.005))
    entry = threshold(1.0, 20_000.0, 400.0, tt, 0.0, True, 1.0) / (1 + _SLACK)
    mark = threshold(1.0, 20_000.0, 400.0, tt, 0.0, False, 1.0) / (1 + _SLACK)
    assert entry == pytest.approx(19_700.0, rel=1e-12)
    assert mark == pytest.approx(19_698.4924623, rel=1e-9)
    # In a run, the entry basis liquidates at 19,700 and the mark basis does not.
    m, _ = run([20_000.0, 19_699.5], one(1.0, 20_000.0, 400.0), flat_tiers(0.005),
               mm_entry=1)
    assert m["n_liquidations"] == 1
    m, _ = run([20_000.0, 19_699.5], one(1.0, 20_000.0, 400.0), flat_tiers(0.005))
    assert m["n_liquidations"] == 0


# ------------------------------------------------------------------ cross margin
def test_cross_margin_liquidates_after_isolated_on_the_same_book():
    # Two longs 1 @ 100 with 10 of margin and 20 more in the wallet: isolated (LP ≈
    # 90.45) and cross (the wallet backs it: LP ≈ 70.35).
    book = Book.from_arrays([1.0, 1.0], [100.0, 100.0], [10.0, 10.0],
                            free=[20.0, 20.0], cross=[False, True])
    acct = kernel_accounts(book, inverse=False)
    assert list(acct[:, C]) == [10.0, 30.0]
    tiers = flat_tiers(0.005)
    path = list(np.arange(100.0, 59.0, -1.0))
    closed_at = {}
    for k in range(2, len(path) + 1):
        _, after = run(path[:k], acct, tiers)
        for i in (0, 1):
            if after[i, Q] == 0.0 and i not in closed_at:
                closed_at[i] = path[k - 1]
    assert closed_at == {0: 90.0, 1: 70.0}
    # Isolated: the 20 stay aside and the loss stops at the margin; cross: the wallet
    # pays, and the account survives moves that liquidate the isolated one.
    m, _ = run([100.0, 85.0], acct, tiers)
    assert m["n_liquidations"] == 1 and m["shortfall"] == pytest.approx(5.0, rel=1e-12)


# ------------------------------------------------------------- inverse contracts
def test_inverse_long_shortfall_in_coin_and_quote():
    # 10,000 USD of contracts long @ 10,000 with 0.1 coin (10x). A gap to 8,000:
    # equity 0.1 + 10,000·(1/10,000 − 1/8,000) = −0.15 coin = 1,200 USD at 8,000.
    book = Book.from_arrays([10_000.0], [10_000.0], [0.1])
    acct = kernel_accounts(book, inverse=True)
    m, _ = run(1.0 / np.array([10_000.0, 8_000.0]), acct, flat_tiers(0.005), inverse=1)
    assert m["shortfall"] == pytest.approx(0.15, rel=1e-12)
    assert m["shortfall_quote"] == pytest.approx(1_200.0, rel=1e-12)
    # A short of the same size gains in coin on the fall: nothing happens.
    acct = kernel_accounts(Book.from_arrays([-10_000.0], [10_000.0], [0.1]), inverse=True)
    m, after = run(1.0 / np.array([10_000.0, 8_000.0]), acct, flat_tiers(0.005), inverse=1)
    assert m["n_liquidations"] == 0
    # A short is liquidated on the way up at the golden BitMEX price (31,093.75 for
    # 30,000 USD @ 30,000 with 0.04 coin and 0.5 % MM).
    acct = kernel_accounts(Book.from_arrays([-30_000.0], [30_000.0], [0.04]), inverse=True)
    for p, n in ((31_090.0, 0), (31_094.0, 1)):
        m, _ = run(1.0 / np.array([30_000.0, p]), acct, flat_tiers(0.005), inverse=1)
        assert m["n_liquidations"] == n


# ------------------------------------------------------------- kernel == reference
LAYERS = [["insurance_fund", "adl"], ["socialised"], ["platform"],
          ["insurance_fund", "socialised", "platform"], ["adl", "insurance_fund"]]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 150),
       layers=st.sampled_from(LAYERS), style=st.sampled_from([0, 1, 2]),
       entry_basis=st.booleans(), req_fee=st.sampled_from([0.0, 0.00075]),
       to_trader=st.booleans(), stops=st.sampled_from([0.0, 0.3]),
       alerts=st.sampled_from([(), (0.5,), (0.4, 0.8)]), prob=st.sampled_from([0.0, 0.6, 1.0]),
       target=st.sampled_from([0.0, 0.1]))
def test_kernel_equals_reference_with_every_rule(seed, n, layers, style, entry_basis, req_fee,
                                                 to_trader, stops, alerts, prob, target):
    rng = np.random.default_rng(seed)
    book = random_book(rng, n)
    steps = 120
    prices = jump_prices(rng, steps)
    side = np.sign(book.qty)
    stop = np.where(rng.random(n) < stops, book.entry * (1 - side * rng.uniform(0.01, 0.1, n)),
                    np.nan)
    budget = np.where(rng.random(n) < 0.5, book.collateral * rng.uniform(0.1, 2.0, n), 0.0)
    u = rng.random(n)
    tiers = small_tiers()
    kw = dict(fee_rate=0.002, fee_share=0.7, slippage=0.003, liq_style=style,
              partial_fraction=0.4, partial_min_tier=2, mm_entry=int(entry_basis),
              req_fee=req_fee, surplus_to_trader=int(to_trader), alerts=alerts,
              topup_prob=prob, topup_target=target, funding_every=30, funding_mode=1,
              funding_rate=0.001)
    acct = account_array(book.qty, book.entry, book.collateral, stop, budget, u)
    out = simulate(prices, None, tiers, [LAYER_CODES[x] for x in layers], 50.0, acct=acct,
                   **kw)
    ref = ReferenceEngine(prices, book.qty, book.entry, book.collateral, tiers, layers, 50.0,
                          stop=stop, budget=budget, u=u, **kw).run()
    np.testing.assert_allclose(out, ref, rtol=1e-9, atol=1e-9)
    check_identity(out[None, None, :], ["p"])


def test_kernel_equals_reference_on_a_large_book_with_every_rule():
    # Large enough (600 accounts) that alerts, top-ups and partial closes force re-sorts.
    rng = np.random.default_rng(11)
    n = 600
    book = random_book(rng, n)
    prices = 100.0 * np.exp(np.cumsum(np.r_[0.0, 0.006 * rng.standard_normal(150)]))
    prices[60:] *= 0.9
    side = np.sign(book.qty)
    stop = np.where(rng.random(n) < 0.2, book.entry * (1 - side * 0.05), np.nan)
    budget = np.where(rng.random(n) < 0.5, book.collateral, 0.0)
    u = rng.random(n)
    kw = dict(fee_rate=0.001, slippage=0.002, liq_style=1, partial_fraction=0.5,
              partial_min_tier=2, alerts=(0.3, 0.7), topup_prob=0.7)
    acct = account_array(book.qty, book.entry, book.collateral, stop, budget, u)
    layers = ["insurance_fund", "adl"]
    out = simulate(prices, None, small_tiers(), [LAYER_CODES[x] for x in layers], 20.0, acct=acct,
                   **kw)
    ref = ReferenceEngine(prices, book.qty, book.entry, book.collateral, small_tiers(), layers,
                          20.0, stop=stop, budget=budget, u=u, **kw).run()
    m = {name: out[k] for name, k in INDEX.items()}
    assert m["n_margin_alerts"] > 64 and m["n_topups"] > 10 and m["n_stops"] > 5
    assert m["n_partial_liquidations"] > 0
    np.testing.assert_allclose(out, ref, rtol=1e-9, atol=1e-9)


def test_make_params_rejects_bad_alerts():
    with pytest.raises(ValueError):
        make_params(alerts=(0.5, 0.4))


# ------------------------------------- the kernel's trigger == the conformance layer
COIN_TIERS = [
    {"notional_floor": 0, "notional_cap": 0.5, "mmr": 0.005, "maint_amount": 0,
     "max_leverage": 100},
    {"notional_floor": 0.5, "notional_cap": 2.0, "mmr": 0.01, "maint_amount": 0.0025,
     "max_leverage": 50},
    {"notional_floor": 2.0, "notional_cap": None, "mmr": 0.025, "maint_amount": 0.0325,
     "max_leverage": 20}]


@settings(max_examples=300, deadline=None)
@given(long=st.booleans(), inverse=st.booleans(), lev=st.floats(1.2, 90),
       size=st.floats(0.01, 3.0), move=st.floats(-0.3, 0.3),
       fee=st.sampled_from([0.0, 0.0005, 0.00075]), basis=st.sampled_from(["mark", "entry"]),
       table=st.sampled_from(["tiers/binance_usdm_btcusdt_2021.csv",
                              "tiers/gate_btcusdt_risk_limit.csv",
                              "tiers/hyperliquid_btc_testnet.csv"]))
def test_kernel_liquidation_price_equals_the_conformance_layer(long, inverse, lev, size, move,
                                                               fee, basis, table):
    # Two independent implementations of the trigger: the numba threshold (through
    # stress.population.liquidation_prices) and the plain-Python solver behind
    # stress.exchange.conformance.evaluate, on random positions, both contracts,
    # both MM bases, fees in the requirement, continuous tier tables.
    from stress.config import ExchangeConfig
    from stress.exchange.conformance import evaluate
    from stress.population import liquidation_prices
    entry = 30_000.0 * (1.0 + move)
    if inverse:
        qty = size * entry  # USD face value; notional size coin
        coll = size / lev
        rows = COIN_TIERS
    else:
        qty = size * 40.0  # base units; notional up to ~4.7M quote
        coll = qty * entry / lev
        rows = table
    case = {"id": "gen", "kind": "liquidation_price", "venue": "generic",
            "contract": "inverse" if inverse else "linear",
            "inputs": {"side": "long" if long else "short", "qty": qty, "entry_price": entry,
                       "collateral": coll, "margin_mode": "isolated", "mm_basis": basis,
                       "fee_rate": fee, "tiers": rows, "contract_multiplier": 1.0},
            "expected": {"liquidation_price": None}}
    got = evaluate(case, base_dir=GOLDEN)["liquidation_price"]
    tiers = (TierTable.from_rows(rows) if isinstance(rows, list)
             else read_tier_csv(GOLDEN / rows))
    ex = ExchangeConfig(contract="inverse" if inverse else "linear", mm_basis=basis,
                        requirement_fee_rate=fee)
    book = Book.from_arrays([qty if long else -qty], [entry], [coll])
    lp = liquidation_prices(book, tiers, ex)[0]
    if not (math.isfinite(got) and got > 0):
        assert not (math.isfinite(lp) and lp > 0) or (long and lp <= 0)
        return
    assert lp == pytest.approx(got, rel=1e-9)
