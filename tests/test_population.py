"""Synthetic and snapshot books."""

from __future__ import annotations

import numpy as np
import pytest

from stress.config import CSVPopulation, SyntheticPopulation
from stress.errors import ConfigError
from stress.population import breached_at, csv_book, synthetic_book
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
