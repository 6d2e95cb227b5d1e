"""Synthetic and snapshot books."""

from __future__ import annotations

import numpy as np
import pytest

from stress.config import CSVPopulation, ExchangeConfig, SyntheticPopulation
from stress.errors import ConfigError
from stress.exchange.tiers import TierTable, builtin_tiers
from stress.population import Book, breached_at, csv_book, synthetic_book, validate_synthetic
from stress.runner.seeding import population_rng


def draw(binance_tiers, seed=1, **kw):
    cfg = SyntheticPopulation(kind="synthetic", **kw)
    return synthetic_book(cfg, binance_tiers, 100_000.0, population_rng(seed))


def test_synthetic_book_respects_the_exchange(binance_tiers):
    book = draw(binance_tiers, accounts=20_000)
    assert len(book) == 20_000
    notional = book.notional
    # Collateral = entry notional / leverage, leverage within the tier's cap.
    np.testing.assert_allclose(book.collateral, notional / book.leverage, rtol=1e-12)
    assert np.all(book.leverage <= binance_tiers.max_leverage_array(notional))
    assert np.all(book.leverage >= 2) and book.leverage.max() == 100
    # Nobody is liquidatable at the start price.
    assert not breached_at(book, 100_000.0, binance_tiers).any()
    # Entry prices around the start price (entry_spread 1 %).
    assert np.all(np.abs(np.log(book.entry / 1e5)) < 0.07)
    assert np.all((notional >= 500 * 0.99) & (notional <= 5e6 * 1.01))


def test_synthetic_book_has_whales_and_both_sides(binance_tiers):
    book = draw(binance_tiers, accounts=20_000, long_fraction=0.6)
    notional = book.notional
    # Pareto(1.3): the top 1 % of accounts hold a large share of open interest.
    top = np.sort(notional)[-200:].sum() / notional.sum()
    assert top > 0.2
    # Long share ~ Binomial(20000, 0.6)/20000: sd 0.0035, bound 5 sd.
    assert abs(np.mean(book.qty > 0) - 0.6) < 5 * 0.0035


def test_synthetic_book_depends_only_on_the_seed(binance_tiers):
    a, b, c = draw(binance_tiers, 3), draw(binance_tiers, 3), draw(binance_tiers, 4)
    np.testing.assert_array_equal(a.qty, b.qty)
    assert not np.array_equal(a.qty, c.qty)


def test_leverage_mix_weights(binance_tiers):
    book = draw(binance_tiers, accounts=10_000,
                leverage={"values": [2, 10], "weights": [3, 1]},
                notional={"minimum": 100, "alpha": 2.0, "maximum": 40_000})
    share2 = np.mean(book.leverage == 2)
    assert abs(share2 - 0.75) < 5 * np.sqrt(0.75 * 0.25 / 10_000)


def _csv(tmp_path, text):
    (tmp_path / "book.csv").write_text(text)
    return CSVPopulation(kind="csv", path=str(tmp_path / "book.csv"))


def test_csv_book(tmp_path, binance_tiers):
    cfg = _csv(tmp_path, "account_id,qty,entry_price,collateral,leverage\n"
                         "a,0.5,60000,3000,10\nb,-1.5,61000,9150,\n")
    book = csv_book(cfg, binance_tiers)
    np.testing.assert_array_equal(book.qty, [0.5, -1.5])
    np.testing.assert_array_equal(book.collateral, [3000, 9150])
    np.testing.assert_allclose(book.leverage, [10, 10])


