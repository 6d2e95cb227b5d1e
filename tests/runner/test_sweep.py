"""Sweeps: the grid's dims and coordinates, common random numbers across points,
the --set value syntax, and rejections that write nothing."""

from __future__ import annotations

import json
import textwrap
from collections import namedtuple

import numpy as np
import pytest
import xarray as xr
import yaml
from typer.testing import CliRunner

import stress
from stress.cli import app
from stress.config import config_from_dict
from stress.errors import ConfigError
from stress.runner.run import execute
from stress.runner.sweep import (_paths_done, coordinate, dim_names, execute_sweep,
                                 open_sweep, parse_assignment, parse_value, plan_sweep,
                                 split_values)

runner = CliRunner()

TINY = {
    "run": {"name": "tiny", "paths": 8, "steps": 120, "seed": 42, "shard_size": 4},
    "market": {"kind": "merton", "s0": 100.0, "sigma": 0.9, "jump_intensity": 1500.0,
               "jump_mean": -0.06, "jump_std": 0.04},
    "population": {"kind": "synthetic", "accounts": 400},
    "exchange": {"liquidation_fee_rate": 0.004, "slippage": 0.003},
    "fund": {"initial": 200.0},
}
GRID = {"fund.initial": [100.0, 1000.0], "exchange.liquidation": ["full", "partial"]}

CLI_CONFIG = """
run: {name: tiny, paths: 6, steps: 60, seed: 1, shard_size: 4}
market: {kind: merton, s0: 100.0, sigma: 0.8, jump_intensity: 2000, jump_mean: -0.05}
population: {kind: synthetic, accounts: 300, leverage: {values: [2, 5], weights: [1, 1]}}
fund: {initial: 100.0}
"""


def tiny():
    return config_from_dict(TINY)


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep")
    return stress.sweep(tiny(), GRID, workers=1, out=out), out


@pytest.fixture
def cli_config(tmp_cwd):
    f = tmp_cwd / "c.yaml"
    f.write_text(textwrap.dedent(CLI_CONFIG))
    return f


# ------------------------------------------------------------------ the grid
def test_grid_has_one_leading_dim_per_key_in_order(swept):
    ds, _ = swept
    assert list(ds.shortfall.dims) == ["initial", "liquidation", "policy", "path"]
    assert list(ds.fund.dims) == ["initial", "liquidation", "policy", "path", "time"]
    assert ds.sizes["initial"] == 2 and ds.sizes["liquidation"] == 2
    np.testing.assert_array_equal(ds.initial, [100.0, 1000.0])
    assert ds.initial.dtype == np.float64
    assert list(ds.liquidation.values) == ["full", "partial"]
    assert ds.initial.attrs["config_key"] == "fund.initial"
    assert ds.liquidation.attrs["config_key"] == "exchange.liquidation"
    assert ds.initial.attrs["long_name"]
    assert ds.attrs["sweep_keys"] == ["fund.initial", "exchange.liquidation"]
    assert ds.attrs["sweep_dims"] == ["initial", "liquidation"]
    # The first key varies slowest: point k is folder points/<k>.
    np.testing.assert_array_equal(ds.point, [[0, 1], [2, 3]])
    # fund_initial follows the swept fund; the other policy coordinates do not vary.
    np.testing.assert_array_equal(ds.fund_initial.sel(policy="fund+adl"), [100.0, 1000.0])


def test_combined_file_carries_base_config_and_point_hashes(swept):
    ds, out = swept
    base = config_from_dict(yaml.safe_load(ds.attrs["config"]))
    assert base.fund.initial == 200.0 and ds.attrs["seed"] == 42
    assert yaml.safe_load(ds.attrs["sweep_grid"]) == GRID
    for k in range(4):
        point = stress.open_results(out / "points" / str(k))
        idx = np.argwhere(ds.point.values == k)[0]
        assert ds.config_hash.values[tuple(idx)] == point.attrs["config_hash"]
    assert len(set(ds.config_hash.values.ravel())) == 4
    assert sorted(p.name for p in out.iterdir()) == ["points", "sweep.nc"]


