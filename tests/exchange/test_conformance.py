"""The venues' golden test vectors (tests/golden, copied from shared/golden) through
``stress.exchange.conformance``, and properties of the general margin formulas."""

from __future__ import annotations

import copy
import json
import math

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from conftest import GOLDEN
from stress.errors import ConfigError, StressError
from stress.exchange import margin
from stress.exchange.conformance import (OUTPUTS, ConformanceError, check, evaluate,
                                         load_cases)
from stress.exchange.margin import MarginRule, Position
from stress.exchange.tiers import TierTable, builtin_tiers

FILES = sorted(GOLDEN.glob("*.json"))
CASES = [case for f in FILES for case in load_cases(f)]


def _case(case_id: str) -> dict:
    return copy.deepcopy(next(c for c in CASES if c["id"] == case_id))


# --- the golden vectors -----------------------------------------------------

@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_golden_vector(case):
    results = check(case, base_dir=GOLDEN)
    assert results, "a case without expected outputs checks nothing"
    failed = [r for r in results if not r.passed]
    assert not failed, failed


def test_no_golden_file_or_case_is_dropped():
    raw = [json.loads(f.read_text()) for f in FILES]
    assert len(FILES) == 11
    assert len(CASES) == sum(len(d["cases"]) for d in raw) == 99
    assert len({c["id"] for c in CASES}) == len(CASES)
    # Every kind of the README and every venue appears.
    assert {c["kind"] for c in CASES} == set(OUTPUTS)
    assert {c["venue"] for c in CASES} >= {"binance_usdm", "binance_coinm", "bybit_linear",
                                           "bybit_inverse", "okx_linear", "gate_linear",
                                           "bitmex_inverse", "hyperliquid", "dydx_v4", "generic"}


def test_bundled_tier_tables_are_the_golden_ones():
    from importlib import resources
    bundled = resources.files("stress.data").joinpath("tiers")
    for f in sorted((GOLDEN / "tiers").iterdir()):
        assert bundled.joinpath(f.name).read_text() == f.read_text(), f.name


@pytest.mark.parametrize("case_id", ["binance-off-cross-btc-lp", "bybit-off-inv-cross-lp",
                                     "gate-iso-short-lp-25x-tiered", "adl-shorts-mixed",
                                     "gate-reduce-tier5-to-4", "okx-mratio-iso-near-liq"])
def test_evaluate_fills_null_expected_values(case_id):
    case = _case(case_id)
    wanted = case["expected"]
    case["expected"] = {k: None for k in wanted}
    got = evaluate(case, base_dir=GOLDEN)
    assert set(wanted) <= set(got)
    case["expected"] = wanted
    assert all(r.passed for r in check(case, base_dir=GOLDEN))


def test_evaluate_without_expected_returns_every_output():
    case = _case("binance-iso-long-20x-tier4")
    del case["expected"]
    got = evaluate(case, base_dir=GOLDEN)
    assert got["liquidation_price"] == pytest.approx(58127.17949, rel=1e-9)
    assert got["mmr"] == 0.025


def test_bybit_inverse_cross_fee_uses_the_bankruptcy_price_with_fee():
    # Bybit's worked example: BP = 1.00075·10000/(10000/8000 + 0.5) = 5718.57, raw LP ≈ 5739.1,
    # printed 5739.50 (a long's price rounded up to the 0.5 tick).
    got = evaluate(_case("bybit-off-inv-cross-lp"))
    bp = 1.00075 * 10_000 / (10_000 / 8_000 + 0.5)
    lp = 10_000 / (10_000 / 8_000 + 0.5 - 10_000 / 8_000 * 0.005 - 10_000 * 0.00075 / bp)
    assert got["liquidation_price"] == pytest.approx(lp, rel=1e-12)
    assert got["liquidation_price_tick_rounded"] == 5739.5


def test_tier_files_resolve_against_cwd_and_the_bundled_copy(tmp_cwd):
    case = _case("binance-iso-long-125x")
    assert all(r.passed for r in check(case))  # not in ./tiers: the bundled table
    (tmp_cwd / "tiers").mkdir()
    (tmp_cwd / "tiers" / "binance_usdm_btcusdt_2021.csv").write_text(
        "notional_floor,notional_cap,mmr,maint_amount,max_leverage\n0,,0.01,0,50\n")
    assert evaluate(case)["mmr"] == 0.01  # ./tiers comes before the bundled copy
    assert evaluate(case, base_dir=GOLDEN)["mmr"] == 0.004  # base_dir comes first
    case["inputs"]["tiers"] = str(GOLDEN / "tiers" / "gate_btcusdt_risk_limit.csv")
    assert evaluate(case)["mmr"] == 0.0045  # absolute path