@pytest.mark.parametrize("text,fragment", [
    ("account_id,qty,entry_price\na,1,100\n", "missing column(s) collateral"),
    ("account_id,qty,entry_price,collateral\na,1,-100,10\n",
     "row 1 (line 2), column entry_price: must be > 0, got -100.0"),
    ("account_id,qty,entry_price,collateral\na,1,100,10\nb,1,100,NaN\n",
     "row 2 (line 3), column collateral: must be a finite number, got 'NaN'"),
    ("account_id,qty,entry_price,collateral\na,1,100,10\na,1,100,10\n",
     "row 2 (line 3), column account_id: duplicate of row 1, got 'a'"),
    ("account_id,qty,entry_price,collateral,leverage\na,10,60000,6000,150\n",
     "row 1 (line 2), column leverage: above the tier table's max leverage 50 for notional "
     "600000, got 150.0"),
    ("account_id,qty,entry_price,collateral\na,1,100,0\n",
     "column collateral: an open position needs collateral > 0"),
])
def test_csv_errors_name_row_and_column(tmp_path, binance_tiers, text, fragment):
    with pytest.raises(ConfigError) as e:
        csv_book(_csv(tmp_path, text), binance_tiers)
    assert str(e.value).startswith("population.path: ")
    assert fragment in str(e.value)


# ------------------------------------------------------------ behaviour fields
FULL_CSV = ("account_id,qty,entry_price,collateral,leverage,margin_mode,wallet_balance,"
            "stop_price,topup_budget\n"
            "a,0.5,60000,3000,10,cross,5000,57000,100\n"
            "b,-1.5,61000,9150,,isolated,,,\n"
            "c,0.1,60000,600,,,600.5,,0\n")


def test_csv_book_reads_the_behaviour_columns(tmp_path, binance_tiers):
    book = csv_book(_csv(tmp_path, FULL_CSV), binance_tiers)
    np.testing.assert_array_equal(book.cross, [True, False, False])  # empty = isolated
    np.testing.assert_allclose(book.free, [2000.0, 0.0, 0.5])
    np.testing.assert_array_equal(book.stop[:1], [57000.0])
    assert np.isnan(book.stop[1:]).all()
    np.testing.assert_array_equal(book.topup_budget, [100.0, 0.0, 0.0])
    np.testing.assert_allclose(book.leverage, [10.0, 10.0, 10.0])
    assert book.cross.dtype == bool and book.free.dtype == np.float64


def test_csv_empty_margin_mode_follows_the_exchange(tmp_path, binance_tiers):
    book = csv_book(_csv(tmp_path, FULL_CSV), binance_tiers,
                    exchange=ExchangeConfig(margin_mode="cross"))
    np.testing.assert_array_equal(book.cross, [True, False, True])


def test_csv_without_behaviour_columns_has_none(tmp_path, binance_tiers):
    book = csv_book(_csv(tmp_path, "account_id,qty,entry_price,collateral\na,1,100,10\n"),
                    binance_tiers)
    assert book.free[0] == 0 and not book.cross[0] and np.isnan(book.stop[0])
    assert book.topup_budget[0] == 0


HEAD = "account_id,qty,entry_price,collateral,"


@pytest.mark.parametrize("column,cell,fragment", [
    ("margin_mode", "portfolio", "must be one of isolated, cross, got 'portfolio'"),
    ("wallet_balance", "5", "must be >= the collateral 10, got 5.0"),
    ("wallet_balance", "nan", "must be a finite number"),
    ("stop_price", "-90", "must be > 0, got -90.0"),
    ("stop_price", "NaN", "must be a finite number, got 'NaN'"),
    ("stop_price", "0", "must be > 0"),
    ("topup_budget", "-1", "must be >= 0, got -1.0"),
    ("leverage", "NaN", "must be a finite number, got 'NaN'"),
    ("leverage", "0.5", "must be >= 1"),
])
def test_csv_bad_behaviour_cell_names_row_and_column(tmp_path, binance_tiers, column, cell,
                                                     fragment):
    text = HEAD + column + "\n" + "a,1,100,10,\n" + f"b,1,100,10,{cell}\n"
    with pytest.raises(ConfigError) as e:
        csv_book(_csv(tmp_path, text), binance_tiers)
    msg = str(e.value)
    assert msg.startswith("population.path: book.csv row 2 (line 3), column "
                          f"{column}: "), msg
    assert fragment in msg


