"""The per-policy summary printed after a run."""

from __future__ import annotations

import numpy as np
import xarray as xr

COLUMNS = (
    ("mean shortfall", "quote"),
    ("shortfall q99", "quote"),
    ("shortfall q99.9", "quote"),
    ("P(fund depleted)", "1"),
    ("mean fund paid", "quote"),
    ("mean ADL cost", "quote"),
    ("mean socialised loss", "quote"),
    ("mean platform loss", "quote"),
    ("mean residual", "quote"),
    ("fund for P(ruin) ≤ 0.1%", "quote"),
    ("mean accounts hit", "count"),
    ("mean loss Gini", "1"),
)


def summarise(ds: xr.Dataset) -> dict[str, dict[str, float]]:
    """Per policy: mean, 99% and 99.9% quantile of shortfall, depletion probability,
    the mean loss borne by each layer, the fund that runs dry on at most 0.1% of
    paths (:func:`stress.analysis.required_fund`; NaN without a fund layer), and
    who bore the loss: accounts hit and the Gini coefficient of their losses.
    Shortfall quantiles are numpy's default (linear)."""
    from stress.analysis import required_fund
    # The per-path variables in memory at once (one read of a lazy Dataset, not one
    # per statistic); the fund trajectories are not needed.
    ds = ds[[v for v in ds.data_vars if "time" not in ds[v].dims]].compute()
    need = required_fund(ds, 1e-3).estimate
    out = {}
    for pol in ds.policy.values:
        d = ds.sel(policy=pol)
        gini = d.loss_gini.values[~np.isnan(d.loss_gini.values)]
        sf = np.asarray(d.shortfall.values, dtype=float)
        out[str(pol)] = {
            "mean shortfall": float(sf.mean()),
            "shortfall q99": float(np.quantile(sf, 0.99)),
            "shortfall q99.9": float(np.quantile(sf, 0.999)),
            "P(fund depleted)": float(np.mean(d.fund_depleted.values)),
            "mean fund paid": float(d.fund_paid.mean()),
            "mean ADL cost": float(d.adl_cost.mean()),
            "mean socialised loss": float(d.socialised_loss.mean()),
            "mean platform loss": float(d.platform_loss.mean()),
            "mean residual": float(d.residual.mean()),
            "fund for P(ruin) ≤ 0.1%": float(need.sel(policy=pol)),
            "mean accounts hit": float(d.n_accounts_hit.mean()),
            "mean loss Gini": float(gini.mean()) if gini.size else np.nan,
        }
    return out


def summary_table(ds: xr.Dataset):
    """A Rich table of :func:`summarise`: one row per statistic, one column per policy."""
    from rich.table import Table
    stats = summarise(ds)
    table = Table(title=f"{ds.attrs.get('run_name', '')}: bad debt per path "
                        f"({ds.sizes['path']} paths, quote currency)")
    table.add_column("statistic")
    for pol in stats:
        table.add_column(pol, justify="right")
    for name, unit in COLUMNS:
        cells = ["n/a" if np.isnan(row[name]) else
                 f"{row[name]:.4f}" if unit == "1" else f"{row[name]:,.0f}"
                 for row in stats.values()]
        table.add_row(name, *cells)
    return table
