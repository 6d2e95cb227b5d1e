"""Margin formulas of the simulator's isolated linear positions: the seed article's facts,
the Binance bracket example and agreement with the kernel's liquidation thresholds.

Every golden vector (tests/golden, all venues and conventions) is checked through
``stress.exchange.conformance`` in ``test_conformance.py``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from stress.exchange import margin
from stress.exchange.kernels import liquidation_threshold


def test_seed_article_facts():
    # 100 USD of margin at 10x is 1,000 USD of notional: ±1% moves PnL by ±10 USD.
    q = 1_000.0 / 100.0
    assert margin.unrealized_pnl(q, 100.0, 101.0) == pytest.approx(10.0, rel=1e-12)
    assert margin.unrealized_pnl(q, 100.0, 99.0) == pytest.approx(-10.0, rel=1e-12)
    # 1,000 USDT at 10x long: a 10% fall leaves equity 0 (the bankruptcy price).
    q = 10_000.0 / 50_000.0
    assert margin.equity(q, 50_000.0, 1_000.0, 45_000.0) == pytest.approx(0.0, abs=1e-9)
    assert margin.bankruptcy_price(q, 50_000.0, 1_000.0) == pytest.approx(45_000.0, rel=1e-12)
    # Margin ratio = maintenance margin / margin balance = 50 / 1,000.
    assert margin.margin_ratio(50.0, 1_000.0) == 0.05


def test_binance_faq_bracket_example(binance_tiers):
    # Binance FAQ: a 3.5M USDT position is in the 2.5% bracket with a 16,300 amount.
    k = binance_tiers.index(3_500_000.0)
    assert (binance_tiers.mmr[k], binance_tiers.maint_amount[k]) == (0.025, 16_300.0)


@pytest.mark.parametrize("qty,collateral", [(0.5, 240.0), (50.0, 150_000.0), (300.0, 1.5e6),
                                            (-600.0, 6e6), (-0.01, 0.5), (2.0, 1e6)])
def test_kernel_threshold_is_the_liquidation_price(binance_tiers, qty, collateral):
    t = binance_tiers
    lp = margin.liquidation_price(qty, 60_000.0, collateral, t)
    thr = liquidation_threshold(qty, 60_000.0, collateral, t.floor, t.kernel_cap, t.mmr,
                                t.maint_amount)
    assert thr == pytest.approx(lp, rel=2e-9)
    # The threshold is on the safe side of the exact trigger.
    assert (thr >= lp) if qty > 0 else (thr <= lp)
    if lp > 0:
        assert margin.is_liquidatable(qty, 60_000.0, collateral, lp * (1 - math.copysign(1e-9, qty)),
                                      t)
        assert not margin.is_liquidatable(qty, 60_000.0, collateral,
                                          lp * (1 + math.copysign(1e-6, qty)), t)


def test_threshold_bounds_the_trigger_on_a_discontinuous_table():
    # OKX-style table without maintenance amounts: MM jumps at the bracket edge.
    from stress.exchange.tiers import TierTable
    t = TierTable.from_rows([
        {"notional_floor": 0, "notional_cap": 1000, "mmr": 0.01, "maint_amount": 0,
         "max_leverage": 50},
        {"notional_floor": 1000, "notional_cap": None, "mmr": 0.2, "maint_amount": 0,
         "max_leverage": 4}])
    qty, entry, coll = 10.0, 100.0, 150.0
    thr = liquidation_threshold(qty, entry, coll, t.floor, t.kernel_cap, t.mmr, t.maint_amount)
    for p in np.linspace(1.0, 300.0, 3001):
        if margin.is_liquidatable(qty, entry, coll, p, t):
            assert p <= thr
