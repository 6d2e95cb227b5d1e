"""Risk statistics of a run: known distributions, interval coverage, hand-built
datasets, lazy and dask-backed inputs, extra dimensions and the ``compare`` command.

Every Dataset here is synthetic (seeded numpy draws), not a simulation.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from scipy.stats import binom, binomtest, norm
from typer.testing import CliRunner

from stress import analysis
from stress.analysis import (BEARERS, compare, expected_shortfall, loss_bearers,
                             required_fund, ruin_probability, var)
from stress.cli import app
from stress.errors import ConfigError, StressError

POLICIES = ["fund+adl", "socialised", "platform"]
LAYERS = ["insurance_fund>adl", "socialised", "platform"]
BEARER_VARS = list(BEARERS.values())


def results(n_paths: int = 400, seed: int = 0, fund_initial=(50.0, 0.0, 0.0)) -> xr.Dataset:
    """A results Dataset shaped like a run's: three policies, the loss identity holds,
    ``fund_need`` NaN for the policies without an insurance fund."""
    rng = np.random.default_rng(seed)
    m, n = len(POLICIES), n_paths
    hit = rng.random((m, n)) < 0.4
    shortfall = np.where(hit, rng.lognormal(2.0, 1.5, (m, n)), 0.0)
    split = rng.dirichlet(np.ones(5), (m, n)) * shortfall[..., None]
    shortfall = split.sum(axis=-1)  # the identity exactly, rounding included
    has_fund = np.array([True, False, False])[:, None]
    fund_need = np.where(has_fund, shortfall * rng.uniform(1.0, 3.0, (m, n)), np.nan)
    loss_share = np.divide(split, shortfall[..., None], out=np.full(split.shape, np.nan),
                           where=shortfall[..., None] > 0)
    pp = ("policy", "path")
    data = {"shortfall": (pp, shortfall, {"units": "quote"}),
            **{name: (pp, split[..., i], {"units": "quote"})
               for i, name in enumerate(BEARER_VARS)},
            "fund_need": (pp, fund_need, {"units": "quote"}),
            "n_adl": (pp, rng.integers(0, 6, (m, n))),
            "n_accounts_hit": (pp, rng.integers(0, 40, (m, n))),
            "adl_max_loss_fraction": (pp, rng.uniform(0, 0.5, (m, n))),
            "haircut_rate": (pp, rng.uniform(0, 0.01, (m, n))),
            "haircut_rate_max": (pp, rng.uniform(0, 0.05, (m, n))),
            "loss_gini": (pp, np.where(hit, rng.uniform(0, 1, (m, n)), np.nan)),
            "n_liquidations": (pp, rng.integers(0, 100, (m, n))),
            "fund_depleted": (pp, (fund_need > 50.0).astype(np.int64)),
            "loss_share": (pp + ("bearer",), loss_share)}
    coords = {"policy": POLICIES, "path": np.arange(n), "bearer": list(BEARERS),
              "fund_initial": ("policy", list(fund_initial)), "layers": ("policy", LAYERS)}
    return xr.Dataset(data, coords=coords, attrs={"run_name": "synthetic"})


def one_policy(name: str, values: np.ndarray, **coords) -> xr.Dataset:
    """A Dataset whose only variable ``name`` holds ``values`` (policy, path)."""
    values = np.atleast_2d(values)
    pols = [f"p{i}" for i in range(values.shape[0])]
    return xr.Dataset({name: (("policy", "path"), values)},
                      coords={"policy": pols, "path": np.arange(values.shape[1]), **coords})


# --- known distributions --------------------------------------------------------
# Lognormal(mu, sigma): quantile exp(mu + sigma z_q); density at x: phi(z)/(x sigma).
MU, SIGMA = 1.0, 0.8


def lognormal_quantile(q: float) -> float:
    return math.exp(MU + SIGMA * norm.ppf(q))


def quantile_se(q: float, n: int) -> float:
    """Asymptotic standard error of the sample q-quantile: sqrt(q(1-q)/n) / f(xi)."""
    xi = lognormal_quantile(q)
    density = norm.pdf(norm.ppf(q)) / (xi * SIGMA)
    return math.sqrt(q * (1 - q) / n) / density


def test_var_of_lognormal_is_close_to_the_true_quantile():
    n, q = 50_000, 0.99
    x = np.random.default_rng(1).lognormal(MU, SIGMA, n)
    r = var(one_policy("shortfall", x), q, n_boot=200)
    est = float(r.estimate[0])
    # 4 asymptotic standard errors: a false failure has probability ~6e-5.
    assert abs(est - lognormal_quantile(q)) < 4 * quantile_se(q, n)
    assert est == np.quantile(x, q, method="inverted_cdf")
    assert float(r.ci_low[0]) <= est <= float(r.ci_high[0])
    assert r.attrs["method"] == "bootstrap" and r.attrs["n_boot"] == 200
    assert r.attrs["ci"] == 0.95 and r.attrs["seed"] == 0 and r.attrs["q"] == q


def test_expected_shortfall_of_lognormal_matches_the_closed_form():
    n, q = 50_000, 0.99
    x = np.random.default_rng(2).lognormal(MU, SIGMA, n)
    r = expected_shortfall(one_policy("shortfall", x), q, n_boot=200)
    z = norm.ppf(q)
    xi = lognormal_quantile(q)
    tail_x = math.exp(MU + SIGMA ** 2 / 2) * norm.cdf(SIGMA - z)        # E[X; X > xi]
    tail_x2 = math.exp(2 * MU + 2 * SIGMA ** 2) * norm.cdf(2 * SIGMA - z)  # E[X^2; X > xi]
    es = tail_x / (1 - q)
    # ES = xi + E[(X - xi)+]/(1-q); its estimator has asymptotic variance
    # Var((X - xi)+) / (n (1-q)^2). Tolerance 4 standard errors (false failure ~6e-5).
    excess2 = tail_x2 - 2 * xi * tail_x + xi ** 2 * (1 - q)
    excess = tail_x - xi * (1 - q)
    se = math.sqrt((excess2 - excess ** 2) / (n * (1 - q) ** 2))
    est = float(r.estimate[0])
    assert abs(est - es) < 4 * se
    # 500 = (1 - q) n paths: the estimate is their mean exactly.
    assert est == pytest.approx(np.sort(x)[-500:].mean(), rel=1e-12)
    assert est >= float(var(one_policy("shortfall", x), q, n_boot=10).estimate[0])


def test_expected_shortfall_weights_a_fractional_path_and_takes_the_max_beyond_the_data():
    x = np.arange(1.0, 11.0)  # 10 paths
    ds = one_policy("shortfall", x)
    # w = (1 - 0.75) 10 = 2.5: (10 + 9 + 0.5 * 8) / 2.5
    assert float(expected_shortfall(ds, 0.75, n_boot=5).estimate[0]) == pytest.approx(9.2)
    assert float(expected_shortfall(ds, 0.8, n_boot=5).estimate[0]) == pytest.approx(9.5)
    assert float(expected_shortfall(ds, 0.95, n_boot=5).estimate[0]) == pytest.approx(10.0)
    assert float(var(ds, 0.7, n_boot=5).estimate[0]) == 7.0  # ceil(0.7 * 10) = 7th smallest


def test_required_fund_of_lognormal_fund_need_is_close_to_the_true_quantile():
    n, p = 50_000, 1e-2
    x = np.random.default_rng(3).lognormal(MU, SIGMA, n)
    r = required_fund(one_policy("fund_need", x, fund_initial=("policy", [1e9])), p)
    est = float(r.estimate[0])
    assert abs(est - lognormal_quantile(1 - p)) < 4 * quantile_se(1 - p, n)
    assert est == np.quantile(x, 1 - p, method="inverted_cdf")
    assert np.mean(x > est) <= p  # the defining property ...
    assert np.mean(x > np.max(x[x < est])) > p  # ... and the smallest such fund
    assert float(r.ci_low[0]) < est < float(r.ci_high[0])
    assert r.attrs["method"] == "order_statistic" and r.attrs["ci_high_unbounded"] == ""
    assert not bool(r.beyond_configured_fund[0])


# --- interval coverage ----------------------------------------------------------
REPEATS = 200


def within_3_se(hits: int, coverage: float) -> bool:
    """Binomial tolerance: |hits/REPEATS - coverage| within 3 standard errors (a true
    coverage fails this with probability ~0.3 %)."""
    se = math.sqrt(coverage * (1 - coverage) / REPEATS)
    return abs(hits / REPEATS - coverage) <= 3 * se


def test_required_fund_order_statistic_interval_covers_at_its_exact_rate():
    n, p, ci = 1000, 0.05, 0.90
    samples = np.random.default_rng(4).lognormal(MU, SIGMA, (REPEATS, n))
    r = required_fund(one_policy("fund_need", samples), p, ci=ci)
    truth = lognormal_quantile(1 - p)
    hits = int(((r.ci_low <= truth) & (truth <= r.ci_high)).sum())
    # The interval [X_(l), X_(u)] covers with probability P(l <= Bin(n, 1-p) < u),
    # at least ci (binomial ranks make it a little more).
    low, high = analysis._order_statistic_ranks(n, 1 - p, ci)
    exact = binom.cdf(high - 1, n, 1 - p) - binom.cdf(low - 1, n, 1 - p)
    assert ci <= exact < ci + 0.03
    assert within_3_se(hits, exact), (hits, exact)


def test_var_bootstrap_interval_covers_near_the_nominal_rate():
    n, q, ci = 1000, 0.9, 0.90
    truth = lognormal_quantile(q)
    hits = 0
    for rep in range(REPEATS):
        x = np.random.default_rng(10_000 + rep).lognormal(MU, SIGMA, n)
        r = var(one_policy("shortfall", x), q, ci=ci, n_boot=400, seed=rep)
        hits += float(r.ci_low[0]) <= truth <= float(r.ci_high[0])
    # Percentile bootstrap: nominal up to O(n^-1/2) (0.89 measured over 1,000 repeats).
    assert within_3_se(hits, ci), hits


# --- the bootstrap engine ---------------------------------------------------------
@pytest.mark.parametrize("q", [0.5, 0.9, 0.97, 0.99, 0.999])
def test_counts_bootstrap_equals_the_gather_reference(q):
    rng = np.random.default_rng(5)
    x = np.concatenate([rng.lognormal(0, 1, (2, 700)),
                        rng.integers(0, 4, (2, 700)).astype(float)])  # with ties
    n = x.shape[1]
    for stat in (analysis._Quantile(q, n), analysis._TailMean(q, n)):
        fast = stat.boot(x, 300, seed=7)
        slow = analysis.bootstrap_reference(x, stat.point, 300, seed=7)
        np.testing.assert_allclose(fast, slow, rtol=1e-12)
    fast = analysis._Mean().boot(x, 300, seed=7)
    slow = analysis.bootstrap_reference(x, analysis._Mean().point, 300, seed=7)
    np.testing.assert_allclose(fast, slow, rtol=1e-12)


def test_intervals_are_deterministic_and_do_not_depend_on_other_policies():
    ds = results(n_paths=300)
    whole = var(ds, 0.95, n_boot=300)
    alone = var(ds.isel(policy=[1]), 0.95, n_boot=300)
    xr.testing.assert_identical(whole.isel(policy=[1]), alone)
    xr.testing.assert_identical(whole, var(ds, 0.95, n_boot=300))
    other_seed = var(ds, 0.95, n_boot=300, seed=1)
    assert not np.array_equal(whole.ci_low.values, other_seed.ci_low.values)


# --- ruin probability -------------------------------------------------------------
def hand_built_fund_need() -> xr.Dataset:
    return one_policy("fund_need", np.array([[0.0, 5.0, 10.0, 20.0],
                                             [np.nan] * 4]))


def test_ruin_probability_is_the_share_of_paths_needing_more():
    r = ruin_probability(hand_built_fund_need(), 7.0)
    assert float(r.estimate[0]) == 0.5
    assert np.isnan(r.estimate[1]) and np.isnan(r.ci_low[1]) and np.isnan(r.ci_high[1])
    assert 0.0 <= float(r.ci_low[0]) <= 0.5 <= float(r.ci_high[0]) <= 1.0
    # a fund equal to the need suffices
    assert float(ruin_probability(hand_built_fund_need(), 10.0).estimate[0]) == 0.25


def test_ruin_probability_over_several_fund_sizes_adds_a_dimension():
    r = ruin_probability(hand_built_fund_need(), [-1.0, 0.0, 7.0, 20.0])
    assert r.estimate.dims == ("policy", "fund_size")
    np.testing.assert_array_equal(r.estimate.sel(policy="p0"), [1.0, 0.75, 0.5, 0.0])
    assert r.estimate.sel(policy="p1").isnull().all()


@pytest.mark.parametrize("method,scipy_name", [("wilson", "wilson"),
                                               ("clopper_pearson", "exact")])
def test_ruin_probability_binomial_intervals_match_scipy(method, scipy_name):
    need = np.zeros(200)
    need[:3] = 100.0  # 3 ruined paths of 200
    r = ruin_probability(one_policy("fund_need", need), 50.0, method=method, ci=0.9)
    expected = binomtest(3, 200).proportion_ci(confidence_level=0.9, method=scipy_name)
    assert float(r.estimate[0]) == 0.015
    assert float(r.ci_low[0]) == pytest.approx(expected.low, rel=1e-9)
    assert float(r.ci_high[0]) == pytest.approx(expected.high, rel=1e-9)
    assert r.attrs["method"] == method and r.attrs["n_boot"] == 0


def test_ruin_probability_without_ruin_bootstrap_is_degenerate_wilson_is_not():
    ds = one_policy("fund_need", np.zeros(500))
    boot = ruin_probability(ds, 1.0)
    assert float(boot.ci_low[0]) == float(boot.ci_high[0]) == 0.0
    for method in ("wilson", "clopper_pearson"):
        r = ruin_probability(ds, 1.0, method=method)
        assert float(r.ci_low[0]) == 0.0 and 0.005 < float(r.ci_high[0]) < 0.01


def test_ruin_probability_at_each_policys_configured_fund():
    ds = results()
    r = ruin_probability(ds, ds.fund_initial, method="wilson")
    need = ds.fund_need.sel(policy="fund+adl").values
    assert float(r.estimate.sel(policy="fund+adl")) == np.mean(need > 50.0)
    assert r.estimate.sel(policy=["socialised", "platform"]).isnull().all()


# --- required fund ---------------------------------------------------------------
def test_required_fund_with_too_few_paths_has_an_unbounded_upper_end():
    x = np.random.default_rng(6).lognormal(size=(2, 100))
    ds = one_policy("fund_need", x, fund_initial=("policy", [1.0, 1e9]))
    for method in ("order_statistic", "bootstrap"):
        r = required_fund(ds, 1e-3, method=method, n_boot=50)
        assert np.isinf(r.ci_high).all()
        # X_(n) bounds the 0.999-quantile with confidence 0.975 once 0.999^n <= 0.025
        assert 0.999 ** 3688 <= 0.025 < 0.999 ** 3687
        assert "at least 3688 are needed" in r.attrs["ci_high_unbounded"]
        assert r.attrs["min_paths_for_finite_ci_high"] == 3688
        np.testing.assert_array_equal(r.estimate, x.max(axis=1))  # p n < 1: the worst path
        np.testing.assert_array_equal(r.beyond_configured_fund, [True, False])


def test_required_fund_is_nan_without_an_insurance_fund():
    r = required_fund(results(), 0.01)
    assert not np.isnan(r.estimate.sel(policy="fund+adl"))
    assert r.estimate.sel(policy=["socialised", "platform"]).isnull().all()
    assert not r.beyond_configured_fund.sel(policy=["socialised", "platform"]).any()


# --- loss bearers ----------------------------------------------------------------
def test_loss_bearers_totals_shares_and_frequencies():
    pp = ("policy", "path")
    paid = {"fund_paid": [[10.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]],
            "adl_cost": [[0.0, 30.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]],
            "socialised_loss": [[0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]],
            "platform_loss": [[0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]],
            "residual": [[0.0, 5.0, 5.0, 0.0], [0.0, 0.0, 0.0, 0.0]]}
    ds = xr.Dataset({"shortfall": (pp, [[10.0, 35.0, 5.0, 0.0], [0.0] * 4]),
                     **{k: (pp, v) for k, v in paid.items()}},
                    coords={"policy": ["b", "a"], "path": np.arange(4)})
    df = loss_bearers(ds)
    assert list(df.columns) == ["policy", "bearer", "total", "share", "mean_per_path",
                                "paths_bearing", "frequency"]
    assert list(df.policy) == ["b"] * 5 + ["a"] * 5  # the results' order
    b = df[df.policy == "b"].set_index("bearer")
    assert list(b.index) == list(BEARERS)
    assert b.total.to_dict() == {"fund": 10.0, "adl": 30.0, "socialised": 0.0,
                                 "platform": 0.0, "residual": 10.0}
    assert b.share.to_dict() == {"fund": 0.2, "adl": 0.6, "socialised": 0.0,
                                 "platform": 0.0, "residual": 0.2}
    assert b.mean_per_path["adl"] == 7.5
    assert b.paths_bearing.to_dict() == {"fund": 1, "adl": 1, "socialised": 0,
                                         "platform": 0, "residual": 2}
    assert b.frequency["residual"] == 0.5
    a = df[df.policy == "a"]
    assert a.share.isna().all() and (a.total == 0).all()  # no loss: no share, no warning


def test_loss_bearer_shares_add_up_to_one():
    df = loss_bearers(results())
    np.testing.assert_allclose(df.groupby("policy").share.sum(), 1.0, rtol=1e-12)


# --- compare ---------------------------------------------------------------------
def test_compare_has_one_row_per_policy_with_the_desks_numbers():
    ds = results()
    df = compare(ds, q=0.95, ruin=0.01, n_boot=200)
    assert list(df.policy) == POLICIES and list(df.layers) == LAYERS
    row = df.set_index("policy").loc["fund+adl"]
    sf = ds.shortfall.sel(policy="fund+adl").values
    assert row.mean_shortfall_quote == pytest.approx(sf.mean())
    assert row.var_shortfall_quote == np.quantile(sf, 0.95, method="inverted_cdf")
    assert row.es_shortfall_quote == pytest.approx(np.sort(sf)[-20:].mean())
    assert row.var_shortfall_ci_low_quote <= row.var_shortfall_quote
    assert row.p_fund_depleted == ds.fund_depleted.sel(policy="fund+adl").mean()
    need = ds.fund_need.sel(policy="fund+adl").values
    assert row.fund_size_quote == 50.0
    assert row.ruin_probability == np.mean(need > 50.0)
    assert row.required_fund_quote == np.quantile(need, 0.99, method="inverted_cdf")
    assert row.beyond_configured_fund == (row.required_fund_quote > 50.0)
    assert row.mean_n_adl == ds.n_adl.sel(policy="fund+adl").mean()
    assert row.max_haircut_rate_max == ds.haircut_rate_max.sel(policy="fund+adl").max()
    gini = ds.loss_gini.sel(policy="fund+adl").values
    assert row.mean_loss_gini == pytest.approx(gini[~np.isnan(gini)].mean())
    shares = [row[f"share_{b}"] for b in BEARERS]
    assert sum(shares) == pytest.approx(1.0)
    assert shares[0] == pytest.approx(ds.fund_paid.sel(policy="fund+adl").sum() / sf.sum())
    no_fund = df.set_index("policy").loc[["socialised", "platform"]]
    assert no_fund.required_fund_quote.isna().all() and no_fund.ruin_probability.isna().all()
    assert df.attrs["missing_variables"] == [] and df.attrs["q"] == 0.95


def test_compare_of_a_policy_without_losses_has_nan_shares_and_gini_without_warnings():
    ds = results()
    for name in ["shortfall", *BEARER_VARS]:
        ds[name][2] = 0.0
    ds["loss_gini"][2] = np.nan
    row = compare(ds, n_boot=50).iloc[2]
    assert row.mean_shortfall_quote == 0.0 and np.isnan(row.mean_loss_gini)
    assert all(np.isnan(row[f"share_{b}"]) for b in BEARERS)


def test_compare_of_older_results_leaves_missing_columns_nan():
    ds = results().drop_vars(["fund_need", "n_accounts_hit", "loss_gini"])
    df = compare(ds, n_boot=50, fund_size=10.0)
    assert df.attrs["missing_variables"] == ["fund_need", "n_accounts_hit", "loss_gini"]
    assert df.ruin_probability.isna().all() and df.required_fund_quote.isna().all()
    assert df.mean_n_accounts_hit.isna().all() and (df.fund_size_quote == 10.0).all()
    assert not df.mean_shortfall_quote.isna().any()


def test_missing_variable_and_bad_levels_are_user_errors():
    ds = results(n_paths=50)
    with pytest.raises(StressError, match="no variable 'nope'"):
        var(ds, variable="nope")
    with pytest.raises(ConfigError, match=r"^q: must be in \(0, 1\), got 1.5$"):
        var(ds, 1.5)
    with pytest.raises(ConfigError, match="ruin_probability: must be in"):
        required_fund(ds, 0.0)
    with pytest.raises(ConfigError, match="method: unknown method"):
        ruin_probability(ds, 1.0, method="normal")
    with pytest.raises(ConfigError, match="n_boot: must be an integer"):
        expected_shortfall(ds, n_boot=0)


# --- lazy inputs and extra dimensions ---------------------------------------------
def all_outputs(ds: xr.Dataset) -> dict:
    kw = {"n_boot": 100, "seed": 3}
    return {"ruin": ruin_probability(ds, [20.0, 80.0], **kw),
            "var": var(ds, 0.9, **kw), "es": expected_shortfall(ds, 0.9, **kw),
            "fund": required_fund(ds, 0.05), "fund_boot": required_fund(ds, 0.05,
                                                                         method="bootstrap", **kw),
            "bearers": loss_bearers(ds), "compare": compare(ds, q=0.9, ruin=0.05, **kw)}


def assert_same_outputs(got: dict, expected: dict) -> None:
    for key, exp in expected.items():
        if isinstance(exp, pd.DataFrame):
            pd.testing.assert_frame_equal(got[key], exp)
        else:
            xr.testing.assert_identical(got[key], exp)


def test_lazy_and_dask_backed_results_give_the_same_numbers_without_loading_all(tmp_path):
    ds = results(n_paths=300)
    path = tmp_path / "results.nc"
    ds.to_netcdf(path)
    expected = all_outputs(ds)
    with xr.open_dataset(path) as lazy:
        assert_same_outputs(all_outputs(lazy), expected)
        assert not lazy["n_liquidations"].variable._in_memory
        assert not lazy["shortfall"].variable._in_memory
    with xr.open_dataset(path, chunks={}) as dasky:
        assert_same_outputs(all_outputs(dasky), expected)
        assert dasky["shortfall"].chunks is not None  # still dask-backed


def test_extra_dimensions_are_kept_and_each_slice_is_its_own_result():
    a, b = results(n_paths=200, seed=1), results(n_paths=200, seed=2)
    swept = xr.concat([a, b], dim=pd.Index([0.5, 1.0], name="sweep"), data_vars="all",
                      coords="different", compat="equals", join="exact")
    swept = swept.transpose("policy", "sweep", "path", ...)
    out = all_outputs(swept)
    for key in ("ruin", "var", "es", "fund", "fund_boot"):
        assert "sweep" in out[key].estimate.dims and "path" not in out[key].dims
        xr.testing.assert_allclose(out[key].sel(sweep=0.5, drop=True),
                                   all_outputs(a)[key], rtol=1e-12)
    assert list(out["compare"].columns[:2]) == ["policy", "sweep"]
    assert len(out["compare"]) == 6 and len(out["bearers"]) == 30
    first = out["compare"][out["compare"].sweep == 0.5].drop(columns="sweep")
    pd.testing.assert_frame_equal(first.reset_index(drop=True), all_outputs(a)["compare"],
                                  check_like=True)


# --- stress compare ---------------------------------------------------------------
runner = CliRunner()


@pytest.fixture
def run_dir(tmp_path):
    d = tmp_path / "run"
    d.mkdir()
    results(n_paths=200).to_netcdf(d / "results.nc")
    return d


def test_compare_command_prints_the_table_and_writes_the_csv(run_dir):
    r = runner.invoke(app, ["compare", str(run_dir), "--q", "0.95", "--ruin", "0.01"])
    assert r.exit_code == 0, r.output
    for word in ("synthetic", "fund+adl", "socialised", "platform", "VaR q95", "ES q95",
                 "P(ruin)", f"wrote {run_dir / 'compare.csv'}"):
        assert word in r.output
    df = pd.read_csv(run_dir / "compare.csv")
    assert list(df.policy) == POLICIES
    ds = results(n_paths=200)
    np.testing.assert_allclose(df.mean_shortfall_quote, ds.shortfall.mean("path"), rtol=1e-12)
    np.testing.assert_array_equal(df.q, 0.95)
    assert not list(run_dir.glob(".*.tmp"))


def test_compare_command_csv_option(run_dir, tmp_path):
    r = runner.invoke(app, ["compare", str(run_dir / "results.nc"), "--csv",
                            str(tmp_path / "table.csv")])
    assert r.exit_code == 0, r.output
    assert len(pd.read_csv(tmp_path / "table.csv")) == 3
    assert not (run_dir / "compare.csv").exists()


def test_compare_command_missing_run_dir_exits_2(tmp_path):
    r = runner.invoke(app, ["compare", str(tmp_path / "nope")])
    assert r.exit_code == 2
    assert "nope: no such run folder" in r.output and "Traceback" not in r.output


@pytest.mark.parametrize("option,value", [("--q", "1.5"), ("--q", "0"), ("--ruin", "2")])
def test_compare_command_bad_level_exits_2_naming_the_option(run_dir, option, value):
    r = runner.invoke(app, ["compare", str(run_dir), option, value])
    assert r.exit_code == 2
    assert f"{option}: must be in (0, 1), got {float(value)}" in r.output
    assert len(r.output.strip().splitlines()) == 1
    assert not (run_dir / "compare.csv").exists()


def test_compare_command_empty_dir_exits_2(tmp_path):
    r = runner.invoke(app, ["compare", str(tmp_path)])
    assert r.exit_code == 2 and "no results found" in r.output
