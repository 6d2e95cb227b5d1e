"""Named scenarios: lookup, merging, the CLI, shock shapes, replay rescaling and noise,
and the shipped historical extracts against the facts in PROVENANCE.md (section 6).

Statistical checks use fixed seeds and a bound of 4.5 standard errors: a
false-failure rate of about 7e-6 per check for a fresh seed (normal
approximation of the sample mean).
"""

from __future__ import annotations

import csv
import math
import textwrap
from datetime import datetime, timezone

import numpy as np
import pytest
import xarray as xr
import yaml
from typer.testing import CliRunner

import stress
from conftest import ROOT
from stress.cli import app
from stress.config import (MINUTES_PER_YEAR, ReplayMarket, ReplayNoise, ShockMarket,
                           config_from_dict, load_config)
from stress.errors import ConfigError
from stress.market.paths import price_path
from stress.market.replay import load_replay
from stress.runner.prepare import prepare
from stress.runner.seeding import path_rng
from stress.scenarios import apply_scenario, list_scenarios, load_scenario

SCENARIOS = ROOT / "scenarios"
SHIPPED = sorted(p.stem for p in SCENARIOS.glob("*.yaml"))
MINUTE = 1.0 / MINUTES_PER_YEAR
runner = CliRunner()

TINY = {
    "run": {"name": "tiny", "paths": 2, "steps": 30, "seed": 11},
    "market": {"kind": "gbm", "s0": 100.0, "sigma": 0.6},
    "population": {"kind": "synthetic", "accounts": 200},
    "fund": {"initial": 1000.0},
}


def data_only(ds: xr.Dataset) -> xr.Dataset:
    return ds.drop_attrs()


# ------------------------------------------------------------ every shipped scenario
def test_the_expected_scenarios_are_shipped():
    expected = {"btc_2020_03_12", "btc_2021_05_19", "btc_2022_11_09", "btc_2024_08_05",
                "btc_2025_10_10", "btc_2020_03_12_today", "gap_down_20pct", "wick_30pct",
                "staircase_crash", "short_squeeze"}
    assert expected <= set(SHIPPED)


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_scenario_validates_and_runs(name, tmp_path):
    scenario = load_scenario(name)
    assert isinstance(scenario["description"], str) and "\n" not in scenario["description"]
    ds = stress.run(config_from_dict(TINY), scenario=name, workers=1, out=tmp_path / name)
    assert ds.sizes["path"] == 2
    assert ds.attrs["scenario"] == name
    # The scenario's run section wins over the config's.
    assert ds.attrs["steps"] == scenario.get("run", {}).get("steps", TINY["run"]["steps"])
    assert ds.attrs["accounts"] == 200
    stored = yaml.safe_load(ds.attrs["config"])
    if "market" in scenario:
        assert stored["market"] == {**stored["market"], **scenario["market"]}
    assert stored["run"]["name"] == f"tiny-{name}"
    assert np.all(np.isfinite(ds.shortfall.values))


@pytest.mark.parametrize("name", ["btc_2020_03_12_today", "staircase_crash"])
def test_stored_config_reruns_to_the_same_numbers(name, tmp_path):
    ds = stress.run(config_from_dict(TINY), scenario=name, workers=1, out=tmp_path / "a")
    f = tmp_path / "again.yaml"
    f.write_text(ds.attrs["config"])
    again = stress.run(load_config(f), workers=1, out=tmp_path / "b")
    xr.testing.assert_identical(data_only(again), data_only(ds))
    assert ds.attrs["scenario"] == name and again.attrs["scenario"] == ""


def test_scenario_is_applied_before_the_other_overrides(tmp_path):
    ds = stress.run(config_from_dict(TINY), scenario="gap_down_20pct", steps=70, paths=3,
                    workers=1, out=tmp_path)
    assert ds.attrs["steps"] == 70 and ds.sizes["path"] == 3
    assert ds.attrs["scenario"] == "gap_down_20pct"


BASE = {**TINY, "run": {**TINY["run"], "shard_size": 7},
        "market": {"kind": "merton", "s0": 5.0, "jump_intensity": 3.0},
        "liquidity": {"depth": 1.0e6, "band": 0.02, "gaps": {"rate_per_day": 2.0}}}


