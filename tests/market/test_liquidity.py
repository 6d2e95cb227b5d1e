"""Mark smoothing, depth thinning and recovery, scripted and random gaps."""

from __future__ import annotations

import numpy as np
import pytest

from stress.config import LiquidityConfig
from stress.market.liquidity import path_liquidity, smooth_mark
from stress.runner.seeding import path_rng


def flat(n=200, price=100.0):
    return np.full(n + 1, price)


def test_no_liquidity_section_means_infinite_depth_and_mark_equals_index():
    index = 100 * np.exp(np.linspace(0, -0.1, 11))
    liq = path_liquidity(index, None, 0.0, 1.0, None)
    assert liq.mark is index
    assert np.isinf(liq.depth_bid).all() and (liq.gap_bid == 0).all()


def test_mark_smoothing_half_life():
    index = np.r_[100.0, np.full(20, 50.0)]
    mark = smooth_mark(index, 2.0)
    # After one half-life (2 steps) the mark has covered half the way.
    assert mark[2] == pytest.approx(75.0, rel=1e-12)
    assert mark[4] == pytest.approx(62.5, rel=1e-12)


def test_depth_thins_after_a_jump_and_recovers_with_its_half_life():
    index = flat(120)
    index[11:] *= 0.95  # a 5 % jump at step 11
    cfg = LiquidityConfig(depth=1e6, jump_threshold=0.02, jump_thinning=0.4,
                          recovery_half_life_minutes=10, vol_elasticity=0.0)
    liq = path_liquidity(index, cfg, 0.0, 1.0, None)
    assert liq.depth_bid[10] == 1e6
    assert liq.depth_bid[11] == pytest.approx(0.4e6, rel=1e-12)
    # Half of the missing depth is back 10 minutes later.
    assert liq.depth_bid[21] == pytest.approx(0.7e6, rel=1e-12)


def test_depth_thins_when_realised_vol_is_high():
    rng = np.random.default_rng(0)
    minute = 1 / (365 * 24 * 60)
    calm = 100 * np.exp(np.cumsum(np.r_[0, 0.3 * np.sqrt(minute) * rng.standard_normal(600)]))
    wild = 100 * np.exp(np.cumsum(np.r_[0, 2.4 * np.sqrt(minute) * rng.standard_normal(600)]))
    cfg = LiquidityConfig(depth=1e6, reference_vol=0.6, vol_elasticity=1.0, jump_threshold=0.5)
    d_calm = path_liquidity(calm, cfg, 0.0, 1.0, None).depth_bid[300:]
    d_wild = path_liquidity(wild, cfg, 0.0, 1.0, None).depth_bid[300:]
    assert d_calm.min() == 1e6
    # Vol 4x the reference: depth about a quarter of baseline.
    assert 0.15e6 < np.median(d_wild) < 0.35e6


def test_scripted_depth_collapse_and_gap():
    cfg = LiquidityConfig(depth=1e6, events=[
        {"start_minute": 30, "duration_minutes": 10, "depth_factor": 0.1, "gap": 0.03,
         "side": "bid"}])
    liq = path_liquidity(flat(60), cfg, 0.0, 1.0, None)
    assert liq.depth_bid[29] == 1e6 and liq.depth_bid[30] == pytest.approx(1e5)
    assert liq.depth_bid[39] == pytest.approx(1e5) and liq.depth_bid[40] == 1e6
    assert liq.gap_bid[35] == 0.03 and liq.gap_ask[35] == 0.0
    assert (liq.depth_ask == 1e6).all()


def test_depth_never_below_the_floor():
    cfg = LiquidityConfig(depth=1e6, depth_floor=0.05,
                          events=[{"start_minute": 0, "duration_minutes": 60,
                                   "depth_factor": 0.001}])
    liq = path_liquidity(flat(60), cfg, 0.0, 1.0, None)
    assert liq.depth_bid.min() == pytest.approx(5e4)


def test_random_gaps_follow_their_rate():
    # 24 gap events a day over 100 one-day paths: mean count 24, Poisson sd 0.49 for
    # the mean; bound 5 sd.
    cfg = LiquidityConfig(gaps={"rate_per_day": 24, "width": 0.02, "duration_minutes": 1,
                                "side": "both"})
    counts = []
    for i in range(100):
        liq = path_liquidity(flat(1440), cfg, 0.0, 1.0, path_rng(9, i))
        counts.append(np.count_nonzero(np.diff((liq.gap_bid > 0).astype(int)) == 1))
    assert abs(np.mean(counts) - 24) < 5 * np.sqrt(24 / 100) + 0.5
    assert set(np.unique(liq.gap_bid)) <= {0.0, 0.02}
