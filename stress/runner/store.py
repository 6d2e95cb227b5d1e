"""Result files: atomic netCDF writes, shard naming, lazy combining, opening results.

A run folder holds ``shards/shard-NNNNNN.nc`` (one per shard, written by the
driver as each shard finishes) and ``results.nc``, the shards concatenated
along ``path``. Shards are combined lazily (``xarray.open_mfdataset``, dask)
and ``results.nc`` is streamed chunk by chunk (below ``EAGER_BYTES`` they are
concatenated in memory instead), so the memory a run needs does not grow with
its number of paths.

Shards and an in-memory ``results.nc`` are written with netCDF4 directly
(:class:`stress.runner.frame.Frame`); xarray (with pandas and dask) is
imported only where a Dataset is opened or streamed, so that a small run
does not wait for it.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from stress._files import replace_atomically
from stress.errors import StressError
from stress.runner.frame import Frame

if TYPE_CHECKING:
    import xarray as xr

RESULTS_FILE = "results.nc"
SHARDS_DIR = "shards"
SHARD_GLOB = "shard-*.nc"
# What write_atomic leaves behind if a run is killed while it writes a shard.
SHARD_TEMP_GLOB = ".shard-*.tmp"
ENGINE = "netcdf4"
# Bytes of the largest variable per chunk of results.nc (a multiple of the
# shard size along path): big enough for fast reads, small enough to stream.
CHUNK_BYTES = 4 * 2 ** 20
# Below this in-memory size, results.nc is written from the shards concatenated in
# memory (faster for small runs); above it, streamed chunk by chunk.
EAGER_BYTES = 64 * 2 ** 20

_SHARD_RE = re.compile(r"^shard-(\d{6,})\.nc$")


def shard_name(index: int) -> str:
    """The file name of shard ``index``: ``shard-000003.nc``."""
    return f"shard-{index:06d}.nc"


def shard_index(path: str | Path) -> int | None:
    """The index of a shard file from its name, or ``None`` if it is not one."""
    m = _SHARD_RE.match(Path(path).name)
    return int(m.group(1)) if m else None


def shard_files(shard_dir: str | Path) -> list[Path]:
    """The shard files of a folder, in shard (hence path) order."""
    found = [(shard_index(p), p) for p in Path(shard_dir).glob(SHARD_GLOB)]
    return [p for k, p in sorted((k, p) for k, p in found if k is not None)]


def write_atomic(ds: xr.Dataset, path: Path) -> Path:
    """Write ``ds`` to a temporary file beside ``path``, then rename it into place.

    A reader (or an interrupted run) never sees a half-written file, and a
    Dataset still open on the old file keeps reading the old file. Data
    variables are compressed (zlib). A dask-backed ``ds`` is streamed chunk
    by chunk, with the netCDF chunks equal to the dask chunks.

    Parameters
    ----------
    ds : xarray.Dataset
        What to write.
    path : path
        The target file; its folder is created if needed.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    encoding = {}
    for name, var in ds.data_vars.items():
        enc = {"zlib": True, "complevel": 4}
        if var.chunks is not None and var.ndim and all(c[0] > 0 for c in var.chunks):
            enc["chunksizes"] = tuple(c[0] for c in var.chunks)
        encoding[name] = enc
    return replace_atomically(path, lambda tmp: ds.to_netcdf(tmp, engine=ENGINE,
                                                             encoding=encoding))


def read_stamp(path: Path) -> tuple[str | None, np.ndarray] | None:
    """A result file's ``config_hash`` attribute and path indices, or ``None`` if it
    cannot be read."""
    import netCDF4
    try:
        with netCDF4.Dataset(path, "r") as nc:
            stored = nc.getncattr("config_hash") if "config_hash" in nc.ncattrs() else None
            return (None if stored is None else str(stored),
                    np.asarray(nc.variables["path"][...]))
    except (OSError, ValueError, KeyError, RuntimeError, TypeError):
        return None


def combine(shard_paths: list[Path]) -> xr.Dataset:
    """Concatenate shard files along ``path``, lazily (dask), in path order.

    The per-policy coordinates (``layers``, ``fund_initial``, ...), the
    ``bearer`` and ``time`` coordinates and the attributes come from the
    shards unchanged; every shard must have the same policies, bearers and
    record times (``join="exact"``). The caller closes the Dataset
    (``ds.close()`` or ``with combine(...) as ds``) to release the files.

    Parameters
    ----------
    shard_paths : list of path
        Shard files, in any order; they are sorted by shard index.

    Returns
    -------
    xarray.Dataset
        Dask-backed, one chunk per shard along ``path``.
    """
    import xarray as xr

    paths = _in_order(shard_paths)
    if not paths:
        raise StressError("no shard files to combine")
    return xr.open_mfdataset(
        [str(p) for p in paths], engine=ENGINE, chunks={}, combine="nested",
        concat_dim="path", parallel=False, **_COMBINE)


