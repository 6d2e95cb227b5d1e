"""The per-policy summary printed after a run."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from stress.order_stats import inverted_cdf
from stress.runner.frame import Frame

if TYPE_CHECKING:
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
# The variables the summary reads (per path; never the fund trajectories).
NEEDED = ("shortfall", "fund_depleted", "fund_paid", "adl_cost", "socialised_loss",
          "platform_loss", "residual", "fund_need", "n_accounts_hit", "loss_gini")
# The ruin probability of the fund column (as stress.analysis.required_fund(ds, 1e-3)).
RUIN = 1e-3


def summarise(results: xr.Dataset | Frame) -> dict[str, dict[str, float]]:
    """Per policy: mean, 99% and 99.9% quantile of shortfall, depletion probability,
    the mean loss borne by each layer, the fund that runs dry on at most 0.1% of
    paths (the estimate of :func:`stress.analysis.required_fund`; NaN without a
    fund layer), and who bore the loss: accounts hit and the Gini coefficient of
    their losses. Shortfall quantiles are numpy's default (linear).

    ``results``: a run's Dataset (``policy`` and ``path`` dimensions), or its
    file's contents (:meth:`Frame.read`), which needs no xarray.
    """
    if not isinstance(results, Frame):
        # The per-path variables in memory at once (one read of a lazy Dataset, not
        # one per statistic).
        ds = results[list(NEEDED)].compute()
        results = Frame({k: (v.dims, v.values, {}) for k, v in ds.data_vars.items()},
                        {"policy": (("policy",), ds.policy.values, {})}, dict(ds.attrs))
    col = {name: _policy_rows(results, name) for name in NEEDED}
    need = inverted_cdf(col["fund_need"], 1.0 - RUIN)
    out = {}
    for k, pol in enumerate(results.coords["policy"][1]):
        sf = col["shortfall"][k]
        out[str(pol)] = {
            "mean shortfall": float(sf.mean()),
            "shortfall q99": float(np.quantile(sf, 0.99)),
            "shortfall q99.9": float(np.quantile(sf, 0.999)),
            "P(fund depleted)": _mean(col["fund_depleted"][k]),
            "mean fund paid": _mean(col["fund_paid"][k]),
            "mean ADL cost": _mean(col["adl_cost"][k]),
            "mean socialised loss": _mean(col["socialised_loss"][k]),
            "mean platform loss": _mean(col["platform_loss"][k]),
            "mean residual": _mean(col["residual"][k]),
            "fund for P(ruin) ≤ 0.1%": float(need[k]),
            "mean accounts hit": _mean(col["n_accounts_hit"][k]),
            "mean loss Gini": _mean(col["loss_gini"][k]),
        }
    return out


def _mean(x: np.ndarray) -> float:
    """The mean of the values that are not NaN (NaN if there are none)."""
    x = x[~np.isnan(x)]
    return float(x.mean()) if x.size else np.nan


def _policy_rows(frame: Frame, name: str) -> np.ndarray:
    """Variable ``name`` as a float array (policy, path)."""
    dims, values, _ = frame.data_vars[name]
    if sorted(dims) != ["path", "policy"]:
        raise ValueError(f"{name}: dims {dims}, expected (policy, path)")
    return np.asarray(np.moveaxis(values, [dims.index("policy"), dims.index("path")], [0, 1]),
                      dtype=float)


def read_summary_data(path) -> Frame:
    """The variables :func:`summarise` reads, from a run's ``results.nc`` (netCDF4 only)."""
    return Frame.read(path, variables=list(NEEDED))


def summary_table(results: xr.Dataset | Frame):
    """A Rich table of :func:`summarise`: one row per statistic, one column per policy."""
    from rich.table import Table
    stats = summarise(results)
    n_paths = results.sizes["path"]
    table = Table(title=f"{results.attrs.get('run_name', '')}: bad debt per path "
                        f"({n_paths} paths, quote currency)")
    table.add_column("statistic")
    for pol in stats:
        table.add_column(pol, justify="right")
    for name, unit in COLUMNS:
        cells = ["n/a" if np.isnan(row[name]) else
                 f"{row[name]:.4f}" if unit == "1" else f"{row[name]:,.0f}"
                 for row in stats.values()]
        table.add_row(name, *cells)
    return table