def test_inverse_csv_checks_leverage_on_the_coin_notional(tmp_path):
    # Tier table in coin: up to 10 coin at 100x, above at 20x.
    tiers = TierTable.from_rows([
        {"notional_floor": 0, "notional_cap": 10, "mmr": 0.005, "max_leverage": 100},
        {"notional_floor": 10, "notional_cap": 100, "mmr": 0.01, "maint_amount": 0.05,
         "max_leverage": 20}])
    inverse = ExchangeConfig(contract="inverse", tiers=[])  # tiers unused here
    # 500,000 USD face at 50,000 = 10 coin: tier 1, 50x allowed; collateral 0.2 coin.
    book = csv_book(_csv(tmp_path, "account_id,qty,entry_price,collateral,leverage\n"
                                   "a,500000,50000,0.2,50\nb,-100000,50000,0.4,\n"),
                    tiers, exchange=inverse)
    np.testing.assert_allclose(book.leverage, [50.0, 5.0])  # b: 2 coin / 0.4
    with pytest.raises(ConfigError, match="row 1 .* column leverage: above the tier table's "
                                          "max leverage 20 for notional 12"):
        csv_book(_csv(tmp_path, "account_id,qty,entry_price,collateral,leverage\n"
                                "a,600000,50000,1,50\n"), tiers, exchange=inverse)
    with pytest.raises(ConfigError, match="column qty: notional 200 exceeds"):
        csv_book(_csv(tmp_path, "account_id,qty,entry_price,collateral\n"
                                "a,10000000,50000,100\n"), tiers, exchange=inverse)


def _legacy_book(cfg, tiers, s0, rng):
    """The synthetic book as drawn before behaviour fields existed (reference copy)."""
    n = cfg.accounts
    values = np.asarray(cfg.leverage.values, dtype=np.float64)
    w = np.asarray(cfg.leverage.weights, dtype=np.float64)
    leverage = values[rng.choice(len(values), size=n, p=w / w.sum())]
    notional = np.minimum(cfg.notional.minimum * (1.0 + rng.pareto(cfg.notional.alpha, n)),
                          cfg.notional.maximum)
    side = np.where(rng.random(n) < cfg.long_fraction, 1.0, -1.0)
    entry = s0 * np.exp(cfg.entry_spread * rng.standard_normal(n))
    leverage = np.minimum(leverage, tiers.max_leverage_array(notional))

    def bad(entry):
        qty = side * notional / entry
        equity = notional / leverage + qty * (s0 - entry)
        return equity <= tiers.maintenance_margin_array(np.abs(qty) * s0)

    b = bad(entry)
    if b.any():
        entry = np.where(b, s0 * s0 / entry, entry)
        b = bad(entry)
        if b.any():
            entry = np.where(b, s0, entry)
    return side * notional / entry, entry, notional / leverage, leverage


def test_book_without_behaviour_is_bit_identical_to_the_legacy_draw(binance_tiers):
    cfg = SyntheticPopulation(kind="synthetic", accounts=20_000, entry_spread=0.03)
    book = synthetic_book(cfg, binance_tiers, 100_000.0, population_rng(11))
    qty, entry, collateral, leverage = _legacy_book(cfg, binance_tiers, 100_000.0,
                                                    population_rng(11))
    np.testing.assert_array_equal(book.qty, qty)
    np.testing.assert_array_equal(book.entry, entry)
    np.testing.assert_array_equal(book.collateral, collateral)
    np.testing.assert_array_equal(book.leverage, leverage)
    assert not book.cross.any() and np.isnan(book.stop).all() and not book.topup_budget.any()
    np.testing.assert_array_equal(book.free, cfg.free_balance * book.collateral)


