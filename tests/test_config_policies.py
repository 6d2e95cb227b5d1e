"""Policy layers with options, the fund's cap and trajectory, and their cross-checks."""

from __future__ import annotations

import textwrap

import pytest
from typer.testing import CliRunner

from stress.cli import app
from stress.config import (AdlLayer, FundConfig, InsuranceFundLayer, PlatformLayer,
                           PolicyConfig, SocialisedLayer, config_from_dict, fund_record_steps,
                           load_config, settlement_steps)

runner = CliRunner()

RUN = {"name": "tiny", "paths": 2, "steps": 60, "seed": 1}

HEAD = """
run: {name: tiny, paths: 2, steps: 60, seed: 1}
population: {kind: synthetic, accounts: 50}
"""

EXAMPLE = HEAD + """
policies:
  - name: fund+adl
    layers: [insurance_fund, {adl: {ranking: risk_based}}]
  - name: socialised-daily
    layers: [{socialised: {settlement: day}}, platform]
  - name: capped
    layers: [{insurance_fund: {initial: 2.0e6, cap: 5.0e6}}, adl]
"""


def cfg_with(policies=None, **sections):
    data = {"run": {**RUN, **sections.pop("run", {})}, **sections}
    if policies is not None:
        data["policies"] = policies
    return config_from_dict(data)


def write(folder, text, name="c.yaml"):
    f = folder / name
    f.write_text(textwrap.dedent(text))
    return f


# ------------------------------------------------------------------ parsing
@pytest.mark.parametrize("short,mapping,normalised", [
    ("insurance_fund", {"insurance_fund": {}}, {"kind": "insurance_fund"}),
    ("adl", {"adl": None}, {"kind": "adl"}),
    ("socialised", {"socialised": {}}, {"kind": "socialised", "settlement": "step"}),
    ("platform", {"platform": {}}, {"kind": "platform"}),
])
def test_string_mapping_and_kind_forms_parse_to_the_same_layer(short, mapping, normalised):
    forms = [PolicyConfig(name="p", layers=[x]) for x in (short, mapping, normalised)]
    assert forms[0] == forms[1] == forms[2]
    assert forms[0].layer_names == [short]


def test_example_parses_to_the_layer_models():
    c = cfg_with([{"name": "fund+adl", "layers": ["insurance_fund",
                                                  {"adl": {"ranking": "risk_based"}}]},
                  {"name": "socialised-daily",
                   "layers": [{"socialised": {"settlement": "day"}}, "platform"]},
                  {"name": "capped", "layers": [
                      {"insurance_fund": {"initial": 2.0e6, "cap": 5.0e6}}, "adl"]}])
    a, b, capped = c.policies
    assert a.layers == [InsuranceFundLayer(), AdlLayer(ranking="risk_based")]
    assert b.layers == [SocialisedLayer(settlement="day"), PlatformLayer()]
    assert capped.layer("insurance_fund") == InsuranceFundLayer(initial=2.0e6, cap=5.0e6)
    assert a.layer_names == ["insurance_fund", "adl"]
    assert b.layer("adl") is None and b.layer("socialised").settlement == "day"


def test_defaults_score_ranking_step_settlement_and_inherited_fund():
    c = cfg_with([{"name": "a", "layers": ["insurance_fund", "adl", "socialised"]}],
                 fund={"initial": 123.0, "fee_share": 0.5, "cap": 1000.0})
    p = c.policies[0]
    assert p.layer("adl").ranking == "score" and p.layer("adl").pnl_basis == "collateral"
    assert p.layer("socialised").settlement == "step"
    assert p.fund_settings(c.fund) == (123.0, 1000.0, 0.5)
    assert c.fund.record_every_minutes == 60.0
    assert FundConfig().cap is None


def test_layer_options_override_the_fund_block_one_by_one():
    fund = FundConfig(initial=10.0, fee_share=0.25, cap=100.0)
    p = PolicyConfig(name="p", layers=[{"insurance_fund": {"cap": 50.0}}])
    assert p.fund_settings(fund) == (10.0, 50.0, 0.25)
    p = PolicyConfig(name="p", layers=[{"insurance_fund": {"initial": 20.0, "fee_share": 1.0}}])
    assert p.fund_settings(fund) == (20.0, 100.0, 1.0)


def test_a_policy_without_fund_layer_keeps_the_fund_block_settings():
    fund = FundConfig(initial=7.0, fee_share=0.3, cap=9.0)
    p = PolicyConfig(name="p", layers=["socialised", "platform"])
    assert p.fund_settings(fund) == (7.0, 9.0, 0.3)


def test_adl_options_default_when_the_policy_has_no_adl_layer():
    assert PolicyConfig(name="p", layers=["platform"]).adl == AdlLayer()
    p = PolicyConfig(name="p", layers=[{"adl": {"pnl_basis": "entry_value"}}])
    assert p.adl.pnl_basis == "entry_value"