def test_a_point_equals_a_standalone_run_of_its_config(swept, tmp_path):
    ds, out = swept
    cfg = tiny().with_overrides({"fund.initial": 1000.0, "exchange.liquidation": "partial"})
    alone, _ = execute(cfg, workers=1, out=tmp_path / "alone")
    point = ds.sel(initial=1000.0, liquidation="partial")
    assert int(point.point) == 3 and point.config_hash.item() == alone.attrs["config_hash"]
    point = point.drop_vars(["initial", "liquidation", "point", "config_hash"])
    xr.testing.assert_equal(point.drop_attrs(), alone.drop_attrs())
    # The point's own folder holds the same run.
    xr.testing.assert_equal(stress.open_results(out / "points" / "3").drop_attrs(),
                            alone.drop_attrs())


def test_common_random_numbers_platform_shortfall_does_not_see_the_fund(swept):
    ds, _ = swept
    sf = ds.shortfall.sel(policy="platform")
    assert float(sf.sum()) > 0
    np.testing.assert_array_equal(sf.sel(initial=100.0).values, sf.sel(initial=1000.0).values)
    # ... while the fund policy does.
    paid = ds.fund_paid.sel(policy="fund+adl")
    assert not np.array_equal(paid.sel(initial=100.0).values, paid.sel(initial=1000.0).values)


def test_open_sweep_and_resume_keeps_finished_points(swept):
    ds, out = swept
    xr.testing.assert_identical(open_sweep(out), ds)
    xr.testing.assert_identical(open_sweep(out / "sweep.nc"), ds)
    stamps = {k: (out / "points" / str(k) / "results.nc").stat().st_mtime_ns for k in range(4)}
    again = stress.sweep(tiny(), GRID, workers=1, out=out, resume=True)
    assert {k: (out / "points" / str(k) / "results.nc").stat().st_mtime_ns
            for k in range(4)} == stamps
    xr.testing.assert_identical(again, ds)


def test_python_api_overrides_and_errors(tmp_path):
    with pytest.raises(ConfigError, match="fund.initial: give a list of values"):
        stress.sweep(tiny(), {"fund.initial": 5.0}, out=tmp_path / "x")
    with pytest.raises(ConfigError, match=r"fund.initial=-5.0: fund.initial: input should be"):
        stress.sweep(tiny(), {"fund.initial": [1.0, -5.0]}, out=tmp_path / "x")
    with pytest.raises(ConfigError, match="cannot be swept"):
        stress.sweep(tiny(), {"run.seed": [1, 2]}, paths=2, out=tmp_path / "x")
    assert not (tmp_path / "x").exists()


# ------------------------------------------------------------------ the CLI
def test_cli_sweep_with_list_values_writes_points_and_table(cli_config, tmp_cwd):
    r = runner.invoke(app, ["sweep", str(cli_config), "--set", "fund.initial=1e2",
                            "--set", "population.leverage.values=[2,5],[10,20]", "-w", "1"])
    assert r.exit_code == 0, r.output
    out = tmp_cwd / "results" / "tiny-sweep"
    assert sorted(p.name for p in (out / "points").iterdir()) == ["0", "1"]
    # Not a terminal: a plain line per finished point.
    assert "point 1/2 done" in r.output and "point 2/2 done" in r.output
    for word in ("initial", "values", "policy", "mean shortfall", "shortfall q99.9",
                 "P(fund depleted)", "[10, 20]", "fund+adl"):
        assert word in r.output
    ds = open_sweep(out)
    assert list(ds.shortfall.dims) == ["initial", "values", "policy", "path"]
    assert list(ds["values"].values) == ["[2, 5]", "[10, 20]"]
    assert json.loads(ds["values"].attrs["config_values"]) == [[2, 5], [10, 20]]
    assert ds.attrs["sweep_keys"] == ["fund.initial", "population.leverage.values"]
    ds.close()


