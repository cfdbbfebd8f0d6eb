"""Shared pieces of every reproduction: its request, claims, tables, figures and ``report.md``.

A reproduction runs a paper's study, measures each of the paper's claims and writes a
``report.md`` whose header says how it was produced (command, date, versions, machine, wall
time), with figures and a claims table: the claim as the paper makes it, the paper's own value,
the criterion, the measured value, and PASS or FAIL. Nothing here knows about a particular paper.
"""

from __future__ import annotations

import math
import os
import platform
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from rich.table import Table

import lowcomm
from lowcomm.experiments.plots import DPI
from lowcomm.experiments.results import write_json

REPORT_MD = "report.md"
CLAIMS_JSON = "claims.json"


@dataclass(frozen=True)
class Request:
    """What the user asked of a reproduction (``lowcomm reproduce NAME ...``).

    Attributes:
        out: the output folder.
        quick: the small version (minutes), on the embedded default data.
        data: a ``--data`` spec; None for the reproduction's default.
        seeds: the seeds; None for the reproduction's default.
        progress: show a progress bar of finished runs on stderr.
        command: the command line that asked for it, quoted in the report.
        resume: read back runs already saved in ``out`` with the same config instead of
            running them again.
        jobs: how many independent runs go at once, each in its own process.
    """

    out: Path
    quick: bool = False
    data: str | None = None
    seeds: tuple[int, ...] | None = None
    progress: bool = False
    command: str = ""
    resume: bool = False
    jobs: int = 1


@dataclass(frozen=True)
class Claim:
    """One claim of a paper beside what a reproduction measured.

    Attributes:
        claim: the claim, as the paper (or its authors' logs) states it.
        paper: the value in the paper's own run, for context.
        criterion: the test applied to the measurement.
        measured: the measured value, in words and numbers; for a claim not judged, why not.
        passed: whether the measurement meets the criterion; None when the claim cannot be
            judged at this size of the study.
    """

    claim: str
    paper: str
    criterion: str
    measured: str
    passed: bool | None

    @property
    def verdict(self) -> str:
        """``PASS``, ``FAIL`` or ``not judged``."""
        if self.passed is None:
            return NOT_JUDGED
        return "PASS" if self.passed else "FAIL"

    def as_json(self) -> dict[str, Any]:
        """The claim's fields and its verdict, for ``claims.json``."""
        return asdict(self) | {"result": self.verdict}


NOT_JUDGED = "not judged"


def unjudged(claim: str, paper: str, criterion: str, reason: str) -> Claim:
    """A claim the study cannot judge at this size, saying why instead of failing it."""
    return Claim(claim, paper, criterion, f"not judged at quick size: {reason}", None)


@dataclass(frozen=True)
class Outcome:
    """What a reproduction wrote: folder, report, claims, source of the paper's values, etc.

    Besides those: the wall time in seconds and the sensitivity results.
    """

    out: Path
    report: Path
    claims: tuple[Claim, ...]
    paper_source: str
    wall_time: float = float("nan")
    sensitivity: tuple[Claim, ...] = ()


def number(value: float, digits: int = 4) -> str:
    """A table cell: ``value`` to ``digits`` significant digits; ``-`` for NaN.

    Values of at least ``10 ** (digits - 1)`` are rounded to integers with thousands separators.
    """
    if math.isnan(value):
        return "-"
    if abs(value) >= 10 ** (digits - 1):
        return f"{value:,.0f}"
    return f"{value:.{digits}g}"


def mean_std(values: Sequence[float], digits: int = 4) -> str:
    """``mean ± std`` (sample std) of ``values``; the mean alone for one value; ``-`` if NaN."""
    array = np.asarray(values, dtype=float)
    if array.size == 0 or np.isnan(array).any():
        return "-"
    mean = number(float(array.mean()), digits)
    return mean if array.size == 1 else f"{mean} ± {number(float(array.std(ddof=1)), 2)}"


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub markdown table; cells are written with ``str`` and ``|`` is escaped."""

    def line(cells: Sequence[Any]) -> str:
        return "| " + " | ".join(str(cell).replace("|", "\\|") for cell in cells) + " |"

    return "\n".join([line(headers), line(["---"] * len(headers)), *map(line, rows)])


def claims_table(claims: Sequence[Claim]) -> str:
    """The claims as a markdown table: number, claim, paper run, criterion, measured, verdict."""
    rows = [
        (i, c.claim, c.paper, c.criterion, c.measured, f"**{c.verdict}**")
        for i, c in enumerate(claims, start=1)
    ]
    headers = ("#", "claim", "paper run", "criterion", "measured", "result")
    return markdown_table(headers, rows)


def console_table(claims: Sequence[Claim], title: str, paper_source: str) -> Table:
    """The claims as a rich table for the terminal, the paper's source as its caption."""
    table = Table(title=title, caption=f"source of the paper-run column: {paper_source}")
    for column in ("#", "claim", "paper run", "criterion", "measured", "result"):
        table.add_column(column, justify="right" if column == "#" else "left")
    for i, c in enumerate(claims, start=1):
        style = {True: "green", False: "bold red", None: "yellow"}[c.passed]
        table.add_row(str(i), c.claim, c.paper, c.criterion, c.measured, f"[{style}]{c.verdict}[/]")
    return table


def write_claims(path: Path, claims: Sequence[Claim], extra: dict[str, Any]) -> None:
    """Write ``claims.json``: ``claims`` (each with its verdict) and ``extra`` fields."""
    listed = [c.as_json() for c in claims]
    write_json(path, {**extra, "claims": listed})


def save_figure(figure: Figure, path: Path) -> Path:
    """Write ``figure`` as a PNG at the library's DPI."""
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=DPI)
    return path


def embed(path: Path, caption: str, folder: Path) -> str:
    """Markdown that shows the figure at ``path`` (linked relative to ``folder``) with a caption."""
    relative = os.path.relpath(path, folder)
    return f"![{caption}]({Path(relative).as_posix()})\n\n*{caption}*"


def environment() -> dict[str, str]:
    """Versions and machine, as the report's header states them."""
    return {
        "lowcomm": lowcomm.__version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "pandas": pd.__version__,
        "python": platform.python_version(),
        "machine": f"{platform.platform()}, {platform.machine()}, {os.cpu_count()} CPUs",
    }


def header(title: str, command: str, wall_time: float) -> str:
    """The top of a report: title, the command, date, versions, machine and wall time."""
    env = environment()
    versions = ", ".join(f"{name} {env[name]}" for name in ("lowcomm", "torch", "numpy", "pandas"))
    date = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return "\n".join(
        [
            f"# {title}",
            "",
            "Produced by:",
            "",
            "```sh",
            command,
            "```",
            "",
            f"- Date: {date}",
            f"- Versions: {versions}, python {env['python']}",
            f"- Machine: {env['machine']}",
            f"- Wall time: {wall_time:.0f} s",
        ]
    )


def write_report(path: Path, sections: Sequence[str]) -> Path:
    """Write the sections, separated by blank lines, as a markdown file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n\n".join(section.strip() for section in sections) + "\n")
    return path
