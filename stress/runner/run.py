"""The driver: plan shards, run them in parallel, write them, combine them.

Workers only compute: a task returns a shard's metric arrays, and the driver
(this process) wraps them (:class:`~stress.runner.frame.Frame`) and writes
``shards/shard-NNNNNN.nc`` atomically as each result arrives, so a cluster
needs no shared filesystem.
The shards are then combined lazily into ``results.nc``. With ``resume``, the
shards an interrupted run of the same config finished are kept.
"""

from __future__ import annotations

import contextlib
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, NamedTuple

import numpy as np

from stress.config import Config, RunConfig, load_config
from stress.errors import ConfigError, StressError
from stress.runner.backends import open_backend
from stress.runner.prepare import Prepared, prepare
from stress.runner.store import (RESULTS_FILE, SHARD_TEMP_GLOB, SHARDS_DIR, fits_in_memory,
                                 open_results, read_stamp, shard_files, shard_index,
                                 shard_name, write_results)

if TYPE_CHECKING:
    import xarray as xr

    from stress.runner.frame import Frame

RUNTIME_OPTIONS = ("workers", "out", "progress", "scenario", "resume", "backend", "scheduler",
                   "cluster", "on_shard")
# Characters of a config hash shown in messages.
SHORT_HASH = 12
# Below this many account-paths (accounts × paths × policies) a run with the
# default worker count runs in this process: starting a pool and loading the
# kernel in every worker (≈ 1–3 s) would cost more than it saves.
SERIAL_BELOW = 200_000


class ShardDone(NamedTuple):
    """A finished shard, as passed to ``execute(..., on_shard=...)``.

    ``stop`` is exclusive (the shard holds paths ``start .. stop-1``);
    ``seconds`` is the worker's compute time (0 for a shard kept by
    ``resume``, then ``resumed`` is true).
    """

    index: int
    start: int
    stop: int
    seconds: float
    resumed: bool


def plan(paths: int, shard_size: int) -> list[tuple[int, int, int]]:
    """Shards as ``(index, start, stop)``; path ``i`` always lands in shard ``i // shard_size``."""
    return [(k, s, min(s + shard_size, paths))
            for k, s in enumerate(range(0, paths, shard_size))]


def _shard_task(prep: Prepared, index: int, start: int, stop: int):
    """Compute one shard in a worker; return ``(index, start, stop, seconds, out, fund)``.

    Only the arrays travel back (a few hundred kB for 250 paths); the driver
    writes the file.
    """
    # Imported here so that a loky worker pays for numba only once, on first use.
    from stress.runner.shard import simulate_shard
    t0 = time.perf_counter()
    out, fund = simulate_shard(prep, start, stop)
    return index, start, stop, time.perf_counter() - t0, out, fund


class Throughput:
    """Progress of a run from its :class:`ShardDone` events: paths done, the rate of
    the paths computed in this run (resumed ones excluded) and the time left.

    Parameters
    ----------
    paths, shards : int
        The run's totals.
    """

    def __init__(self, paths: int, shards: int, clock: Callable[[], float] = time.perf_counter):
        self.paths, self.shards = paths, shards
        self.clock = clock
        self.t0 = clock()
        self.paths_done = 0
        self.paths_run = 0
        self.shards_done = 0

    def add(self, done: ShardDone) -> None:
        n = done.stop - done.start
        self.paths_done += n
        self.shards_done += 1
        if not done.resumed:
            self.paths_run += n

    def rate(self) -> float | None:
        """Paths per second computed in this run so far (``None`` before the first)."""
        elapsed = self.clock() - self.t0
        return self.paths_run / elapsed if self.paths_run and elapsed > 0 else None

    def eta(self) -> float | None:
        """Seconds left at the current rate (``None`` while unknown)."""
        left = self.paths - self.paths_done
        if left <= 0:
            return 0.0
        rate = self.rate()
        return left / rate if rate else None

    def rate_text(self) -> str:
        rate = self.rate()
        if rate is None:
            return "- paths/s"
        return f"{rate:,.0f} paths/s" if rate >= 100 else f"{rate:.3g} paths/s"

    def eta_text(self) -> str:
        eta = self.eta()
        return "ETA -" if eta is None else f"ETA {duration(eta)}"

    def line(self, done: ShardDone) -> str:
        """A plain log line for a shard, e.g. ``shard 3/20 done: paths 500-749 in 1.23 s;
        750/5000 paths, 410 paths/s, ETA 11 s``. Call after :meth:`add`."""
        head = f"shard {done.index + 1}/{self.shards}"
        span = f"paths {done.start}-{done.stop - 1}"
        total = f"{self.paths_done}/{self.paths} paths"
        if done.resumed:
            return f"{head} resumed: {span} (finished by an earlier run); {total}"
        return (f"{head} done: {span} in {done.seconds:.2f} s; {total}, {self.rate_text()}, "
                f"{self.eta_text()}")