def test_stops_and_top_ups_leave_the_positions_unchanged(binance_tiers):
    plain = draw(binance_tiers, seed=5, accounts=5_000)
    rich = draw(binance_tiers, seed=5, accounts=5_000, stop_loss={"adoption": 0.3},
                top_up={"adoption": 0.4, "budget": 2.0})
    for name in ("qty", "entry", "collateral", "leverage"):
        np.testing.assert_array_equal(getattr(rich, name), getattr(plain, name))


def test_behaviour_adoption_shares(binance_tiers):
    n = 40_000
    book = draw(binance_tiers, seed=2, accounts=n, cross_fraction=0.3,
                stop_loss={"adoption": 0.2, "distance": 0.04},
                top_up={"adoption": 0.6, "budget": 1.5})
    # Each share ~ Binomial(n, p)/n; a 5-sigma bound fails by chance with probability
    # 5.7e-7 per check (normal approximation), 1.7e-6 for the three.
    for share, p in ((book.cross.mean(), 0.3), (np.isfinite(book.stop).mean(), 0.2),
                     ((book.topup_budget > 0).mean(), 0.6)):
        assert abs(share - p) < 5 * np.sqrt(p * (1 - p) / n), (share, p)
    side = np.sign(book.qty)
    s = np.isfinite(book.stop)
    np.testing.assert_allclose(book.stop[s], book.entry[s] * (1 - side[s] * 0.04), rtol=1e-15)
    t = book.topup_budget > 0
    np.testing.assert_allclose(book.topup_budget[t], 1.5 * book.collateral[t], rtol=1e-15)


def test_cross_follows_the_exchange_margin_mode(binance_tiers):
    cfg = SyntheticPopulation(kind="synthetic", accounts=500)
    book = synthetic_book(cfg, binance_tiers, 100_000.0, population_rng(1),
                          exchange=ExchangeConfig(margin_mode="cross"))
    assert book.cross.all()
    # No draw for it: the positions are those of the isolated book.
    iso = synthetic_book(cfg, binance_tiers, 100_000.0, population_rng(1))
    assert not iso.cross.any()
    np.testing.assert_array_equal(book.leverage, iso.leverage)


def test_inverse_synthetic_book_is_coin_margined(binance_tiers):
    # A coin-margined table: brackets in coin.
    tiers = TierTable.from_rows([
        {"notional_floor": 0, "notional_cap": 5, "mmr": 0.005, "max_leverage": 100},
        {"notional_floor": 5, "notional_cap": 1000, "mmr": 0.01, "maint_amount": 0.025,
         "max_leverage": 50}])
    inverse = ExchangeConfig(contract="inverse", tiers=[])
    cfg = SyntheticPopulation(kind="synthetic", accounts=5_000)
    s0 = 50_000.0
    book = synthetic_book(cfg, tiers, s0, population_rng(3), exchange=inverse)
    face = np.abs(book.qty)  # USD
    assert face.min() >= 500 * 0.999 and face.max() <= 5e6 * 1.001
    np.testing.assert_allclose(book.collateral * book.entry * book.leverage, face, rtol=1e-12)
    coin = face / book.entry
    assert np.all(book.leverage <= tiers.max_leverage_array(coin))
    assert (coin > 5).any()  # some positions are in the 50x tier
    assert not breached_at(book, s0, tiers, inverse).any()


