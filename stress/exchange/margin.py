"""Margin arithmetic of a linear (quote-margined) isolated position, in plain Python.

These are the reference formulas: the kernels in :mod:`stress.exchange.kernels`
compute the same quantities and the tests check both against each other and
against the exchanges' published examples. Conventions: ``qty`` is signed
(+ long, − short) in base units; prices and money in quote units.
"""

from __future__ import annotations

import math

from stress.exchange.tiers import TierTable


def side(qty: float) -> float:
    """+1 for a long, −1 for a short, 0 for no position."""
    return (qty > 0) - (qty < 0)


def unrealized_pnl(qty: float, entry_price: float, mark_price: float) -> float:
    """``qty·(mark − entry)`` in quote."""
    return qty * (mark_price - entry_price)


def equity(qty: float, entry_price: float, collateral: float, mark_price: float) -> float:
    """Isolated position equity (margin balance): collateral plus unrealised PnL."""
    return collateral + unrealized_pnl(qty, entry_price, mark_price)


def initial_margin(qty: float, price: float, leverage: float) -> float:
    return abs(qty) * price / leverage


def roe(qty: float, entry_price: float, mark_price: float, leverage: float) -> float:
    """Return on the initial margin ``|qty|·entry/leverage``."""
    return unrealized_pnl(qty, entry_price, mark_price) / initial_margin(qty, entry_price, leverage)


def maintenance_margin(notional: float, tiers: TierTable | None = None, mmr: float | None = None,
                       maint_amount: float = 0.0) -> float:
    """``notional·mmr − maint_amount``, with the tier holding ``notional`` if tiers are given."""
    if tiers is not None:
        return tiers.maintenance_margin(notional)
    return notional * mmr - maint_amount


def is_liquidatable(qty: float, entry_price: float, collateral: float, mark_price: float,
                    tiers: TierTable) -> bool:
    """The liquidation trigger: equity ≤ maintenance margin at the mark."""
    if qty == 0:
        return False
    mm = tiers.maintenance_margin(abs(qty) * mark_price)
    return equity(qty, entry_price, collateral, mark_price) <= mm


def margin_ratio(maintenance_margin: float, margin_balance: float) -> float:
    """Maintenance margin / margin balance (≥ 1 means liquidation)."""
    return maintenance_margin / margin_balance if margin_balance > 0 else math.inf


def bankruptcy_price(qty: float, entry_price: float, collateral: float) -> float:
    """The price at which the position's equity is exactly zero."""
    return entry_price - collateral / qty


def liquidation_price(qty: float, entry_price: float, collateral: float,
                      tiers: TierTable) -> float:
    """Price at which equity equals the maintenance margin, the tier taken at that price.

    For a long this is the highest price at which the position is liquidatable,
    for a short the lowest. With a continuous table (maintenance amounts from
    the cumulative rule) it is the unique root of ``equity(p) = MM(|q|·p)``.
    """
    q = abs(qty)
    s = side(qty)
    best = -math.inf if s > 0 else math.inf
    n = len(tiers)
    for k in range(n):
        m, a = tiers.mmr[k], tiers.maint_amount[k]
        lo = tiers.floor[k] / q
        hi = tiers.cap[k] / q if k < n - 1 else math.inf
        # equity(p) − MM(p) = C + s·q·(p − E) − (q·p·m − a)  is linear in p.
        root = (s * q * entry_price - collateral - a) / (q * (s - m))
        if s > 0:
            if root > lo or k == 0:
                best = max(best, min(root, hi))
        else:
            if root <= hi:
                best = min(best, max(root, lo))
    return best


def adl_score(qty: float, entry_price: float, collateral: float, mark_price: float,
              pnl_basis: str = "collateral") -> float:
    """ADL queue score: profit % times effective leverage (loss % divided by it).

    ``pnl_basis="collateral"`` takes PnL% on the position's margin (the issue's
    ``(uPnL / collateral)·(notional / equity)``); ``"entry_value"`` takes it on the
    entry notional (BitMEX/Bybit/Binance documentation). Effective leverage is
    mark notional over equity. Without margin (collateral or equity ≤ 0) the
    score is ±inf: such a winner is first in the queue.
    """
    upnl = unrealized_pnl(qty, entry_price, mark_price)
    eq = collateral + upnl
    base = collateral if pnl_basis == "collateral" else abs(qty) * entry_price
    if base <= 0 or eq <= 0:
        # No margin left (spent by an earlier ADL or by funding): infinite leverage.
        return math.inf if upnl > 0 else -math.inf
    pnl_pct = upnl / base
    eff_lev = abs(qty) * mark_price / eq
    return pnl_pct * eff_lev if pnl_pct > 0 else pnl_pct / eff_lev