def test_cli_progress_bar_on_a_terminal(cli_config, tmp_cwd, monkeypatch):
    import types

    import stress.runner.sweep_cli as sweep_cli
    monkeypatch.setattr(sweep_cli, "sys", types.SimpleNamespace(
        stderr=types.SimpleNamespace(isatty=lambda: True)))
    r = runner.invoke(app, ["sweep", str(cli_config), "--set", "fund.initial=1e2,1e3",
                            "-w", "1"])
    assert r.exit_code == 0, r.output
    assert "point 1/2" not in r.output and "mean shortfall" in r.output


def test_progress_reports_cover_every_path_of_every_point(tmp_path):
    plan = plan_sweep(tiny(), {"market.sigma": [0.5, 0.9]})
    seen, points = [], []
    ds, out = execute_sweep(plan, workers=1, out=tmp_path / "s",
                            on_shard=lambda done: seen.append(_paths_done(done)),
                            on_point=points.append)
    assert sum(seen) == plan.paths_total == 16
    assert [p.point.index for p in points] == [0, 1] and not any(p.kept for p in points)
    assert points[1].run_dir == out / "points" / "1"
    ds.close()


def test_cli_no_progress_and_out(cli_config, tmp_cwd):
    r = runner.invoke(app, ["sweep", str(cli_config), "--set", "market.sigma=0.5,0.8",
                            "-w", "1", "--no-progress", "--out", "elsewhere"])
    assert r.exit_code == 0, r.output
    assert "point 1/2" not in r.output
    assert (tmp_cwd / "elsewhere" / "sweep.nc").is_file()
    assert not (tmp_cwd / "results").exists()


REJECTED = [
    (["--set", "fund.initial"], "--set fund.initial: no '='"),
    (["--set", "=1,2"], "--set =1,2: empty key"),
    (["--set", "fund.initial="], "--set fund.initial=: no values"),
    (["--set", "fund.initial=1,,2"], "--set fund.initial=1,,2: value 2 is empty"),
    (["--set", "population.leverage.values=[2,5"], "unclosed bracket"),
    (["--set", "fund.initial=1e6,1000000"], "--set fund.initial=1e6,1000000: the value "
                                            "1000000 repeats 1e6"),
    (["--set", "fund.initial=1,2", "--set", "fund.initial=3"],
     "--set fund.initial=3: fund.initial is already swept by an earlier --set"),
    (["--set", "exchange.nope=1"], "--set exchange.nope=1: exchange.nope: unknown key"),
    (["--set", "nope.x=1"], "--set nope.x=1: nope.x: no such config section"),
    (["--set", "run.paths=10,20"], "--set run.paths=10,20: cannot be swept: every point runs "
                                   "the same paths"),
    (["--set", "run.name=a,b"], "--set run.name=a,b: cannot be swept"),
    (["--set", "run.steps=60,120"], "--set run.steps=60,120: cannot be swept"),
    (["--set", "run.seed=1,2"], "--set run.seed=1,2: cannot be swept"),
    (["--set", "run.shard_size=2,4"], "--set run.shard_size=2,4: cannot be swept"),
    (["--set", "exchange.preset=okx"], "--set exchange.preset=okx: cannot be swept"),
    (["--set", "run.step_minutes=1,2"], "--set run.step_minutes=2: changes the fund's time "
                                        "axis"),
    (["--set", "fund.record_every_minutes=60,30"], "--set fund.record_every_minutes=30: "
                                                   "changes the fund's time axis"),
    (["--set", "policies.0.name=a,b"], "--set policies.0.name=b: changes the policy names"),
    (["--set", "exchange.contract=linear,inverse"], "--set exchange.contract=inverse: changes "
                                                    "the money units"),
    # Invalid for one point only: found before the first point runs.
    (["--set", "fund.initial=1e6,-5"], "--set fund.initial=-5: fund.initial: input should be "
                                       "greater than or equal to 0, got -5"),
    (["--set", "market.sigma=0.5,0.6", "--set", "fund.initial=1e6,-5"],
     "--set fund.initial=-5: fund.initial: input should be greater than or equal to 0"),
    # ... including the checks that read data files (prepare).
    (["--set", "exchange.tiers=binance_btcusdt_2021,nope_table"],
     "--set exchange.tiers=nope_table: exchange.tiers: unknown built-in tier table"),
    (["--set", "population.leverage.values=[2,5],[2,500]"],
     "--set population.leverage.values=[2,500]: population.leverage.values.1: leverage above "
     "the tier table's maximum"),
    (["--set", "exchange.funding.mode=none,constant"], "for the text write "
                                                       "exchange.funding.mode=\"'none'\""),
    (["--set", "fund.initial=1,2", "--backend", "nope"], "--backend: must be one of"),
]


