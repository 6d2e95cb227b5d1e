"""The Dask backend against a real scheduler and two worker processes on loopback,
and against a local cluster: the same numbers as joblib, errors with their own type,
one-line user errors."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import xarray as xr
from typer.testing import CliRunner

from stress.cli import app
from stress.config import config_from_dict, load_config
from stress.errors import ConservationError
from stress.runner import backends
from stress.runner.backends import Dask, default_workers, open_backend
from stress.runner.run import execute
from stress.runner.store import open_results

CONFIG = """
run: {name: dask, paths: 30, steps: 120, seed: 11, shard_size: 7}
market: {kind: merton, s0: 100.0, sigma: 0.9, jump_intensity: 1500.0, jump_mean: -0.06}
population: {kind: synthetic, accounts: 400}
exchange: {liquidation_fee_rate: 0.004, slippage: 0.003}
fund: {initial: 100.0}
"""
runner = CliRunner()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(args: list[str], log: Path, cwd: Path) -> subprocess.Popen:
    # A session of its own, so that teardown can kill the process group
    # (a worker's nanny and its worker process).
    # Tasks below call this module's functions: the processes import it by name.
    path = os.pathsep.join(filter(None, [str(Path(__file__).parent),
                                         os.environ.get("PYTHONPATH")]))
    with open(log, "wb") as f:
        return subprocess.Popen([sys.executable, "-m", *args], cwd=cwd, stdout=f,
                                stderr=subprocess.STDOUT, start_new_session=True,
                                env={**os.environ, "PYTHONPATH": path})


def stop(procs: list[subprocess.Popen]) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for p in procs:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, sig)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + 10
        for p in procs:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass


@pytest.fixture(scope="module")
def scheduler(tmp_path_factory):
    """``tcp://127.0.0.1:PORT`` of a scheduler with two single-threaded workers."""
    from distributed import Client
    tmp = tmp_path_factory.mktemp("dask")
    address = f"tcp://127.0.0.1:{free_port()}"
    # Its HTTP server (health checks) binds a free port: 8787 may be another test's.
    procs = [start(["distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port",
                    address.rsplit(":", 1)[1], "--no-dashboard",
                    "--dashboard-address", "127.0.0.1:0"], tmp / "scheduler.log", tmp)]
    try:
        for i in range(2):
            procs.append(start(["distributed.cli.dask_worker", address, "--nthreads", "1",
                                "--no-dashboard", "--host", "127.0.0.1",
                                "--local-directory", str(tmp / f"w{i}")],
                               tmp / f"worker{i}.log", tmp))
        with Client(address, timeout=30, set_as_default=False) as client:
            client.wait_for_workers(2, timeout=60)
        yield address
    except Exception:
        logs = "\n".join(f.read_text()[-2000:] for f in sorted(tmp.glob("*.log")))
        raise RuntimeError(f"the loopback Dask cluster did not start:\n{logs}")
    finally:
        stop(procs)


@pytest.fixture(scope="module")
def config_file(tmp_path_factory):
    f = tmp_path_factory.mktemp("cfg") / "dask.yaml"
    f.write_text(textwrap.dedent(CONFIG))
    return f


