"""Resuming an interrupted run, the driver writing the shards, and progress reporting."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import xarray as xr
from typer.testing import CliRunner

import stress.runner.run as runmod
from stress.cli import app
from stress.config import load_config
from stress.errors import ConfigError, StressError
from stress.runner.prepare import prepare
from stress.runner.run import ShardDone, Throughput, execute, plan
from stress.runner.store import RESULTS_FILE, SHARDS_DIR, shard_name

cli = CliRunner()

# 10 shards of 8 paths; every path redraws a 10,000-account book (≈ 0.05 s per shard),
# so a run is slow enough to be killed half-way and still quick.
SLOW = """
run: {name: resumable, paths: 80, steps: 60, seed: 11, shard_size: 8}
market: {kind: merton, s0: 100.0, sigma: 0.9, jump_intensity: 3000.0, jump_mean: -0.06,
         jump_std: 0.04}
population: {kind: synthetic, accounts: 10000, redraw_per_path: true}
exchange: {liquidation_fee_rate: 0.004, slippage: 0.003}
fund: {initial: 200.0}
policies:
  - {name: fund+adl, layers: [insurance_fund, adl]}
  - {name: platform, layers: [platform]}
"""

# 5 shards of 4 paths: fast.
TINY = """
run: {name: tiny, paths: 18, steps: 120, seed: 3, shard_size: 4}
market: {kind: merton, s0: 100.0, sigma: 0.9, jump_intensity: 2000.0, jump_mean: -0.06}
population: {kind: synthetic, accounts: 400}
fund: {initial: 100.0}
"""


def write(folder, text, name="c.yaml"):
    f = folder / name
    f.write_text(textwrap.dedent(text))
    return f


def load(path):
    return xr.load_dataset(path, engine="netcdf4")


def snapshot(folder):
    """Every file below ``folder`` with its bytes and modification time."""
    return {p.relative_to(folder): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A finished run of TINY: (config file, run folder)."""
    root = tmp_path_factory.mktemp("tiny")
    cfg_file = write(root, TINY)
    ds, run_dir = execute(load_config(cfg_file), workers=1, out=root / "ref")
    ds.close()
    return cfg_file, run_dir


def copy_run(src, dst):
    import shutil
    shutil.copytree(src, dst)
    return dst


# --------------------------------------------------------------- a real SIGKILL

def test_resume_after_sigkill_gives_the_uninterrupted_results(tmp_path):
    cfg_file = write(tmp_path, SLOW)
    cfg = load_config(cfg_file)
    n_shards = len(plan(cfg.run.paths, cfg.run.shard_size))
    out = tmp_path / "killed"
    shard_dir = out / SHARDS_DIR
    proc = subprocess.Popen(
        [sys.executable, "-m", "stress.cli", "run", str(cfg_file), "--workers", "2",
         "--out", str(out), "--no-progress"],
        cwd=tmp_path, start_new_session=True, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not list(shard_dir.glob("shard-*.nc")):
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "no shard written in 120 s"
            time.sleep(0.005)
    finally:
        # The driver and its loky workers share the session's process group.
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    kept = sorted(p.name for p in shard_dir.glob("shard-*.nc"))
    assert 1 <= len(kept) < n_shards, kept
    assert not (out / RESULTS_FILE).exists()
    kept_bytes = {name: (shard_dir / name).read_bytes() for name in kept}

    r = cli.invoke(app, ["run", str(cfg_file), "--workers", "2", "--out", str(out), "--resume"])
    assert r.exit_code == 0, r.output
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("shard ")]
    assert sum(" resumed: " in ln for ln in lines) == len(kept)
    assert sum(" done: " in ln for ln in lines) == n_shards - len(kept)
    assert f"{cfg.run.paths}/{cfg.run.paths} paths" in lines[-1]
    # Kept shards were not rewritten; no temporary file is left.
    assert {name: (shard_dir / name).read_bytes() for name in kept} == kept_bytes
    assert sorted(p.name for p in shard_dir.iterdir()) == \
        [shard_name(k) for k in range(n_shards)]

    ref_ds, ref_dir = execute(cfg, workers=1, out=tmp_path / "uninterrupted")
    ref_ds.close()
    xr.testing.assert_identical(load(out / RESULTS_FILE), load(ref_dir / RESULTS_FILE))