def test_numeric_settlement_is_minutes():
    p = PolicyConfig(name="p", layers=[{"socialised": {"settlement": 30}}])
    assert p.layer("socialised").settlement == 30.0


# --------------------------------------------------------------- round trip
def test_to_yaml_loads_back_to_an_equal_config_with_the_same_hash(tmp_path):
    first = load_config(write(tmp_path, EXAMPLE + "fund: {initial: 1.0e6, cap: 4.0e6}\n"))
    second = load_config(write(tmp_path, first.to_yaml(), "again.yaml"))
    assert second.policies == first.policies
    assert second.fund == first.fund
    assert second.model_dump() == first.model_dump()
    assert second.hash() == first.hash()


def test_short_and_long_spellings_hash_alike():
    short = cfg_with([{"name": "a", "layers": ["insurance_fund", "adl"]}])
    long = cfg_with([{"name": "a", "layers": [{"insurance_fund": {}},
                                              {"kind": "adl", "ranking": "score"}]}])
    assert short.hash() == long.hash()
    assert short.hash() != cfg_with([{"name": "a", "layers": [
        "insurance_fund", {"adl": {"ranking": "pro_rata"}}]}]).hash()


def test_the_example_config_validates(tmp_cwd):
    write(tmp_cwd, EXAMPLE)
    r = runner.invoke(app, ["validate", "c.yaml"])
    assert r.exit_code == 0, r.output


# ------------------------------------------------------------------- errors
BAD = [
    # (yaml added to HEAD, the whole expected message)
    ("policies: [{name: a, layers: [insurance_fund, adl, adl]}]",
     "c.yaml: policies.0.layers: layer 'adl' appears twice"),
    ("policies: [{name: a, layers: [adl, {kind: adl}]}]",
     "c.yaml: policies.0.layers: layer 'adl' appears twice"),
    ("policies: [{name: a, layers: [insurance_fund, bailout]}]",
     "c.yaml: policies.0.layers.1: unknown layer, expected one of insurance_fund, adl, "
     "socialised, platform, got 'bailout'"),
    ("policies: [{name: a, layers: [{bailout: {size: 1}}]}]",
     "c.yaml: policies.0.layers.0: unknown layer, expected one of insurance_fund, adl, "
     "socialised, platform, got 'bailout'"),
    ("policies: [{name: a, layers: [{kind: bailout}]}]",
     "c.yaml: policies.0.layers.0.kind: unknown layer, expected one of insurance_fund, adl, "
     "socialised, platform, got 'bailout'"),
    ("policies: [{name: a, layers: [{adl: {rankin: x}}]}]",
     "c.yaml: policies.0.layers.0.rankin: unknown option of the adl layer, expected one of "
     "ranking, pnl_basis"),
    ("policies: [{name: a, layers: [{platform: {share: 1}}]}]",
     "c.yaml: policies.0.layers.0.share: unknown option of the platform layer, it has none"),
    ("policies: [{name: a, layers: [{adl: {ranking: oldest}}]}]",
     "c.yaml: policies.0.layers.0.ranking: input should be 'score', 'pro_rata', 'leverage' "
     "or 'risk_based', got 'oldest'"),
    ("policies: [{name: a, layers: [{adl: {}, platform: {}}]}]",
     "c.yaml: policies.0.layers.0: a layer with options is a one-key mapping "
     "{name: {option: value}}, got {'adl': {}, 'platform': {}}"),
    ("policies: [{name: a, layers: [{adl: risk_based}]}]",
     "c.yaml: policies.0.layers.0.adl: the options of a layer must be a mapping, "
     "got 'risk_based'"),
    ("policies: [{name: a, layers: [adl], adl_pnl_basis: entry_value}]",
     "c.yaml: policies.0.adl_pnl_basis: moved into the adl layer: "
     "layers: [..., {adl: {pnl_basis: ...}}], got 'entry_value'"),
    ("policies: [{name: a, layers: [adl]}, {name: b, layers: [{socialised: "
     "{settlement: funding}}]}]",
     "c.yaml: policies.1.layers.0.settlement: settles at funding intervals but "
     "exchange.funding.mode is 'none', got 'funding'"),
    ("policies: [{name: a, layers: [adl]}, {name: b, layers: [{socialised: "
     "{settlement: hourly}}]}]",
     "c.yaml: policies.1.layers.0.settlement: must be step, funding, day, week or a positive "
     "number of minutes, got 'hourly'"),
    ("policies: [{name: a, layers: [{socialised: {settlement: -5}}]}]",
     "c.yaml: policies.0.layers.0.settlement: must be step, funding, day, week or a positive "
     "number of minutes, got -5"),
    ("run: {name: tiny, paths: 2, steps: 60, seed: 1, step_minutes: 5}\n"
     "policies: [{name: a, layers: [{socialised: {settlement: 2}}]}]",
     "c.yaml: policies.0.layers.0.settlement: must be >= run.step_minutes (5.0), got 2.0"),
    ("policies: [{name: a, layers: [{insurance_fund: {initial: 5.0e6, cap: 2.0e6}}]}]",
     "c.yaml: policies.0.layers.0.cap: must be >= the policy's initial fund (5000000.0), "
     "got 2000000.0"),
    ("fund: {initial: 100.0, cap: 1000.0}\n"
     "policies: [{name: a, layers: [{insurance_fund: {initial: 5000.0}}]}]",
     "c.yaml: policies.0.layers.0.initial: must be <= fund.cap (1000.0), got 5000.0"),
    ("policies: [{name: a, layers: [{insurance_fund: {fee_share: 1.5}}]}]",
     "c.yaml: policies.0.layers.0.fee_share: input should be less than or equal to 1, "
     "got 1.5"),
    ("fund: {initial: 100.0, cap: 50.0}",
     "c.yaml: fund.cap: must be >= initial (100.0), got 50.0"),
    ("fund: {cap: .inf}", "c.yaml: fund.cap: must be a finite number, got inf"),
    ("fund: {cap: 0}", "c.yaml: fund.cap: input should be greater than 0, got 0"),
    ("fund: {record_every_minutes: -5}",
     "c.yaml: fund.record_every_minutes: input should be greater than or equal to 0, got -5"),
]


