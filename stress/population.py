"""Account populations (books) as struct-of-arrays.

Synthetic books draw leverage from a mix, notional from a Pareto law capped
at a maximum (a few whales), the side, and an entry price around the start
price; collateral is entry notional over leverage. A snapshot book is read
from CSV.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from stress._csv import CSVTable
from stress.errors import ConfigError
from stress.exchange.tiers import TierTable


@dataclass(frozen=True)
class Book:
    """Isolated linear positions: signed base quantity, entry price, collateral (quote)."""

    qty: np.ndarray
    entry: np.ndarray
    collateral: np.ndarray
    leverage: np.ndarray  # nominal leverage (notional at entry / collateral) or as given

    def __len__(self) -> int:
        return len(self.qty)

    @property
    def notional(self) -> np.ndarray:
        """Entry notional, quote."""
        return np.abs(self.qty) * self.entry

    @classmethod
    def from_arrays(cls, qty, entry, collateral, leverage=None) -> "Book":
        qty = np.asarray(qty, dtype=np.float64)
        entry = np.asarray(entry, dtype=np.float64)
        collateral = np.asarray(collateral, dtype=np.float64)
        if leverage is None:
            with np.errstate(divide="ignore", invalid="ignore"):
                leverage = np.abs(qty) * entry / collateral
        return cls(qty, entry, collateral, np.asarray(leverage, dtype=np.float64))


def breached_at(book: Book, price: float, tiers: TierTable) -> np.ndarray:
    """Mask of accounts whose equity ≤ maintenance margin at ``price``."""
    notional = np.abs(book.qty) * price
    equity = book.collateral + book.qty * (price - book.entry)
    return (book.qty != 0) & (equity <= tiers.maintenance_margin_array(notional))


def synthetic_book(cfg, tiers: TierTable, s0: float, rng: np.random.Generator) -> Book:
    """Draw a synthetic book (see :class:`stress.config.SyntheticPopulation`).

    Leverage is capped at the maximum the tier of the position's notional
    allows (the exchange would refuse more). An account whose draw would be
    liquidatable at the start price does not exist on a live book; its entry
    move is mirrored (``entry → s0²/entry``) so that it starts in profit.
    """
    n = cfg.accounts
    values = np.asarray(cfg.leverage.values, dtype=np.float64)
    if cfg.leverage.weights is None:
        p = np.full(len(values), 1.0 / len(values))
    else:
        w = np.asarray(cfg.leverage.weights, dtype=np.float64)
        p = w / w.sum()
    leverage = values[rng.choice(len(values), size=n, p=p)]
    notional = np.minimum(cfg.notional.minimum * (1.0 + rng.pareto(cfg.notional.alpha, n)),
                          cfg.notional.maximum)
    side = np.where(rng.random(n) < cfg.long_fraction, 1.0, -1.0)
    entry = s0 * np.exp(cfg.entry_spread * rng.standard_normal(n))
    leverage = np.minimum(leverage, tiers.max_leverage_array(notional))
    qty = side * notional / entry
    collateral = notional / leverage
    book = Book(qty, entry, collateral, leverage)
    bad = breached_at(book, s0, tiers)
    if bad.any():
        entry = np.where(bad, s0 * s0 / entry, entry)
        qty = side * notional / entry
        collateral = notional / leverage
        book = Book(qty, entry, collateral, leverage)
        bad = breached_at(book, s0, tiers)
        if bad.any():  # tier edge cases: open at the start price
            entry = np.where(bad, s0, entry)
            qty = side * notional / entry
            book = Book(qty, entry, collateral, leverage)
    return book


def csv_book(cfg, tiers: TierTable, key: str = "population.path",
             source: str | None = None, base=None) -> Book:
    """Read a snapshot CSV: ``account_id, qty, entry_price, collateral[, leverage]``."""
    path = base.resolve(cfg.path) if base is not None else cfg.path
    table = CSVTable(path, key, source, ("account_id", "qty", "entry_price", "collateral"))
    ids = table.strings("account_id")
    seen: dict[str, int] = {}
    for i, a in enumerate(ids):
        if a in seen:
            raise table.error(i, "account_id", f"duplicate of row {seen[a] + 1}", a)
        seen[a] = i
    qty = table.floats("qty")
    entry = table.floats("entry_price", positive=True)
    collateral = table.floats("collateral", nonnegative=True)
    has_lev = "leverage" in table.columns
    lev = table.floats("leverage", optional=True) if has_lev else [math.nan] * len(qty)
    for i in range(len(qty)):
        notional = abs(qty[i]) * entry[i]
        if has_lev and not math.isnan(lev[i]):
            if lev[i] < 1:
                raise table.error(i, "leverage", "must be >= 1", lev[i])
            cap = tiers.max_leverage_for(notional)
            if lev[i] > cap:
                raise table.error(i, "leverage", f"above the tier table's max leverage {cap:g} "
                                                 f"for notional {notional:g}", lev[i])
        if qty[i] != 0 and collateral[i] <= 0:
            raise table.error(i, "collateral", "an open position needs collateral > 0",
                              collateral[i])
        if notional > tiers.cap[-1]:
            raise table.error(i, "qty", f"notional {notional:g} exceeds the tier table's last "
                                        f"cap {tiers.cap[-1]:g}", qty[i])
    lev_arr = np.asarray(lev, dtype=np.float64)
    nominal = np.divide(np.abs(qty) * np.asarray(entry), np.asarray(collateral),
                        out=np.full(len(qty), np.inf), where=np.asarray(collateral) > 0)
    lev_arr = np.where(np.isnan(lev_arr), nominal, lev_arr)
    return Book.from_arrays(qty, entry, collateral, lev_arr)


def validate_synthetic(cfg, tiers: TierTable, source: str | None) -> None:
    """Cross-checks of a synthetic population against the tier table."""
    top = float(tiers.max_leverage[0])
    for i, v in enumerate(cfg.leverage.values):
        if v > top:
            raise ConfigError(f"population.leverage.values.{i}",
                              f"leverage above the tier table's maximum {top:g}", v, source)
    if cfg.notional.maximum > tiers.cap[-1]:
        raise ConfigError("population.notional.maximum",
                          f"above the tier table's last cap {tiers.cap[-1]:g}",
                          cfg.notional.maximum, source)
