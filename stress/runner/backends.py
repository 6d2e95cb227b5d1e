"""Where shards run: in this process, on a joblib (loky) pool, or on Dask.

A backend maps ``fn(shared, *task)`` over tasks and yields the results as they
finish (in any order). ``shared`` is the object every task needs (the prepared
book and config); a backend ships it to each worker once where it can.
Results never depend on the backend: every path draws only from its own
``(seed, path)`` stream.

Fixed costs measured on a 2-core machine: starting a loky pool ≈ 1.2 s and
≈ 30 µs per task; a local Dask cluster ≈ 1.8 s and ≈ 3 ms per task. Hence one
task per shard of many paths, and the shared arrays shipped once per worker.
"""

from __future__ import annotations

import os
from contextlib import ExitStack, contextmanager
from typing import Any, Callable, Iterable, Iterator

from stress.errors import ConfigError, StressError

BACKENDS = ("joblib", "dask")
CLUSTERS = ("local", "slurm", "pbs")
# Seconds to reach a scheduler given with --scheduler, and to wait for its first
# worker (a scheduler without workers would otherwise hang the run silently).
CONNECT_TIMEOUT = 10.0
FIRST_WORKER_TIMEOUT = 60.0
# Thread pools a worker process must size to its share of the cores (the ones
# joblib's loky backend limits too).
THREAD_VARS = ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
               "MKL_NUM_THREADS")
CLUSTER_EXTRA = "the dask backend needs the cluster extra: pip install 'stress[cluster]'"


