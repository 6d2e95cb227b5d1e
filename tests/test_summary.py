"""The summary printed after a run, on a hand-built Dataset."""

from __future__ import annotations

import math

import numpy as np
import pytest
import xarray as xr

from stress.report.summary import summarise, summary_table


def dataset(n=2000):
    rng = np.random.default_rng(0)
    zero = np.zeros((2, n))
    need = np.vstack([np.arange(n, dtype=float), np.full(n, np.nan)])
    gini = np.vstack([np.full(n, np.nan), np.where(np.arange(n) % 2, 0.5, np.nan)])
    data = {"shortfall": rng.lognormal(size=(2, n)), "fund_depleted": zero,
            "fund_paid": zero, "adl_cost": zero, "socialised_loss": zero,
            "platform_loss": zero, "residual": zero, "fund_need": need,
            "n_accounts_hit": np.vstack([np.zeros(n), np.full(n, 3.0)]), "loss_gini": gini}
    return xr.Dataset({k: (("policy", "path"), v) for k, v in data.items()},
                      coords={"policy": ["fund", "social"], "path": np.arange(n),
                              "fund_initial": ("policy", [1e9, 1e9])},
                      attrs={"run_name": "t"})


def test_summary_values():
    s = summarise(dataset())
    # fund_need = 0..1999: at most 2 of 2,000 paths (0.1%) may need more than 1997.
    assert s["fund"]["fund for P(ruin) ≤ 0.1%"] == 1997.0
    assert math.isnan(s["social"]["fund for P(ruin) ≤ 0.1%"])
    assert s["social"]["mean accounts hit"] == 3.0 and s["fund"]["mean accounts hit"] == 0.0
    assert s["social"]["mean loss Gini"] == 0.5 and math.isnan(s["fund"]["mean loss Gini"])


def test_summary_table_prints_na_for_missing_values():
    from rich.console import Console
    console = Console(width=200, record=True)
    console.print(summary_table(dataset()))
    text = console.export_text()
    assert "1,997" in text and "n/a" in text and "mean loss Gini" in text


def test_the_summary_of_the_file_read_without_xarray_is_the_same(tmp_path):
    """`stress run` summarises results.nc read with netCDF4 alone (read_summary_data)."""
    from stress.report.summary import read_summary_data
    from stress.runner.store import write_atomic
    ds = dataset()
    ds["fund_paid"] = ds.shortfall * 0.25
    ds["fund_paid"][0, 5] = np.nan  # layer means skip NaN, as xarray's mean does
    path = write_atomic(ds, tmp_path / "results.nc")
    expect, got = summarise(ds), summarise(read_summary_data(path))
    assert got.keys() == expect.keys()
    for pol in expect:
        for name, value in expect[pol].items():
            assert got[pol][name] == value or (math.isnan(value) and math.isnan(got[pol][name])), \
                (pol, name)
    # xarray's NaN-skipping mean (to the last bits of its summation order)
    assert got["fund"]["mean fund paid"] == pytest.approx(float(ds.fund_paid[0].mean()),
                                                          rel=1e-14)