# --------------------------------------------------------------- refusals

def test_resume_after_a_config_change_is_refused_and_touches_nothing(tiny, tmp_path):
    cfg_file, ref = tiny
    run_dir = copy_run(ref, tmp_path / "run")
    (run_dir / SHARDS_DIR / shard_name(4)).unlink()  # an interrupted run
    (run_dir / RESULTS_FILE).unlink()
    (run_dir / SHARDS_DIR / ".shard-000004.nc.0123abcd.tmp").write_bytes(b"partial")
    before = snapshot(run_dir)
    changed = write(tmp_path, TINY.replace("initial: 100.0", "initial: 150.0"), "changed.yaml")
    old_hash, new_hash = (load_config(f).hash()[:12] for f in (cfg_file, changed))

    r = cli.invoke(app, ["run", str(changed), "-w", "1", "--out", str(run_dir), "--resume"])
    assert r.exit_code == 2
    assert r.output.count("\n") == 1 and "Traceback" not in r.output
    msg = r.output.strip()
    assert msg.startswith(f"error: {run_dir}: the config changed since the shards there were "
                          f"written")
    assert old_hash in msg and new_hash in msg
    assert "run without --resume to start over, or choose another --out" in msg
    assert snapshot(run_dir) == before


def test_resume_refuses_a_results_file_of_another_config(tiny, tmp_path):
    cfg_file, ref = tiny
    run_dir = copy_run(ref, tmp_path / "run")
    import shutil
    shutil.rmtree(run_dir / SHARDS_DIR)
    before = snapshot(run_dir)
    changed = write(tmp_path, TINY.replace("seed: 3", "seed: 4"), "changed.yaml")
    with pytest.raises(StressError, match=r"config changed since results\.nc there was written"):
        execute(load_config(changed), workers=1, out=run_dir, resume=True)
    assert snapshot(run_dir) == before


def test_resume_refuses_shards_of_another_plan(tiny, tmp_path):
    cfg_file, ref = tiny
    run_dir = copy_run(ref, tmp_path / "run")
    shards = run_dir / SHARDS_DIR
    # Same config hash, but the file named shard 1 holds shard 0's paths.
    (shards / shard_name(1)).unlink()
    (shards / shard_name(0)).rename(shards / shard_name(1))
    before = snapshot(run_dir)
    with pytest.raises(StressError, match=r"shard-000001\.nc holds paths 0-3, but this run's "
                                          r"shard 1 is paths 4-7 \(a different shard plan\); "
                                          r"run without --resume"):
        execute(load_config(cfg_file), workers=1, out=run_dir, resume=True)
    assert snapshot(run_dir) == before


def test_fresh_run_deletes_nothing_before_the_backend_is_validated(tiny, tmp_path):
    cfg_file, ref = tiny
    run_dir = copy_run(ref, tmp_path / "run")
    before = snapshot(run_dir)
    with pytest.raises(ConfigError, match="--backend"):
        execute(load_config(cfg_file), workers=1, out=run_dir, backend="nope")
    with pytest.raises(ConfigError, match="--workers"):
        execute(load_config(cfg_file), workers=0, out=run_dir)
    # A config that validates but does not prepare (its replay is too short) neither.
    (tmp_path / "short.csv").write_text("timestamp,close\n1,100\n2,90\n3,95\n")
    bad = write(tmp_path, TINY.replace("market: {kind: merton, s0: 100.0, sigma: 0.9, "
                                       "jump_intensity: 2000.0, jump_mean: -0.06}",
                                       "market: {kind: replay, path: short.csv}"), "bad.yaml")
    for extra in ([], ["--resume"]):
        r = cli.invoke(app, ["run", str(bad), "-w", "1", "--no-progress", "--out", str(run_dir),
                             *extra])
        assert r.exit_code == 2 and "the replay has only 3 prices" in r.output, r.output
    assert snapshot(run_dir) == before


# --------------------------------------------------------------- what is kept

