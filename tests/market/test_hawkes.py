"""Two-sided Hawkes jump-diffusion: kernel, stationary rate, clustering, config errors, a run.

Statistical tests use fixed seeds. Moment and rate checks allow 4.5 standard
errors: a false-failure rate below 1e-5 per check for a fresh seed (normal
approximation), or 2e-5 where the standard error comes from 100 batch means
(Student t with 99 degrees of freedom). KS tests of the jump sizes require
p > 1e-4: their false-failure rate is 1e-4 per test for a fresh seed.
"""

from __future__ import annotations

import math
import textwrap

import numpy as np
import pytest
from scipy import stats
from typer.testing import CliRunner

from stress.cli import app
from stress.config import HawkesMarket, HawkesSide
from stress.market.jumps import (hawkes_counts, hawkes_counts_python, hawkes_jumps,
                                 hawkes_kappas, hawkes_log_increments, hawkes_log_return_mean,
                                 poisson_quantile, poisson_quantile_python)
from stress.market.paths import hawkes_stationary_intensity, kou_log_return_moments, price_path
from stress.runner.seeding import path_rng

MINUTE = 1 / (365 * 24 * 60)
DAY = 1440 * MINUTE
PER_HOUR = 365 * 24  # a decay of PER_HOUR per year: excitation lifetime one hour

# A side whose jumps cluster (branching ratio 0.6, lifetime 30 minutes) and a side
# without excitation (Poisson jumps at the same stationary rate, 5,000 per year).
CLUSTERED = HawkesSide(baseline=2000.0, excitation=1.2 * PER_HOUR, decay=2 * PER_HOUR,
                       mean_size=0.02)
POISSON = HawkesSide(baseline=5000.0, excitation=0.0, decay=2 * PER_HOUR, mean_size=0.03)
LONG_STEPS = 2_000_000  # one-minute steps: ≈ 3.8 years, ≈ 19,000 jumps per side


@pytest.fixture(scope="module")
def long_path():
    return hawkes_jumps(LONG_STEPS, MINUTE, CLUSTERED, POISSON, path_rng(21, 0))


def test_kernel_matches_python_reference():
    rng = np.random.default_rng(3)
    u = rng.random(5000)
    dt, base, x = 0.01, 20.0, 0.5
    out = []
    for f in (hawkes_counts, hawkes_counts_python):
        counts, lam = np.empty(u.size, dtype=np.int64), np.empty(u.size)
        f(u, dt, base, math.exp(-x), 30.0 * (-math.expm1(-x) / x), 60.0, counts, lam)
        out.append((counts, lam))
    assert out[0][0].max() >= 2  # steps with several jumps are exercised
    np.testing.assert_array_equal(out[0][0], out[1][0])
    np.testing.assert_array_equal(out[0][1], out[1][1])


@pytest.mark.parametrize("mean", [0.0, 1e-4, 0.7, 12.0, 599.0, 601.0, 1e5])
def test_poisson_quantile_matches_scipy(mean):
    u = np.random.default_rng(8).random(500)
    expected = stats.poisson.ppf(u, mean) if mean > 0 else np.zeros(u.size)
    np.testing.assert_array_equal([poisson_quantile(x, mean) for x in u], expected)
    np.testing.assert_array_equal([poisson_quantile_python(x, mean) for x in u[:50]],
                                  expected[:50])


def test_stationary_intensity():
    assert hawkes_stationary_intensity(5.0, 3.0, 4.0) == pytest.approx(20.0)
    with pytest.raises(ValueError, match="branching ratio"):
        hawkes_stationary_intensity(5.0, 4.0, 4.0)


def test_path_starts_at_the_stationary_intensity_and_relaxes_to_baseline():
    side = HawkesSide(baseline=10.0, excitation=30.0, decay=40.0, mean_size=0.05)
    j = hawkes_jumps(50, 1e-3, side, side, path_rng(1, 0))
    assert j.intensity_up[0] == pytest.approx(40.0)
    # Between jumps the excess over the baseline decays by exp(−β·dt) per step.
    quiet = np.flatnonzero(j.counts_down[:-1] == 0)
    np.testing.assert_allclose(j.intensity_down[quiet + 1] - 10.0,
                               (j.intensity_down[quiet] - 10.0) * math.exp(-40.0 * 1e-3),
                               rtol=1e-12)