def duration(seconds: float) -> str:
    """``11 s``, ``4 min 05 s``, ``2 h 03 min``."""
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def _short(h: str | None) -> str:
    return "none" if not h else str(h)[:SHORT_HASH]


AFTER_REFUSAL = "run without --resume to start over, or choose another --out"


def finished_shards(run_dir: Path, shards: list[tuple[int, int, int]],
                    config_hash: str) -> tuple[set[int], list[Path]]:
    """What ``resume`` keeps: the indices of the finished shards of this config and
    plan, and the unreadable shard files (to run again). Reads only.

    Raises
    ------
    StressError
        If a readable shard (or ``results.nc``) was written by another config, or
        holds paths other than the plan's for its index.
    """
    planned = {k: (s, e) for k, s, e in shards}
    keep, unreadable = set(), []
    for f in shard_files(run_dir / SHARDS_DIR):
        stamp = read_stamp(f)
        if stamp is None:
            unreadable.append(f)
            continue
        stored, paths = stamp
        if stored != config_hash:
            raise StressError(
                f"{run_dir}: the config changed since the shards there were written (config "
                f"hash {_short(stored)} in {SHARDS_DIR}/{f.name}, {_short(config_hash)} now); "
                f"{AFTER_REFUSAL}")
        k = shard_index(f)
        if k not in planned:
            raise StressError(
                f"{run_dir}: {SHARDS_DIR}/{f.name} is not in this run's shard plan ({len(shards)} "
                f"shards); {AFTER_REFUSAL}")
        s, e = planned[k]
        if not np.array_equal(paths, np.arange(s, e)):
            got = f"paths {paths[0]}-{paths[-1]}" if paths.size else "no paths"
            raise StressError(
                f"{run_dir}: {SHARDS_DIR}/{f.name} holds {got}, but this run's shard {k} is "
                f"paths {s}-{e - 1} (a different shard plan); {AFTER_REFUSAL}")
        keep.add(k)
    results = run_dir / RESULTS_FILE
    if results.is_file():
        stamp = read_stamp(results)
        if stamp is not None and stamp[0] != config_hash:
            raise StressError(
                f"{run_dir}: the config changed since {RESULTS_FILE} there was written (config "
                f"hash {_short(stamp[0])} then, {_short(config_hash)} now); {AFTER_REFUSAL}")
    return keep, unreadable


def _results_current(run_dir: Path, config_hash: str, paths: int) -> bool:
    """Whether ``results.nc`` is readable, of this config and complete."""
    stamp = read_stamp(run_dir / RESULTS_FILE)
    return (stamp is not None and stamp[0] == config_hash
            and np.array_equal(stamp[1], np.arange(paths)))


def _prepare_folder(run_dir: Path, resume: bool, unreadable: list[Path]) -> None:
    """Clear what this run replaces: everything (a fresh run), or only temporary files
    and unreadable shards (``resume``)."""
    shard_dir = run_dir / SHARDS_DIR
    try:
        if resume:
            for f in [*shard_dir.glob(SHARD_TEMP_GLOB), *unreadable]:
                f.unlink(missing_ok=True)
        elif shard_dir.exists():
            # A previous run's shards in this folder would mix with ours.
            shutil.rmtree(shard_dir)
        if not resume:
            (run_dir / RESULTS_FILE).unlink(missing_ok=True)
        for f in run_dir.glob(f".{RESULTS_FILE}.*.tmp") if run_dir.is_dir() else ():
            f.unlink(missing_ok=True)
        shard_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise StressError(f"{run_dir}: cannot write results there: {e.strerror or e}") from None


