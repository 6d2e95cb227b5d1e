"""Venue presets: every preset loads and prepares, config keys override it, and its
tier table reproduces the golden tier look-ups of its venue."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from conftest import GOLDEN, close
from stress.cli import app
from stress.config import config_from_dict
from stress.errors import ConfigError
from stress.exchange.presets import PRESETS, load_preset
from stress.exchange.tiers import builtin_names, builtin_tiers
from stress.runner.prepare import prepare

RUN = {"name": "preset", "paths": 1, "steps": 10, "seed": 1}
# Leverage within every preset's first tier (Hyperliquid's BTC maximum is 40x) and
# notional within every table's last cap (Gate's is 5M USDT).
POPULATION = {"kind": "synthetic", "accounts": 300,
              "leverage": {"values": [2, 5, 10, 20, 40], "weights": None},
              "notional": {"minimum": 500, "alpha": 1.3, "maximum": 2_000_000}}
# Golden venue labels of each preset.
VENUES = {"binance_usdm": "binance_usdm", "bybit_linear": "bybit_linear", "okx": "okx_linear",
          "gate": "gate_linear", "hyperliquid": "hyperliquid"}
KEYS = {"tiers", "liquidation_fee_rate", "requirement_fee_rate", "mm_basis", "liquidation",
        "surplus_to", "funding"}


def preset_config(name: str, **exchange):
    return config_from_dict({"run": RUN, "population": POPULATION,
                             "exchange": {"preset": name, **exchange}})


def preset_text(name: str) -> str:
    return resources.files("stress.data").joinpath("presets", f"{name}.yaml").read_text()


def test_every_listed_preset_has_a_file_and_a_section_in_sources():
    folder = resources.files("stress.data").joinpath("presets")
    files = sorted(f.name[:-5] for f in folder.iterdir() if f.name.endswith(".yaml"))
    assert files == sorted(PRESETS)
    sources = folder.joinpath("SOURCES.md").read_text()
    for name in PRESETS:
        assert f"## `{name}`" in sources


@pytest.mark.parametrize("name", PRESETS)
def test_preset_loads_and_prepares(name):
    cfg = preset_config(name)
    raw = load_preset(name)
    assert KEYS <= set(raw)
    assert set(raw["funding"]) == {"mode", "interval_minutes", "interest", "clamp", "cap"}
    ex = cfg.exchange
    assert ex.preset == name
    assert ex.tiers == raw["tiers"] and ex.tiers in builtin_names()
    assert ex.liquidation_fee_rate == raw["liquidation_fee_rate"]
    assert ex.requirement_fee_rate == raw["requirement_fee_rate"]
    assert ex.mm_basis == raw["mm_basis"] and ex.surplus_to == raw["surplus_to"]
    assert ex.funding.mode == "premium"
    if ex.liquidation == "partial":
        assert {"partial_fraction", "partial_min_tier"} <= set(raw)
    prepared = prepare(cfg)
    assert len(prepared.book) == POPULATION["accounts"]


@pytest.mark.parametrize("name", PRESETS)
def test_every_preset_setting_has_a_comment(name):
    """Each key of the exchange mapping is preceded by a comment line (its source)."""
    lines = preset_text(name).splitlines()
    for i, line in enumerate(lines):
        stripped = line.strip()
        if stripped and not stripped.startswith("#") and stripped != "exchange:" \
                and not stripped.endswith(":"):
            above = [ln.strip() for ln in lines[max(0, i - 12):i]]
            assert any(a.startswith("#") for a in above), line


def test_config_keys_override_preset_keys():
    cfg = preset_config("binance_usdm", liquidation_fee_rate=0.01, funding={"cap": 0.02})
    raw = load_preset("binance_usdm")
    assert raw["liquidation_fee_rate"] != 0.01
    assert cfg.exchange.liquidation_fee_rate == 0.01
    # Nested keys are merged one by one: the other funding keys stay the preset's.
    assert cfg.exchange.funding.cap == 0.02
    assert cfg.exchange.funding.interval_minutes == raw["funding"]["interval_minutes"]
    assert cfg.exchange.funding.interest == raw["funding"]["interest"]
    assert cfg.exchange.tiers == raw["tiers"]


def test_config_can_replace_a_preset_tier_table():
    cfg = preset_config("okx", tiers="gate_btcusdt_risk_limit")
    assert cfg.exchange.tiers == "gate_btcusdt_risk_limit"
    assert cfg.exchange.requirement_fee_rate == load_preset("okx")["requirement_fee_rate"]


def test_unknown_preset_is_a_config_error_naming_the_key():
    with pytest.raises(ConfigError) as e:
        preset_config("kraken")
    assert str(e.value).startswith("exchange.preset: unknown preset")
    assert "'kraken'" in str(e.value)


def test_unknown_preset_exits_2_with_one_line(tmp_cwd):
    text = yaml.safe_dump({"run": RUN, "exchange": {"preset": "kraken"}})
    (tmp_cwd / "c.yaml").write_text(text)
    r = CliRunner().invoke(app, ["validate", "c.yaml"])
    assert r.exit_code == 2, r.output
    assert "c.yaml: exchange.preset: unknown preset" in r.output
    assert "Traceback" not in r.output
    assert len(r.output.strip().splitlines()) == 1


def _golden_tier_cases() -> list[tuple[str, dict]]:
    """(preset, case) for every golden tier_lookup case of a preset's venue and table."""
    tables = {name: load_preset(name)["tiers"] for name in PRESETS}
    out = []
    for f in sorted(GOLDEN.glob("*.json")):
        for case in json.loads(f.read_text())["cases"]:
            tiers = case["inputs"].get("tiers")
            if case["kind"] != "tier_lookup" or not isinstance(tiers, str):
                continue
            for name in PRESETS:
                if VENUES[name] == case["venue"] and Path(tiers).stem == tables[name]:
                    out.append((name, case))
    return out


GOLDEN_TIER_CASES = _golden_tier_cases()


def test_golden_tier_cases_cover_at_least_binance():
    assert any(name == "binance_usdm" for name, _ in GOLDEN_TIER_CASES)


@pytest.mark.parametrize("name,case", GOLDEN_TIER_CASES,
                         ids=[c["id"] for _, c in GOLDEN_TIER_CASES])
def test_preset_tiers_reproduce_golden_tier_lookups(name, case):
    tiers = builtin_tiers(preset_config(name).exchange.tiers)
    n = case["inputs"]["notional"]
    k = tiers.index(n)
    got = {"tier": k + 1, "mmr": tiers.mmr[k], "maint_amount": tiers.maint_amount[k],
           "max_leverage": tiers.max_leverage[k], "maintenance_margin": tiers.maintenance_margin(n)}
    for key, exp in case["expected"].items():
        assert close(float(got[key]), exp, case["tolerance"]), (key, got[key], exp)