@pytest.mark.parametrize("side_name", ["up", "down"])
def test_long_run_count_rate_is_the_stationary_intensity(long_path, side_name):
    side = CLUSTERED if side_name == "up" else POISSON
    counts = getattr(long_path, f"counts_{side_name}")
    batches = counts.reshape(100, -1).sum(axis=1) / (counts.size // 100 * MINUTE)
    expected = hawkes_stationary_intensity(side.baseline, side.excitation, side.decay)
    assert expected == pytest.approx(5000.0)
    # Batches of ≈ 2 weeks are much longer than the 30-minute excitation lifetime:
    # nearly independent, so the batch means give the standard error.
    se = batches.std(ddof=1) / math.sqrt(batches.size)
    assert abs(batches.mean() - expected) < 4.5 * se


def _dispersion(counts, window=1440):
    w = counts[: counts.size // window * window].reshape(-1, window).sum(axis=1)
    # SE of var/mean for Poisson counts of mean m: sqrt((2 + 1/m) / n).
    return w.var(ddof=1) / w.mean(), math.sqrt((2 + 1 / w.mean()) / w.size)


def test_self_excited_jumps_cluster(long_path):
    d, se = _dispersion(long_path.counts_up)
    assert d > 1 + 4.5 * se
    # For windows much longer than 1/β the index of dispersion tends to 1/(1 − α/β)².
    assert d > 4  # 6.25 in the limit


def test_without_excitation_counts_are_poisson(long_path):
    d, se = _dispersion(long_path.counts_down)
    assert abs(d - 1) < 4.5 * se
    np.testing.assert_array_equal(long_path.intensity_down, POISSON.baseline)


def test_jump_sizes_are_exponential(long_path):
    assert long_path.sizes_up.size == long_path.counts_up.sum()
    assert long_path.sizes_down.size == long_path.counts_down.sum()
    for sizes, side in ((long_path.sizes_up, CLUSTERED), (long_path.sizes_down, POISSON)):
        assert stats.kstest(sizes, stats.expon(scale=side.mean_size).cdf).pvalue > 1e-4


def test_path_increments_are_drift_plus_the_drawn_jumps():
    up = HawkesSide(baseline=3000.0, excitation=1000.0, decay=4000.0, mean_size=0.01)
    down = HawkesSide(baseline=4000.0, excitation=2000.0, decay=2500.0, mean_size=0.02)
    steps = 3000
    inc = hawkes_log_increments(steps, MINUTE, 0.5, 0.0, up, down, path_rng(2, 9))
    rng = path_rng(2, 9)
    rng.standard_normal(steps)  # the diffusion's draws come first
    j = hawkes_jumps(steps, MINUTE, up, down, rng)
    assert j.counts_up.sum() > 0 and j.counts_down.sum() > 0
    k_up, k_down = hawkes_kappas(up.mean_size, down.mean_size)
    drift = 0.5 - 4000.0 * k_up - 20000.0 * k_down  # λ̄ = 4,000 and 20,000 per year

    def per_step(counts, sizes):
        return np.bincount(np.repeat(np.arange(steps), counts), weights=sizes,
                           minlength=steps)

    expected = (drift * MINUTE + per_step(j.counts_up, j.sizes_up)
                - per_step(j.counts_down, j.sizes_down))
    np.testing.assert_allclose(inc, expected, rtol=1e-12, atol=1e-15)


def _terminal_log_returns(market, n_paths):
    out = np.empty(n_paths)
    for i in range(n_paths):
        p = price_path(market, 1440, MINUTE, path_rng(13, i))
        out[i] = math.log(p[-1] / p[0])
    return out


def test_without_excitation_hawkes_is_kou():
    # Two independent Poisson sides = Kou with λ = b_up + b_down, p = b_up / λ, η = 1/m.
    up = HawkesSide(baseline=800.0, excitation=0.0, decay=1.0, mean_size=1 / 40)
    down = HawkesSide(baseline=1200.0, excitation=0.0, decay=1.0, mean_size=1 / 20)
    m = HawkesMarket(kind="hawkes", s0=100.0, mu=0.1, sigma=0.3, up=up, down=down)
    n = 4000
    x = _terminal_log_returns(m, n)
    mean, var = kou_log_return_moments(DAY, 0.1, 0.3, 2000.0, 0.4, 40.0, 20.0)
    assert hawkes_log_return_mean(DAY, 0.1, 0.3, up, down) == pytest.approx(mean, rel=1e-12)
    assert abs(x.mean() - mean) < 4.5 * math.sqrt(var / n)
    m4 = np.mean((x - x.mean()) ** 4)
    assert abs(x.var(ddof=1) - var) < 4.5 * math.sqrt((m4 - var ** 2) / n)
    # And E[S_t] = s0·exp(mu·t) exactly, as for Kou.
    r = np.exp(x)
    assert abs(r.mean() - math.exp(0.1 * DAY)) < 4.5 * r.std(ddof=1) / math.sqrt(n)


def test_clustered_log_return_mean_matches_closed_form():
    up = HawkesSide(baseline=300.0, excitation=0.5 * PER_HOUR, decay=PER_HOUR, mean_size=0.02)
    down = HawkesSide(baseline=500.0, excitation=0.7 * PER_HOUR / 2, decay=PER_HOUR / 2,
                      mean_size=0.03)
    m = HawkesMarket(kind="hawkes", s0=100.0, mu=0.2, sigma=0.3, up=up, down=down)
    n = 4000
    x = _terminal_log_returns(m, n)
    mean = hawkes_log_return_mean(DAY, m.mu, m.sigma, up, down)
    assert abs(x.mean() - mean) < 4.5 * x.std(ddof=1) / math.sqrt(n)


def test_paths_depend_only_on_seed_and_index():
    m = HawkesMarket(kind="hawkes")
    a = price_path(m, 200, MINUTE, path_rng(5, 17))
    np.testing.assert_array_equal(a, price_path(m, 200, MINUTE, path_rng(5, 17)))
    assert not np.array_equal(a, price_path(m, 200, MINUTE, path_rng(5, 18)))


# ------------------------------------------------------------------- config and CLI
def _validate(tmp_cwd, market: str):
    (tmp_cwd / "c.yaml").write_text(textwrap.dedent(f"""
        run: {{name: h, paths: 2, steps: 10, seed: 1}}
        market: {market}
    """))
    return CliRunner().invoke(app, ["validate", "c.yaml"])


@pytest.mark.parametrize("market,message", [
    ("{kind: hawkes, up: {baseline: 5, excitation: 5000, decay: 4000, mean_size: 0.05}}",
     "c.yaml: market.up.excitation: branching ratio excitation/decay = 1.25 must be < 1"),
    ("{kind: hawkes, down: {baseline: 5, excitation: 4000, decay: 4000, mean_size: 0.05}}",
     "c.yaml: market.down.excitation: branching ratio excitation/decay = 1 must be < 1"),
    ("{kind: hawkes, up: {baseline: 5, excitation: 0, decay: 4000, mean_size: 1.2}}",
     "c.yaml: market.up.mean_size: must be < 1 (otherwise the expected price is infinite), "
     "got 1.2"),
    ("{kind: hawkes, up: {baseline: 5}}", "c.yaml: market.up.excitation: required key is missing"),
    ("{kind: hawkes, up: {baseline: 5, excitation: 0, decay: 0, mean_size: 0.1}}",
     "c.yaml: market.up.decay: input should be greater than 0"),
])
def test_invalid_hawkes_config_is_a_one_line_cli_error(tmp_cwd, market, message):
    r = _validate(tmp_cwd, market)
    assert r.exit_code == 2, r.output
    assert message in r.output
    assert len(r.output.strip().splitlines()) == 1


def test_large_down_jumps_are_valid(tmp_cwd):
    # A down jump −Exp(m) has E[e^J] = 1/(1 + m) for any m: no upper bound on that side.
    r = _validate(tmp_cwd, "{kind: hawkes, down: {baseline: 5, excitation: 0, decay: 1, "
                           "mean_size: 1.5}}")
    assert r.exit_code == 0, r.output
