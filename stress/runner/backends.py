"""Where shards run: in this process, on a joblib (loky) pool, or on Dask.

A backend maps ``fn(shared, *task)`` over tasks and yields the results as they
finish (in any order). ``shared`` is the object every task needs (the prepared
book and config); a backend ships it to each worker once where it can.
Results never depend on the backend: every path draws only from its own
``(seed, path)`` stream.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Any, Callable, Iterable, Iterator

from stress.errors import ConfigError

BACKENDS = ("joblib", "dask")


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


@contextmanager
def open_backend(name: str = "joblib", workers: int | None = None, *,
                 scheduler: str | None = None, cluster: str | None = None,
                 cluster_config: Any = None, n_tasks: int | None = None) -> Iterator[Any]:
    """The backend ``name`` with ``workers`` processes (default: all cores), closed on exit.

    ``n_tasks`` caps the local pool's size (no idle processes).
    """
    if name not in BACKENDS:
        raise ConfigError("--backend", f"must be one of {', '.join(BACKENDS)}", name)
    if name == "dask":
        raise ConfigError("--backend", "the dask backend is not available yet", name)
    if scheduler is not None or cluster is not None:
        raise ConfigError("--scheduler" if scheduler is not None else "--cluster",
                          "needs --backend dask", scheduler or cluster)
    workers = default_workers() if workers is None else int(workers)
    if workers < 1:
        raise ConfigError("--workers", "must be >= 1", workers)
    if n_tasks is not None:
        workers = max(1, min(workers, n_tasks))
    yield Serial() if workers == 1 else Joblib(workers)
