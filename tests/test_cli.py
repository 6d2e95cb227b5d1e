"""The command line: exit codes and one-line messages that name file, key path and value."""

from __future__ import annotations

import textwrap

import pytest
from typer.testing import CliRunner

from conftest import ROOT
from stress.cli import app

runner = CliRunner()

GOOD = """
run: {name: tiny, paths: 6, steps: 60, seed: 1, shard_size: 4}
market: {kind: merton, s0: 100.0, sigma: 0.8, jump_intensity: 2000, jump_mean: -0.05}
population: {kind: synthetic, accounts: 300}
fund: {initial: 100.0}
"""


def write(tmp_path, text, name="c.yaml"):
    f = tmp_path / name
    f.write_text(textwrap.dedent(text))
    return f


def test_version():
    r = runner.invoke(app, ["--version"])
    assert r.exit_code == 0 and r.output.startswith("stress ")


def test_validate_accepts_the_default_config():
    r = runner.invoke(app, ["validate", str(ROOT / "configs" / "default.yaml")])
    assert r.exit_code == 0, r.output
    assert "valid" in r.output


def test_run_writes_results_and_prints_summary(tmp_cwd):
    cfg = write(tmp_cwd, GOOD)
    r = runner.invoke(app, ["run", str(cfg), "--workers", "1", "--no-progress"])
    assert r.exit_code == 0, r.output
    assert (tmp_cwd / "results" / "tiny" / "results.nc").is_file()
    assert len(list((tmp_cwd / "results" / "tiny" / "shards").glob("shard-*.nc"))) == 2
    for word in ("mean shortfall", "shortfall q99.9", "P(fund depleted)", "mean ADL cost",
                 "fund+adl", "socialised", "platform"):
        assert word in r.output


def test_run_out_option(tmp_cwd):
    cfg = write(tmp_cwd, GOOD)
    r = runner.invoke(app, ["run", str(cfg), "-w", "1", "--no-progress", "--out", "elsewhere"])
    assert r.exit_code == 0, r.output
    assert (tmp_cwd / "elsewhere" / "results.nc").is_file()
    assert not (tmp_cwd / "results").exists()


BAD = [
    # (yaml replacing/adding to GOOD, expected message fragment)
    ("market: {kind: merton, sigmaa: 0.5}", "c.yaml: market.sigmaa: unknown key"),
    ("market: {kind: merton, sigma: -0.3}",
     "c.yaml: market.sigma: input should be greater than or equal to 0, got -0.3"),
    ("market: {kind: heston}", "c.yaml: market.kind: unknown kind"),
    ("run: {name: tiny, paths: many, steps: 60, seed: 1}", "c.yaml: run.paths:"),
    ("run: {name: tiny, steps: 60, seed: 1}", "c.yaml: run.paths: required key is missing"),
    ("population: {kind: synthetic, leverage: {values: [2, 200], weights: [1, 1]}}",
     "c.yaml: population.leverage.values.1: leverage above the tier table's maximum 125, "
     "got 200.0"),
    ("population: {kind: synthetic, leverage: {values: [2, 5], weights: [1]}}",
     "c.yaml: population.leverage.weights: needs 2 entries"),
    ("market: {kind: replay, path: nope.csv}", "c.yaml: market.path: file not found, got 'nope.csv'"),
    ("population: {kind: csv, path: book.csv}", "c.yaml: population.path: file not found"),
    ("exchange: {tiers: nope_table}", "c.yaml: exchange.tiers: unknown built-in tier table"),
    ("exchange: {tiers: [{notional_floor: 0, notional_cap: 100, mmr: 0.01, max_leverage: 50},"
     " {notional_floor: 200, mmr: 0.02, max_leverage: 25}]}",
     "c.yaml: exchange.tiers.1.notional_floor: tiers must be contiguous"),
    ("exchange: {tiers: [{notional_floor: 0, notional_cap: 100, mmr: 0.02, max_leverage: 40},"
     " {notional_floor: 100, mmr: 0.01, max_leverage: 25}]}",
     "c.yaml: exchange.tiers.1.mmr: maintenance rate must not fall"),
    ("exchange: {tiers: [{notional_floor: 0, mmr: 0.02, max_leverage: 60}]}",
     "c.yaml: exchange.tiers.0.max_leverage: initial margin 1/max_leverage must exceed"),
    ("exchange: {slippage: 1.5}", "c.yaml: exchange.slippage: input should be less than 1"),
    ("policies: [{name: a, layers: [insurance_fund, adl, adl]}]",
     "c.yaml: policies.0.layers: layer 'adl' appears twice"),
    ("policies: [{name: a, layers: [insurance_fund, bailout]}]", "c.yaml: policies.0.layers.1:"),
    ("policies: [{name: a, layers: [adl]}, {name: a, layers: [platform]}]",
     "c.yaml: policies.1.name: policy names must be unique, got 'a'"),
    ("policies: [{name: a, layers: [{adl: {rankin: score}}]}]",
     "c.yaml: policies.0.layers.0.rankin: unknown option of the adl layer"),
    ("policies: [{name: a, layers: [{socialised: {settlement: funding}}]}]",
     "c.yaml: policies.0.layers.0.settlement: settles at funding intervals"),
    ("fund: {initial: -5}", "c.yaml: fund.initial: input should be greater than or equal to 0"),
    ("fund: {initial: 100.0, cap: 50.0}", "c.yaml: fund.cap: must be >= initial (100.0), got 50.0"),
    ("extra_section: {a: 1}", "c.yaml: extra_section: unknown key"),
]


