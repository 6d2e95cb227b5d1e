"""Price generators against closed forms; replay CSV loading and its errors.

Statistical tests use fixed seeds. Each bound is 4.5 standard errors, a
false-failure rate below 1e-5 per check for a fresh seed (normal approximation).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from conftest import terminal_log_returns

from stress.config import GBMMarket, MertonMarket, ReplayMarket
from stress.errors import ConfigError
from stress.market.paths import merton_log_return_moments, price_path
from stress.market.replay import load_replay
from stress.runner.seeding import path_rng

DAY = 1440 / (365 * 24 * 60)


def _terminal_log_returns(market, n_paths, steps=1440, dt=1 / (365 * 24 * 60)):
    return terminal_log_returns(market, n_paths, 7, steps, dt)


@pytest.mark.parametrize("market", [
    MertonMarket(kind="merton", s0=100.0, mu=0.1, sigma=0.6, jump_intensity=400.0,
                 jump_mean=-0.05, jump_std=0.04),
    MertonMarket(kind="merton", s0=100.0, mu=0.0, sigma=0.3, jump_intensity=2000.0,
                 jump_mean=0.01, jump_std=0.02),
    GBMMarket(kind="gbm", s0=100.0, mu=0.5, sigma=0.8),
])
def test_log_return_mean_and_variance_match_closed_form(market):
    n = 4000
    x = _terminal_log_returns(market, n)
    mean, var = merton_log_return_moments(DAY, market.mu, market.sigma,
                                          getattr(market, "jump_intensity", 0.0),
                                          getattr(market, "jump_mean", 0.0),
                                          getattr(market, "jump_std", 0.0))
    se_mean = math.sqrt(var / n)
    assert abs(x.mean() - mean) < 4.5 * se_mean
    # SE of the sample variance from the sample's fourth central moment.
    m4 = np.mean((x - x.mean()) ** 4)
    se_var = math.sqrt((m4 - var ** 2) / n)
    assert abs(x.var(ddof=1) - var) < 4.5 * se_var


def test_drift_is_compensated_so_expected_price_grows_at_mu():
    # E[S_t] = s0·exp(mu·t) whatever the jumps: the λκ compensation.
    m = MertonMarket(kind="merton", s0=100.0, mu=2.0, sigma=0.5, jump_intensity=300.0,
                     jump_mean=-0.08, jump_std=0.05)
    steps, dt = 60, 1 / 365 / 24
    ratio = np.array([price_path(m, steps, dt, path_rng(3, i))[-1] / 100.0
                      for i in range(20000)])
    expected = math.exp(m.mu * steps * dt)
    assert abs(ratio.mean() - expected) < 4.5 * ratio.std(ddof=1) / math.sqrt(len(ratio))
    # Without compensation the mean would be off by exp(λκt) − 1 ≈ −2.6 %: far outside.
    kappa = math.exp(m.jump_mean + m.jump_std ** 2 / 2) - 1
    assert abs(expected * math.exp(m.jump_intensity * kappa * steps * dt) - expected) > \
        10 * ratio.std(ddof=1) / math.sqrt(len(ratio))


def test_zero_volatility_gbm_is_deterministic():
    m = GBMMarket(kind="gbm", s0=50.0, mu=0.2, sigma=0.0)
    p = price_path(m, 10, 0.1, path_rng(1, 0))
    np.testing.assert_allclose(p, 50.0 * np.exp(0.2 * 0.1 * np.arange(11)), rtol=1e-14)


def test_paths_depend_only_on_seed_and_index():
    m = MertonMarket(kind="merton")
    a = price_path(m, 100, DAY / 1440, path_rng(5, 17))
    b = price_path(m, 100, DAY / 1440, path_rng(5, 17))
    c = price_path(m, 100, DAY / 1440, path_rng(5, 18))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


# ------------------------------------------------------------------------- replay
def _write(tmp_path, text, name="p.csv"):
    f = tmp_path / name
    f.write_text(text)
    return f


def _replay(tmp_path, text, **kw):
    f = _write(tmp_path, text)
    m = ReplayMarket(kind="replay", path=f.name, **kw)
    return load_replay(m, lambda p: tmp_path / p, "cfg.yaml")


def test_replay_reads_prices_in_order_and_filters(tmp_path):
    text = ("event,open_time,close\n"
            "a,1000,10\na,2000,9\nb,1000,50\nb,2000,40\nb,3000,45\n")
    p = _replay(tmp_path, text, timestamp_column="open_time", where={"event": "b"})
    np.testing.assert_array_equal(p, [50.0, 40.0, 45.0])


def test_replay_accepts_iso_time_stamps(tmp_path):
    p = _replay(tmp_path, "timestamp,close\n2020-03-12 00:00:00,7900\n2020-03-12T00:01:00Z,7800\n")
    np.testing.assert_array_equal(p, [7900.0, 7800.0])


@pytest.mark.parametrize("text,fragment", [
    ("timestamp,close\n1,10\n2,nan\n", "row 2 (line 3), column close: must be a finite number"),
    ("timestamp,close\n1,10\n2,-3\n", "row 2 (line 3), column close: must be > 0, got -3.0"),
    ("timestamp,close\n1,10\n2,abc\n", "column close: not a number, got 'abc'"),
    ("timestamp,close\n1,10\n2,\n", "row 2 (line 3), column close: missing value"),
    ("timestamp,price\n1,10\n2,11\n", "missing column(s) close"),
    ("timestamp,close\n2,10\n1,11\n", "row 2 (line 3), column timestamp: time stamps must increase"),
    ("timestamp,close\n", "no data rows"),
])
def test_replay_errors_name_file_row_and_column(tmp_path, text, fragment):
    with pytest.raises(ConfigError) as e:
        _replay(tmp_path, text)
    msg = str(e.value)
    assert msg.startswith("cfg.yaml: market.path: p.csv") or msg.startswith("cfg.yaml: market.path")
    assert fragment in msg


@pytest.mark.parametrize("market", [
    {"kind": "kou", "jump_intensity": 5000.0, "p_up": 0.3},
    {"kind": "hawkes", "down": {"baseline": 5000.0, "excitation": 4000.0, "decay": 8760.0,
                                "mean_size": 0.05}},
], ids=lambda m: m["kind"])
def test_jump_market_runs_end_to_end(tmp_path, market):
    import stress
    from stress.config import config_from_dict
    cfg = config_from_dict({
        "run": {"name": market["kind"], "paths": 3, "steps": 60, "seed": 4},
        "market": market,
        "population": {"kind": "synthetic", "accounts": 200},
    })
    ds = stress.run(cfg, workers=1, out=tmp_path)
    assert ds.sizes["path"] == 3
    assert (tmp_path / "results.nc").is_file()
    assert f"kind: {market['kind']}" in ds.attrs["config"]
    assert np.all(np.isfinite(ds["shortfall"].values))