def resolve_config(config: str | Path | Config, overrides: dict[str, Any],
                   scenario: str | None = None) -> Config:
    """Load ``config``, lay the named ``scenario`` over it, then apply keyword overrides.

    Keys that name a ``run`` field (``paths=100``) override that field; other
    keys use ``__`` for nesting (``market__sigma=0.9``, ``fund__initial=0``).
    """
    cfg = config if isinstance(config, Config) else load_config(config)
    if scenario is not None:
        from stress.scenarios import apply_scenario
        cfg = apply_scenario(cfg, scenario)
    if not overrides:
        return cfg
    dotted = {}
    for key, value in overrides.items():
        if key in RunConfig.model_fields:
            dotted[f"run.{key}"] = value
        elif "__" in key:
            dotted[key.replace("__", ".")] = value
        else:
            raise ConfigError(key, "unknown override (use a run field such as paths=..., or "
                                   "section__key=... such as market__sigma=...)")
    return cfg.with_overrides(dotted)


def execute(cfg: Config, *, workers: int | None = None, out: str | Path | None = None,
            on_shard: Callable[[ShardDone], None] | None = None, backend: str = "joblib",
            scheduler: str | None = None, cluster: str | None = None,
            resume: bool = False) -> tuple[xr.Dataset, Path]:
    """Run a validated config; return its results (lazy) and the run folder.

    :func:`run_folder`, then ``results.nc`` opened with
    :func:`stress.runner.store.open_results` (dask-backed). The arguments
    are :func:`run_folder`'s.
    """
    run_dir = run_folder(cfg, workers=workers, out=out, on_shard=on_shard, backend=backend,
                         scheduler=scheduler, cluster=cluster, resume=resume)
    return open_results(run_dir), run_dir


def run_folder(cfg: Config, *, workers: int | None = None, out: str | Path | None = None,
               on_shard: Callable[[ShardDone], None] | None = None, backend: str = "joblib",
               scheduler: str | None = None, cluster: str | None = None,
               resume: bool = False) -> Path:
    """Run a validated config; write its shards and ``results.nc``; return the run folder.

    Everything that can be wrong with the input is checked (and the backend
    opened) before anything in the run folder is written or deleted.

    Parameters
    ----------
    cfg : Config
        A validated config.
    workers : int, optional
        Worker processes (default: all cores; a run of fewer than
        ``SERIAL_BELOW`` account-paths runs in this process).
    out : path, optional
        The run folder (default ``results/<run.name>``).
    on_shard : callable, optional
        Called in this process with a :class:`ShardDone` for every shard as it
        finishes, and first for every shard kept by ``resume``.
    backend, scheduler, cluster : str
        Where shards run: ``joblib`` (local processes) or ``dask``
        (``scheduler``: a scheduler address; ``cluster``: ``local`` or the
        config's ``cluster:`` block); see :func:`stress.runner.backends.open_backend`.
    resume : bool
        Keep the finished shards of an interrupted run of the same config in
        the folder and run only the missing ones (and unreadable ones). Refused
        with a :class:`StressError` if the folder holds shards (or a
        ``results.nc``) of another config or shard plan. Without it, the
        folder's old shards and ``results.nc`` are removed.

    Returns
    -------
    pathlib.Path
        The run folder, holding ``results.nc`` and ``shards/``.
    """
    prep = prepare(cfg)
    run_dir = Path(out) if out is not None else Path("results") / cfg.run.name
    shard_dir = run_dir / SHARDS_DIR
    shards = plan(cfg.run.paths, cfg.run.shard_size)
    keep, unreadable = (finished_shards(run_dir, shards, prep.config_hash) if resume
                        else (set(), []))
    todo = [(k, s, e) for k, s, e in shards if k not in keep]
    if workers is None and backend == "joblib" and _small(prep):
        workers = 1

    held: dict[Path, Frame] = {}
    with contextlib.ExitStack() as stack:
        # Opened first: a bad --backend/--scheduler/--workers fails before any deletion.
        pool = (stack.enter_context(open_backend(
            backend, workers, scheduler=scheduler, cluster=cluster,
            cluster_config=cfg.cluster, n_tasks=len(todo)))
            if todo else None)
        _prepare_folder(run_dir, resume, unreadable)
        for k, s, e in shards:
            if k in keep and on_shard:
                on_shard(ShardDone(k, s, e, 0.0, True))
        if todo:
            from stress.runner.shard import release_runner, shard_frame
            if pool.workers > 1:  # in this process the first shard compiles it anyway
                _warm_up()
            try:
                for index, start, stop, seconds, res, fund in pool.map(_shard_task, prep,
                                                                         todo):
                    frame = shard_frame(res, prep, start, fund)
                    target = frame.write(shard_dir / shard_name(index))
                    # A small run's shards stay in memory for results.nc (not read back).
                    if fits_in_memory(frame.nbytes, len(shards)):
                        held[target] = frame
                    del res, fund, frame
                    if on_shard:
                        on_shard(ShardDone(index, start, stop, seconds, False))
            finally:
                release_runner()  # the book the shards ran in this process, if any
    if todo or not _results_current(run_dir, prep.config_hash, cfg.run.paths):
        write_results([shard_dir / shard_name(k) for k, _, _ in shards], run_dir / RESULTS_FILE,
                      shard_size=cfg.run.shard_size, held=held)
    return run_dir


