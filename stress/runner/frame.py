"""A result file's contents as numpy arrays, written and read with netCDF4 directly.

Shards, and the ``results.nc`` of a run small enough to combine in memory,
are written from a :class:`Frame`: the file xarray would write for the same
Dataset (the same dimensions, variables, types, compression, ``_FillValue``
and ``coordinates`` attributes), without importing xarray, pandas and dask,
which take longer to import than a small run takes to compute. Results are
still opened with xarray (:func:`stress.open_results`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from stress._files import replace_atomically

if TYPE_CHECKING:
    import xarray as xr

# (dims, values, attrs): the tuples xarray.Dataset takes for its variables.
Var = tuple[tuple[str, ...], np.ndarray, dict]

# Compression of data variables (coordinates are stored plain, as xarray does).
COMPRESSION = {"zlib": True, "complevel": 4, "shuffle": True}
# Attributes that netCDF uses to encode a Dataset, not attributes of a variable.
_ENCODING_ATTRS = ("_FillValue", "coordinates")


@dataclass
class Frame:
    """Data variables and coordinates, each ``(dims, values, attrs)``, and global attributes.

    ``xarray.Dataset(frame.data_vars, coords=frame.coords, attrs=frame.attrs)``
    is the same Dataset (:meth:`to_xarray`). Values are numpy arrays of
    floats, integers or strings (object arrays of ``str``).
    """

    data_vars: dict[str, Var]
    coords: dict[str, Var]
    attrs: dict = field(default_factory=dict)

    def __post_init__(self):
        # A single dimension may be given by its name, as xarray allows.
        for group in (self.data_vars, self.coords):
            for name, (dims, values, attrs) in group.items():
                group[name] = ((dims,) if isinstance(dims, str) else tuple(dims), values, attrs)

    @property
    def variables(self) -> dict[str, Var]:
        return {**self.data_vars, **self.coords}

    @property
    def sizes(self) -> dict[str, int]:
        """Dimension name -> length, in order of first use."""
        sizes: dict[str, int] = {}
        for name, (dims, values, _) in self.variables.items():
            if len(dims) != np.ndim(values):
                raise ValueError(f"variable {name}: dims {dims} for a {np.ndim(values)}-d array")
            for d, n in zip(dims, np.shape(values)):
                if sizes.setdefault(d, n) != n:
                    raise ValueError(f"variable {name}: dimension {d} has length {n}, "
                                     f"elsewhere {sizes[d]}")
        return sizes

    @property
    def nbytes(self) -> int:
        """Bytes of the values in memory (as ``xarray.Dataset.nbytes`` counts them)."""
        return sum(np.asarray(v).nbytes for _, v, _ in self.variables.values())

    def to_xarray(self) -> xr.Dataset:
        """The same data as an ``xarray.Dataset``."""
        import xarray as xr
        return xr.Dataset(self.data_vars, coords=self.coords, attrs=self.attrs)

    def write(self, path: str | Path) -> Path:
        """Write to a temporary file beside ``path``, then rename it into place.

        A reader (or an interrupted run) never sees a half-written file. Data
        variables are compressed (zlib, level 4, shuffled); floats get a NaN
        ``_FillValue``; each data variable's ``coordinates`` attribute names
        the non-dimension coordinates on its dimensions, as xarray writes it.
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        return replace_atomically(path, self._write)

    def _write(self, target: Path) -> None:
        import netCDF4
        sizes = self.sizes
        aux = [n for n, (dims, _, _) in self.coords.items() if dims != (n,)]
        attached: set[str] = set()
        with netCDF4.Dataset(target, "w", format="NETCDF4") as nc:
            for d, n in sizes.items():
                nc.createDimension(d, n)
            # Everything is defined before the first value is written: each write in
            # between would end netCDF's define mode and the next definition reopen it,
            # which makes a file of 45 variables 2-3x slower to write.
            filled = []
            for name, (dims, values, attrs) in self.variables.items():
                values = np.asarray(values)
                kind = _nc_type(name, values)
                if kind is str:
                    values = values.astype(object)
                on = sorted(c for c in aux if set(self.coords[c][0]) <= set(dims))
                is_data = name in self.data_vars
                var = nc.createVariable(
                    name, kind, dims, fill_value=np.nan if values.dtype.kind == "f" else None,
                    **(COMPRESSION if is_data else {}))
                extra = {"coordinates": " ".join(on)} if is_data and on else {}
                attached.update(on if is_data else ())
                var.setncatts({**attrs, **extra})
                filled.append((var, values))
            loose = sorted(set(aux) - attached)
            nc.setncatts({**self.attrs, **({"coordinates": " ".join(loose)} if loose else {})})
            for var, values in filled:
                var[...] = values

    @classmethod
    def read(cls, path: str | Path, variables: list[str] | None = None) -> Frame:
        """A file written by :meth:`write` (or by xarray), read into memory.

        ``variables``: only these data variables (default: all); the
        coordinates are always read.
        """
        import netCDF4
        with netCDF4.Dataset(path, "r") as nc:
            nc.set_auto_maskandscale(False)
            attrs = {k: nc.getncattr(k) for k in nc.ncattrs()}
            coords = set(str(attrs.pop("coordinates", "")).split())
            for name, var in nc.variables.items():
                if name in nc.dimensions:
                    coords.add(name)
                if "coordinates" in var.ncattrs():
                    coords.update(str(var.getncattr("coordinates")).split())
            data_vars, coord_vars = {}, {}
            for name, var in nc.variables.items():
                if name not in coords and variables is not None and name not in variables:
                    continue
                values = var[...]
                if var.dtype is str:
                    values = np.asarray(values, dtype=object)
                entry = (tuple(var.dimensions), np.asarray(values),
                         {k: var.getncattr(k) for k in var.ncattrs()
                          if k not in _ENCODING_ATTRS})
                (coord_vars if name in coords else data_vars)[name] = entry
        return cls(data_vars, coord_vars, attrs)

    @classmethod
    def concat(cls, frames: list[Frame], dim: str = "path") -> Frame:
        """Frames joined along ``dim``, as ``xarray.concat(..., data_vars="minimal",
        coords="minimal", compat="override", join="exact",
        combine_attrs="drop_conflicts")`` joins them: variables along ``dim`` are
        concatenated, the others taken from the first frame (and must be equal in
        all: exact join), attributes kept where no frame disagrees."""
        if not frames:
            raise ValueError("no frames to concatenate")
        first = frames[0]

        def join(group: str) -> dict[str, Var]:
            out = {}
            for name, (dims, values, attrs) in getattr(first, group).items():
                parts = [getattr(f, group)[name][1] for f in frames]
                if dim in dims:
                    out[name] = (dims, np.concatenate(parts, axis=dims.index(dim)), attrs)
                    continue
                if group == "coords" and not all(_same(values, p) for p in parts[1:]):
                    raise ValueError(f"coordinate {name} differs between the frames "
                                     f"(they cannot be joined exactly)")
                out[name] = (dims, values, attrs)
            return out

        attrs = {k: v for k, v in first.attrs.items()
                 if all(k in f.attrs and _same(v, f.attrs[k]) for f in frames[1:])}
        return cls(join("data_vars"), join("coords"), attrs)


def _same(a, b) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        return False
    if a.dtype.kind == "f" and b.dtype.kind == "f":
        return bool(np.array_equal(a, b, equal_nan=True))
    return bool(np.all(a == b))


def _nc_type(name: str, values: np.ndarray):
    """The netCDF type of an array (strings are variable-length ``str``)."""
    if values.dtype.kind in "fiu":
        return values.dtype
    if values.dtype.kind in "OU" and all(isinstance(v, str) for v in values.flat):
        return str
    raise TypeError(f"variable {name}: cannot write values of type {values.dtype} "
                    f"(floats, integers or strings)")
