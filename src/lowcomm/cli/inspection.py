"""``lowcomm partition`` and ``algorithms``: look at a partition or the algorithms, run nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from lowcomm.algorithms.describe import (
    OBJECTIVE_KEY,
    describe_algorithm,
    describe_algorithms,
    describe_participation,
    describe_settings,
)
from lowcomm.cli.app import app
from lowcomm.cli.errors import _user_errors
from lowcomm.cli.options import _default
from lowcomm.cli.tables import _console, _table


@app.command("partition")
def partition_command(
    data: Annotated[
        str,
        typer.Argument(
            help="Data set, as for run --data (e.g. digits).", metavar="DATA", show_default=False
        ),
    ],
    workers: Annotated[int, typer.Option(help="Number of workers.")] = _default("workers"),
    partition: Annotated[
        str,
        typer.Option(
            help="iid, sorted, classes:K, dirichlet:ALPHA[,min_size=M], size-skew:POWER or "
            "contiguous.",
            metavar="SPEC",
        ),
    ] = _default("partition"),
    seed: Annotated[int, typer.Option(help="Seed of the data split and the partition.")] = 0,
    test_fraction: Annotated[
        float, typer.Option(help="Share held out where the data set has no test split.")
    ] = _default("test_fraction"),
    plot: Annotated[
        Path | None,
        typer.Option(
            help="Also save a PNG: each worker's label mix beside the shard sizes.",
            metavar="FILE",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Show how a partition splits a data set's training examples among workers.

    The split is the one 'lowcomm run' trains on with the same settings: a table of each
    worker's examples per label and, with --plot, a figure.
    """
    from lowcomm.experiments.partition_view import partition_table, partition_view, plot_partition

    with _user_errors():
        view = partition_view(data, workers, partition, seed, test_fraction)
    _console().print(partition_table(view))
    if plot is not None:
        plot_partition(view, plot)
        typer.echo(str(plot))


@app.command()
def algorithms(
    name: Annotated[
        str | None,
        typer.Argument(
            help="An algorithm: list its settings.", metavar="[NAME]", show_default=False
        ),
    ] = None,
) -> None:
    """List the algorithms and what each minimises, or every setting of one and its objective."""
    with _user_errors():
        if name is None:
            headers: tuple[str, ...] = (
                "algorithm",
                "what",
                "timing",
                "sends up",
                "sends down",
                "minimises",
            )
            table = _table("Algorithms", headers, [tuple(r) for r in describe_algorithms()])
            table.caption = OBJECTIVE_KEY
        else:
            headers = ("setting", "type", "default", "allowed", "meaning")
            rows = [tuple(r) for r in describe_settings(name)]
            table = _table(f"Settings of {name} (--set KEY=VALUE)", headers, rows)
            objective = describe_algorithm(name).objective
            part_time = f"partial participation: {describe_participation(name)}"
            table.caption = f"{name} minimises {objective}\n({OBJECTIVE_KEY})\n{part_time}"
    _console().print(table)