def _merge(extra: str) -> str:
    base = {line.split(":")[0]: line for line in HEAD.strip().splitlines()}
    for line in extra.splitlines():
        base[line.split(":")[0]] = line
    return "\n".join(base.values()) + "\n"


@pytest.mark.parametrize("extra,message", BAD, ids=[m.split(": ")[1] + f"-{i}"
                                                    for i, (_, m) in enumerate(BAD)])
def test_bad_policy_or_fund_gives_one_message_with_key_path_and_value(tmp_cwd, extra, message):
    write(tmp_cwd, _merge(extra))
    r = runner.invoke(app, ["validate", "c.yaml"])
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output
    assert r.output.strip() == f"error: {message}"


def test_funding_settlement_is_fine_with_funding_on():
    c = cfg_with([{"name": "a", "layers": [{"socialised": {"settlement": "funding"}}]}],
                 exchange={"funding": {"mode": "constant"}})
    assert c.policies[0].layer("socialised").settlement == "funding"


def test_record_every_is_off_or_rounded_to_whole_steps():
    assert fund_record_steps(cfg_with(run={"step_minutes": 7},
                                      fund={"record_every_minutes": None})) == 0
    assert fund_record_steps(cfg_with(run={"step_minutes": 7},
                                      fund={"record_every_minutes": 0})) == 0
    assert fund_record_steps(cfg_with(run={"step_minutes": 7},
                                      fund={"record_every_minutes": 63})) == 9
    # The default 60 with 7-minute steps: every 9 steps (63 min); never below one step.
    assert fund_record_steps(cfg_with(run={"step_minutes": 7})) == 9
    assert fund_record_steps(cfg_with(run={"step_minutes": 1440})) == 1
    assert fund_record_steps(cfg_with(run={"step_minutes": 0.1},
                                      fund={"record_every_minutes": 0.3})) == 3


# ------------------------------------------------------------ step helpers
@pytest.mark.parametrize("settlement,one_minute,five_minutes", [
    ("step", 1, 1),
    ("funding", 480, 96),
    ("day", 1440, 288),
    ("week", 10080, 2016),
    (30, 30, 6),
    (7, 7, 1),       # 7/5 rounds to 1 step (7 is >= 5, so it is allowed)
    (12.5, 12, 2),   # round half to even: 12.5 → 12; 2.5 → 2
])
def test_settlement_steps(settlement, one_minute, five_minutes):
    for step, expected in ((1.0, one_minute), (5.0, five_minutes)):
        if not isinstance(settlement, str) and settlement < step:
            continue
        c = cfg_with([{"name": "a", "layers": [{"socialised": {"settlement": settlement}}]}],
                     run={"step_minutes": step}, exchange={"funding": {"mode": "constant"}})
        layer = c.policies[0].layer("socialised")
        assert settlement_steps(layer, c) == expected
        assert layer.every_steps(c) == expected


def test_funding_settlement_follows_the_funding_interval():
    c = cfg_with([{"name": "a", "layers": [{"socialised": {"settlement": "funding"}}]}],
                 run={"step_minutes": 5},
                 exchange={"funding": {"mode": "premium", "interval_minutes": 60}})
    assert c.policies[0].layer("socialised").every_steps(c) == 12


def test_fund_record_steps():
    assert fund_record_steps(cfg_with()) == 60
    assert fund_record_steps(cfg_with(run={"step_minutes": 5})) == 12
    assert fund_record_steps(cfg_with(run={"step_minutes": 60})) == 1
    assert fund_record_steps(cfg_with(run={"step_minutes": 5},
                                      fund={"record_every_minutes": 1440})) == 288
    assert fund_record_steps(cfg_with(fund={"record_every_minutes": None})) == 0
    assert fund_record_steps(cfg_with(fund={"record_every_minutes": 0})) == 0
