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
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from string import Template
from typing import Any

import numpy as np
import pandas as pd
import torch
from rich.table import Table

import lowcomm

REPORT_MD = "report.md"
CLAIMS_JSON = "claims.json"
NOTES = Path(__file__).parent / "notes"  # <study>.md (notes) and <study>.claims.toml (wording)


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


@dataclass(frozen=True)
class ClaimText:
    """A claim's fixed wording: the claim, the paper's value and the criterion."""

    claim: str
    paper: str
    criterion: str

    def judged(self, measured: str, passed: bool | None) -> Claim:
        """The claim with what was measured and its verdict."""
        return Claim(self.claim, self.paper, self.criterion, measured, passed)

    def unjudged(self, reason: str) -> Claim:
        """The claim, not judged at this size, saying why instead of failing it."""
        return self.judged(f"not judged at quick size: {reason}", None)


def claim_texts(study: str, values: Mapping[str, Any]) -> dict[str, ClaimText]:
    """The wording of ``study``'s claims by id, from ``notes/<study>.claims.toml``.

    Each TOML table is one claim (``claim``, ``paper``, ``criterion``, in the report's order);
    ``$name`` placeholders are filled from ``values`` (thresholds fixed before measuring), so
    the prose lives in a data file and the numbers in one place, the spec's constants.
    """
    with (NOTES / f"{study}.claims.toml").open("rb") as file:
        table = tomllib.load(file)
    filled = {name: str(value) for name, value in values.items()}
    parts = ("claim", "paper", "criterion")
    return {
        key: ClaimText(*(Template(entry[part]).substitute(filled) for part in parts))
        for key, entry in table.items()
    }


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


def embed(path: Path, caption: str, folder: Path) -> str:
    """Markdown that shows the figure at ``path`` (linked relative to ``folder``) with a caption."""
    relative = os.path.relpath(path, folder)
    return f"![{caption}]({Path(relative).as_posix()})\n\n*{caption}*"


def header(title: str, command: str, wall_time: float) -> str:
    """The top of a report: title, the command, date, versions, machine and wall time."""
    modules = (lowcomm, torch, np, pd)
    versions = ", ".join(f"{m.__name__} {m.__version__}" for m in modules)
    machine = f"{platform.platform()}, {platform.machine()}, {os.cpu_count()} CPUs"
    date = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (
        f"# {title}\n\nProduced by:\n\n```sh\n{command}\n```\n\n- Date: {date}\n"
        f"- Versions: {versions}, python {platform.python_version()}\n- Machine: {machine}\n"
        f"- Wall time: {wall_time:.0f} s"
    )


def write_report(path: Path, sections: Sequence[str]) -> Path:
    """Write the sections, separated by blank lines, as a markdown file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n\n".join(section.strip() for section in sections) + "\n")
    return path
