"""The driver: plan shards, run them in parallel, write them, combine them."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Callable

import numpy as np
import xarray as xr

from stress.config import Config, RunConfig, load_config
from stress.errors import ConfigError, StressError
from stress.runner.backends import open_backend
from stress.runner.prepare import Prepared, prepare
from stress.runner.store import (RESULTS_FILE, SHARDS_DIR, combine, shard_name,
                                 write_atomic)

RUNTIME_OPTIONS = ("workers", "out", "progress", "scenario")


def plan(paths: int, shard_size: int) -> list[tuple[int, int, int]]:
    """Shards as ``(index, start, stop)``; path ``i`` always lands in shard ``i // shard_size``."""
    return [(k, s, min(s + shard_size, paths))
            for k, s in enumerate(range(0, paths, shard_size))]


def _shard_task(prep: Prepared, index: int, start: int, stop: int, shard_dir: str) -> int:
    # Imported here so that a loky worker pays for numba only once, on first use.
    from stress.runner.shard import simulate_shard, to_dataset
    out, fund = simulate_shard(prep, start, stop)
    write_atomic(to_dataset(out, prep, start, fund), Path(shard_dir) / shard_name(index))
    return stop - start


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
            on_shard: Callable[[int], None] | None = None, backend: str = "joblib",
            scheduler: str | None = None, cluster: str | None = None,
            resume: bool = False) -> tuple[xr.Dataset, Path]:
    """Run a validated config; returns the combined Dataset and the run folder.

    Everything that can be wrong with the input is checked before the first
    file is written. ``backend`` is ``joblib`` (local processes) or ``dask``
    (``scheduler``: a scheduler address; ``cluster``: ``local`` or the
    config's ``cluster:`` block); ``resume`` keeps the finished shards of an
    interrupted run of the same config.
    """
    prep = prepare(cfg)
    run_dir = Path(out) if out is not None else Path("results") / cfg.run.name
    shard_dir = run_dir / SHARDS_DIR
    shards = plan(cfg.run.paths, cfg.run.shard_size)
    if resume:
        raise ConfigError("--resume", "not available yet", resume)

    # A previous run's shards in this folder would mix with ours.
    try:
        if shard_dir.exists():
            shutil.rmtree(shard_dir)
        (run_dir / RESULTS_FILE).unlink(missing_ok=True)
        shard_dir.mkdir(parents=True)
    except OSError as e:
        raise StressError(f"{run_dir}: cannot write results there: {e.strerror}") from None

    _warm_up()
    tasks = [(k, s, e, str(shard_dir)) for k, s, e in shards]
    with open_backend(backend, workers, scheduler=scheduler, cluster=cluster,
                      n_tasks=len(tasks)) as pool:
        for n in pool.map(_shard_task, prep, tasks):
            if on_shard:
                on_shard(n)
    ds = combine([shard_dir / shard_name(k) for k, _, _ in shards])
    write_atomic(ds, run_dir / RESULTS_FILE)
    return ds, run_dir


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
        ``progress`` (ignored here; the CLI shows a bar), ``scenario`` (a named
        scenario from ``scenarios/``, laid over the config before the other
        overrides; see :mod:`stress.scenarios`), any ``run`` field
        (``paths=200``, ``seed=7``), or a nested key with ``__``
        (``market__sigma=0.9``, ``fund__initial=5e6``).

    Returns
    -------
    xarray.Dataset
        Per-path metrics with dims ``(policy, path)``; also written to
        ``<out>/results.nc`` and ``<out>/shards/``.
    """
    runtime = {k: overrides.pop(k) for k in RUNTIME_OPTIONS if k in overrides}
    cfg = resolve_config(config, overrides, scenario=runtime.get("scenario"))
    ds, _ = execute(cfg, workers=runtime.get("workers"), out=runtime.get("out"))
    return ds