def test_resume_with_every_shard_done_runs_nothing(tiny, tmp_path, monkeypatch):
    cfg_file, ref = tiny
    run_dir = copy_run(ref, tmp_path / "run")
    before = snapshot(run_dir)

    def no_backend(*a, **k):
        raise AssertionError("nothing should run")

    monkeypatch.setattr(runmod, "open_backend", no_backend)
    events = []
    ds, _ = execute(load_config(cfg_file), workers=1, out=run_dir, resume=True,
                    on_shard=events.append)
    with ds:
        xr.testing.assert_identical(ds.load(), load(ref / RESULTS_FILE))
    assert events == [ShardDone(k, s, e, 0.0, True) for k, s, e in plan(18, 4)]
    # The very same files: results.nc was complete and of this config, so not rewritten.
    assert snapshot(run_dir) == before


def test_resume_runs_only_missing_and_unreadable_shards(tiny, tmp_path):
    cfg_file, ref = tiny
    run_dir = copy_run(ref, tmp_path / "run")
    shards = run_dir / SHARDS_DIR
    (run_dir / RESULTS_FILE).unlink()
    (shards / shard_name(1)).unlink()
    (shards / shard_name(3)).write_bytes(b"not a netCDF file")  # unreadable: run again
    (shards / ".shard-000001.nc.5f2e9a.tmp").write_bytes(b"half")
    (run_dir / f".{RESULTS_FILE}.77aa.tmp").write_bytes(b"half")
    kept = {k: (shards / shard_name(k)).stat().st_mtime_ns for k in (0, 2, 4)}
    events = []
    ds, _ = execute(load_config(cfg_file), workers=1, out=run_dir, resume=True,
                    on_shard=events.append)
    with ds:
        xr.testing.assert_identical(ds.load(), load(ref / RESULTS_FILE))
    assert [(d.index, d.resumed) for d in events[:3]] == [(0, True), (2, True), (4, True)]
    assert sorted((d.index, d.resumed) for d in events[3:]) == [(1, False), (3, False)]
    assert all(d.seconds > 0 for d in events[3:])
    assert {k: (shards / shard_name(k)).stat().st_mtime_ns for k in kept} == kept
    assert sorted(p.name for p in run_dir.rglob("*")) == \
        sorted([RESULTS_FILE, SHARDS_DIR] + [shard_name(k) for k in range(5)])
    for k in (1, 3):
        xr.testing.assert_identical(load(shards / shard_name(k)),
                                    load(ref / SHARDS_DIR / shard_name(k)))


def test_resume_into_an_empty_folder_is_a_fresh_run(tiny, tmp_path):
    cfg_file, ref = tiny
    ds, _ = runmod.run(cfg_file, workers=1, out=tmp_path / "new", resume=True), None
    with ds:
        xr.testing.assert_identical(ds.load(), load(ref / RESULTS_FILE))


# --------------------------------------------------------------- the driver writes

def test_workers_return_arrays_and_the_driver_writes_each_shard_on_arrival(tiny, tmp_path,
                                                                          monkeypatch):
    cfg_file, _ = tiny
    monkeypatch.chdir(tmp_path)
    prep = prepare(load_config(cfg_file))
    index, start, stop, seconds, out, fund = runmod._shard_task(prep, 2, 8, 12)
    assert (index, start, stop) == (2, 8, 12) and seconds > 0
    assert out.shape[:2] == (3, 4) and fund.shape[:2] == (3, 4)
    assert list(tmp_path.iterdir()) == []  # a worker writes nothing

    run_dir = tmp_path / "run"
    seen = []

    def on_shard(done):
        # Called in the driver once the shard's file is in place.
        path = run_dir / SHARDS_DIR / shard_name(done.index)
        with xr.open_dataset(path, engine="netcdf4") as d:
            seen.append((done.index, d.sizes["path"], d.attrs["config_hash"]))

    ds, _ = execute(prep.config, workers=2, out=run_dir, on_shard=on_shard)
    ds.close()
    assert sorted(seen) == [(k, e - s, prep.config_hash) for k, s, e in plan(18, 4)]


# --------------------------------------------------------------- progress

