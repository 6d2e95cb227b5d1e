"""The ``stress sweep`` command (registered on the app in :mod:`stress.cli`)."""

from __future__ import annotations

from pathlib import Path

import typer


def sweep(
    config: Path = typer.Argument(..., help="YAML config file."),
    assign: list[str] = typer.Option(..., "--set", help="KEY=V1,V2,...: a swept config key "
                                                        "(dotted) and its values."),
) -> None:
    """Run a config over the Cartesian grid of --set values with common random numbers."""
    typer.echo("error: stress sweep is not available yet", err=True)
    raise typer.Exit(2)
