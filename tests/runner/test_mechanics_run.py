"""End-to-end runs with the exchange mechanics switched on through the config:
venue presets, inverse contracts, cross margin, stop-losses and top-ups, partial
and stepwise liquidation, a CSV snapshot with behaviour columns."""

from __future__ import annotations

import numpy as np
import pytest

import stress
from stress.config import config_from_dict

BASE = {
    "run": {"name": "mech", "paths": 6, "steps": 240, "seed": 7, "shard_size": 3},
    "market": {"kind": "merton", "s0": 60_000.0, "sigma": 0.9, "jump_intensity": 1500.0,
               "jump_mean": -0.06, "jump_std": 0.04},
    "population": {"kind": "synthetic", "accounts": 800,
                   "leverage": {"values": [5, 10, 20, 40], "weights": None}},
    "fund": {"initial": 2_000.0},
}


def cfg(**sections):
    data = {k: dict(v) if isinstance(v, dict) else v for k, v in BASE.items()}
    for key, value in sections.items():
        data[key] = {**data.get(key, {}), **value}
    return config_from_dict(data)


@pytest.mark.parametrize("preset", ["binance_usdm", "bybit_linear", "okx", "gate",
                                    "hyperliquid"])
def test_every_preset_runs_and_conserves_losses(preset, tmp_path):
    ds = stress.run(cfg(exchange={"preset": preset}), workers=1, out=tmp_path)
    # stress.run checks the loss identity on every path and policy; a crash liquidates.
    assert int(ds.n_liquidations.sum() + ds.n_partial_liquidations.sum()) > 0
    assert "preset: " + preset in ds.attrs["config"]


def test_preset_styles_reach_the_kernel(tmp_path):
    gate = stress.run(cfg(exchange={"preset": "gate"}), workers=1, out=tmp_path / "g")
    full = stress.run(cfg(exchange={"preset": "gate", "liquidation": "full"}), workers=1,
                      out=tmp_path / "f")
    assert int(gate.n_partial_liquidations.sum()) > 0
    assert int(full.n_partial_liquidations.sum()) == 0
    # Hyperliquid returns what is left after a liquidation to the trader: the fund
    # receives nothing (it has no clearance fee either).
    hl = stress.run(cfg(exchange={"preset": "hyperliquid"}), workers=1, out=tmp_path / "h")
    assert float(hl.fund_inflow.sum()) == 0.0


def test_inverse_contract_reports_coin_and_quote(tmp_path):
    c = cfg(exchange={"contract": "inverse", "tiers": [
        {"notional_floor": 0, "notional_cap": None, "mmr": 0.005, "maint_amount": 0,
         "max_leverage": 100}]}, fund={"initial": 0.05})
    ds = stress.run(c, workers=1, out=tmp_path)
    assert ds.shortfall.attrs["units"] == "coin"
    assert ds.shortfall_quote.attrs["units"] == "quote"
    assert ds.attrs["margin_currency"] == "coin"
    sf = ds.shortfall.values
    assert sf.sum() > 0
    # Each coin shortfall is valued at a price of the path: between the path's
    # extremes (the crash paths stay within 20k..100k here).
    ratio = ds.shortfall_quote.values[sf > 0] / sf[sf > 0]
    assert np.all((ratio > 20_000) & (ratio < 100_000))


def test_cross_margin_lowers_liquidations_against_isolated(tmp_path):
    iso = stress.run(cfg(), workers=1, out=tmp_path / "i")
    cross = stress.run(cfg(exchange={"margin_mode": "cross"}), workers=1, out=tmp_path / "c")
    # Same book, same paths; the wallet (free_balance 1× the margin) backs cross accounts.
    assert int(cross.n_liquidations.sum()) < int(iso.n_liquidations.sum())
    assert float(cross.shortfall.sum()) < float(iso.shortfall.sum())


def test_stops_and_top_ups_through_the_config(tmp_path):
    base = stress.run(cfg(), workers=1, out=tmp_path / "b")
    ds = stress.run(cfg(population={"stop_loss": {"adoption": 0.5, "distance": 0.03},
                                    "top_up": {"adoption": 0.5, "budget": 1.0,
                                               "probability": 0.8}},
                        exchange={"margin_alerts": [0.5, 0.8]}), workers=1, out=tmp_path / "s")
    assert int(ds.n_stops.sum()) > 0 and int(ds.n_topups.sum()) > 0
    assert int(ds.n_margin_alerts.sum()) >= int(ds.n_topups.sum())
    assert int(ds.n_liquidations.sum()) < int(base.n_liquidations.sum())
    # Same results with two workers and another shard size (top-up draws per path).
    again = stress.run(cfg(population={"stop_loss": {"adoption": 0.5, "distance": 0.03},
                                       "top_up": {"adoption": 0.5, "budget": 1.0,
                                                  "probability": 0.8}},
                           exchange={"margin_alerts": [0.5, 0.8]},
                           run={"shard_size": 4}), workers=2, out=tmp_path / "s2")
    for var in ("shortfall", "n_topups", "topup_volume", "n_stops"):
        np.testing.assert_array_equal(ds[var].values, again[var].values)


def test_csv_snapshot_with_behaviour_columns_runs(tmp_path):
    rows = ["account_id,qty,entry_price,collateral,leverage,margin_mode,wallet_balance,"
            "stop_price,topup_budget"]
    rng = np.random.default_rng(3)
    for i in range(300):
        side = 1 if i % 2 else -1
        qty = side * rng.uniform(0.01, 2.0)
        entry = 60_000.0 * (1 + 0.01 * rng.standard_normal())
        lev = [5, 10, 20][i % 3]
        coll = abs(qty) * entry / lev
        mode = "cross" if i % 5 == 0 else "isolated"
        stop = entry * (1 - side * 0.04) if i % 7 == 0 else ""
        rows.append(f"a{i},{qty},{entry},{coll},{lev},{mode},{coll * 2},{stop},{coll * (i % 2)}")
    (tmp_path / "book.csv").write_text("\n".join(rows) + "\n")
    data = {k: v for k, v in BASE.items() if k != "population"}
    data["population"] = {"kind": "csv", "path": "book.csv", "top_up": {"probability": 1.0}}
    data["exchange"] = {"margin_alerts": [0.6]}
    ds = stress.run(config_from_dict(data, base_dir=tmp_path), workers=1, out=tmp_path / "r")
    assert int(ds.n_liquidations.sum()) > 0
    assert int(ds.n_topups.sum()) > 0 and int(ds.n_stops.sum()) > 0