def _merge(extra: str) -> str:
    base = {line.split(":")[0]: line for line in GOOD.strip().splitlines()}
    for line in extra.splitlines():
        base[line.split(":")[0]] = line
    return "\n".join(base.values()) + "\n"


@pytest.mark.parametrize("extra,fragment", BAD, ids=[b[1].split(":")[1].strip() + str(i)
                                                     for i, b in enumerate(BAD)])
@pytest.mark.parametrize("command", ["validate", "run"])
def test_bad_config_exits_2_with_one_line_and_no_output(tmp_cwd, extra, fragment, command):
    cfg = write(tmp_cwd, _merge(extra))
    args = [command, "c.yaml"] + (["-w", "1", "--no-progress"] if command == "run" else [])
    r = runner.invoke(app, args)
    assert r.exit_code == 2, r.output
    assert fragment in r.output, r.output
    assert "Traceback" not in r.output
    assert len(r.output.strip().splitlines()) == 1
    assert not (tmp_cwd / "results").exists()
    assert cfg.is_file()


def test_invalid_yaml_reports_the_line(tmp_cwd):
    write(tmp_cwd, "run: {name: x, paths: 1\nmarket: [\n")
    r = runner.invoke(app, ["validate", "c.yaml"])
    assert r.exit_code == 2
    assert "c.yaml: invalid YAML: line" in r.output


def test_missing_config_file(tmp_cwd):
    r = runner.invoke(app, ["run", "nope.yaml"])
    assert r.exit_code == 2 and "nope.yaml: config file not found" in r.output


def test_nan_in_population_csv_names_row_and_column(tmp_cwd):
    (tmp_cwd / "book.csv").write_text("account_id,qty,entry_price,collateral\n"
                                      "a,1.0,100,10\nb,nan,100,10\n")
    write(tmp_cwd, _merge("population: {kind: csv, path: book.csv}"))
    r = runner.invoke(app, ["run", "c.yaml", "-w", "1", "--no-progress"])
    assert r.exit_code == 2
    assert ("c.yaml: population.path: book.csv row 2 (line 3), column qty: must be a finite "
            "number, got 'nan'") in r.output
    assert not (tmp_cwd / "results").exists()


def test_replay_longer_run_than_data(tmp_cwd):
    (tmp_cwd / "p.csv").write_text("timestamp,close\n1,100\n2,99\n3,98\n")
    write(tmp_cwd, _merge("market: {kind: replay, path: p.csv}"))
    r = runner.invoke(app, ["validate", "c.yaml"])
    assert r.exit_code == 2
    assert "c.yaml: run.steps: the replay has only 3 prices (2 steps), got 60" in r.output


def test_unwritable_output_is_a_user_error(tmp_cwd):
    write(tmp_cwd, GOOD)
    (tmp_cwd / "blocked").write_text("a file, not a folder")
    r = runner.invoke(app, ["run", "c.yaml", "-w", "1", "--no-progress", "--out", "blocked/x"])
    assert r.exit_code == 2
    assert "blocked/x: cannot write results there" in r.output


def test_overflowing_market_is_a_user_error(tmp_cwd):
    write(tmp_cwd, _merge("market: {kind: gbm, s0: 100.0, mu: 1.0e+300, sigma: 0.1}"))
    r = runner.invoke(app, ["run", "c.yaml", "-w", "1", "--no-progress"])
    assert r.exit_code == 2
    assert "is not finite (overflow)" in r.output


# --- stress conformance -------------------------------------------------------

GOLDEN_FILES = sorted(str(f) for f in (ROOT / "tests" / "golden").glob("*.json"))


def _golden_case(file: str, case_id: str) -> dict:
    import json
    cases = json.loads((ROOT / "tests" / "golden" / file).read_text())["cases"]
    return next(c for c in cases if c["id"] == case_id)


def test_conformance_passes_every_golden_vector():
    r = runner.invoke(app, ["conformance", *GOLDEN_FILES])
    assert r.exit_code == 0, r.output
    for word in ("id", "kind", "venue", "output", "expected", "got", "result",
                 "binance-off-cross-btc-lp", "26316.89", "PASS"):
        assert word in r.output
    assert "FAIL" not in r.output
    assert f"0 failed (99 cases in {len(GOLDEN_FILES)} files)" in r.output


