"""The ``stress`` command.

User errors (bad config, bad data) print one line and exit with code 2; heavy
imports happen inside the commands so that ``stress --help`` is instant.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from stress import __version__

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Monte Carlo stress tests of a perpetual-futures venue's insurance fund, "
                       "ADL, socialised loss and negative-balance protection.")

EXIT_USER_ERROR = 2


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(EXIT_USER_ERROR)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"stress {__version__}")
        raise typer.Exit()


@app.callback()
def main_callback(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    """stress: bad debt of leveraged perpetual futures under crash scenarios."""


SCENARIO_HELP = "Named scenario to lay over the config (see `stress scenarios`)."


@app.command()
def validate(
    config: Path = typer.Argument(..., help="YAML config file."),
    scenario: Optional[str] = typer.Option(None, "--scenario", help=SCENARIO_HELP),
) -> None:
    """Check a config (and the files it reads); exit 0 if valid, 2 if not."""
    from stress.config import load_config
    from stress.errors import StressError
    from stress.runner.prepare import prepare
    try:
        cfg = load_config(config)
        if scenario is not None:
            from stress.scenarios import apply_scenario
            cfg = apply_scenario(cfg, scenario)
        prepare(cfg)
    except StressError as e:
        _fail(str(e))
    with_scenario = f" with scenario {scenario}" if scenario is not None else ""
    typer.echo(f"{config}{with_scenario}: valid ({cfg.run.paths} paths × {cfg.run.steps} "
               f"steps, {len(cfg.policies)} policies)")


@app.command()
def scenarios() -> None:
    """List the named scenarios for --scenario, with their descriptions."""
    from stress.errors import StressError
    from stress.scenarios import list_scenarios
    try:
        found = list_scenarios()
    except StressError as e:
        _fail(str(e))
    if not found:
        typer.echo("no scenarios found (looked in ./scenarios and the repository's scenarios/)")
        return
    width = max(len("scenario"), *(len(n) for n in found))
    typer.echo(f"{'scenario'.ljust(width)}  description")
    for name, description in found.items():
        typer.echo(f"{name.ljust(width)}  {description}")


@app.command()
def run(
    config: Path = typer.Argument(..., help="YAML config file."),
    workers: Optional[int] = typer.Option(None, "--workers", "-w", min=1,
                                          help="Parallel worker processes (default: all cores)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o",
                                       help="Output folder (default: results/<run.name>)."),
    no_progress: bool = typer.Option(False, "--no-progress", help="Do not show a progress bar."),
    scenario: Optional[str] = typer.Option(None, "--scenario", help=SCENARIO_HELP),
) -> None:
    """Run a stress test, write results/<name>/results.nc and print a summary."""
    import time

    from rich.console import Console

    from stress.config import load_config
    from stress.errors import StressError
    from stress.report.summary import summary_table
    from stress.runner.run import execute

    console = Console(stderr=False)
    try:
        cfg = load_config(config)
        if scenario is not None:
            from stress.scenarios import apply_scenario
            cfg = apply_scenario(cfg, scenario)
    except StressError as e:
        _fail(str(e))
    t0 = time.perf_counter()
    show = not no_progress and sys.stderr.isatty()
    try:
        if show:
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress,
                                       TextColumn, TimeElapsedColumn, TimeRemainingColumn)
            with Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                          MofNCompleteColumn(), TextColumn("paths"), TimeElapsedColumn(),
                          TimeRemainingColumn(), console=Console(stderr=True),
                          transient=True) as bar:
                task = bar.add_task(cfg.run.name, total=cfg.run.paths)
                ds, run_dir = execute(cfg, workers=workers, out=out,
                                      on_shard=lambda n: bar.advance(task, n))
        else:
            ds, run_dir = execute(cfg, workers=workers, out=out)
    except StressError as e:
        _fail(str(e))
    elapsed = time.perf_counter() - t0
    console.print(summary_table(ds))
    console.print(f"{cfg.run.paths} paths × {cfg.run.steps} steps × {ds.attrs['accounts']} "
                  f"accounts × {len(cfg.policies)} policies in {elapsed:.1f} s → "
                  f"{run_dir / 'results.nc'}")


def main() -> None:  # console-script entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
