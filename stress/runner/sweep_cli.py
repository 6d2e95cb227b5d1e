"""The ``stress sweep`` command (registered on the app in :mod:`stress.cli`)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

EXIT_USER_ERROR = 2

# Where runs compute: the options `stress run` and `stress sweep` share.
BACKEND_OPTION = typer.Option("joblib", "--backend", help="joblib (local processes) or dask.")
SCHEDULER_OPTION = typer.Option(None, "--scheduler",
                                help="Dask scheduler address, tcp://HOST:PORT.")
CLUSTER_OPTION = typer.Option(
    None, "--cluster", help="Dask cluster to start: local, or slurm / pbs (the config's "
                            "cluster: block).")


def announce_compiles() -> None:
    """Say on stderr when numba compiles the kernels in this command (1-3 minutes
    after installing; later runs load them from the cache). Also loads numba's
    array functions without their BLAS probe (:func:`stress._jit.skip_blas_probe`:
    0.3 s of a small run's start), in this command's process only."""
    from stress._jit import COMPILE_NOTICE, on_first_compile, skip_blas_probe
    skip_blas_probe()
    on_first_compile(lambda: typer.echo(COMPILE_NOTICE, err=True))


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(EXIT_USER_ERROR)


def sweep(
    config: Path = typer.Argument(..., help="YAML config file."),
    assign: list[str] = typer.Option(
        ..., "--set", metavar="KEY=V1,V2,...",
        help="A swept config key (dotted, e.g. fund.initial) and its values, parsed as YAML "
             "(1e6 is a number, [2,5] a list); repeat for more keys. The grid is their "
             "Cartesian product, the first --set varying slowest."),
    workers: Optional[int] = typer.Option(None, "--workers", "-w", min=1,
                                          help="Parallel worker processes (default: all cores)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o",
                                       help="Output folder (default: results/<run.name>-sweep)."),
    no_progress: bool = typer.Option(False, "--no-progress", help="Do not report progress."),
    scenario: Optional[str] = typer.Option(
        None, "--scenario", help="Named scenario to lay over the config before the sweep "
                                 "(see `stress scenarios`)."),
    resume: bool = typer.Option(False, "--resume", help="Keep the finished points and shards of "
                                                        "an interrupted sweep of the same grid."),
    backend: str = BACKEND_OPTION,
    scheduler: Optional[str] = SCHEDULER_OPTION,
    cluster: Optional[str] = CLUSTER_OPTION,
) -> None:
    """Run a config over the Cartesian grid of --set values with common random numbers."""
    import time

    from rich.console import Console

    from stress.errors import ConfigError, StressError
    from stress.runner.run import resolve_config
    from stress.runner.sweep import (PointDone, _paths_done, execute_sweep, parse_assignment,
                                     plan_sweep, sweep_table)

    try:
        grid, labels = {}, {}
        for text in assign:
            key, values, raw = parse_assignment(text)
            if key in grid:
                raise ConfigError(f"--set {text}", f"{key} is already swept by an earlier --set")
            grid[key], labels[key] = values, raw
        cfg = resolve_config(config, {}, scenario)
        plan = plan_sweep(cfg, grid, labels, prefix="--set ")
    except StressError as e:
        _fail(str(e))

    announce_compiles()
    n = len(plan.points)
    t0 = time.perf_counter()
    show = not no_progress and sys.stderr.isatty()
    where = dict(workers=workers, out=out, backend=backend, scheduler=scheduler,
                 cluster=cluster, resume=resume)

    def name(point) -> str:
        return " ".join(f"{k}={point.labels[k]}" for k in plan.keys)

    try:
        if show:
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                       TimeElapsedColumn, TimeRemainingColumn)
            with Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                          MofNCompleteColumn(), TextColumn("paths"), TimeElapsedColumn(),
                          TimeRemainingColumn(), console=Console(stderr=True),
                          transient=True) as bar:
                task = bar.add_task(f"{cfg.run.name}: {n} points", total=plan.paths_total)

                def point_done(done: PointDone) -> None:
                    left = n - done.point.index - 1
                    bar.update(task, description=f"{cfg.run.name}: {left} of {n} points left")

                ds, out_dir = execute_sweep(
                    plan, on_shard=lambda done: bar.advance(task, _paths_done(done)),
                    on_point=point_done, **where)
        elif not no_progress:
            def point_line(done: PointDone) -> None:
                how = "kept (finished)" if done.kept else f"done in {done.seconds:.1f} s"
                typer.echo(f"point {done.point.index + 1}/{n} {how}: {name(done.point)} → "
                           f"{done.run_dir}", err=True)

            ds, out_dir = execute_sweep(plan, on_point=point_line, **where)
        else:
            ds, out_dir = execute_sweep(plan, **where)
    except StressError as e:
        _fail(str(e))
    elapsed = time.perf_counter() - t0
    console = Console()
    if not console.is_terminal:  # keep rows on one line in logs and pipes
        console = Console(width=max(console.width, 160))
    console.print(sweep_table(ds))
    console.print(f"{n} points × {cfg.run.paths} paths × {cfg.run.steps} steps × "
                  f"{len(cfg.policies)} policies in {elapsed:.1f} s → {out_dir / 'sweep.nc'}",
                  highlight=False, markup=False)
    ds.close()