@pytest.fixture(scope="module")
def joblib_results(config_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("joblib")
    execute(load_config(config_file), backend="joblib", workers=2, out=out)
    return open_results(out).load()


def fail_on_first(shared, i):
    if i == 0:
        raise ConservationError(f"money not conserved on path {i}, policy {shared}")
    time.sleep(0.2)
    return i


def tasks_on_scheduler(dask_scheduler) -> int:
    return len(dask_scheduler.tasks)


def thread_env(shared, i):
    import numba
    return os.environ.get("NUMBA_NUM_THREADS"), numba.config.NUMBA_NUM_THREADS


def test_scheduler_run_equals_the_joblib_run(scheduler, config_file, joblib_results, tmp_path):
    execute(load_config(config_file), backend="dask", scheduler=scheduler, out=tmp_path)
    assert len(list((tmp_path / "shards").glob("shard-*.nc"))) == 5  # 30 paths by 7
    xr.testing.assert_identical(open_results(tmp_path).load(), joblib_results)


def test_cli_run_on_a_scheduler(scheduler, config_file, joblib_results, tmp_path):
    r = runner.invoke(app, ["run", str(config_file), "--backend", "dask", "--scheduler",
                            scheduler, "--no-progress", "--out", str(tmp_path)])
    assert r.exit_code == 0, r.output
    assert "mean shortfall" in r.output
    xr.testing.assert_identical(open_results(tmp_path).load(), joblib_results)


def test_cluster_block_does_not_change_the_results(scheduler, config_file, joblib_results,
                                                   tmp_path):
    cfg = config_from_dict({**load_config(config_file).model_dump(mode="json"),
                            "cluster": {"kind": "slurm", "cores": 4, "memory": "8GB"}})
    execute(cfg, backend="dask", scheduler=scheduler, out=tmp_path)
    xr.testing.assert_identical(open_results(tmp_path).load(), joblib_results)


def test_local_cluster_run_equals_the_joblib_run(config_file, joblib_results, tmp_path):
    execute(load_config(config_file), backend="dask", cluster="local", workers=2,
            out=tmp_path)
    xr.testing.assert_identical(open_results(tmp_path).load(), joblib_results)


def test_local_cluster_workers_get_their_share_of_the_cores_as_numba_threads():
    with open_backend("dask", 2, cluster="local") as pool:
        assert isinstance(pool, Dask) and pool.workers == 2
        assert len(pool.client.nthreads()) == 2
        assert set(pool.client.nthreads().values()) == {1}
        seen = set(pool.map(thread_env, None, [(i,) for i in range(4)]))
    share = max(1, default_workers() // 2)
    assert seen == {(str(share), share)}


def test_task_error_keeps_its_type_and_cancels_the_other_tasks(scheduler):
    with open_backend("dask", scheduler=scheduler) as pool:
        assert pool.workers == 2
        with pytest.raises(ConservationError, match="path 0, policy fund"):
            for _ in pool.map(fail_on_first, "fund", [(i,) for i in range(20)]):
                pass
        # Nothing of ours is left on the cluster (not even the scattered `shared`).
        deadline = time.monotonic() + 10
        while pool.client.run_on_scheduler(tasks_on_scheduler):
            assert time.monotonic() < deadline, "tasks left on the scheduler"
            time.sleep(0.05)
    # The external scheduler and its workers are still up for the next user.
    from distributed import Client
    with Client(scheduler, timeout=10, set_as_default=False) as client:
        assert len(client.nthreads()) == 2


def test_shared_object_is_on_every_worker_before_the_tasks_run(scheduler):
    with open_backend("dask", scheduler=scheduler) as pool:
        results = pool.map(fail_on_first, "the book", [(i,) for i in range(1, 5)])
        first = next(results)
        holders = [workers for key, workers in pool.client.who_has().items()
                   if str(key).startswith("str-")]
        assert [len(w) for w in holders] == [2]  # scattered once, broadcast to both
        assert sorted([first, *results]) == [1, 2, 3, 4]


def cli_error(*args: str) -> tuple[str, float]:
    t0 = time.perf_counter()
    r = runner.invoke(app, ["run", *args, "--no-progress"])
    elapsed = time.perf_counter() - t0
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output
    lines = r.output.strip().splitlines()
    assert len(lines) == 1, r.output
    return lines[0], elapsed


def test_unreachable_scheduler_is_one_line_exit_2(config_file):
    address = f"tcp://127.0.0.1:{free_port()}"  # nobody listens there
    line, elapsed = cli_error(str(config_file), "--backend", "dask", "--scheduler", address)
    assert line == (f"error: --scheduler: cannot connect to a Dask scheduler (connection "
                    f"refused), got '{address}'")
    assert elapsed < 10


def test_silent_scheduler_times_out_in_one_line(config_file, monkeypatch):
    monkeypatch.setattr(backends, "CONNECT_TIMEOUT", 1.0)
    with socket.socket() as silent:  # accepts connections, never says a word
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        address = f"tcp://127.0.0.1:{silent.getsockname()[1]}"
        line, elapsed = cli_error(str(config_file), "--backend", "dask", "--scheduler",
                                  address)
    assert line == (f"error: --scheduler: cannot connect to a Dask scheduler (no Dask "
                    f"handshake within 1 s), got '{address}'")
    assert elapsed < 8


def test_malformed_scheduler_address_is_one_line_exit_2(config_file):
    line, _ = cli_error(str(config_file), "--backend", "dask", "--scheduler", "localhost")
    assert line.startswith("error: --scheduler: not a scheduler address such as "
                           "tcp://HOST:PORT")


def test_dask_options_are_checked_before_anything_runs(config_file, tmp_path):
    line, _ = cli_error(str(config_file), "--backend", "dask", "--out", str(tmp_path / "a"))
    assert line == ("error: --backend: dask needs --scheduler tcp://HOST:PORT or --cluster "
                    "local|slurm|pbs, got 'dask'")
    line, _ = cli_error(str(config_file), "--backend", "dask", "--scheduler",
                        "tcp://127.0.0.1:1", "--cluster", "local", "--out", str(tmp_path / "b"))
    assert line.startswith("error: --cluster: cannot be combined with --scheduler")
    line, _ = cli_error(str(config_file), "--backend", "dask", "--cluster", "slurm",
                        "--out", str(tmp_path / "c"))
    assert line == ("error: cluster: --cluster slurm needs a cluster: block (kind: slurm) in "
                    "the config")
    assert not any(tmp_path.iterdir())  # nothing written