# --- errors -------------------------------------------------------------------

def _error(case, *fragments, exc=ConformanceError):
    with pytest.raises(exc) as e:
        evaluate(case, base_dir=GOLDEN)
    message = str(e.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message
    return message


def test_unknown_kind_names_the_case():
    case = _case("seed-pnl-up-1pct")
    case["kind"] = "liquidation_prise"
    _error(case, "'seed-pnl-up-1pct'", "kind", "liquidation_prise")


def test_unknown_venue_names_the_case():
    case = _case("okx-iso-long-lp-fee")
    case["venue"] = "ftx"
    _error(case, "'okx-iso-long-lp-fee'", "venue", "ftx")


def test_unknown_contract_names_the_case():
    case = _case("bitmex-upnl-long-up")
    case["contract"] = "quanto"
    del case["inputs"]["contract"]
    _error(case, "'bitmex-upnl-long-up'", "contract", "quanto")


@pytest.mark.parametrize("case_id,name", [("binance-iso-long-125x", "qty"),
                                          ("binance-off-cross-btc-lp", "wallet_balance"),
                                          ("okx-iso-short-lp-fee", "collateral"),
                                          ("fund-long-pos-rate", "funding_rate"),
                                          ("bybit-off-inv-cross-lp", "tick_size"),
                                          ("okx-iso-long-lp-fee", "mmr"),
                                          ("adl-shorts-mixed", "mark_price")])
def test_missing_input_names_the_case_and_the_input(case_id, name):
    case = _case(case_id)
    del case["inputs"][name]
    _error(case, f"'{case_id}'", f"inputs.{name}", "missing")


def test_missing_input_inside_a_position_is_named():
    case = _case("adl-shorts-mixed")
    del case["inputs"]["positions"][2]["entry_price"]
    _error(case, "inputs.positions.2.entry_price: missing")


def test_unknown_expected_key_names_the_case_and_the_key():
    case = _case("bitmex-lp-long-25x")
    case["expected"]["bankruptcy_prize"] = 1.0
    _error(case, "'bitmex-lp-long-25x'", "expected.bankruptcy_prize")


@pytest.mark.parametrize("name,value,fragment", [("side", "buy", "must be one of long, short"),
                                                 ("qty", -3.0, "must be > 0"),
                                                 ("qty", "3", "must be a number"),
                                                 ("mm_basis", "index", "must be one of"),
                                                 ("margin_mode", "portfolio", "must be one of")])
def test_malformed_input_is_an_error_not_a_number(name, value, fragment):
    case = _case("okx-iso-long-lp-fee")
    case["inputs"][name] = value
    _error(case, "'okx-iso-long-lp-fee'", f"inputs.{name}", fragment)


def test_missing_tier_file_is_named():
    case = _case("binance-mm-tier1")
    case["inputs"]["tiers"] = "tiers/nope.csv"
    _error(case, "'binance-mm-tier1'", "inputs.tiers", "nope.csv", "not found")


def test_bad_inline_tier_table_is_a_config_error():
    case = _case("okx-sec-tier-60000-cont")
    case["inputs"]["tiers"][2]["mmr"] = 0.001
    _error(case, "'okx-sec-tier-60000-cont'", "inputs.tiers.2.mmr", "must not fall",
           exc=ConfigError)
    # Both are user errors: the CLI reports either on one line with exit code 2.
    assert issubclass(ConformanceError, StressError) and issubclass(ConfigError, StressError)


def test_check_reports_a_wrong_value_per_key_and_per_id():
    case = _case("adl-same-pnl-diff-lev")
    case["expected"]["scores"]["x5"] = 0.37
    results = {r.key: r for r in check(case)}
    assert not results["scores.x5"].passed and results["scores.x1"].passed
    assert results["ranking"].passed
    case["expected"]["ranking"] = ["x5", "x20", "x1"]
    assert not {r.key: r for r in check(case)}["ranking"].passed


def test_check_needs_expected_values():
    case = _case("seed-bankrupt-10pct")
    case["expected"]["bankruptcy_price"] = None
    with pytest.raises(ConformanceError, match="expected.bankruptcy_price: no value"):
        check(case)


def test_load_cases_accepts_a_bare_list_and_reports_bad_files(tmp_path):
    f = tmp_path / "list.json"
    f.write_text(json.dumps([_case("seed-bankrupt-10pct")]))
    assert [c["id"] for c in load_cases(f)] == ["seed-bankrupt-10pct"]
    with pytest.raises(ConformanceError, match="nope.json: file not found"):
        load_cases(tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text('{"cases": [\n{"id": }]}')
    with pytest.raises(ConformanceError, match="bad.json: invalid JSON: line 2"):
        load_cases(tmp_path / "bad.json")
    (tmp_path / "obj.json").write_text('{"tests": []}')
    with pytest.raises(ConformanceError, match="obj.json: expected"):
        load_cases(tmp_path / "obj.json")


# --- properties of the general formulas -----------------------------------------

def _coin_tiers() -> TierTable:
    """A continuous COIN-M-style table (notional in coin), maintenance amounts from the
    recurrence."""
    floors = [0.0, 5.0, 10.0, 20.0, 50.0, 100.0]
    rates = [0.005, 0.01, 0.025, 0.05, 0.1, 0.125]
    levs = [125, 50, 20, 10, 5, 4]
    rows, amount = [], 0.0
    for k, (fl, m, lev) in enumerate(zip(floors, rates, levs)):
        if k:
            amount = margin.next_maint_amount(fl, m, rates[k - 1], amount)
        cap = floors[k + 1] if k + 1 < len(floors) else None
        rows.append({"notional_floor": fl, "notional_cap": cap, "mmr": m,
                     "maint_amount": amount, "max_leverage": lev})
    return TierTable.from_rows(rows)


BINANCE = builtin_tiers("binance_btcusdt_2021")
COIN = _coin_tiers()


@st.composite
def positions(draw, contract=None):
    contract = contract or draw(st.sampled_from(margin.CONTRACTS))
    s = draw(st.sampled_from([1.0, -1.0]))
    entry = draw(st.floats(1.0, 1e5))
    if contract == margin.LINEAR:
        qty = draw(st.floats(1e-3, 1e7)) / entry  # notional 1e-3 .. 1e7 quote
    else:
        qty = draw(st.floats(1.0, 1e7))  # contracts of 1 USD
    leverage = draw(st.floats(1.2, 100.0))
    pos = Position(s * qty, entry, 0.0, contract)
    im = margin.position_initial_margin(pos.qty, entry, leverage, contract=contract)
    return Position(s * qty, entry, im * draw(st.floats(0.5, 3.0)), contract)


@st.composite
def rules(draw, contract, continuous=True):
    if draw(st.booleans()):
        tiers = BINANCE if contract == margin.LINEAR else COIN
        mmr = amount = 0.0
    else:
        tiers, mmr, amount = None, draw(st.floats(0.0, 0.1)), 0.0
    fee = draw(st.sampled_from([0.0, 0.0005, 0.00075, 0.002]))
    return MarginRule(tiers, mmr, amount, draw(st.sampled_from(margin.MM_BASES)), fee,
                      draw(st.sampled_from(margin.FEE_BASES)))


def _scale(pos: Position) -> float:
    return pos.notional(pos.entry_price) + abs(pos.collateral)


@settings(deadline=None, max_examples=300)
@given(data=st.data())
def test_liquidation_price_solves_equity_equals_requirement(data):
    pos = data.draw(positions())
    rule = data.draw(rules(pos.contract))
    lp = margin.position_liquidation_price(pos, rule)
    # Far from entry (an inverse short with collateral near its coin value) the equation is
    # ill-conditioned in price; those roots are checked in 1/price below.
    assume(1e-3 * pos.entry_price < lp.price < 1e3 * pos.entry_price)
    gap = pos.equity(lp.price) - margin.position_requirement(pos, lp.price, rule).total
    assert abs(gap) <= 1e-9 * _scale(pos)
    # The reported tier is the one the requirement uses there.
    assert lp.tier == margin.position_requirement(pos, lp.price, rule).tier
    # Liquidatable just beyond the liquidation price, safe just before it.
    away = 1 - 1e-7 * pos.side  # lower for a long, higher for a short
    assert margin.position_is_liquidatable(pos, lp.price * away, rule)
    assert not margin.position_is_liquidatable(pos, lp.price / away, rule) or \
        abs(pos.equity(lp.price / away) -
            margin.position_requirement(pos, lp.price / away, rule).total) <= 1e-6 * _scale(pos)


@settings(deadline=None, max_examples=300)
@given(data=st.data())
def test_long_below_entry_short_above_and_more_collateral_moves_it_away(data):
    pos = data.draw(positions())
    rule = data.draw(rules(pos.contract))
    assume(not margin.position_is_liquidatable(pos, pos.entry_price, rule))
    lp = margin.position_liquidation_price(pos, rule).price
    assert (lp < pos.entry_price) if pos.side > 0 else (lp > pos.entry_price)
    richer = Position(pos.qty, pos.entry_price, pos.collateral * 1.5, pos.contract)
    lp2 = margin.position_liquidation_price(richer, rule).price
    assert (lp2 <= lp) if pos.side > 0 else (lp2 >= lp)


@settings(deadline=None, max_examples=300)
@given(pos=positions(), fee=st.sampled_from([0.0, 0.0005, 0.001]))
def test_without_maintenance_margin_liquidation_is_bankruptcy(pos, fee):
    # Requirement = closing fee at the price: the liquidation equation is the bankruptcy one,
    # for linear and inverse contracts, long and short.
    lp = margin.position_liquidation_price(pos, MarginRule(mmr=0.0, fee_rate=fee)).price
    bp = margin.position_bankruptcy_price(pos, fee)
    assert lp == pytest.approx(bp, rel=1e-12)


@settings(deadline=None, max_examples=300)
@given(pos=positions(), fee=st.sampled_from([0.0, 0.0005, 0.001]))
def test_bankruptcy_price_leaves_zero_equity_after_the_closing_fee(pos, fee):
    bp = margin.position_bankruptcy_price(pos, fee)
    assume(0 < bp < math.inf)
    left = pos.equity(bp) - fee * pos.notional(bp)
    assert abs(left) <= 1e-9 * _scale(pos)
    if fee == 0 and pos.contract == margin.LINEAR:
        # entry − collateral/qty: rounding is relative to the entry price, which matters
        # when the two nearly cancel (a bankruptcy price near zero).
        assert bp == pytest.approx(margin.bankruptcy_price(pos.qty, pos.entry_price,
                                                           pos.collateral),
                                   rel=1e-12, abs=1e-12 * pos.entry_price)


@settings(deadline=None, max_examples=200)
@given(pos=positions(contract=margin.LINEAR), mmr=st.floats(0.0, 0.05),
       fee=st.sampled_from([0.0, 0.0005]))
def test_inverse_is_linear_in_one_over_price(pos, mmr, fee):
    # An inverse position of side s, Q USD, entry E is the linear position of side −s, size Q
    # and entry 1/E in x = 1/price, with the same coin collateral.
    inv = Position(pos.qty * pos.entry_price, pos.entry_price, pos.collateral / pos.entry_price,
                   margin.INVERSE)
    mirror = Position(-inv.side * inv.size, 1 / inv.entry_price, inv.collateral)
    rule = MarginRule(mmr=mmr, fee_rate=fee)
    x = margin.position_liquidation_price(mirror, rule).price
    p = margin.position_liquidation_price(inv, rule).price
    if x > 0:
        assert p == pytest.approx(1 / x, rel=1e-12)
    else:
        assert p == math.inf
    for price in (0.5 * pos.entry_price, 2.0 * pos.entry_price):
        assert inv.pnl(price) == pytest.approx(mirror.pnl(1 / price), rel=1e-12, abs=1e-12)


@settings(deadline=None, max_examples=300)
@given(pos=positions(contract=margin.LINEAR), jump=st.floats(0.005, 0.3))
def test_liquidation_price_is_the_boundary_of_the_liquidatable_set_on_a_jumping_table(pos, jump):
    # OKX-style table: no maintenance amounts, MM jumps up at each tier edge.
    n = pos.notional(pos.entry_price)
    rows = [{"notional_floor": 0, "notional_cap": 0.8 * n, "mmr": 0.01, "max_leverage": 50},
            {"notional_floor": 0.8 * n, "notional_cap": 1.1 * n, "mmr": 0.01 + jump,
             "max_leverage": 1 / (0.02 + jump)},
            {"notional_floor": 1.1 * n, "notional_cap": None, "mmr": 0.02 + 2 * jump,
             "max_leverage": 1 / (0.03 + 2 * jump)}]
    rule = MarginRule(TierTable.from_rows(rows))
    lp = margin.position_liquidation_price(pos, rule).price
    grid = [pos.entry_price * (0.2 + 0.002 * i) for i in range(1000)]
    beyond = [p for p in grid if (p > lp * (1 + 1e-9) if pos.side > 0 else p < lp * (1 - 1e-9))]
    assert not any(margin.position_is_liquidatable(pos, p, rule) for p in beyond)
    if lp > 1e-6 * pos.entry_price:  # (a 1x long's root is 0 up to rounding)
        inside = lp * (1 - 1e-9 * pos.side)
        assert margin.position_is_liquidatable(pos, inside, rule) or \
            margin.position_is_liquidatable(pos, lp, rule)


@settings(deadline=None, max_examples=200)
@given(price=st.floats(0.01, 1e6), tick=st.sampled_from([0.01, 0.1, 0.5, 1.0, 5.0]))
def test_tick_rounding_is_against_the_trader(price, tick):
    up = margin.round_to_tick(price, tick, up=True)
    down = margin.round_to_tick(price, tick, up=False)
    assert price - 1e-9 * price <= up < price + tick * (1 + 1e-9)
    assert price - tick * (1 + 1e-9) < down <= price + 1e-9 * price
    assert margin.round_to_tick(up, tick, up=True) == up