def test_scenario_replaces_market_and_merges_run():
    cfg = apply_scenario(BASE, "btc_2022_11_09")
    assert cfg.market.kind == "replay" and cfg.run.steps == 134
    assert cfg.run.shard_size == 7 and cfg.run.paths == 2  # kept from the config
    assert cfg.liquidity.depth == 1.0e6  # a section the scenario does not touch
    assert cfg.scenario == "btc_2022_11_09" and cfg.run.name == "tiny-btc_2022_11_09"


def test_other_sections_are_deep_merged(tmp_cwd):
    _write(tmp_cwd / "scenarios" / "thin.yaml", """
        description: thinner book, same market as the config
        run: {name: thin_run}
        liquidity: {depth: 2.0e5, gaps: {width: 0.03}}
        fund: {initial: 7.0}
    """)
    cfg = apply_scenario(BASE, "thin")
    assert cfg.market.kind == "merton" and cfg.market.s0 == 5.0  # no market: the config's
    assert cfg.liquidity.depth == 2.0e5 and cfg.liquidity.band == 0.02
    assert cfg.liquidity.gaps.width == 0.03 and cfg.liquidity.gaps.rate_per_day == 2.0
    assert cfg.fund.initial == 7.0
    assert cfg.run.name == "thin_run"  # a scenario that names its run keeps that name


# ------------------------------------------------------------------------- lookup
def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def test_working_directory_scenarios_come_first_and_paths_are_relative_to_the_file(tmp_cwd):
    _write(tmp_cwd / "scenarios" / "data" / "p.csv", "timestamp,close\n1,100\n2,90\n3,95\n")
    _write(tmp_cwd / "scenarios" / "mine.yaml", """
        description: a local replay
        market: {kind: replay, path: data/p.csv}
        run: {steps: 2}
    """)
    _write(tmp_cwd / "scenarios" / "gap_down_20pct.yaml", """
        description: my own gap
        market: {kind: shock, s0: 50.0, shape: gap, size: -0.5}
    """)
    found = list_scenarios()
    assert found["mine"] == "a local replay"
    assert found["gap_down_20pct"] == "my own gap"
    assert "btc_2020_03_12" in found  # the repository's are still there
    cfg = apply_scenario(TINY, "mine", base_dir=tmp_cwd / "elsewhere")
    assert cfg.resolve(cfg.market.path) == (tmp_cwd / "scenarios" / "data" / "p.csv").resolve()
    np.testing.assert_array_equal(prepare(cfg).replay, [100.0, 90.0, 95.0])
    assert apply_scenario(TINY, "gap_down_20pct").market.s0 == 50.0


@pytest.mark.parametrize("text,fragment", [
    ("description: x\nmarket: {kind: gbm, sigma: -1}\n",
     "scenarios/bad.yaml: market.sigma: input should be greater than or equal to 0"),
    ("description: x\nmarkets: {kind: gbm}\n", "scenarios/bad.yaml: markets: unknown key"),
    ("market: {kind: gbm}\n", "scenarios/bad.yaml: description: required: a one-line text"),
    ("description: x\nrun: {steps: 0}\n", "scenarios/bad.yaml: run.steps: input should be"),
    ("description: x\nmarket: {kind: shock, shape: gap, size: -1.5}\n",
     "scenarios/bad.yaml: market.size: input should be greater than -1"),
    ("description: x\nmarket: {kind: shock, shape: crash, size: -0.1}\n",
     "scenarios/bad.yaml: market.shape:"),
    ("description: x\nmarket: {kind: replay, path: nope.csv}\n",
     "scenarios/bad.yaml: market.path: file not found"),
    ("description: [x\n", "scenarios/bad.yaml: invalid YAML: line"),
])
def test_invalid_scenario_names_its_file_and_key(tmp_cwd, text, fragment):
    _write(tmp_cwd / "scenarios" / "bad.yaml", text)
    with pytest.raises(ConfigError) as err:
        apply_scenario(TINY, "bad")
    assert fragment in str(err.value)
    assert "\n" not in str(err.value)


def test_an_error_in_the_config_itself_is_not_blamed_on_the_scenario(tmp_path):
    with pytest.raises(ConfigError) as err:
        apply_scenario({**TINY, "fund": {"initial": -5}}, "wick_30pct")
    assert str(err.value).startswith("fund.initial:")
    f = tmp_path / "c.yaml"
    f.write_text(yaml.safe_dump({**TINY, "run": {**TINY["run"], "name": "x" * 99}}))
    # The run keeps its name when the suffixed one would be too long.
    assert apply_scenario(load_config(f), "wick_30pct").run.name == "x" * 99


