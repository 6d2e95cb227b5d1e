"""Policies end to end: layer options in a config, the fund trajectory, loss shares, money
conservation on every path of a run, determinism, and the analysis on a real run."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

import stress
from stress import analysis
from stress.config import config_from_dict
from stress.errors import ConservationError
from stress.runner.shard import check_identity, money_error
from stress.runner.variables import BEARERS, INDEX, PATH_METRICS

CONFIG = {
    "run": {"name": "policies", "paths": 16, "steps": 240, "seed": 7, "shard_size": 6},
    "market": {"kind": "merton", "s0": 100.0, "sigma": 0.9, "jump_intensity": 1500.0,
               "jump_mean": -0.06, "jump_std": 0.04},
    "population": {"kind": "synthetic", "accounts": 1200,
                   "stop_loss": {"adoption": 0.2, "distance": 0.05}},
    "exchange": {"liquidation_fee_rate": 0.004, "slippage": 0.003,
                 "funding": {"mode": "constant", "rate": 0.0001, "interval_minutes": 60}},
    "fund": {"initial": 150.0, "fee_share": 0.5, "record_every_minutes": 30},
    "policies": [
        {"name": "score", "layers": ["insurance_fund", "adl"]},
        {"name": "risk", "layers": ["insurance_fund", {"adl": {"ranking": "risk_based"}}]},
        {"name": "pro-rata", "layers": [{"adl": {"ranking": "pro_rata"}}, "platform"]},
        {"name": "lev", "layers": [{"adl": {"ranking": "leverage"}}]},
        {"name": "soc-day", "layers": [{"socialised": {"settlement": "day"}}, "platform"]},
        {"name": "soc-funding", "layers": [{"socialised": {"settlement": "funding"}}]},
        {"name": "capped", "layers": [{"insurance_fund": {"initial": 100.0, "cap": 120.0}},
                                      "platform"]},
    ],
}


def cfg(**run):
    return config_from_dict({**CONFIG, "run": {**CONFIG["run"], **run}})


@pytest.fixture(scope="module")
def policy_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("policies")
    return stress.run(cfg(), workers=1, out=out), out


def test_layer_options_reach_the_results(policy_run):
    ds, _ = policy_run
    assert list(ds.layers.values) == [
        "insurance_fund>adl", "insurance_fund>adl[risk_based]", "adl[pro_rata]>platform",
        "adl[leverage]", "socialised[day]>platform", "socialised[funding]",
        "insurance_fund[100.0,120.0]>platform"]
    np.testing.assert_array_equal(ds.fund_initial, [150.0] * 6 + [100.0])
    np.testing.assert_array_equal(ds.fund_cap, [np.inf] * 6 + [120.0])
    assert float(ds.shortfall.sum()) > 0
    for name in ("score", "risk", "pro-rata", "lev"):
        assert float(ds.adl_cost.sel(policy=name).sum()) > 0, name
    for name in ("soc-day", "soc-funding"):
        assert float(ds.socialised_loss.sel(policy=name).sum()) > 0, name
    assert float(ds.fund_overflow.sel(policy="capped").sum()) > 0


def test_money_is_conserved_on_every_path_and_policy(policy_run):
    ds, _ = policy_run
    out = np.stack([ds[v.name].values.astype(float) for v in PATH_METRICS], axis=-1)
    err, scale = money_error(out, ds.fund_initial.values[:, None])
    assert np.all(np.abs(err) <= 1e-9 * scale)
    # Funding and fees moved money: the check is not vacuous.
    assert float(ds.funding_volume.min()) > 0 and float(ds.fee_revenue.sum()) > 0


def test_a_broken_balance_sheet_fails_loudly():
    out = np.zeros((2, 3, len(PATH_METRICS)))
    out[:, :, INDEX["fund_final"]] = 10.0
    out[1, 2, INDEX["market_pnl"]] = -1.0  # a trader lost 1 to the market: nobody has it
    check_identity(out[:1], ["a"], fund_initial=[10.0])
    with pytest.raises(ConservationError, match="money not conserved on path 2, policy b"):
        check_identity(out, ["a", "b"], fund_initial=[10.0, 10.0])


def test_fund_trajectory_and_loss_shares(policy_run):
    ds, _ = policy_run
    assert ds.fund.dims == ("policy", "path", "time")
    np.testing.assert_array_equal(ds.time, np.arange(0.0, 241.0, 30.0))
    xr.testing.assert_equal(ds.fund.isel(time=0, drop=True).reset_coords(drop=True),
                            ds.fund_initial.broadcast_like(ds.fund_final).reset_coords(drop=True)
                            .rename(None).transpose("policy", "path"))
    np.testing.assert_array_equal(ds.fund.isel(time=-1), ds.fund_final)
    assert float(ds.fund.sel(policy="capped").max()) <= 120.0
    assert float(ds.fund.min()) >= 0.0
    # The lowest balance may fall between two recorded points, never below them.
    assert bool((ds.fund.min("time") >= ds.fund_min).all())
    assert list(ds.bearer.values) == list(BEARERS)
    hit = ds.shortfall > 0
    np.testing.assert_allclose(ds.loss_share.sum("bearer").where(hit).dropna("path", how="all"),
                               1.0, rtol=1e-9)
    assert bool(ds.loss_share.where(~hit).isnull().all())
    np.testing.assert_allclose(ds.loss_share.sel(bearer="fund") * ds.shortfall,
                               ds.fund_paid.where(hit), rtol=1e-12)


def test_policy_metrics_are_consistent(policy_run):
    ds, _ = policy_run
    # Without a fund layer there is no fund need; with one it covers what was paid net.
    assert bool(ds.fund_need.sel(policy=["pro-rata", "lev", "soc-day"]).isnull().all())
    assert bool((ds.fund_need.sel(policy="score") >= 0).all())
    # Where the fund never ran dry, the initial fund was enough: need ≤ initial; where it
    # did, more was needed.
    score = ds.sel(policy="score")
    dry = score.fund_depleted.values == 1
    assert dry.any() and (~dry).any()
    assert np.all(score.fund_need.values[~dry] <= float(score.fund_initial))
    assert np.all(score.fund_need.values[dry] > float(score.fund_initial))
    # Accounts hit only under ADL and socialised layers.
    assert int(ds.n_accounts_hit.sel(policy="capped").sum()) == 0
    assert int(ds.n_accounts_hit.sel(policy="lev").sum()) > 0
    gini = ds.loss_gini.sel(policy=["lev", "pro-rata", "soc-day"]).values
    gini = gini[~np.isnan(gini)]
    assert gini.size > 0 and np.all((gini >= 0) & (gini <= 1))
    rate = ds.haircut_rate_max.sel(policy="soc-day").values
    rate = rate[~np.isnan(rate)]
    assert rate.size > 0 and np.all((rate > 0) & (rate <= 1))
    # The platform's worst step is part of its total.
    assert bool((ds.platform_max_step <= ds.platform_loss + 1e-9).all())


def test_policy_results_identical_for_workers_and_shard_sizes(policy_run, tmp_path):
    ds, _ = policy_run
    other = stress.run(cfg(shard_size=1000), workers=2, out=tmp_path / "b")
    xr.testing.assert_identical(other.drop_attrs(), ds.drop_attrs())


def test_analysis_on_a_real_run(policy_run):
    ds, out = policy_run
    need = analysis.required_fund(ds, ruin_probability=0.25)
    est = need.estimate.sel(policy="score")
    # At most a quarter of the paths need more than the estimate, and it is the smallest.
    ruin = analysis.ruin_probability(ds, float(est), method="wilson")
    assert float(ruin.estimate.sel(policy="score")) <= 0.25
    values = np.sort(ds.fund_need.sel(policy="score").values)
    assert float(est) in values or float(est) == 0.0
    bearers = analysis.loss_bearers(ds)
    row = bearers[(bearers.policy == "capped") & (bearers.bearer == "platform")]
    assert float(row.total.iloc[0]) == pytest.approx(float(ds.platform_loss.sel(
        policy="capped").sum()))