def test_breached_at_entry_basis_and_requirement_fee():
    tiers = TierTable.from_rows([
        {"notional_floor": 0, "notional_cap": 10_000, "mmr": 0.01, "max_leverage": 50},
        {"notional_floor": 10_000, "mmr": 0.02, "maint_amount": 100, "max_leverage": 25}])
    # Long 1 @ 100, collateral 10. At p = 91: equity 1, mark notional 91, MM 0.91.
    book = Book.from_arrays([1.0], [100.0], [10.0])
    assert not breached_at(book, 91.0, tiers)[0]
    # Entry basis: MM on 100 → 1.0 ≥ equity 1 → breached.
    assert breached_at(book, 91.0, tiers, ExchangeConfig(mm_basis="entry"))[0]
    # Requirement fee 0.1 %: 0.91 + 0.091 = 1.001 ≥ 1 → breached; at 91.1 equity 1.1 >
    # 0.911 + 0.0911 = 1.0021 → not.
    fee = ExchangeConfig(requirement_fee_rate=0.001)
    assert breached_at(book, 91.0, tiers, fee)[0]
    assert not breached_at(book, 91.1, tiers, fee)[0]
    # Short 200 @ 60 (notional 12,000, tier 2), collateral 500. At p = 62: equity 100;
    # mark MM = 12,400·0.02 − 100 = 148 → breached; entry MM = 12,000·0.02 − 100 = 140.
    short = Book.from_arrays([-200.0], [60.0], [500.0])
    assert breached_at(short, 62.0, tiers)[0]
    # At p = 61.7: equity 160 > 146.8 (mark) and > 140 (entry) → neither.
    assert not breached_at(short, 61.7, tiers)[0]
    assert not breached_at(short, 61.7, tiers, ExchangeConfig(mm_basis="entry"))[0]
    # At p = 61.75: equity 150 > mark MM 147 but with fee 0.05 %: 147 + 6.175 → breached.
    assert not breached_at(short, 61.75, tiers)[0]
    assert breached_at(short, 61.75, tiers, ExchangeConfig(requirement_fee_rate=0.0005))[0]


def test_breached_at_counts_a_cross_accounts_free_balance():
    tiers = TierTable.from_rows([{"notional_floor": 0, "mmr": 0.01, "max_leverage": 50}])
    iso = Book.from_arrays([1.0], [100.0], [10.0], free=[5.0])
    cross = Book.from_arrays([1.0], [100.0], [10.0], free=[5.0], cross=[True])
    # At 90.5 the isolated account has equity 0.5 ≤ MM 0.905; the cross one 5.5.
    assert breached_at(iso, 90.5, tiers)[0]
    assert not breached_at(cross, 90.5, tiers)[0]  # 5.5 > 0.905
    assert breached_at(cross, 85.5, tiers)[0]  # 0.5 ≤ 0.855


def test_breached_at_inverse():
    tiers = TierTable.from_rows([{"notional_floor": 0, "mmr": 0.005, "max_leverage": 100}])
    inverse = ExchangeConfig(contract="inverse", tiers=[])
    # Long 10,000 USD @ 50,000 with 0.01 coin (20x). At 48,000: PnL = 10,000·(1/50,000 −
    # 1/48,000) = −0.008333 coin; equity 0.0016667; MM = 0.005·10,000/48,000 = 0.0010417.
    book = Book.from_arrays([10_000.0], [50_000.0], [0.01], leverage=[20.0])
    assert not breached_at(book, 48_000.0, tiers, inverse)[0]
    # At 47,700: equity 0.01 − 0.0096436 = 0.000356 ≤ MM 0.001048 → breached.
    assert breached_at(book, 47_700.0, tiers, inverse)[0]
    # At 47,850: equity 0.21 − 10,000/47,850 = 0.0010136 ≤ mark MM 50/47,850 = 0.0010449
    # (breached), but > entry MM 0.005·10,000/50,000 = 0.001 (not).
    entry = ExchangeConfig(contract="inverse", mm_basis="entry", tiers=[])
    assert breached_at(book, 47_850.0, tiers, inverse)[0]
    assert not breached_at(book, 47_850.0, tiers, entry)[0]