def test_unknown_scenario_is_one_line_listing_the_known_names():
    with pytest.raises(ConfigError) as err:
        apply_scenario(TINY, "nope")
    msg = str(err.value)
    assert msg.startswith("scenario: unknown scenario 'nope' (known: ")
    assert "\n" not in msg
    for name in SHIPPED:
        assert name in msg


# ---------------------------------------------------------------------------- CLI
GOOD = """
run: {name: tiny, paths: 2, steps: 30, seed: 1}
market: {kind: gbm, s0: 100.0, sigma: 0.6}
population: {kind: synthetic, accounts: 200}
"""


def test_cli_scenarios_lists_every_file_with_its_description(tmp_cwd):
    r = runner.invoke(app, ["scenarios"])
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    for f in SCENARIOS.glob("*.yaml"):
        desc = yaml.safe_load(f.read_text())["description"]
        assert any(line.startswith(f.stem + " ") and line.rstrip().endswith(desc)
                   for line in lines), f.stem


@pytest.mark.parametrize("command", ["validate", "run"])
def test_cli_unknown_scenario_exits_2_with_one_line(tmp_cwd, command):
    (tmp_cwd / "c.yaml").write_text(GOOD)
    extra = ["-w", "1", "--no-progress"] if command == "run" else []
    r = runner.invoke(app, [command, "c.yaml", "--scenario", "nope", *extra])
    assert r.exit_code == 2, r.output
    assert len(r.output.strip().splitlines()) == 1
    assert "error: scenario: unknown scenario 'nope' (known: " in r.output
    assert "btc_2020_03_12" in r.output
    assert not (tmp_cwd / "results").exists()


def test_cli_run_and_validate_with_a_scenario(tmp_cwd):
    (tmp_cwd / "c.yaml").write_text(GOOD)
    r = runner.invoke(app, ["validate", "c.yaml", "--scenario", "btc_2021_05_19"])
    assert r.exit_code == 0, r.output
    assert "c.yaml with scenario btc_2021_05_19: valid (2 paths × 134 steps" in r.output
    r = runner.invoke(app, ["run", "c.yaml", "--scenario", "short_squeeze", "-w", "1",
                            "--no-progress"])
    assert r.exit_code == 0, r.output
    ds = stress.open_results(tmp_cwd / "results" / "tiny-short_squeeze")
    assert ds.attrs["scenario"] == "short_squeeze" and ds.attrs["steps"] == 240


def test_cli_invalid_scenario_exits_2_naming_the_scenario_file(tmp_cwd):
    (tmp_cwd / "c.yaml").write_text(GOOD)
    _write(tmp_cwd / "scenarios" / "bad.yaml", "description: x\nmarket: {kind: gbm, mu: oops}\n")
    r = runner.invoke(app, ["validate", "c.yaml", "--scenario", "bad"])
    assert r.exit_code == 2
    assert len(r.output.strip().splitlines()) == 1
    assert "scenarios/bad.yaml: market.mu:" in r.output


# ------------------------------------------------------------------------- shocks
def shock(steps, step_minutes=1.0, **kw):
    m = ShockMarket(kind="shock", s0=100.0, **kw)
    return price_path(m, steps, step_minutes * MINUTE, path_rng(1, 0))


def test_gap_is_instant_and_stays():
    p = shock(120, shape="gap", size=-0.2, at_minute=60)
    assert len(p) == 121
    assert np.all(p[:60] == 100.0)
    assert p[59] == pytest.approx(100.0, rel=1e-12) and p[60] == pytest.approx(80.0, rel=1e-12)
    assert np.all(np.abs(p[60:] - 80.0) < 1e-9)


def test_gap_time_is_in_minutes_whatever_the_step_length():
    p = shock(24, step_minutes=5.0, shape="gap", size=-0.2, at_minute=60)
    assert p[11] == pytest.approx(100.0, rel=1e-12) and p[12] == pytest.approx(80.0, rel=1e-12)


def test_wick_goes_down_to_its_bottom_and_back():
    p = shock(40, shape="wick", size=-0.3, at_minute=10, duration_minutes=10)
    expected = {9: 100.0, 10: 100.0, 12: 88.0, 15: 70.0, 18: 88.0, 20: 100.0, 30: 100.0}
    for minute, price in expected.items():
        assert p[minute] == pytest.approx(price, rel=1e-12), minute
    assert int(np.argmin(p)) == 15 and p.min() == pytest.approx(70.0, rel=1e-12)


