"""Backends without a Dask cluster: thread limits of the loky pool, option errors,
the ``cluster:`` block and the batch job script built from it (never submitted)."""

from __future__ import annotations

import os
import sys

import pytest

from stress.config import DEFAULT_JOB_PROLOGUE, config_from_dict
from stress.errors import ConfigError, StressError
from stress.runner.backends import (Joblib, Serial, default_workers, jobqueue_kwargs,
                                    open_backend)

RUN = {"run": {"name": "c", "paths": 3, "steps": 10, "seed": 1}}
SLURM = {"kind": "slurm", "cores": 8, "memory": "32GB", "walltime": "02:30:00", "jobs": 3,
         "queue": "compute", "account": "risk-team",
         "job_extra_directives": ["--constraint=skylake", "--exclusive"],
         "log_directory": "logs", "python": "/opt/stress/.venv/bin/python"}


def thread_env(shared, i):
    import numba
    return os.environ.get("NUMBA_NUM_THREADS"), numba.config.NUMBA_NUM_THREADS, shared


def cluster_config(**block):
    return config_from_dict({**RUN, "cluster": {**SLURM, **block}}).cluster


# ------------------------------------------------------------------- joblib
def test_loky_workers_get_their_share_of_the_cores_as_numba_threads():
    with open_backend("joblib", 2, n_tasks=4) as pool:
        assert isinstance(pool, Joblib) and pool.workers == 2
        seen = list(pool.map(thread_env, "shared", [(i,) for i in range(4)]))
    share = max(1, default_workers() // 2)
    # Set before numba is imported in the worker, so numba uses it.
    assert seen == [(str(share), share, "shared")] * 4


def test_one_worker_or_one_task_runs_in_this_process():
    for workers, n_tasks in ((1, 5), (4, 1)):
        with open_backend("joblib", workers, n_tasks=n_tasks) as pool:
            assert isinstance(pool, Serial)
            assert list(pool.map(lambda s, a, b: s + a * b, 1, [(2, 3)])) == [7]


# ------------------------------------------------------------ option errors
@pytest.mark.parametrize("kwargs, fragment", [
    (dict(name="dask"), "--backend: dask needs --scheduler tcp://HOST:PORT or --cluster "
                        "local|slurm|pbs"),
    (dict(name="dask", scheduler="tcp://127.0.0.1:1", cluster="local"),
     "--cluster: cannot be combined with --scheduler"),
    (dict(name="dask", cluster="sge"), "--cluster: must be one of local, slurm, pbs, got 'sge'"),
    (dict(name="dask", scheduler="tcp://127.0.0.1:1", workers=4), "--workers: sets the"),
    (dict(name="joblib", scheduler="tcp://127.0.0.1:1"), "--scheduler: needs --backend dask"),
    (dict(name="joblib", cluster="local"), "--cluster: needs --backend dask"),
    (dict(name="ray"), "--backend: must be one of joblib, dask, got 'ray'"),
    (dict(name="joblib", workers=0), "--workers: must be >= 1"),
    (dict(name="dask", cluster="slurm"),
     "cluster: --cluster slurm needs a cluster: block (kind: slurm) in the config"),
    (dict(name="dask", cluster="pbs", cluster_config="slurm"),
     "cluster.kind: does not match --cluster pbs, got 'slurm'"),
])
def test_bad_backend_options_name_the_option(kwargs, fragment):
    if kwargs.get("cluster_config") == "slurm":
        kwargs["cluster_config"] = cluster_config()
    with pytest.raises(ConfigError) as err:
        with open_backend(**kwargs):
            pass
    assert fragment in str(err.value)
    assert "\n" not in str(err.value)


def test_dask_without_the_cluster_extra_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed fails
    with pytest.raises(StressError, match=r"the dask backend needs the cluster extra: "
                                          r"pip install 'stress\[cluster\]'"):
        with open_backend("dask", cluster="local"):
            pass


# ---------------------------------------------------------- cluster: block
def test_cluster_block_changes_neither_hash_nor_stored_config():
    plain = config_from_dict(RUN)
    with_block = config_from_dict({**RUN, "cluster": SLURM})
    assert with_block.cluster.kind == "slurm" and plain.cluster is None
    assert with_block.hash() == plain.hash()
    assert with_block.to_yaml() == plain.to_yaml()
    assert "cluster" not in plain.model_dump()  # configs without it dump as before
    # Overrides and scenarios rebuild the config from its dump: the block survives.
    assert with_block.with_overrides({"run.paths": 5}).cluster == with_block.cluster


def test_cluster_block_defaults():
    c = config_from_dict({**RUN, "cluster": {"kind": "pbs", "cores": 4, "memory": "8GB"}}).cluster
    assert (c.processes, c.walltime, c.jobs, c.queue, c.python) == (None, "01:00:00", 1, None,
                                                                    None)
    assert c.job_script_prologue == list(DEFAULT_JOB_PROLOGUE)
    assert jobqueue_kwargs(c)["processes"] == 4


@pytest.mark.parametrize("block, fragment", [
    ({"memory": "32"}, "cluster.memory: must be a size such as 16GB or 64GiB, got '32'"),
    ({"walltime": "2h"}, "cluster.walltime: must be HH:MM:SS such as 01:30:00, got '2h'"),
    ({"processes": 9}, "cluster.processes: must be <= cores (8), got 9"),
    ({"kind": "sge"}, "cluster.kind: input should be 'slurm' or 'pbs', got 'sge'"),
    ({"nodes": 2}, "cluster.nodes: unknown key"),
    ({"jobs": 0}, "cluster.jobs: input should be greater than or equal to 1"),
])
def test_bad_cluster_block_names_the_key(block, fragment):
    with pytest.raises(ConfigError) as err:
        config_from_dict({**RUN, "cluster": {**SLURM, **block}})
    assert fragment in str(err.value)


def test_jobqueue_kwargs_carry_every_key():
    kw = jobqueue_kwargs(cluster_config(processes=4, local_directory="$TMPDIR",
                                        interface="ib0"))
    assert kw == {
        "cores": 8, "processes": 4, "memory": "32GB", "walltime": "02:30:00",
        "job_extra_directives": ["--constraint=skylake", "--exclusive"],
        "job_script_prologue": list(DEFAULT_JOB_PROLOGUE), "job_name": "stress-worker",
        "queue": "compute", "account": "risk-team", "local_directory": "$TMPDIR",
        "log_directory": "logs", "python": "/opt/stress/.venv/bin/python", "interface": "ib0"}


def job_script(kind: str, **block) -> str:
    import dask_jobqueue
    cls = {"slurm": dask_jobqueue.SLURMCluster, "pbs": dask_jobqueue.PBSCluster}[kind]
    kwargs = jobqueue_kwargs(cluster_config(kind=kind, **block))
    kwargs.pop("interface", None)  # the test machine has no ib0
    # On loopback, and no dashboard on a port another test may hold.
    kwargs["scheduler_options"] = {"host": "127.0.0.1", "dashboard_address": ":0"}
    # Starts only a scheduler in this process; no job is submitted.
    with cls(**kwargs) as cluster:
        return cluster.job_script()


def test_slurm_job_script_has_the_directives_and_prologue():
    script = job_script("slurm", processes=4,
                        job_script_prologue=["source /opt/stress/.venv/bin/activate",
                                             *DEFAULT_JOB_PROLOGUE])
    for line in ("#SBATCH -J stress-worker", "#SBATCH -p compute", "#SBATCH -A risk-team",
                 "#SBATCH -n 1", "#SBATCH --cpus-per-task=8", "#SBATCH --mem=30G",
                 "#SBATCH -t 02:30:00", "#SBATCH --constraint=skylake", "#SBATCH --exclusive",
                 "#SBATCH -e logs/", "source /opt/stress/.venv/bin/activate",
                 "export NUMBA_CACHE_DIR=${TMPDIR:-/tmp}/stress-numba-cache",
                 "export NUMBA_NUM_THREADS=1", "export OMP_NUM_THREADS=1"):
        assert line in script, (line, script)
    worker = script.strip().splitlines()[-1]
    assert worker.startswith("/opt/stress/.venv/bin/python -m distributed.cli.dask_worker ")
    for option in ("--nthreads 2", "--nworkers 4", "--memory-limit 7.45GiB"):
        assert option in worker, (option, worker)
    # The prologue runs before the workers start.
    assert script.index("export NUMBA_CACHE_DIR") < script.index(worker)


def test_pbs_job_script_has_the_directives_and_prologue():
    script = job_script("pbs", job_extra_directives=["-l place=scatter"])
    for line in ("#PBS -N stress-worker", "#PBS -q compute", "#PBS -A risk-team",
                 "#PBS -l select=1:ncpus=8:mem=30GB", "#PBS -l walltime=02:30:00",
                 "#PBS -l place=scatter", "export NUMBA_CACHE_DIR=${TMPDIR:-/tmp}/stress-numba-cache",
                 "export NUMBA_NUM_THREADS=1"):
        assert line in script, (line, script)
    assert "--nthreads 1" in script and "--nworkers 8" in script


def test_unquoted_yaml_walltime_reads_as_hh_mm_ss(tmp_path):
    from stress.config import load_config
    f = tmp_path / "c.yaml"
    # YAML 1.1 makes 2:30:00 the integer 9000; the block takes it back as a time.
    f.write_text("run: {name: c, paths: 3, steps: 10, seed: 1}\n"
                 "cluster: {kind: slurm, cores: 4, memory: 8GB, walltime: 2:30:00}\n")
    assert load_config(f).cluster.walltime == "02:30:00"
