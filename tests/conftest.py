from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from stress.exchange.tiers import TierTable, builtin_tiers

GOLDEN = Path(__file__).parent / "golden"
ROOT = Path(__file__).parent.parent


def golden_cases(*files: str) -> list[dict]:
    cases = []
    for f in files:
        cases.extend(json.loads((GOLDEN / f).read_text())["cases"])
    return cases


def flat_tiers(mmr: float, maint_amount: float = 0.0, max_leverage: float = 100.0) -> TierTable:
    return TierTable.from_rows([{"notional_floor": 0, "notional_cap": None, "mmr": mmr,
                                 "maint_amount": maint_amount, "max_leverage": max_leverage}])


def small_tiers() -> TierTable:
    """Three tiers at toy notionals (20, 60), so that random books cross them."""
    return TierTable.from_rows([
        {"notional_floor": 0, "notional_cap": 20, "mmr": 0.01, "maint_amount": 0,
         "max_leverage": 50},
        {"notional_floor": 20, "notional_cap": 60, "mmr": 0.02, "maint_amount": 0.2,
         "max_leverage": 25},
        {"notional_floor": 60, "notional_cap": None, "mmr": 0.05, "maint_amount": 2.0,
         "max_leverage": 10}])


def jump_prices(rng: np.random.Generator, steps: int, vol: float = 0.01, rate: float = 0.05,
                jump_mean: float = -0.05, jump_std: float = 0.08, s0: float = 100.0):
    """A random path of ``steps`` log-normal moves with occasional (mostly downward) jumps."""
    jumps = np.where(rng.random(steps) < rate, rng.normal(jump_mean, jump_std, steps), 0.0)
    return s0 * np.exp(np.cumsum(np.r_[0.0, vol * rng.standard_normal(steps) + jumps]))


@pytest.fixture(scope="session")
def binance_tiers() -> TierTable:
    return builtin_tiers("binance_btcusdt_2021")


def close(got: float, exp: float, tol: dict) -> bool:
    return abs(got - exp) <= max(tol.get("abs", 0.0), tol.get("rel", 0.0) * abs(exp))


@pytest.fixture
def tmp_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def random_book(rng: np.random.Generator, n: int, s0: float = 100.0):
    from stress.population import Book
    lev = rng.choice([2.0, 5.0, 10.0, 20.0, 50.0], n)
    side = np.where(rng.random(n) < 0.5, 1.0, -1.0)
    entry = s0 * np.exp(0.02 * rng.standard_normal(n))
    notional = 10.0 * (1.0 + rng.pareto(1.5, n))
    return Book.from_arrays(side * notional / entry, entry, notional / lev, lev)


def terminal_log_returns(market, n_paths: int, seed: int, steps: int = 1440,
                         dt: float = 1 / (365 * 24 * 60)) -> np.ndarray:
    """log(S_T / S_0) of ``n_paths`` paths of ``market`` from the streams of ``seed``."""
    import math

    from stress.market.paths import price_path
    from stress.runner.seeding import path_rng
    out = np.empty(n_paths)
    for i in range(n_paths):
        p = price_path(market, steps, dt, path_rng(seed, i))
        out[i] = math.log(p[-1] / p[0])
    return out
