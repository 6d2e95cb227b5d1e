"""Result files written with netCDF4 directly (Frame) are the files xarray writes."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import netCDF4
import numpy as np
import pytest
import xarray as xr

from stress.config import load_config
from stress.runner.frame import Frame
from stress.runner.prepare import prepare
from stress.runner.shard import shard_frame, simulate_shard
from stress.runner.store import _COMBINE, write_atomic

LINEAR = """
run: {name: frames, paths: 6, steps: 120, seed: 3, shard_size: 3}
market: {kind: merton, s0: 100.0, sigma: 0.9, jump_intensity: 2000, jump_mean: -0.05}
population: {kind: synthetic, accounts: 300}
fund: {initial: 50.0, record_every_minutes: 30}
"""
INVERSE = LINEAR.replace("fund: {initial: 50.0, record_every_minutes: 30}",
                         "fund: {initial: 0.5}\nexchange: {contract: inverse}")


def shards(tmp_path, text):
    f = tmp_path / "c.yaml"
    f.write_text(textwrap.dedent(text))
    prep = prepare(load_config(f))
    frames = []
    for s in (0, 3):
        out, fund = simulate_shard(prep, s, s + 3)
        frames.append(shard_frame(out, prep, s, fund))
    return frames


def structure(path):
    """Everything netCDF stores about a file, values included (NaN-safe)."""
    def attrs(obj):
        return {k: (repr(v) if isinstance(v, float) and np.isnan(v) else
                    np.asarray(v).tolist()) for k, v in
                ((k, obj.getncattr(k)) for k in obj.ncattrs())}
    with netCDF4.Dataset(path) as nc:
        nc.set_auto_maskandscale(False)
        out = {"dims": {d: len(v) for d, v in nc.dimensions.items()}, "attrs": attrs(nc)}
        for name, var in nc.variables.items():
            values = var[...]
            out[name] = {
                "dtype": str(var.dtype), "dims": var.dimensions, "filters": var.filters(),
                "chunking": var.chunking(), "attrs": attrs(var),
                "values": (np.asarray(values, dtype=object).tolist() if var.dtype is str
                           else np.where(np.isnan(values), -1e300, values).tolist()
                           if values.dtype.kind == "f" else values.tolist())}
    return out


@pytest.mark.parametrize("text", [LINEAR, INVERSE], ids=["linear", "inverse"])
def test_a_frame_writes_the_file_xarray_writes(tmp_path, text):
    frame = shards(tmp_path, text)[0]
    assert "fund" in frame.data_vars
    assert frame.attrs["contract"] == ("inverse" if "inverse" in text else "linear")
    ours = frame.write(tmp_path / "ours.nc")
    theirs = write_atomic(frame.to_xarray(), tmp_path / "theirs.nc")
    assert structure(ours) == structure(theirs)
    with xr.open_dataset(ours) as a, xr.open_dataset(theirs) as b:
        xr.testing.assert_identical(a.load(), b.load())
        xr.testing.assert_identical(a, frame.to_xarray())


def test_read_gives_back_what_was_written(tmp_path):
    frame = shards(tmp_path, LINEAR)[1]
    back = Frame.read(frame.write(tmp_path / "f.nc"))
    xr.testing.assert_identical(back.to_xarray(), frame.to_xarray())
    assert list(back.data_vars) == list(frame.data_vars)
    some = Frame.read(tmp_path / "f.nc", variables=["shortfall", "fund_need"])
    assert list(some.data_vars) == ["shortfall", "fund_need"]
    assert set(some.coords) == set(frame.coords)


def test_concat_joins_as_xarray_concat_joins(tmp_path):
    parts = shards(tmp_path, LINEAR)
    parts[1].attrs["title"] = "another title"  # a conflicting attribute is dropped
    joined = Frame.concat(parts)
    expect = xr.concat([p.to_xarray() for p in parts], dim="path", **_COMBINE)
    assert "title" not in expect.attrs
    xr.testing.assert_identical(joined.to_xarray(), expect)
    np.testing.assert_array_equal(joined.coords["path"][1], np.arange(6))
    ours = joined.write(tmp_path / "ours.nc")
    theirs = write_atomic(expect, tmp_path / "theirs.nc")
    assert structure(ours) == structure(theirs)


def test_concat_refuses_coordinates_that_differ(tmp_path):
    parts = shards(tmp_path, LINEAR)
    dims, values, attrs = parts[1].coords["fund_initial"]
    parts[1].coords["fund_initial"] = (dims, values + 1.0, attrs)
    with pytest.raises(ValueError, match="fund_initial differs"):
        Frame.concat(parts)


def test_a_coordinate_on_no_data_variable_is_listed_globally(tmp_path):
    frame = Frame({"x": (("a",), np.arange(3.0), {"units": "m"})},
                  {"a": ("a", np.arange(3), {}), "label": ("b", np.array(["p", "q"], dtype=object),
                                                          {}),
                   "b": ("b", np.array([0.5, np.nan]), {})}, {"n": 3, "name": "t"})
    ours = frame.write(tmp_path / "ours.nc")
    theirs = write_atomic(frame.to_xarray(), tmp_path / "theirs.nc")
    assert structure(ours) == structure(theirs)
    assert structure(ours)["attrs"]["coordinates"] == "label"


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = Frame({"x": ("a", np.arange(3.0), {})}, {}).write(tmp_path / "f.nc")
    before = target.read_bytes()
    bad = Frame({"x": ("a", np.arange(3.0), {}), "flag": ("a", np.ones(3, bool), {})}, {})
    with pytest.raises(TypeError, match="flag"):
        bad.write(target)
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["f.nc"]


def test_inconsistent_dimensions_are_refused():
    with pytest.raises(ValueError, match="dimension a has length 2"):
        Frame({"x": ("a", np.arange(3.0), {}), "y": ("a", np.arange(2.0), {})}, {}).sizes


def test_a_small_cli_run_imports_neither_xarray_nor_pandas_nor_dask(tmp_path):
    """The warm start of `stress run` (issue 7): a small run writes and summarises its
    results with netCDF4 alone; xarray with pandas and dask takes ≈ 1.5 s to import."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text(textwrap.dedent(LINEAR))
    r = subprocess.run([sys.executable, "-X", "importtime", "-m", "stress.cli", "run", str(cfg),
                        "--out", str(tmp_path / "out"), "--no-progress"],
                       capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "mean shortfall" in r.stdout and (tmp_path / "out" / "results.nc").is_file()
    imported = {line.rsplit("|", 1)[-1].strip().split(".")[0]
                for line in r.stderr.splitlines() if line.startswith("import time:")}
    assert "netCDF4" in imported and "numba" in imported
    assert not imported & {"xarray", "pandas", "dask", "distributed"}