@pytest.mark.parametrize("args,message", REJECTED, ids=[" ".join(a) for a, _ in REJECTED])
def test_cli_rejects_with_one_line_and_writes_nothing(cli_config, tmp_cwd, args, message):
    r = runner.invoke(app, ["sweep", str(cli_config), *args, "-w", "1", "--no-progress"])
    assert r.exit_code == 2, r.output
    assert r.output.startswith("error: ") and r.output.count("\n") == 1, r.output
    assert message in r.output
    assert not (tmp_cwd / "results").exists()


# ------------------------------------------------------------- value syntax
@pytest.mark.parametrize("text,value", [
    ("1e6", 1000000.0), ("5e-3", 0.005), ("-2.5E+3", -2500.0), ("1.5e3", 1500.0),
    ("0.002", 0.002), ("10", 10), ("-3", -3), ("null", None), ("none", None), ("None", None),
    ("~", None), ("true", True), ("false", False), ("yes", "yes"), ("on", "on"),
    ("full", "full"), ("'none'", "none"), ('"1e6"', "1e6"), ("2024-01-01", "2024-01-01"),
    ("[2,5]", [2, 5]), ("[1e6, none]", [1000000.0, None]),
    ("{mode: constant, rate: 1e-4}", {"mode": "constant", "rate": 0.0001}),
])
def test_values_read_as_yaml_scalars_with_exponents_as_numbers(text, value):
    got = parse_value(text)
    assert got == value and type(got) is type(value)


def test_commas_inside_brackets_braces_and_quotes_do_not_split():
    assert split_values("[2,5],[10,20]") == ["[2,5]", "[10,20]"]
    assert split_values("{a: 1, b: [2, 3]}, x") == ["{a: 1, b: [2, 3]}", "x"]
    assert split_values("'a,b',c") == ["'a,b'", "c"]
    assert split_values("it's,fine") == ["it's", "fine"]
    key, values, raw = parse_assignment("population.leverage.values=[2,5],[10,20]")
    assert key == "population.leverage.values" and values == [[2, 5], [10, 20]]
    assert raw == ["[2,5]", "[10,20]"]
    with pytest.raises(ValueError, match="unbalanced"):
        split_values("2],[3")


def test_dim_names_use_the_last_component_when_unique():
    assert dim_names(["fund.initial", "exchange.slippage"]) == {
        "fund.initial": "initial", "exchange.slippage": "slippage"}
    assert dim_names(["market.sigma", "liquidity.sigma", "fund.cap"]) == {
        "market.sigma": "market__sigma", "liquidity.sigma": "liquidity__sigma",
        "fund.cap": "cap"}
    # Names the results already use, and list indices, take the full key.
    assert dim_names(["policies.0.layers", "population.leverage.values.0"]) == {
        "policies.0.layers": "policies__0__layers",
        "population.leverage.values.0": "population__leverage__values__0"}


def test_coordinates_keep_numbers_and_turn_the_rest_into_text():
    values, as_text = coordinate([1000000.0, 5])
    assert values.dtype == np.float64 and not as_text
    values, as_text = coordinate([10, 20])
    assert values.dtype.kind == "i"
    values, as_text = coordinate(["full", "partial"])
    assert list(values) == ["full", "partial"] and not as_text
    values, as_text = coordinate([[2, 5], None])
    assert list(values) == ["[2, 5]", "None"] and as_text


def test_progress_counts_paths_from_shard_reports():
    Done = namedtuple("Done", "index start stop seconds resumed")
    assert _paths_done(Done(2, 10, 15, 0.1, False)) == 5
    assert _paths_done(7) == 7  # the older driver's report