def default_workers() -> int:
    """The cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


class Serial:
    """Every task in this process, in order."""

    workers = 1

    def map(self, fn: Callable, shared: Any, tasks: Iterable[tuple]) -> Iterator[Any]:
        for task in tasks:
            yield fn(shared, *task)


class Joblib:
    """A loky process pool of ``workers`` processes, each with
    ``cores // workers`` numba (and BLAS) threads, so the pool never
    oversubscribes the machine."""

    def __init__(self, workers: int):
        self.workers = workers
        self.threads = max(1, default_workers() // workers)

    def map(self, fn: Callable, shared: Any, tasks: Iterable[tuple]) -> Iterator[Any]:
        from joblib import Parallel, delayed, parallel_config
        with parallel_config(backend="loky", inner_max_num_threads=self.threads):
            with Parallel(n_jobs=self.workers, return_as="generator_unordered") as par:
                yield from par(delayed(fn)(shared, *task) for task in tasks)


class Dask:
    """Tasks on a ``distributed.Client``: ``shared`` goes to every worker once
    (scattered, broadcast), then one task per shard refers to it."""

    def __init__(self, client: Any, workers: int, first_worker_timeout: float | None,
                 where: str):
        self.client = client
        self.workers = workers
        self._first_worker_timeout = first_worker_timeout
        self._where = where

    def map(self, fn: Callable, shared: Any, tasks: Iterable[tuple]) -> Iterator[Any]:
        from distributed import as_completed
        self._wait_for_a_worker()
        # A one-element list: scatter would split a list or dict ``shared`` itself.
        # hash=False: no tokenising of the book; broadcast: every worker holds it
        # before the tasks start instead of fetching it from a peer.
        [shared_future] = self.client.scatter([shared], broadcast=True, hash=False)
        futures = [self.client.submit(fn, shared_future, *task, pure=False) for task in tasks]
        try:
            for future in as_completed(futures, loop=self.client.loop):
                # result() raises the task's own exception (ConservationError, ...).
                yield future.result()
                future.release()
        except BaseException:  # an error, KeyboardInterrupt, or the caller stopped early
            self.client.cancel(futures, force=True)
            raise
        finally:
            self.client.cancel([shared_future], force=True)

    def _wait_for_a_worker(self) -> None:
        if self.client.nthreads():
            return
        try:
            self.client.wait_for_workers(1, timeout=self._first_worker_timeout)
        except TimeoutError:
            raise StressError(f"{self._where}: no Dask worker joined within "
                              f"{self._first_worker_timeout:g} s") from None


def worker_env(threads: int) -> dict[str, str]:
    """Environment of a local worker process with ``threads`` threads for numba and BLAS."""
    return {var: str(threads) for var in THREAD_VARS}


def jobqueue_kwargs(cluster_config: Any) -> dict[str, Any]:
    """Keyword arguments of ``dask_jobqueue.SLURMCluster``/``PBSCluster`` for a
    ``cluster:`` block (:class:`stress.config.ClusterConfig`)."""
    c = cluster_config
    kwargs: dict[str, Any] = {
        "cores": c.cores,
        "processes": c.processes if c.processes is not None else c.cores,
        "memory": c.memory,
        "walltime": c.walltime,
        "job_extra_directives": list(c.job_extra_directives),
        "job_script_prologue": list(c.job_script_prologue),
        "job_name": "stress-worker",
    }
    for key in ("queue", "account", "local_directory", "log_directory", "python",
                "interface"):
        value = getattr(c, key)
        if value is not None:
            kwargs[key] = value
    return kwargs


def _import_distributed():
    try:
        import distributed
    except ImportError:
        raise StressError(CLUSTER_EXTRA) from None
    return distributed


def _check_reachable(scheduler: str) -> None:
    """Fail fast and quietly before a ``Client`` exists: a Client whose connection
    failed takes another 20 s to close, with a traceback (distributed 2026.8)."""
    import asyncio
    import socket
    from concurrent.futures import ThreadPoolExecutor

    from distributed.comm import connect
    from distributed.comm.addressing import parse_address, parse_host_port

    def fail(reason: str) -> ConfigError:
        return ConfigError("--scheduler", f"cannot connect to a Dask scheduler ({reason})",
                           scheduler)

    try:
        scheme, location = parse_address(scheduler, strict=False)
        host, port = parse_host_port(location)
    except (ValueError, TypeError) as e:
        raise ConfigError("--scheduler", f"not a scheduler address such as "
                                         f"tcp://HOST:PORT ({e})", scheduler) from None
    if scheme in ("tcp", "tls"):
        # A refused port fails here at once; distributed would retry until its timeout.
        try:
            socket.create_connection((host, port), timeout=CONNECT_TIMEOUT).close()
        except TimeoutError:
            raise fail(f"no answer within {CONNECT_TIMEOUT:g} s") from None
        except OSError as e:
            raise fail((e.strerror or str(e)).lower()) from None

    async def handshake() -> None:
        comm = await asyncio.wait_for(connect(scheduler, timeout=CONNECT_TIMEOUT),
                                      CONNECT_TIMEOUT)
        await comm.close()

    # In a thread of its own: the caller may already run an event loop (Jupyter).
    with ThreadPoolExecutor(1) as pool:
        try:
            pool.submit(asyncio.run, handshake()).result()
        except (TimeoutError, asyncio.TimeoutError):
            raise fail(f"no Dask handshake within {CONNECT_TIMEOUT:g} s") from None
        except Exception as e:  # whatever answers there does not speak Dask
            raise fail(f"what answers there is not a Dask scheduler: {type(e).__name__}") from None


def _connect(stack: ExitStack, scheduler: str) -> Dask:
    distributed = _import_distributed()
    _check_reachable(scheduler)
    try:
        client = distributed.Client(scheduler, timeout=CONNECT_TIMEOUT,
                                    set_as_default=False)
    except Exception as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ConfigError("--scheduler", f"cannot connect to a Dask scheduler ({reason})",
                          scheduler) from None
    # Only our connection is closed: the scheduler and its workers stay up.
    stack.callback(client.close)
    return Dask(client, len(client.nthreads()), FIRST_WORKER_TIMEOUT,
                f"--scheduler {scheduler}")


def _local_cluster(stack: ExitStack, workers: int) -> Dask:
    distributed = _import_distributed()
    import logging
    cluster = distributed.LocalCluster(
        n_workers=workers, threads_per_worker=1, processes=True,
        # ":0": the HTTP server binds a free port (8787 may be taken: a warning).
        dashboard_address=":0",
        env=worker_env(max(1, default_workers() // workers)), silence_logs=logging.CRITICAL)
    stack.callback(cluster.close)
    client = distributed.Client(cluster, set_as_default=False)
    stack.callback(client.close)
    return Dask(client, workers, None, "--cluster local")


def _jobqueue_cluster(stack: ExitStack, kind: str, cluster_config: Any) -> Dask:
    if cluster_config is None:
        raise ConfigError("cluster", f"--cluster {kind} needs a cluster: block "
                                     f"(kind: {kind}) in the config")
    if cluster_config.kind != kind:
        raise ConfigError("cluster.kind", f"does not match --cluster {kind}",
                          cluster_config.kind)
    distributed = _import_distributed()
    try:
        import dask_jobqueue
    except ImportError:
        raise StressError(CLUSTER_EXTRA) from None
    cls = {"slurm": dask_jobqueue.SLURMCluster, "pbs": dask_jobqueue.PBSCluster}[kind]
    cluster = cls(**jobqueue_kwargs(cluster_config))
    stack.callback(cluster.close)
    cluster.scale(jobs=cluster_config.jobs)
    client = distributed.Client(cluster, set_as_default=False)
    stack.callback(client.close)
    per_job = cluster_config.processes or cluster_config.cores
    # Jobs may wait in the queue for long: no time limit on the first worker.
    return Dask(client, cluster_config.jobs * per_job, None, f"--cluster {kind}")


@contextmanager
def open_backend(name: str = "joblib", workers: int | None = None, *,
                 scheduler: str | None = None, cluster: str | None = None,
                 cluster_config: Any = None, n_tasks: int | None = None) -> Iterator[Any]:
    """The backend ``name`` with ``workers`` processes (default: all cores), closed on exit.

    Parameters
    ----------
    name : {"joblib", "dask"}
        Local loky processes, or Dask.
    workers : int, optional
        Processes of the joblib pool or of ``cluster="local"`` (default: all cores).
    scheduler : str, optional
        Dask only: address of a running scheduler, ``tcp://HOST:PORT``. It and its
        workers are left running on exit.
    cluster : {"local", "slurm", "pbs"}, optional
        Dask only: start a cluster for this run (closed on exit); ``slurm`` and
        ``pbs`` submit the jobs of ``cluster_config``.
    cluster_config : stress.config.ClusterConfig, optional
        The config's ``cluster:`` block.
    n_tasks : int, optional
        Caps the local pool's size (no idle processes).

    Raises
    ------
    ConfigError
        Naming the option at fault (``--scheduler`` for an unreachable scheduler).
    StressError
        Dask without the ``cluster`` extra installed.
    """
    if name not in BACKENDS:
        raise ConfigError("--backend", f"must be one of {', '.join(BACKENDS)}", name)
    if name == "joblib" and (scheduler is not None or cluster is not None):
        raise ConfigError("--scheduler" if scheduler is not None else "--cluster",
                          "needs --backend dask", scheduler or cluster)
    if workers is not None and int(workers) < 1:
        raise ConfigError("--workers", "must be >= 1", workers)
    if name == "dask":
        with ExitStack() as stack:
            yield _open_dask(stack, workers, scheduler, cluster, cluster_config, n_tasks)
        return
    workers = default_workers() if workers is None else int(workers)
    if n_tasks is not None:
        workers = max(1, min(workers, n_tasks))
    yield Serial() if workers == 1 else Joblib(workers)


def _open_dask(stack: ExitStack, workers: int | None, scheduler: str | None,
               cluster: str | None, cluster_config: Any, n_tasks: int | None) -> Dask:
    if scheduler is not None and cluster is not None:
        raise ConfigError("--cluster", "cannot be combined with --scheduler (connect to a "
                                       "running scheduler, or start a cluster)", cluster)
    if scheduler is None and cluster is None:
        raise ConfigError("--backend", "dask needs --scheduler tcp://HOST:PORT or "
                                       "--cluster local|slurm|pbs", "dask")
    if cluster is not None and cluster not in CLUSTERS:
        raise ConfigError("--cluster", f"must be one of {', '.join(CLUSTERS)}", cluster)
    if workers is not None and cluster != "local":
        raise ConfigError("--workers", "sets the processes of the joblib pool or of "
                                       "--cluster local; the scheduler's workers (or the "
                                       "cluster: block) decide here", workers)
    if scheduler is not None:
        return _connect(stack, scheduler)
    if cluster == "local":
        workers = default_workers() if workers is None else int(workers)
        if n_tasks is not None:
            workers = max(1, min(workers, n_tasks))
        return _local_cluster(stack, workers)
    return _jobqueue_cluster(stack, cluster, cluster_config)
