"""Kou double-exponential jump-diffusion: closed forms, jump-size laws, config errors, a run.

Statistical tests use fixed seeds. Moment checks allow 4.5 standard errors, a
false-failure rate below 1e-5 per check for a fresh seed (normal approximation).
KS tests of the jump sizes require p > 1e-4: their false-failure rate is 1e-4
per test for a fresh seed.
"""

from __future__ import annotations

import math
import textwrap

import numpy as np
import pytest

from conftest import terminal_log_returns
from scipy import stats
from typer.testing import CliRunner

from stress.cli import app
from stress.config import GBMMarket, KouMarket, config_from_dict
from stress.errors import ConfigError
from stress.market.jumps import kou_jumps, kou_kappa, kou_log_increments
from stress.market.paths import kou_log_return_moments, price_path
from stress.runner.seeding import path_rng

MINUTE = 1 / (365 * 24 * 60)
DAY = 1440 * MINUTE


def _terminal_log_returns(market, n_paths, steps=1440, dt=MINUTE):
    return terminal_log_returns(market, n_paths, 11, steps, dt)


@pytest.mark.parametrize("market", [
    KouMarket(kind="kou", s0=100.0, mu=0.1, sigma=0.6, jump_intensity=400.0, p_up=0.3,
              eta_up=15.0, eta_down=10.0),
    KouMarket(kind="kou", s0=100.0, mu=0.0, sigma=0.3, jump_intensity=2000.0, p_up=0.6,
              eta_up=60.0, eta_down=40.0),
])
def test_log_return_mean_and_variance_match_closed_form(market):
    n = 4000
    x = _terminal_log_returns(market, n)
    mean, var = kou_log_return_moments(DAY, market.mu, market.sigma, market.jump_intensity,
                                       market.p_up, market.eta_up, market.eta_down)
    assert abs(x.mean() - mean) < 4.5 * math.sqrt(var / n)
    # SE of the sample variance from the sample's fourth central moment.
    m4 = np.mean((x - x.mean()) ** 4)
    assert abs(x.var(ddof=1) - var) < 4.5 * math.sqrt((m4 - var ** 2) / n)


def test_drift_is_compensated_so_expected_price_grows_at_mu():
    m = KouMarket(kind="kou", s0=100.0, mu=2.0, sigma=0.5, jump_intensity=300.0, p_up=0.3,
                  eta_up=10.0, eta_down=8.0)
    steps, dt = 60, 1 / 365 / 24
    ratio = np.array([price_path(m, steps, dt, path_rng(3, i))[-1] / 100.0
                      for i in range(20000)])
    se = ratio.std(ddof=1) / math.sqrt(len(ratio))
    expected = math.exp(m.mu * steps * dt)
    assert abs(ratio.mean() - expected) < 4.5 * se
    # Without the λκ compensation the mean would be off by exp(λκt) − 1 ≈ −8.7 %.
    kappa = kou_kappa(m.p_up, m.eta_up, m.eta_down)
    assert abs(expected * math.exp(m.jump_intensity * kappa * steps * dt) - expected) > 10 * se


def test_jump_sizes_are_double_exponential():
    p_up, eta_up, eta_down = 0.4, 25.0, 12.0
    counts, sizes = kou_jumps(20000, MINUTE, 0.25 / MINUTE, p_up, eta_up, eta_down,
                              path_rng(5, 0))
    assert counts.sum() == sizes.size
    up, down = sizes[sizes > 0], -sizes[sizes < 0]
    assert up.size + down.size == sizes.size
    n = sizes.size
    assert abs(up.size / n - p_up) < 4.5 * math.sqrt(p_up * (1 - p_up) / n)
    assert stats.kstest(up, stats.expon(scale=1 / eta_up).cdf).pvalue > 1e-4
    assert stats.kstest(down, stats.expon(scale=1 / eta_down).cdf).pvalue > 1e-4
    # The counts are Poisson(λ·dt): mean and variance both 0.25.
    assert abs(counts.mean() - 0.25) < 4.5 * math.sqrt(0.25 / counts.size)
    assert abs(counts.var(ddof=1) - 0.25) < 4.5 * math.sqrt((0.25 + 2 * 0.25 ** 2) / counts.size)


def test_path_increments_are_drift_plus_the_drawn_jumps():
    steps, dt, lam, p, e1, e2 = 500, MINUTE, 20000.0, 0.3, 20.0, 15.0
    inc = kou_log_increments(steps, dt, 0.4, 0.0, lam, p, e1, e2, path_rng(9, 2))
    rng = path_rng(9, 2)
    rng.standard_normal(steps)  # the diffusion's draws come first
    counts, sizes = kou_jumps(steps, dt, lam, p, e1, e2, rng)
    assert counts.sum() > 0
    expected = (0.4 - lam * kou_kappa(p, e1, e2)) * dt + np.bincount(
        np.repeat(np.arange(steps), counts), weights=sizes, minlength=steps)
    np.testing.assert_allclose(inc, expected, rtol=1e-12, atol=1e-15)


def test_without_jumps_kou_is_the_gbm_path():
    kou = KouMarket(kind="kou", s0=100.0, mu=0.3, sigma=0.7, jump_intensity=0.0)
    gbm = GBMMarket(kind="gbm", s0=100.0, mu=0.3, sigma=0.7)
    np.testing.assert_array_equal(price_path(kou, 300, MINUTE, path_rng(1, 4)),
                                  price_path(gbm, 300, MINUTE, path_rng(1, 4)))


def test_paths_depend_only_on_seed_and_index():
    m = KouMarket(kind="kou", jump_intensity=5000.0)
    a = price_path(m, 200, MINUTE, path_rng(5, 17))
    np.testing.assert_array_equal(a, price_path(m, 200, MINUTE, path_rng(5, 17)))
    assert not np.array_equal(a, price_path(m, 200, MINUTE, path_rng(5, 18)))


# ------------------------------------------------------------------- config and CLI
def test_eta_up_at_most_one_is_a_one_line_cli_error(tmp_cwd):
    (tmp_cwd / "c.yaml").write_text(textwrap.dedent("""
        run: {name: k, paths: 2, steps: 10, seed: 1}
        market: {kind: kou, eta_up: 0.8}
    """))
    r = CliRunner().invoke(app, ["validate", "c.yaml"])
    assert r.exit_code == 2, r.output
    assert "c.yaml: market.eta_up: must be > 1" in r.output
    assert "got 0.8" in r.output
    assert len(r.output.strip().splitlines()) == 1


@pytest.mark.parametrize("market,fragment", [
    ({"kind": "kou", "eta_down": 0}, "market.eta_down: input should be greater than 0"),
    ({"kind": "kou", "p_up": 1.5}, "market.p_up: input should be less than or equal to 1"),
    ({"kind": "kou", "jump_intensity": -1}, "market.jump_intensity: input should be greater"),
    ({"kind": "kou", "jump_mean": -0.1}, "market.jump_mean: unknown key"),
])
def test_bad_kou_keys_are_named(market, fragment):
    with pytest.raises(ConfigError, match=fragment):
        config_from_dict({"run": {"name": "k", "paths": 1, "steps": 1, "seed": 0},
                          "market": market})