def test_breached_at_reproduces_bybits_entry_basis_example():
    # Bybit help "Liquidation Price (USDT Contract)" Example 1 (golden bybit_linear.json,
    # bybit-off-usdt-iso-long-lp): long 1 @ 20,000, IM 400, MMR 0.5 % on entry value →
    # LP = 20,000 − (400 − 100) = 19,700.
    tiers = TierTable.from_rows([{"notional_floor": 0, "mmr": 0.005, "max_leverage": 100}])
    book = Book.from_arrays([1.0], [20_000.0], [400.0])
    entry = ExchangeConfig(mm_basis="entry")
    assert breached_at(book, 19_700.0, tiers, entry)[0]
    assert not breached_at(book, 19_700.01, tiers, entry)[0]
    # The mark-basis formula liquidates lower (19,698.49 in the golden note).
    assert not breached_at(book, 19_699.0, tiers)[0]


def test_book_from_arrays_keeps_the_positional_call():
    book = Book.from_arrays([1.0, -2.0], [100.0, 50.0], [10.0, 20.0])
    np.testing.assert_allclose(book.leverage, [10.0, 5.0])
    assert book.cross.dtype == bool and len(book.free) == 2 and np.isnan(book.stop).all()
    legacy = Book(book.qty, book.entry, book.collateral, book.leverage)
    assert legacy.topup_budget.tolist() == [0.0, 0.0]


def test_validate_synthetic_inverse_uses_the_coin_cap():
    tiers = TierTable.from_rows([{"notional_floor": 0, "notional_cap": 100, "mmr": 0.005,
                                  "max_leverage": 100}])
    inverse = ExchangeConfig(contract="inverse", tiers=[])
    cfg = SyntheticPopulation(kind="synthetic", notional={"maximum": 4_000_000})
    validate_synthetic(cfg, tiers, None, exchange=inverse, s0=50_000.0)  # 80 coin
    with pytest.raises(ConfigError, match="population.notional.maximum: 160 coin"):
        validate_synthetic(cfg, tiers, None, exchange=inverse, s0=25_000.0)
    with pytest.raises(ConfigError, match="last cap 100"):
        validate_synthetic(cfg, tiers, None)  # linear: 4M quote > 100


# ------------------------------------------------------------ liquidation levels
def test_liquidation_levels_bins_the_hand_computed_prices():
    from stress.population import liquidation_levels, liquidation_prices
    # Binance tier 1 (MMR 0.4 %): long 1 @ 100 with 10 → (100 − 10)/0.996 = 90.361;
    # short 1 @ 100 with 10 → 110/1.004 = 109.562; long 2 @ 100 with 10 → 190/1.992 =
    # 95.382; a cross long with 20 more in its wallet → 70/0.996 = 70.281.
    tiers = builtin_tiers("binance_btcusdt_2021")
    book = Book.from_arrays([1.0, -1.0, 2.0, 1.0], [100.0] * 4, [10.0] * 4,
                            free=[0.0, 0.0, 0.0, 20.0], cross=[False, False, False, True])
    lp = liquidation_prices(book, tiers)
    np.testing.assert_allclose(lp, [90 / 0.996, 110 / 1.004, 190 / 1.992, 70 / 0.996],
                               rtol=1e-12)
    ds = liquidation_levels(book, 100.0, tiers, bins=np.array([60, 80, 90, 95, 100, 105, 110]))
    np.testing.assert_allclose(ds.long_notional, [lp[3], 0, lp[0], 2 * lp[2], 0, 0], rtol=1e-12)
    np.testing.assert_allclose(ds.short_notional, [0, 0, 0, 0, 0, lp[1]], rtol=1e-12)
    np.testing.assert_array_equal(ds.long_accounts, [1, 0, 1, 1, 0, 0])
    # A fall to the 80–90 bin liquidates everything long from 95.4 down to it.
    assert float(ds.cumulative_long[1]) == pytest.approx(lp[0] + 2 * lp[2], rel=1e-12)
    assert float(ds.cumulative_short[-1]) == pytest.approx(lp[1], rel=1e-12)
    # Default bins cover mark ± 30 %; all four prices fall inside.
    ds = liquidation_levels(book, 100.0, tiers)
    assert ds.sizes["price"] == 50
    total = float(ds.long_notional.sum() + ds.short_notional.sum())
    assert total == pytest.approx(lp[0] + lp[1] + 2 * lp[2] + lp[3], rel=1e-12)


