"""Loss policies in the kernel: hand-computed waterfalls with several bankruptcies in one
step, the four ADL rankings, socialised settlement periods, the fund's cap, trajectory
and need, the fairness metrics, money conservation, and agreement with the reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from conftest import flat_tiers, jump_prices, random_book, small_tiers
from stress.exchange.kernels import C, Q, _waterfill, account_array, simulate
from stress.exchange.reference import ReferenceEngine, gini
from stress.policies import adl as adl_rules
from stress.population import Book
from stress.runner.shard import check_identity, money_error
from stress.runner.variables import ADL_RANKINGS, INDEX, LAYER_CODES


def run(prices, book, layers, fund=0.0, tiers=None, **kw):
    """Kernel metrics (a dict), quantities and cash after, and the fund trajectory."""
    out, acct, traj = simulate(prices, book, tiers or flat_tiers(0.005),
                               [LAYER_CODES[x] for x in layers], fund, return_accounts=True,
                               return_fund=True, **kw)
    return {name: out[k] for name, k in INDEX.items()}, acct[:, Q], acct[:, C], traj


def balanced(m, fund_initial):
    out = np.array([m[name] for name in INDEX])
    err, scale = money_error(out, fund_initial)
    return abs(err) <= 1e-12 * scale


# ------------------------------------------------------------- three bankruptcies
# One step 100 → 80, mmr 0.5 %, no fee, no slippage: fills at 80.
#   A long 1 @ 100 with 10: bankrupt at 90, shortfall 10 (10 per unit past bankruptcy)
#   B long 2 @ 100 with 30: bankrupt at 85, shortfall 10 (5 per unit)
#   C long 1 @ 100 with 15: bankrupt at 85, shortfall 5 (5 per unit)
#   D short 1 @ 100 with 50: uPnL 20, equity 70, score (20/50)·(80/70) = 0.457
#   E short 3 @ 95 with 100: uPnL 45, equity 145, score (45/100)·(240/145) = 0.745
# Over the step (the settlement period) D made 20 and E 3 × 20 = 60.
THREE = Book.from_arrays([1.0, 2.0, 1.0, -1.0, -3.0], [100.0, 100.0, 100.0, 100.0, 95.0],
                         [10.0, 30.0, 15.0, 50.0, 100.0])
CRASH = [100.0, 80.0]

WATERFALLS = [
    # layers, fund, (fund_paid, adl_cost, socialised, platform, residual)
    # The fund pays A's 10 and 2 of B's; ADL covers B's other 8 (1.6 units of E at 5)
    # and C's 5 (1 unit of E).
    (["insurance_fund", "adl"], 12.0, (12.0, 13.0, 0.0, 0.0, 0.0)),
    # ADL first: A takes 1 unit of E, B 2 units (E is closed), C D's 1 unit.
    (["adl", "insurance_fund"], 12.0, (0.0, 25.0, 0.0, 0.0, 0.0)),
    # The fund's 12 then a pot of 13, charged 3.25 to D and 9.75 to E (profits 20 : 60).
    (["insurance_fund", "socialised", "platform"], 12.0, (12.0, 0.0, 13.0, 0.0, 0.0)),
    (["socialised", "insurance_fund"], 12.0, (0.0, 0.0, 25.0, 0.0, 0.0)),
    (["insurance_fund", "platform"], 12.0, (12.0, 0.0, 0.0, 13.0, 0.0)),
    (["platform", "insurance_fund"], 12.0, (0.0, 0.0, 0.0, 25.0, 0.0)),
    (["insurance_fund"], 12.0, (12.0, 0.0, 0.0, 0.0, 13.0)),
    (["adl", "socialised", "platform"], 0.0, (0.0, 25.0, 0.0, 0.0, 0.0)),
]


@pytest.mark.parametrize("layers, fund, expected", WATERFALLS,
                         ids=[">".join(w[0]) for w in WATERFALLS])
def test_three_bankruptcies_in_one_step(layers, fund, expected):
    m, qty, cash, _ = run(CRASH, THREE, layers, fund)
    assert m["shortfall"] == pytest.approx(25.0, rel=1e-12)
    assert m["n_shortfalls"] == 3
    got = [m[k] for k in ("fund_paid", "adl_cost", "socialised_loss", "platform_loss",
                          "residual")]
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)
    assert m["fund_final"] == pytest.approx(fund - expected[0], abs=1e-12)
    assert qty[:3].tolist() == [0.0, 0.0, 0.0] and cash[:3].tolist() == [0.0, 0.0, 0.0]
    assert balanced(m, fund)


def test_fund_then_adl_details():
    m, qty, cash, _ = run(CRASH, THREE, ["insurance_fund", "adl"], 12.0)
    # E closed 2.6 units at the bankruptcy prices (1.6 at 85, 1 at 85): it realises
    # 2.6 × (95 − 85) = 26 and keeps -0.4; D is untouched.
    assert qty[4] == pytest.approx(-0.4, rel=1e-12) and cash[4] == pytest.approx(126.0)
    assert qty[3] == -1.0 and cash[3] == 50.0
    assert m["n_adl"] == 2 and m["adl_notional"] == pytest.approx(2.6 * 85.0, rel=1e-12)
    # Fairness: D and E were eligible, only E paid: losses {0, 13}.
    assert m["n_accounts_hit"] == 1
    assert m["adl_max_loss_fraction"] == pytest.approx(13.0 / 145.0, rel=1e-12)
    assert m["loss_gini"] == pytest.approx(0.5, rel=1e-12)
    # The fund was asked for 10 + 10 + 5 with no inflow: it needed 25.
    assert m["fund_need"] == pytest.approx(25.0, rel=1e-12)
    assert m["fund_depleted"] == 1 and m["time_to_depletion"] == 1.0
    # Against the market: A, B, C sold at 80 (−20, −40, −20); E, had it bought its 2.6
    # units back at 80 instead, made 2.6 × 15.
    assert m["market_pnl"] == pytest.approx(-20.0 - 40.0 - 20.0 + 2.6 * 15.0, rel=1e-12)


def test_adl_first_details():
    m, qty, cash, _ = run(CRASH, THREE, ["adl", "insurance_fund"], 12.0)
    assert qty[3] == 0.0 and qty[4] == 0.0
    # E bore 10 + 10 = 20 of 145 equity, D 5 of 70; Gini of {5, 20} = 15·2 / (2·2·25).
    assert m["n_adl"] == 3 and m["n_accounts_hit"] == 2
    assert m["adl_max_loss_fraction"] == pytest.approx(20.0 / 145.0, rel=1e-12)
    assert m["loss_gini"] == pytest.approx(0.3, rel=1e-12)
    assert m["fund_need"] == 0.0  # never asked


def test_socialised_haircut_details():
    m, qty, cash, _ = run(CRASH, THREE, ["insurance_fund", "socialised", "platform"], 12.0)
    assert cash[3] == pytest.approx(50.0 - 3.25, rel=1e-12)
    assert cash[4] == pytest.approx(100.0 - 9.75, rel=1e-12)
    assert m["haircut_rate"] == m["haircut_rate_max"] == pytest.approx(13.0 / 80.0, rel=1e-12)
    assert m["loss_gini"] == pytest.approx(0.25, rel=1e-12)  # {3.25, 9.75}
    assert m["n_accounts_hit"] == 2 and m["adl_max_loss_fraction"] == 0.0


def test_policies_without_the_layer_report_nan_and_zero():
    m, *_ = run(CRASH, THREE, ["platform"])
    assert math.isnan(m["fund_need"]) and math.isnan(m["haircut_rate"])
    assert math.isnan(m["haircut_rate_max"]) and math.isnan(m["loss_gini"])
    assert m["n_accounts_hit"] == 0 and m["platform_max_step"] == 25.0


def test_platform_worst_step():
    # Two crashes: 5 of shortfall at step 1 (C alone), then A's and B's later.
    book = Book.from_arrays([1.0, 2.0, 1.0], [100.0, 100.0, 100.0], [10.0, 30.0, 15.0])
    # Step 1 at 83.2: C (liq. at 85.43) fills at 83.2, shortfall 1.8; A, B are safe?
    # A is liquidated at 90.45 too, so use prices that hit one account at a time.
    m, *_ = run([100.0, 91.0, 89.0, 80.0], book, ["platform"])
    # Step 1 (91): nobody. Step 2 (89): A (liq. 90.45) fills at 89: shortfall 1.
    # Step 3 (80): B (2 × 80 − 200 + 30 = −10) and C (−5): 15 in one step.
    assert m["platform_loss"] == pytest.approx(16.0, rel=1e-12)
    assert m["platform_max_step"] == pytest.approx(15.0, rel=1e-12)


# ---------------------------------------------------------------------- rankings
# A long 1 @ 100 with 10 goes bankrupt at 90, filled at 80: 1 unit of ADL at 90.
#   W1 short 1 @ 100 with 5:   uPnL 20, equity 25, leverage 3.2, score 4 × 3.2 = 12.8
#   W2 short 2 @ 90 with 60:   uPnL 20, equity 80, leverage 2.0, score 0.667
#   W3 short 1 @ 110 with 2:   uPnL 30, equity 32, leverage 2.5, score 15 × 2.5 = 37.5
RANKED = Book.from_arrays([1.0, -1.0, -2.0, -1.0], [100.0, 100.0, 90.0, 110.0],
                          [10.0, 5.0, 60.0, 2.0])
RANKINGS = {
    "score": [0.0, 0.0, 1.0],  # W3 first
    "leverage": [1.0, 0.0, 0.0],  # W1 first
    "pro_rata": [20 / 70, 20 / 70, 30 / 70],  # λ·profit with λ = 1/70
    # Leverage draining to L = 240/137: t_i = size_i − L·equity_i/80.
    "risk_based": [62 / 137, 34 / 137, 41 / 137],
}


@pytest.mark.parametrize("ranking", list(RANKINGS))
def test_adl_rankings_on_a_hand_built_book(ranking):
    m, qty, cash, _ = run(CRASH, RANKED, ["adl"], adl_ranking=ADL_RANKINGS[ranking])
    takes = np.array([1.0, 2.0, 1.0]) - np.abs(qty[1:])
    np.testing.assert_allclose(takes, RANKINGS[ranking], rtol=1e-12, atol=1e-14)
    assert m["adl_cost"] == pytest.approx(10.0, rel=1e-12) and m["residual"] == 0.0
    # Closed at 90 each unit costs 10 against the fill at 80.
    np.testing.assert_allclose(cash[1:], np.array([5.0, 60.0, 2.0])
                               + np.array(RANKINGS[ranking]) * np.array([10.0, 0.0, 20.0]),
                               rtol=1e-12)
    assert balanced(m, 0.0)


def test_risk_based_leaves_the_smallest_largest_leverage():
    lev = {}
    for ranking in RANKINGS:
        _, qty, _, _ = run(CRASH, RANKED, ["adl"], adl_ranking=ADL_RANKINGS[ranking])
        left = np.abs(qty[1:]) * 80.0 / np.array([25.0, 80.0, 32.0])
        lev[ranking] = left.max()
    assert lev["risk_based"] == pytest.approx(240 / 137, rel=1e-12)
    assert all(lev["risk_based"] < v for k, v in lev.items() if k != "risk_based")


def test_kernel_waterfill_equals_the_reference():
    rng = np.random.default_rng(5)
    for _ in range(300):
        m = int(rng.integers(1, 40))
        base = np.where(rng.random(m) < 0.5, 0.0, rng.uniform(0, 5, m))
        slope = rng.uniform(0.01, 3.0, m)
        cap = np.where(rng.random(m) < 0.2, 0.0, rng.uniform(0, 5, m))
        need = rng.uniform(0, 1.2) * cap.sum()
        take = np.empty(m)
        _waterfill(base, slope, cap, m, need, take)
        np.testing.assert_allclose(take, adl_rules.waterfill(base, slope, cap, need),
                                   rtol=1e-9, atol=1e-12)
        assert take.sum() == pytest.approx(min(need, cap.sum()), rel=1e-12, abs=1e-12)


# ------------------------------------------------------------ settlement periods
# F long 1 @ 100 with 50 and G long 2 @ 100 with 100 survive the crash to 80.
SETTLE = Book.from_arrays([1.0, 2.0, 1.0, -1.0, -3.0, 1.0, 2.0],
                          [100.0, 100.0, 100.0, 100.0, 95.0, 100.0, 100.0],
                          [10.0, 30.0, 15.0, 50.0, 100.0, 50.0, 100.0])


def test_daily_settlement_charges_the_same_total_without_a_reversal():
    flat = [100.0, 80.0, 80.0, 80.0, 80.0]
    step, _, cash_step, _ = run(flat, SETTLE, ["socialised"], settle_every=1)
    day, _, cash_day, _ = run(flat, SETTLE, ["socialised"], settle_every=4)
    assert step["socialised_loss"] == day["socialised_loss"] == pytest.approx(25.0)
    # Profits over the step and over the day are the same (20 and 60): so is the spread.
    np.testing.assert_allclose(cash_day, cash_step, rtol=1e-12)
    np.testing.assert_allclose(cash_step[3:5], [50.0 - 6.25, 100.0 - 18.75], rtol=1e-12)


def test_daily_settlement_spreads_the_loss_differently_after_a_reversal():
    reversal = [100.0, 80.0, 95.0, 110.0, 110.0]
    step, _, cash_step, _ = run(reversal, SETTLE, ["socialised"], settle_every=1)
    day, _, cash_day, _ = run(reversal, SETTLE, ["socialised"], settle_every=4)
    assert step["socialised_loss"] == pytest.approx(25.0, rel=1e-12)
    assert day["socialised_loss"] == pytest.approx(25.0, rel=1e-12)
    # Per step, the shorts in profit at the crash pay (20 : 60).
    np.testing.assert_allclose(cash_step[3:], [43.75, 81.25, 50.0, 100.0], rtol=1e-12)
    # At the end of the day the shorts have lost and the longs F, G made 10 and 20:
    # they pay 25 in the ratio 1 : 2.
    np.testing.assert_allclose(cash_day[3:], [50.0, 100.0, 50.0 - 25 / 3, 100.0 - 50 / 3],
                               rtol=1e-12)
    assert day["haircut_rate"] == pytest.approx(25.0 / 30.0, rel=1e-12)


def test_pending_losses_settle_at_the_end_of_the_path():
    # A weekly period on a 4-step path: settled at the path's end.
    m, *_ = run([100.0, 80.0, 80.0, 80.0, 80.0], SETTLE, ["socialised", "platform"],
                settle_every=10080)
    assert m["socialised_loss"] == pytest.approx(25.0) and m["platform_loss"] == 0.0


def test_what_the_haircut_cannot_cover_continues_at_settlement():
    # Only D is short (profit 20 over the period); the pot is 25: 5 goes to the platform.
    book = Book.from_arrays([1.0, 2.0, 1.0, -1.0], [100.0] * 4, [10.0, 30.0, 15.0, 50.0])
    m, _, cash, _ = run(CRASH, book, ["socialised", "platform"], settle_every=1)
    assert m["socialised_loss"] == pytest.approx(20.0) and m["platform_loss"] == pytest.approx(5.0)
    assert cash[3] == pytest.approx(30.0)


def test_a_top_up_is_not_profit_of_the_period():
    # D, short 1 @ 100 with 5, has equity 1 at 104 against MM 0.52: its margin ratio 0.52
    # crosses the 0.4 alert and it tops up to a ratio of 0.05: 0.52 / 0.05 − 1 = 9.4.
    # Then 104 → 80 bankrupts A (shortfall 10). D's profit over the period is 20, not
    # 29.4 with the deposit.
    book = Book.from_arrays([1.0, -1.0], [100.0, 100.0], [10.0, 5.0])
    acct = account_array(book.qty, book.entry, book.collateral, budget=[0.0, 10.0],
                         u=[0.0, 0.0])
    out, after = simulate([100.0, 104.0, 80.0], None, flat_tiers(0.005),
                          [LAYER_CODES["socialised"]], 0.0, acct=acct, return_accounts=True,
                          settle_every=2, alerts=(0.4,), topup_prob=1.0, topup_target=0.05)
    m = {name: out[k] for name, k in INDEX.items()}
    assert m["n_topups"] == 1 and m["topup_volume"] == pytest.approx(9.4, rel=1e-12)
    assert m["socialised_loss"] == pytest.approx(10.0, rel=1e-12)  # A's shortfall, < 20
    assert after[1, C] == pytest.approx(5.0 + 9.4 - 10.0, rel=1e-12)
    assert m["haircut_rate"] == pytest.approx(10.0 / 20.0, rel=1e-12)


# ------------------------------------------------------------------------ the fund
def test_fund_cap_overflow_need_and_trajectory():
    # X long 1 @ 100 with 10 is liquidated at 90.4 (equity 0.4 ≤ MM 0.452) with a
    # surplus of 0.4 for the fund; Y long 1 @ 100 with 5 goes bankrupt at 95 and is
    # filled at 80 three steps later: shortfall 15.
    book = Book.from_arrays([1.0, 1.0], [100.0, 100.0], [10.0, 5.0])
    prices = [100.0, 96.0, 90.4, 90.4, 80.0, 80.0]
    # Y is liquidated at step 1 already (96: equity 1 ≤ 0.48? no: 1 > 0.48): safe;
    # at 90.4 both go: X with +0.4, Y with 5 − 9.6 = −4.6.
    m, _, _, traj = run(prices, book, ["insurance_fund"], fund=2.0, fund_cap=2.2,
                        record_every=2)
    assert m["fund_inflow"] == pytest.approx(0.4, rel=1e-9)
    # The fund (2) takes 0.4 first, 0.2 above the cap goes to the platform; then pays
    # 2.2 of the 4.6 shortfall; 2.4 is residual.
    assert m["fund_overflow"] == pytest.approx(0.2, rel=1e-9)
    assert m["fund_paid"] == pytest.approx(2.2, rel=1e-9)
    assert m["residual"] == pytest.approx(2.4, rel=1e-9)
    # Asked 4.6 against 0.4 of inflow: a fund of 4.2 would never have run dry.
    assert m["fund_need"] == pytest.approx(4.2, rel=1e-9)
    np.testing.assert_allclose(traj, [2.0, 0.0, 0.0], atol=1e-12)
    assert balanced(m, 2.0)


def test_fund_need_is_enough_and_no_less():
    rng = np.random.default_rng(3)
    book = random_book(rng, 80)
    prices = jump_prices(rng, 300, rate=0.1)
    layers = ["insurance_fund", "platform"]
    m, *_ = run(prices, book, layers, fund=0.0, tiers=small_tiers(), fee_rate=0.002,
                slippage=0.01)
    need = m["fund_need"]
    assert need > 0
    enough, *_ = run(prices, book, layers, fund=need * (1 + 1e-9), tiers=small_tiers(),
                     fee_rate=0.002, slippage=0.01)
    short, *_ = run(prices, book, layers, fund=need * 0.99, tiers=small_tiers(),
                    fee_rate=0.002, slippage=0.01)
    assert enough["fund_depleted"] == 0 and short["fund_depleted"] == 1


def test_gini_reference():
    assert gini([1.0, 1.0, 1.0]) == 0.0
    assert gini([0.0, 0.0, 3.0]) == pytest.approx(2 / 3)
    assert math.isnan(gini([])) and math.isnan(gini([0.0, 0.0]))
    # Against the definition, the mean absolute difference over twice the mean.
    x = np.random.default_rng(1).pareto(1.5, 200)
    mad = np.abs(x[:, None] - x[None, :]).mean()
    assert gini(list(x)) == pytest.approx(mad / (2 * x.mean()), rel=1e-12)


# --------------------------------------------------------- kernel == reference
LAYER_LISTS = [["insurance_fund", "adl"], ["adl"], ["socialised", "platform"],
               ["insurance_fund", "socialised", "adl", "platform"], ["adl", "insurance_fund"],
               ["socialised", "adl"], ["platform"], ["insurance_fund"]]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 120),
       layers=st.sampled_from(LAYER_LISTS), ranking=st.sampled_from(list(ADL_RANKINGS)),
       settle=st.sampled_from([1, 7, 30, 1000]), cap=st.sampled_from([math.inf, 60.0]),
       style=st.sampled_from([0, 1, 2]), to_trader=st.booleans())
# A socialised charge can leave an open winner with negative cash (its period gain was
# more than its equity at the period's start); ADL must not then top its cash up.
@example(seed=3845, n=98, layers=["insurance_fund", "socialised", "adl", "platform"],
         ranking="score", settle=7, cap=math.inf, style=0, to_trader=True)
def test_kernel_equals_reference_with_every_policy_option(seed, n, layers, ranking, settle, cap,
                                                          style, to_trader):
    rng = np.random.default_rng(seed)
    book = random_book(rng, n)
    prices = jump_prices(rng, 120, rate=0.08)
    side = np.sign(book.qty)
    stop = np.where(rng.random(n) < 0.2, book.entry * (1 - side * 0.05), np.nan)
    budget = np.where(rng.random(n) < 0.5, book.collateral, 0.0)
    u = rng.random(n)
    kw = dict(fee_rate=0.002, fee_share=0.7, slippage=0.003, liq_style=style,
              surplus_to_trader=int(to_trader), alerts=(0.5, 0.8), topup_prob=0.5,
              funding_every=30, funding_mode=1, funding_rate=0.001, fund_cap=cap,
              adl_ranking=ADL_RANKINGS[ranking], settle_every=settle, record_every=10)
    acct = account_array(book.qty, book.entry, book.collateral, stop, budget, u)
    out, traj = simulate(prices, None, small_tiers(), [LAYER_CODES[x] for x in layers], 50.0,
                         acct=acct, return_fund=True, **kw)
    ref = ReferenceEngine(prices, book.qty, book.entry, book.collateral, small_tiers(), layers,
                          50.0, stop=stop, budget=budget, u=u, **kw)
    np.testing.assert_allclose(out, ref.run(), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(traj, ref.trajectory, rtol=1e-12, atol=1e-12)
    check_identity(out[None, None, :], ["p"], fund_initial=[50.0])


ALL_LAYER_LISTS = LAYER_LISTS + [["socialised"], ["adl", "socialised", "insurance_fund"]]


def test_money_is_conserved_on_random_books_with_every_option():
    # 400 seeded cases (books of 1–150 accounts, 150 steps with jumps) over every layer
    # order, ranking, settlement, fund cap, liquidation style, MM basis and price
    # impact: the balance sheet closes to 1e-9 of the gross flows (measured: ≤ 2e-14).
    for seed in range(400):
        rng = np.random.default_rng(seed)
        n = int(rng.integers(1, 150))
        book = random_book(rng, n)
        prices = jump_prices(rng, 150, rate=0.08)
        side = np.sign(book.qty)
        stop = np.where(rng.random(n) < 0.2, book.entry * (1 - side * 0.05), np.nan)
        budget = np.where(rng.random(n) < 0.5, book.collateral, 0.0)
        kw = dict(fee_rate=0.002, fee_share=0.7, slippage=0.003,
                  liq_style=int(rng.integers(3)), surplus_to_trader=int(rng.integers(2)),
                  alerts=(0.5, 0.8), topup_prob=0.5, funding_every=30, funding_mode=1,
                  funding_rate=0.001, fund_cap=[math.inf, 60.0][int(rng.integers(2))],
                  adl_ranking=int(rng.integers(4)), settle_every=[1, 7, 30, 1000][seed % 4],
                  mm_entry=int(rng.integers(2)), req_fee=0.0005,
                  impact_k=float(rng.choice([0.0, 0.5])), permanent=0.3)
        layers = ALL_LAYER_LISTS[seed % len(ALL_LAYER_LISTS)]
        acct = account_array(book.qty, book.entry, book.collateral, stop, budget, rng.random(n))
        out = simulate(prices, None, small_tiers(), [LAYER_CODES[x] for x in layers], 50.0,
                       acct=acct, **kw)
        check_identity(out[None, None, :], [f"seed {seed}"], fund_initial=[50.0])