def _small(prep: Prepared) -> bool:
    """Whether a run is too small to be worth a process pool."""
    cfg = prep.config
    accounts = len(prep.book) if prep.book is not None else cfg.population.accounts
    return accounts * cfg.run.paths * len(cfg.policies) < SERIAL_BELOW


def _warm_up() -> None:
    """Compile (or load from cache) the kernel once before workers start."""
    from stress.exchange.kernels import simulate
    from stress.exchange.tiers import TierTable
    from stress.population import Book
    tiers = TierTable.from_rows([{"notional_floor": 0, "notional_cap": None, "mmr": 0.01,
                                  "maint_amount": 0, "max_leverage": 10}])
    simulate(np.array([1.0, 0.5]), Book.from_arrays([1.0], [1.0], [0.2]), tiers,
             [0, 1, 2, 3], 0.0)


def run(config: str | Path | Config, **overrides: Any) -> xr.Dataset:
    """Run a stress test and return its results.

    Parameters
    ----------
    config : path or Config
        A YAML config file or a validated :class:`stress.config.Config`.
    **overrides
        ``workers`` (default: all cores), ``out`` (default ``results/<run.name>``),
        ``resume`` (``True``: keep the finished shards of an interrupted run of
        the same config in ``out`` and run only the rest; see :func:`execute`),
        ``on_shard`` (a callback given a :class:`ShardDone` per shard),
        ``backend``/``scheduler``/``cluster`` (see :func:`execute`),
        ``progress`` (ignored here; the CLI shows a bar), ``scenario`` (a named
        scenario from ``scenarios/``, laid over the config before the other
        overrides; see :mod:`stress.scenarios`), any ``run`` field
        (``paths=200``, ``seed=7``), or a nested key with ``__``
        (``market__sigma=0.9``, ``fund__initial=5e6``).

    Returns
    -------
    xarray.Dataset
        Per-path metrics with dims ``(policy, path)``, read lazily (dask) from
        ``<out>/results.nc``; the shards are in ``<out>/shards/``.
    """
    runtime = {k: overrides.pop(k) for k in RUNTIME_OPTIONS if k in overrides}
    cfg = resolve_config(config, overrides, scenario=runtime.get("scenario"))
    where = {k: runtime[k] for k in ("backend", "scheduler", "cluster", "on_shard", "resume")
             if k in runtime}
    ds, _ = execute(cfg, workers=runtime.get("workers"), out=runtime.get("out"), **where)
    return ds