def test_staircase_falls_in_equal_stairs():
    p = shock(360, shape="staircase", size=-0.4, steps_count=8, at_minute=60,
              duration_minutes=240)
    # Stairs at minutes 60, 90, ..., 270, each −5 (of s0 = 100).
    expected = {59: 100.0, 60: 95.0, 89: 95.0, 90: 90.0, 239: 70.0, 240: 65.0, 269: 65.0,
                270: 60.0, 360: 60.0}
    for minute, price in expected.items():
        assert p[minute] == pytest.approx(price, rel=1e-12), minute
    assert len(np.unique(np.round(p, 9))) == 9


def test_squeeze_rises_linearly_then_holds():
    p = shock(90, shape="squeeze", size=0.25, at_minute=30, duration_minutes=15)
    expected = {0: 100.0, 30: 100.0, 36: 110.0, 45: 125.0, 90: 125.0}
    for minute, price in expected.items():
        assert p[minute] == pytest.approx(price, rel=1e-12), minute


def test_shock_without_noise_draws_no_random_numbers():
    rng = path_rng(3, 0)
    price_path(ShockMarket(kind="shock", shape="wick", size=-0.3), 100, MINUTE, rng)
    assert rng.random() == path_rng(3, 0).random()


def test_shock_noise_keeps_the_expected_price():
    m = ShockMarket(kind="shock", s0=100.0, shape="staircase", size=-0.4, steps_count=8,
                    at_minute=60, duration_minutes=240, sigma=0.8)
    n, steps = 3000, 360
    terminal = np.array([price_path(m, steps, MINUTE, path_rng(21, i))[-1] for i in range(n)])
    se = terminal.std(ddof=1) / math.sqrt(n)
    assert abs(terminal.mean() - 60.0) < 4.5 * se
    assert terminal.std() > 0


# ------------------------------------------------------------------------- replay
DATA_2020 = "data/btcusdt_1m_2020_03_12.csv"


def replay_market(**kw) -> ReplayMarket:
    return ReplayMarket(kind="replay", path=DATA_2020, timestamp_column="open_time",
                        price_column="close", **kw)


def raw_2020() -> np.ndarray:
    return load_replay(replay_market(), lambda p: SCENARIOS / p)


def test_rescale_starts_at_the_target_and_keeps_the_ratios():
    raw = raw_2020()
    scaled = load_replay(replay_market(rescale_to=100_000.0), lambda p: SCENARIOS / p)
    assert scaled[0] == 100_000.0
    np.testing.assert_allclose(scaled[1:] / scaled[:-1], raw[1:] / raw[:-1], rtol=1e-13)
    np.testing.assert_allclose(scaled / raw, 100_000.0 / raw[0], rtol=1e-13)


def test_rescaled_scenario_draws_the_book_around_the_new_start_price():
    prep = prepare(apply_scenario(TINY, "btc_2020_03_12_today"))
    assert prep.s0 == 100_000.0 and prep.replay[0] == 100_000.0
    assert np.median(prep.book.entry) == pytest.approx(100_000.0, rel=0.05)


def test_replay_without_noise_is_the_replay_and_draws_nothing():
    raw = raw_2020()
    rng = path_rng(5, 3)
    p = price_path(replay_market(), 361, MINUTE, rng, raw)
    np.testing.assert_array_equal(p, raw)
    assert rng.random() == path_rng(5, 3).random()
    # sigma 0 is the same as no noise.
    p0 = price_path(replay_market(noise=ReplayNoise(sigma=0.0)), 361, MINUTE, path_rng(5, 3), raw)
    np.testing.assert_array_equal(p0, raw)


def test_replay_noise_differs_per_path_and_keeps_the_expected_price():
    raw = raw_2020()
    m = replay_market(noise=ReplayNoise(sigma=0.5))
    n = 4000
    paths = [price_path(m, 361, MINUTE, path_rng(9, i), raw) for i in range(n)]
    assert all(p[0] == raw[0] for p in paths[:10])  # the noise starts at 0
    assert not np.array_equal(paths[0], paths[1])
    np.testing.assert_array_equal(paths[0], price_path(m, 361, MINUTE, path_rng(9, 0), raw))
    terminal = np.array([p[-1] for p in paths])
    se = terminal.std(ddof=1) / math.sqrt(n)
    assert abs(terminal.mean() - raw[-1]) < 4.5 * se