# How shards combine along ``path`` (open_mfdataset; Frame.concat joins in memory alike).
_COMBINE = dict(data_vars="minimal", coords="minimal", compat="override", join="exact",
                combine_attrs="drop_conflicts")


def _in_order(shard_paths) -> list[Path]:
    return sorted((Path(p) for p in shard_paths),
                  key=lambda p: (shard_index(p) is None, shard_index(p) or 0, str(p)))


def fits_in_memory(shard_nbytes: float, n_shards: int) -> bool:
    """Whether ``n_shards`` shards of ``shard_nbytes`` each are combined in memory
    (below ``EAGER_BYTES``) rather than streamed."""
    return shard_nbytes * n_shards <= EAGER_BYTES


def _shard_nbytes(path: Path, held: dict) -> float:
    """The in-memory size of one shard (inf when it cannot be read)."""
    import netCDF4
    if path in held:
        return held[path].nbytes
    try:
        with netCDF4.Dataset(path, "r") as nc:
            # Strings count as object pointers, as in memory.
            return sum(math.prod(v.shape) * (8 if v.dtype is str else v.dtype.itemsize)
                       for v in nc.variables.values())
    except (OSError, ValueError):
        return math.inf


def path_chunk(ds: xr.Dataset, base: int, target_bytes: int = CHUNK_BYTES) -> int:
    """Paths per chunk of ``results.nc``: a multiple of ``base`` (the shard size)
    with the largest variable's chunk near ``target_bytes``."""
    per_path = 1
    for var in ds.data_vars.values():
        if "path" in var.dims:
            others = math.prod(n for d, n in var.sizes.items() if d != "path")
            per_path = max(per_path, others * var.dtype.itemsize)
    base = max(1, int(base))
    n = max(1, target_bytes // (per_path * base)) * base
    return int(min(n, max(1, ds.sizes.get("path", 1))))


def write_results(shard_paths: list[Path], path: Path, shard_size: int | None = None,
                  held: dict | None = None) -> Path:
    """Combine shard files into ``path`` atomically.

    Shards that fit in memory (:func:`fits_in_memory`) are concatenated and
    written at once. Larger runs are combined lazily (:func:`combine`) and
    streamed: chunks of :func:`path_chunk` paths are read, compressed and
    written one at a time, so memory stays bounded whatever the number of paths.

    Parameters
    ----------
    shard_paths : list of path
        The shard files.
    path : path
        The combined file (``results.nc``).
    shard_size : int, optional
        Paths per shard (default: the first shard's), so that chunks hold
        whole shards.
    held : dict, optional
        Shards the caller still holds in memory (:class:`Frame`), by file path
        (the same data as the files): a small run is combined from them without
        reading them back.
    """
    held = held or {}
    paths = _in_order(shard_paths)
    if not paths:
        raise StressError("no shard files to combine")
    if fits_in_memory(_shard_nbytes(paths[0], held), len(paths)):
        # A small run: concatenated in memory and written at once (no xarray, no dask).
        Frame.concat([held[p] if p in held else Frame.read(p) for p in paths]).write(path)
        return Path(path)
    import dask

    with combine(shard_paths) as ds:
        if shard_size is None:
            shard_size = ds.shortfall.chunks[ds.shortfall.dims.index("path")][0] \
                if "shortfall" in ds else ds.sizes["path"]
        lazy = ds.chunk(path=path_chunk(ds, shard_size))
        # One chunk at a time (HDF5 serialises reads and writes anyway), and never on a
        # dask.distributed client that may still be registered as the default.
        with dask.config.set(scheduler="synchronous"):
            write_atomic(lazy, path)
    return Path(path)


def open_results(run_dir: str | Path) -> xr.Dataset:
    """Open a run's results lazily (dask-backed).

    Parameters
    ----------
    run_dir : path
        ``results/<run name>`` (or the ``--out`` folder), or a ``.nc`` file.
        A folder's ``results.nc`` is opened; if the run has not been combined
        yet (interrupted, or still running), its finished shards are.

    Returns
    -------
    xarray.Dataset
        Variables are dask arrays read from the file(s) on demand: only what a
        computation touches is loaded (``ds.shortfall.values``, ``ds.load()``
        for everything). The files stay open until ``ds.close()`` (or the end
        of a ``with open_results(...) as ds:`` block, or garbage collection);
        a later run may still replace them meanwhile (it writes new files and
        renames them into place).

    Raises
    ------
    StressError
        If the folder holds neither ``results.nc`` nor any shard.
    """
    import xarray as xr

    run_dir = Path(run_dir)
    if run_dir.is_file():
        return xr.open_dataset(run_dir, engine=ENGINE, chunks={})
    combined = run_dir / RESULTS_FILE
    if combined.is_file():
        return xr.open_dataset(combined, engine=ENGINE, chunks={})
    shards = shard_files(run_dir / SHARDS_DIR)
    if not shards:
        raise StressError(f"{run_dir}: no results found (no {RESULTS_FILE} and no shards)")
    return combine(shards)