def test_progress_lines_on_a_non_terminal_and_none_with_no_progress(tiny, tmp_path):
    cfg_file, _ = tiny
    r = cli.invoke(app, ["run", str(cfg_file), "-w", "1", "--out", str(tmp_path / "a")])
    assert r.exit_code == 0, r.output
    lines = r.stderr.splitlines()
    assert len(lines) == 5
    pattern = re.compile(r"^shard (\d)/5 done: paths (\d+)-(\d+) in \d+\.\d\d s; (\d+)/18 paths, "
                         r"[\d.,]+ paths/s, ETA \d+ s$")
    matches = [pattern.match(ln) for ln in lines]
    assert all(matches), lines
    assert [int(m.group(4)) for m in matches] == [4, 8, 12, 16, 18]
    assert [(int(m.group(2)), int(m.group(3))) for m in matches] == \
        [(0, 3), (4, 7), (8, 11), (12, 15), (16, 17)]
    assert lines[-1].endswith("ETA 0 s")
    assert "mean shortfall" in r.stdout and "shard" not in r.stdout

    (tmp_path / "a" / SHARDS_DIR / shard_name(2)).unlink()
    r = cli.invoke(app, ["run", str(cfg_file), "-w", "1", "--out", str(tmp_path / "a"),
                         "--resume"])
    assert r.exit_code == 0, r.output
    lines = r.stderr.splitlines()
    assert lines[0] == "shard 1/5 resumed: paths 0-3 (finished by an earlier run); 4/18 paths"
    assert lines[3] == "shard 5/5 resumed: paths 16-17 (finished by an earlier run); 14/18 paths"
    assert re.match(r"^shard 3/5 done: paths 8-11 in .*; 18/18 paths, .* paths/s, ETA 0 s$",
                    lines[4]), lines

    r = cli.invoke(app, ["run", str(cfg_file), "-w", "1", "--out", str(tmp_path / "b"),
                         "--no-progress"])
    assert r.exit_code == 0, r.output
    assert r.stderr == ""


def test_throughput_counts_resumed_shards_but_not_into_the_rate():
    now = [100.0]
    t = Throughput(5000, 20, clock=lambda: now[0])
    t.add(ShardDone(0, 0, 250, 0.0, True))
    assert t.rate() is None and t.eta() is None
    assert t.line(ShardDone(0, 0, 250, 0.0, True)) == \
        "shard 1/20 resumed: paths 0-249 (finished by an earlier run); 250/5000 paths"
    for k in (1, 2):
        t.add(ShardDone(k, 250 * k, 250 * (k + 1), 1.0, False))
    now[0] += 500 / 410
    done = ShardDone(2, 500, 750, 1.234, False)
    assert t.paths_done == 750 and t.rate() == pytest.approx(410)
    assert t.line(done) == \
        "shard 3/20 done: paths 500-749 in 1.23 s; 750/5000 paths, 410 paths/s, ETA 10 s"
    now[0] += 100
    assert t.eta_text() == "ETA 14 min 20 s"
    assert runmod.duration(7384) == "2 h 03 min"
    assert np.isclose(t.rate(), 500 / (100 + 500 / 410))


def test_a_small_run_with_default_workers_runs_in_this_process(tiny, tmp_path, monkeypatch):
    # 400 accounts × 18 paths × 1 policy is far below SERIAL_BELOW: no pool is started,
    # and the results are those of a two-worker run.
    import stress.runner.backends as backends

    def no_pool(*args, **kwargs):
        raise AssertionError("a pool was started for a small run")

    cfg = load_config(tiny[0])
    two = load(execute(cfg, workers=2, out=tmp_path / "two")[1] / RESULTS_FILE)
    monkeypatch.setattr(backends, "Joblib", no_pool)
    ds, run_dir = execute(cfg, out=tmp_path / "default")
    ds.close()
    xr.testing.assert_identical(load(run_dir / RESULTS_FILE), two)


def test_results_combined_in_memory_equal_the_streamed_ones(tiny, tmp_path, monkeypatch):
    # Below EAGER_BYTES the shards are concatenated in memory; above it, streamed
    # through open_mfdataset: the same results.nc either way.
    import stress.runner.store as store
    cfg = load_config(tiny[0])
    eager = load(execute(cfg, workers=1, out=tmp_path / "eager")[1] / RESULTS_FILE)
    monkeypatch.setattr(store, "EAGER_BYTES", 0)
    streamed = load(execute(cfg, workers=1, out=tmp_path / "streamed")[1] / RESULTS_FILE)
    xr.testing.assert_identical(eager, streamed)