# ------------------------------------------------------- historical extracts
# PROVENANCE.md section 6: rows, min low (bar open time, UTC), max high, and the
# window's log return from first open to last close.
FACTS = {
    "btc_2020_03_12": ("btcusdt_1m_2020_03_12.csv", 362, 3621.81, "2020-03-13 02:16", 5977.99,
                       -0.193, "2020-03-12 20:58", "2020-03-13 02:59"),
    "btc_2021_05_19": ("btcusdt_1m_2021_05_19.csv", 135, 28688.00, "2021-05-19 13:10",
                       38210.00, -0.043, "2021-05-19 12:35", "2021-05-19 14:49"),
    "btc_2022_11_09": ("btcusdt_1m_2022_11_09.csv", 135, 15462.60, "2022-11-09 22:08",
                       16885.10, -0.050, "2022-11-09 20:26", "2022-11-09 22:40"),
    "btc_2024_08_05": ("btcusdt_1m_2024_08_05.csv", 135, 48888.00, "2024-08-05 06:24",
                       54269.80, -0.078, "2024-08-05 04:27", "2024-08-05 06:41"),
    "btc_2025_10_10": ("btcusdt_1m_2025_10_10.csv", 263, 101516.50, "2025-10-10 21:20",
                       117145.30, -0.023, "2025-10-10 19:16", "2025-10-10 23:38"),
}


def _utc(ms: str) -> str:
    return datetime.fromtimestamp(int(ms) / 1000, timezone.utc).strftime("%Y-%m-%d %H:%M")


@pytest.mark.parametrize("name", sorted(FACTS))
def test_historical_extract_matches_provenance(name):
    fname, rows, min_low, min_time, max_high, total, first, last = FACTS[name]
    with open(SCENARIOS / "data" / fname, newline="") as fh:
        table = list(csv.DictReader(fh))
    assert list(table[0]) == ["open_time", "open", "high", "low", "close"]
    assert len(table) == rows
    times = [int(r["open_time"]) for r in table]
    assert all(b - a == 60_000 for a, b in zip(times, times[1:]))
    assert (_utc(table[0]["open_time"]), _utc(table[-1]["open_time"])) == (first, last)
    lows = [float(r["low"]) for r in table]
    assert min(lows) == min_low
    assert _utc(table[int(np.argmin(lows))]["open_time"]) == min_time
    assert max(float(r["high"]) for r in table) == max_high
    assert round(math.log(float(table[-1]["close"]) / float(table[0]["open"])), 3) == total
    for r in table:
        o, h, lo, c = (float(r[k]) for k in ("open", "high", "low", "close"))
        assert lo <= min(o, c) <= max(o, c) <= h
    scenario = load_scenario(name)
    assert scenario["run"]["steps"] == rows - 1
    assert scenario["market"]["path"] == str((SCENARIOS / "data" / fname).resolve())
    assert scenario["market"]["price_column"] == "close"


def test_scenarios_folder_is_small():
    total = sum(f.stat().st_size for f in SCENARIOS.rglob("*") if f.is_file())
    assert total < 1_000_000
    assert (SCENARIOS / "data" / "SOURCE.md").is_file()


def test_depth_collapse_scenario_raises_bad_debt_without_moving_prices(tmp_path):
    # The same paths (the scenario's market has no jumps) with and without the
    # hour-long collapse of the bid: the collapse can only make sales fill lower.
    import copy

    from stress.config import config_from_dict
    base = {"run": {"name": "dc", "paths": 6, "steps": 720, "seed": 3},
            "population": {"kind": "synthetic", "accounts": 3000},
            "exchange": {"slippage": 0.0005}}
    hit = stress.run(config_from_dict(base), scenario="depth_collapse", workers=1,
                     out=tmp_path / "hit")
    calm = copy.deepcopy(yaml.safe_load(hit.attrs["config"]))
    calm["liquidity"]["events"] = []
    calm_ds = stress.run(config_from_dict(calm), workers=1, out=tmp_path / "calm")
    nbp_hit = hit.shortfall.sel(policy="platform")
    nbp_calm = calm_ds.shortfall.sel(policy="platform")
    assert (nbp_hit >= nbp_calm - 1e-9).all()
    assert float(nbp_hit.sum()) > float(nbp_calm.sum())
