"""End-to-end runs: the loss identity, determinism across workers and shard sizes,
result files and their attributes, the Python API."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import xarray as xr
import yaml

import stress
from conftest import ROOT
from stress.config import config_from_dict, load_config
from stress.errors import ConservationError
from stress.runner.run import plan
from stress.runner.shard import check_identity
from stress.runner.store import open_results, write_atomic
from stress.runner.variables import INDEX, PATH_METRICS

SMALL = {
    "run": {"name": "small", "paths": 24, "steps": 240, "seed": 42, "shard_size": 5},
    "market": {"kind": "merton", "s0": 100.0, "sigma": 0.9, "jump_intensity": 1500.0,
               "jump_mean": -0.06, "jump_std": 0.04},
    "population": {"kind": "synthetic", "accounts": 1500},
    "exchange": {"liquidation_fee_rate": 0.004, "slippage": 0.003},
    "fund": {"initial": 200.0},
    "policies": [{"name": "fund+adl", "layers": ["insurance_fund", "adl"]},
                 {"name": "socialised", "layers": ["socialised"]},
                 {"name": "platform", "layers": ["platform"]},
                 {"name": "fund+soc+nbp", "layers": ["insurance_fund", "socialised", "platform"]}],
}


def small(**run):
    data = {**SMALL, "run": {**SMALL["run"], **run}}
    return config_from_dict(data)


def data_only(ds: xr.Dataset) -> xr.Dataset:
    return ds.drop_attrs()


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ref")
    return stress.run(small(), workers=1, out=out), out


def test_small_run_exercises_every_layer(reference_run):
    ds, _ = reference_run
    # 240 one-minute steps with the fund recorded every 60 minutes: 5 points from 0.
    assert ds.sizes == {"policy": 4, "path": 24, "bearer": 5, "time": 5}
    np.testing.assert_array_equal(ds.time, [0.0, 60.0, 120.0, 180.0, 240.0])
    assert float(ds.shortfall.sum()) > 0
    for var in ("fund_paid", "adl_cost", "socialised_loss", "platform_loss"):
        assert float(ds[var].sum()) > 0, var
    assert int(ds.fund_depleted.sum()) > 0


def test_results_identical_for_workers_and_shard_sizes(reference_run, tmp_path):
    ds, _ = reference_run
    for workers, shard in ((2, 5), (1, 7), (2, 1000)):
        other = stress.run(small(shard_size=shard), workers=workers, out=tmp_path / f"{workers}-{shard}")
        xr.testing.assert_identical(data_only(other), data_only(ds))


def test_policies_share_paths_and_book(reference_run):
    ds, _ = reference_run
    # The first liquidation happens before any policy acts, so the count of paths with
    # a liquidation is the same for every policy (common random numbers).
    first = (ds.n_liquidations > 0).sum("path").values
    assert np.all(first == first[0])
    # The platform policy changes nobody's position: its shortfall is the "raw" one,
    # and it never touches the fund.
    nbp = ds.sel(policy="platform")
    np.testing.assert_array_equal(nbp.platform_loss, nbp.shortfall)
    assert float(nbp.fund_paid.sum()) == 0.0


def test_loss_identity_holds_on_every_path(reference_run):
    ds, _ = reference_run
    rhs = sum(ds[v] for v in ("fund_paid", "adl_cost", "socialised_loss", "platform_loss",
                              "residual"))
    np.testing.assert_allclose(rhs, ds.shortfall, rtol=1e-9, atol=1e-9)


def test_identity_check_fails_loudly():
    out = np.zeros((1, 3, len(PATH_METRICS)))
    out[0, 1, INDEX["shortfall"]] = 10.0
    out[0, 1, INDEX["fund_paid"]] = 9.0
    with pytest.raises(ConservationError, match="path 1, policy p"):
        check_identity(out, ["p"])


def test_result_files_and_attributes(reference_run):
    ds, out = reference_run
    shards = sorted((out / "shards").glob("*"))
    assert [s.name for s in shards] == [f"shard-{k:06d}.nc" for k in range(5)]
    on_disk = open_results(out)
    xr.testing.assert_identical(on_disk, ds)
    for var in PATH_METRICS:
        assert ds[var.name].attrs["units"] == var.units
        assert ds[var.name].attrs["long_name"] == var.long_name
    assert ds.attrs["seed"] == 42
    assert ds.attrs["stress_version"] == stress.__version__
    assert len(ds.attrs["config_hash"]) == 64
    assert yaml.safe_load(ds.attrs["config"]) == small().model_dump(mode="json")
    assert np.isnan(ds.time_to_depletion.where(ds.fund_depleted == 0)).all()


def test_rerun_from_the_stored_config_is_bit_identical(reference_run, tmp_path):
    ds, _ = reference_run
    cfg_file = tmp_path / "again.yaml"
    cfg_file.write_text(ds.attrs["config"])
    again = stress.run(cfg_file, workers=1, out=tmp_path / "again")
    xr.testing.assert_identical(again, ds)


def test_atomic_write_leaves_no_partial_file(tmp_path):
    ds = xr.Dataset({"x": ("a", np.arange(3.0))})
    target = tmp_path / "f.nc"
    write_atomic(ds, target)

    class Boom(xr.Dataset):
        __slots__ = ()

        def to_netcdf(self, *a, **k):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_atomic(Boom({"x": ("a", np.arange(5.0))}), target)
    assert [p.name for p in tmp_path.iterdir()] == ["f.nc"]
    xr.testing.assert_identical(open_results(target), ds)


def test_plan_covers_every_path_once():
    shards = plan(1003, 250)
    assert shards[0] == (0, 0, 250) and shards[-1] == (4, 1000, 1003)
    covered = np.concatenate([np.arange(s, e) for _, s, e in shards])
    np.testing.assert_array_equal(covered, np.arange(1003))


def test_api_overrides(tmp_path):
    ds = stress.run(small(), workers=1, out=tmp_path, paths=3, fund__initial=0.0)
    assert ds.sizes["path"] == 3
    assert (ds.fund_min == 0.0).all()
    assert yaml.safe_load(ds.attrs["config"])["fund"]["initial"] == 0.0


def test_api_rejects_unknown_override(tmp_path):
    from stress.errors import ConfigError
    with pytest.raises(ConfigError, match="unknown override"):
        stress.run(small(), out=tmp_path, sigma=3)


def test_redrawn_population_differs_per_path_but_not_per_shard(tmp_path):
    data = {**SMALL, "run": {**SMALL["run"], "paths": 6},
            "population": {"kind": "synthetic", "accounts": 500, "redraw_per_path": True}}
    a = stress.run(config_from_dict(data), workers=1, out=tmp_path / "a")
    data["run"] = {**data["run"], "shard_size": 4}
    b = stress.run(config_from_dict(data), workers=2, out=tmp_path / "b")
    xr.testing.assert_identical(data_only(a), data_only(b))


def test_pure_python_path_gives_the_same_numbers(tmp_path):
    cfg = {**SMALL, "run": {**SMALL["run"], "paths": 2, "steps": 120},
           "population": {"kind": "synthetic", "accounts": 200}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    code = ("import stress, sys; ds = stress.run('c.yaml', workers=1, out='o'); "
            "ds.drop_attrs().to_netcdf(sys.argv[1])")
    env = {**os.environ, "STRESS_DISABLE_NUMBA": "1"}
    subprocess.run([sys.executable, "-c", code, "py.nc"], cwd=tmp_path, env=env, check=True)
    numba_ds = stress.run(load_config(tmp_path / "c.yaml"), workers=1, out=tmp_path / "n")
    py_ds = xr.load_dataset(tmp_path / "py.nc")
    assert float(numba_ds.n_liquidations.sum()) > 0
    xr.testing.assert_allclose(py_ds, data_only(numba_ds), rtol=1e-12)


def test_default_config_identity_on_every_path(tmp_path):
    # The default book and market on its first 1,000 paths (the whole config takes
    # ≈ 20 s; the identity is per path).
    ds = stress.run(ROOT / "configs" / "default.yaml", out=tmp_path, paths=1000)
    assert ds.sizes["path"] == 1000 and ds.attrs["accounts"] >= 10_000
    rhs = sum(ds[v] for v in ("fund_paid", "adl_cost", "socialised_loss", "platform_loss",
                              "residual"))
    np.testing.assert_allclose(rhs, ds.shortfall, rtol=1e-9, atol=1e-9)
    assert float((ds.shortfall > 0).mean()) > 0.01


THIN = {**SMALL,
        "exchange": {**SMALL["exchange"], "mark_smoothing_minutes": 2.0,
                     "funding": {"mode": "premium", "interval_minutes": 60}},
        "liquidity": {"depth": 2e6, "impact_law": "square_root", "permanent": 0.7,
                      "permanent_half_life_minutes": 30,
                      "gaps": {"rate_per_day": 30, "width": 0.01, "duration_minutes": 3}}}


def test_thin_book_run_is_deterministic_and_cascades(tmp_path):
    a = stress.run(config_from_dict(THIN), workers=1, out=tmp_path / "a")
    thin_b = {**THIN, "run": {**THIN["run"], "shard_size": 7}}
    b = stress.run(config_from_dict(thin_b), workers=2, out=tmp_path / "b")
    xr.testing.assert_identical(data_only(a), data_only(b))
    assert int(a.cascade_rounds.max()) >= 2
    assert float(a.cascade_move.max()) > 0
    # Funding flows on every path while both sides hold positions (NBP changes no book).
    assert float(a.funding_volume.sel(policy="platform").min()) > 0
    rhs = sum(a[v] for v in ("fund_paid", "adl_cost", "socialised_loss", "platform_loss",
                             "residual"))
    np.testing.assert_allclose(rhs, a.shortfall, rtol=1e-9, atol=1e-9)


def test_thin_book_makes_more_bad_debt_than_infinite_depth(reference_run, tmp_path):
    ds, _ = reference_run
    thin = stress.run(config_from_dict({**SMALL, "liquidity": THIN["liquidity"]}), workers=1,
                      out=tmp_path / "thin")
    assert float(thin.shortfall.sel(policy="platform").sum()) > \
        float(ds.shortfall.sel(policy="platform").sum())


def test_a_thread_reuses_its_book_runner_only_for_the_same_book():
    # simulate_shard keeps its last runner per thread (book_runner): the next shard of
    # the same book reuses it (a runner undoes every path, and the shard sizes above
    # give identical results); other accounts, tiers or rules, or another thread, do not.
    import threading

    from stress.exchange.contracts import kernel_accounts
    from stress.exchange.kernels import tier_array
    from stress.runner.prepare import prepare
    from stress.runner.shard import book_runner, kernel_params, release_runner
    cfg = small()
    prep = prepare(cfg)
    tt = tier_array(prep.tiers)
    params = kernel_params(cfg, cfg.policies[0], prep.s0)

    def fresh():
        return kernel_accounts(prep.book, False)

    first = book_runner(fresh(), tt, params)
    assert book_runner(fresh(), tt, params) is first
    changed = fresh()
    changed[0, 2] += 1e-9  # one account's collateral
    assert book_runner(changed, tt, params) is not first
    again = book_runner(fresh(), tt, params)
    assert again is not first  # only the last one is kept
    other_rules = params.copy()
    other_rules[0] += 1.0
    assert book_runner(fresh(), tt, other_rules) is not again
    mine = book_runner(fresh(), tt, params)
    elsewhere = []
    worker = threading.Thread(target=lambda: elsewhere.append(book_runner(fresh(), tt, params)))
    worker.start()
    worker.join()
    assert elsewhere[0] is not mine and book_runner(fresh(), tt, params) is mine
    release_runner()
    assert book_runner(fresh(), tt, params) is not mine
    release_runner()


def test_a_shard_that_fails_drops_its_runner():
    # A shard cut short may leave its runner's book changed: it is not kept for the next.
    from stress.errors import StressError
    from stress.runner import shard
    from stress.runner.prepare import prepare
    cfg = small().with_overrides({"market.mu": 1e300})  # the price path overflows
    prep = prepare(cfg)
    with pytest.raises(StressError, match="not finite"):
        shard.simulate_shard(prep, 0, 2)
    assert getattr(shard._CACHE, "runner", None) is None
    out, _ = shard.simulate_shard(prepare(small()), 0, 2)  # and the next shard runs
    assert shard._CACHE.runner is not None and np.isfinite(out[..., INDEX["shortfall"]]).all()
    shard.release_runner()


@pytest.mark.parametrize("source, fund", [("configs/thin_book.yaml", None),
                                          ("gap_down_20pct", 1000.0)])
def test_each_policy_of_a_run_equals_a_run_of_its_own(tmp_path, source, fund):
    # In one run, policies take their results from another's ledger journal where the
    # rules allow (simulate_policies); alone, each is simulated in full. Funding,
    # liquidity and a gap that runs the fund dry; fund + platform and fund + socialised
    # waterfalls besides the config's three. Every variable, bit for bit.
    from stress.scenarios import apply_scenario
    base = (load_config(ROOT / source) if source.endswith(".yaml")
            else apply_scenario(load_config(ROOT / "configs" / "default.yaml"), source))
    pols = base.model_dump(mode="json")["policies"] + [
        {"name": "fund+platform", "layers": ["insurance_fund", "platform"]},
        {"name": "fund+socialised", "layers": ["insurance_fund", "socialised"]}]
    over = {"run.paths": 8, "run.shard_size": 8, "policies": pols,
            "population.accounts": 2000}
    if fund is not None:  # (small enough to run dry on the gap: ADL, no riding)
        over["fund.initial"] = fund
    cfg = base.with_overrides(over)
    ds = stress.run(cfg, workers=1, out=tmp_path / "all")
    if fund is not None:
        assert float(ds.n_adl.sel(policy="fund+adl").sum()) > 0
    for p in pols:
        one = stress.run(cfg.with_overrides({"policies": [p]}), workers=1,
                         out=tmp_path / p["name"].replace("+", "_"))
        for v in ds.data_vars:
            if "policy" in ds[v].dims:
                np.testing.assert_array_equal(ds[v].sel(policy=p["name"]).values,
                                              one[v].sel(policy=p["name"]).values, err_msg=v)
