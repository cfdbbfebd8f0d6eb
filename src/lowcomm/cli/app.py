"""The shared typer ``app`` and its root callback; every command module registers on it."""

from __future__ import annotations

from typing import Annotated

import typer

import lowcomm

app = typer.Typer(
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    help="Communication-efficient distributed optimisation: run, compare, plot and reproduce.",
)


def _version(value: bool) -> None:
    """Print the version and stop (the eager ``--version`` flag)."""
    if value:
        typer.echo(f"lowcomm {lowcomm.__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """Communication-efficient distributed optimisation: run, compare, plot and reproduce."""
