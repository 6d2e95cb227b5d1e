"""Result files: atomic netCDF writes, shard naming, combining."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import xarray as xr

RESULTS_FILE = "results.nc"
SHARDS_DIR = "shards"


def shard_name(index: int) -> str:
    return f"shard-{index:06d}.nc"


def write_atomic(ds: xr.Dataset, path: Path) -> Path:
    """Write ``ds`` to a temporary file beside ``path``, then rename it into place.

    A reader (or an interrupted run) never sees a half-written file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    encoding = {name: {"zlib": True, "complevel": 4} for name in ds.data_vars}
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        ds.to_netcdf(tmp, engine="netcdf4", encoding=encoding)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_shard(path: Path) -> xr.Dataset:
    with xr.open_dataset(path, engine="netcdf4") as ds:
        return ds.load()


def combine(shard_paths: list[Path]) -> xr.Dataset:
    """Concatenate shard Datasets along ``path`` in path order."""
    parts = sorted((read_shard(p) for p in shard_paths), key=lambda d: int(d.path[0]))
    ds = xr.concat(parts, dim="path", data_vars="all", coords="different", compat="equals",
                   join="exact", combine_attrs="drop_conflicts")
    return ds


def open_results(run_dir: str | Path) -> xr.Dataset:
    """Open a finished run's results (``results.nc``, or its shards if not combined yet).

    Parameters
    ----------
    run_dir : path
        ``results/<run name>`` (or the ``--out`` folder), or a ``.nc`` file.
    """
    run_dir = Path(run_dir)
    if run_dir.is_file():
        return read_shard(run_dir)
    combined = run_dir / RESULTS_FILE
    if combined.is_file():
        return read_shard(combined)
    shards = sorted((run_dir / SHARDS_DIR).glob("shard-*.nc"))
    if not shards:
        from stress.errors import StressError
        raise StressError(f"{run_dir}: no results found (no {RESULTS_FILE} and no shards)")
    return combine(shards)
