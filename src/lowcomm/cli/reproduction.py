"""``lowcomm reproduce``: run a paper's study and report its claims."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from lowcomm.cli.app import app
from lowcomm.cli.errors import _user_errors
from lowcomm.cli.options import Quiet, _run_progress
from lowcomm.cli.tables import _console
from lowcomm.experiments import reproduce as reproductions


@app.command()
def reproduce(
    name: Annotated[
        str,
        typer.Argument(
            help=f"The reproduction: {', '.join(reproductions.REPRODUCTIONS)}, or all.",
            metavar="NAME",
            show_default=False,
        ),
    ],
    quick: Annotated[
        bool,
        typer.Option(
            "--quick", help="The small study (under 2 minutes), on the embedded default data."
        ),
    ] = False,
    out: Annotated[
        Path | None,
        typer.Option(
            help="Output folder. [default: results/reproduce-NAME]",
            metavar="DIR",
            show_default=False,
        ),
    ] = None,
    data: Annotated[
        str | None,
        typer.Option(
            help="Data set. [default: the reproduction's, see docs/cli.md]",
            metavar="SPEC",
            show_default=False,
        ),
    ] = None,
    seeds: Annotated[
        str | None,
        typer.Option(help="Comma-separated seeds. [default: the reproduction's]", metavar="0,1,.."),
    ] = None,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume",
            help="Read back the runs already saved in OUT with the same config instead of "
            "running them again, so an interrupted study goes on.",
        ),
    ] = False,
    jobs: Annotated[
        int | None,
        typer.Option(
            "--jobs",
            help="Independent runs at once, each in its own process with one torch thread; "
            "results do not depend on it. [default: the number of cores]",
            metavar="N",
            show_default=False,
        ),
    ] = None,
    quiet: Quiet = False,
) -> None:
    """Reproduce a paper's claims: run its study, write OUT/report.md and report.html."""
    from lowcomm.experiments.reproduce.report import console_table

    with _user_errors():
        request = reproductions.make_request(
            name, quick, out, data, seeds, _run_progress(quiet), resume, jobs
        )
        if name == reproductions.ALL:
            outcomes = reproductions.reproduce_all(request)
        else:
            outcomes = {name: reproductions.reproduce(name, request)}
    if not quiet:
        console = _console()
        for done, outcome in outcomes.items():
            title = f"Claims of {done}: measured here, beside the paper's run"
            console.print(console_table(outcome.claims, title, outcome.paper_source))
            if outcome.sensitivity:
                title = f"Sensitivity results of {done} (outside the paper's setting)"
                console.print(console_table(outcome.sensitivity, title, outcome.paper_source))
            console.print(f"Report: {outcome.report} ({outcome.wall_time:.0f} s)")
        if name == reproductions.ALL:
            console.print(f"Index: {request.out / reproductions.INDEX_MD}")