def test_liquidation_levels_separate_what_is_liquidatable_now():
    from stress.population import liquidation_levels
    tiers = builtin_tiers("binance_btcusdt_2021")
    book = Book.from_arrays([1.0, 1.0], [100.0, 100.0], [10.0, 5.0])  # LPs 90.36, 95.38
    ds = liquidation_levels(book, 93.0, tiers)
    assert ds.attrs["liquidatable_now_long"] == pytest.approx(95 / 0.996, rel=1e-12)
    assert float(ds.long_notional.sum()) == pytest.approx(90 / 0.996, rel=1e-12)
    with pytest.raises(ConfigError):
        liquidation_levels(book, -1.0, tiers)
    with pytest.raises(ConfigError):
        liquidation_levels(book, 93.0, tiers, bins=np.array([3.0, 2.0]))


def test_liquidation_levels_follow_the_exchange_rules():
    from stress.population import liquidation_prices
    book = Book.from_arrays([1.0], [20_000.0], [400.0])
    flat = [{"notional_floor": 0, "notional_cap": None, "mmr": 0.005, "maint_amount": 0,
             "max_leverage": 100}]
    t = TierTable.from_rows(flat)
    # Bybit's entry basis: 20,000 − 400 + 100 = 19,700 (golden bybit-off-usdt-iso-long-lp).
    ex = ExchangeConfig(mm_basis="entry")
    assert liquidation_prices(book, t, ex)[0] == pytest.approx(19_700.0, rel=1e-12)
    # Inverse: 30,000 USD short @ 30,000 with 0.04 coin → 31,093.75 (golden BitMEX).
    inv = Book.from_arrays([-30_000.0], [30_000.0], [0.04])
    lp = liquidation_prices(inv, t, ExchangeConfig(contract="inverse"))
    assert lp[0] == pytest.approx(31_093.75, rel=1e-12)


def test_venue_leverage_cap_keeps_the_notional_and_adds_collateral(binance_tiers):
    cfg = SyntheticPopulation(kind="synthetic", accounts=20_000)
    free = synthetic_book(cfg, binance_tiers, 1e5, population_rng(3))
    capped = synthetic_book(cfg, binance_tiers, 1e5, population_rng(3),
                            exchange=ExchangeConfig(max_leverage=10))
    assert capped.leverage.max() == 10 and free.leverage.max() == 100
    np.testing.assert_array_equal(capped.leverage, np.minimum(free.leverage, 10))
    # The same positions (the notional draw; the sign), with notional / 10 collateral
    # where the draw was above the cap.
    np.testing.assert_allclose(capped.notional, free.notional, rtol=1e-12)
    np.testing.assert_array_equal(np.sign(capped.qty), np.sign(free.qty))
    np.testing.assert_allclose(capped.collateral, capped.notional / capped.leverage, rtol=1e-12)
    assert not breached_at(capped, 1e5, binance_tiers).any()


def test_venue_leverage_cap_on_a_csv_book(tmp_path, binance_tiers):
    cfg = _csv(tmp_path, "account_id,qty,entry_price,collateral\n"
                         "a,0.5,60000,1500\nb,-1.5,60000,9000\n")
    book = csv_book(cfg, binance_tiers, exchange=ExchangeConfig(max_leverage=12.5))
    # a: 30,000 notional at 20x -> 12.5x, collateral 2,400; b: 10x stays.
    np.testing.assert_allclose(book.collateral, [2400, 9000])
    np.testing.assert_allclose(book.leverage, [12.5, 10])
    np.testing.assert_array_equal(book.qty, [0.5, -1.5])


def test_venue_leverage_cap_must_be_at_least_one():
    with pytest.raises(ValueError, match="greater than or equal to 1"):
        ExchangeConfig(max_leverage=0.5)