def test_conformance_wrong_expected_value_exits_1(tmp_cwd):
    import json
    good = _golden_case("binance_usdm.json", "binance-iso-long-125x")  # tiers/… → bundled copy
    bad = _golden_case("okx.json", "okx-iso-long-lp-fee")
    bad["expected"]["liquidation_price"] = 28600.0
    (tmp_cwd / "v.json").write_text(json.dumps({"cases": [good, bad]}))
    r = runner.invoke(app, ["conformance", "v.json"])
    assert r.exit_code == 1, r.output
    assert "FAIL" in r.output and "PASS" in r.output and "28628.82973" in r.output
    assert "2 of 3 outputs passed, 1 failed (2 cases in 1 file)" in r.output


def test_conformance_missing_file_exits_2(tmp_cwd):
    r = runner.invoke(app, ["conformance", "nope.json"])
    assert r.exit_code == 2
    assert r.output.strip() == "error: nope.json: file not found"


def test_conformance_unknown_kind_exits_2_with_one_line(tmp_cwd):
    import json
    case = _golden_case("funding.json", "fund-long-pos-rate")
    case["kind"] = "funding_fee"
    (tmp_cwd / "v.json").write_text(json.dumps([case]))
    r = runner.invoke(app, ["conformance", "v.json"])
    assert r.exit_code == 2
    assert "Traceback" not in r.output
    assert len(r.output.strip().splitlines()) == 1
    assert r.output.startswith("error: v.json: case 'fund-long-pos-rate': kind: unknown kind "
                               "'funding_fee'")


def test_conformance_bad_json_and_bad_tier_table_exit_2(tmp_cwd):
    import json
    (tmp_cwd / "v.json").write_text('{"cases": [')
    r = runner.invoke(app, ["conformance", "v.json"])
    assert r.exit_code == 2 and "v.json: invalid JSON: line 1" in r.output
    case = _golden_case("okx.json", "okx-sec-tier-60000-cont")
    case["inputs"]["tiers"][1]["notional_floor"] = 21000
    (tmp_cwd / "v.json").write_text(json.dumps([case]))
    r = runner.invoke(app, ["conformance", "v.json"])
    assert r.exit_code == 2 and len(r.output.strip().splitlines()) == 1
    assert ("v.json: case 'okx-sec-tier-60000-cont': inputs.tiers.1.notional_floor: tiers must "
            "be contiguous") in r.output


def test_levels_prints_the_liquidation_map_and_writes_it(tmp_path):
    import pandas as pd
    cfg = write(tmp_path, GOOD)
    out = tmp_path / "levels.csv"
    r = runner.invoke(app, ["levels", str(cfg), "--bins", "4", "--span", "0.2", "-o", str(out)],
                      terminal_width=200)
    assert r.exit_code == 0, r.output
    assert "liquidation levels of tiny at mark 100" in r.output
    df = pd.read_csv(out)
    assert list(df.price_low) == pytest.approx([80.0, 90.0, 100.0, 110.0])
    # Longs are liquidated below the mark, shorts above.
    assert df.long_notional[:2].sum() > 0 and df.long_notional[2:].sum() == 0
    assert df.short_notional[2:].sum() > 0 and df.short_notional[:2].sum() == 0


def test_levels_rejects_a_bad_span_and_a_bad_config(tmp_path):
    cfg = write(tmp_path, GOOD)
    r = runner.invoke(app, ["levels", str(cfg), "--span", "1"])
    assert r.exit_code == 2 and "--span" in r.output and "Traceback" not in r.output
    r = runner.invoke(app, ["levels", str(write(tmp_path, GOOD + "exchange: {preset: nope}\n",
                                                 "bad.yaml"))])
    assert r.exit_code == 2 and "exchange.preset" in r.output
    assert len(r.output.strip().splitlines()) == 1


@pytest.mark.parametrize("args, code, stream, text", [
    (["--version"], 0, "stdout", "stress "),
    (["run", "missing.yaml"], 2, "stderr", "error: missing.yaml: config file not found"),
    (["no-such-command"], 2, "stderr", "No such command"),
])
def test_the_console_script_ends_with_the_command_exit_code(tmp_path, args, code, stream, text):
    """main() ends the process itself after a command (without the interpreter's slow
    teardown when no pool ran): its exit code and flushed output are the command's."""
    import subprocess
    import sys
    r = subprocess.run([sys.executable, "-m", "stress.cli", *args], capture_output=True,
                       text=True, cwd=tmp_path, timeout=300)
    assert r.returncode == code, r.stderr
    assert text in getattr(r, stream)
