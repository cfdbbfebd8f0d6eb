"""Reproductions of papers' claims: ``lowcomm reproduce NAME|all`` (see ``docs/reproductions``).

Each reproduction is a module of this package declaring a
:class:`~lowcomm.experiments.study.Study` named ``STUDY``; :data:`REPRODUCTIONS` maps the name
the command line takes to that module, imported only when asked for. Importing this package
is cheap (no pandas, matplotlib or study module), so ``lowcomm --help`` can list the names.
"""

from __future__ import annotations

import importlib
import os
import shlex
import time
from pathlib import Path
from typing import TYPE_CHECKING

from lowcomm.core.errors import InvalidConfigError

if TYPE_CHECKING:
    from lowcomm.experiments.reproduce.report import Outcome, Request
    from lowcomm.experiments.study import Study

OWNER = "lowcomm reproduce"
ALL = "all"
INDEX_MD = "index.md"

REPRODUCTIONS: dict[str, str] = {
    "sasg": "sasg",
    "localnewton": "localnewton",
    "cdgrab": "cdgrab",
    "hogwild": "hogwild",
    "async-msgd": "async_msgd",
}
"""Name on the command line -> module of this package that declares ``STUDY``."""


def check_name(name: str) -> None:
    """Refuse a name that is neither in :data:`REPRODUCTIONS` nor ``all``."""
    if name != ALL and name not in REPRODUCTIONS:
        known = ", ".join([*REPRODUCTIONS, ALL])
        raise InvalidConfigError("NAME", OWNER, f"one of {known}", name)


def default_out(name: str) -> Path:
    """Where reproduction ``name`` writes without ``--out``."""
    return Path("results") / f"reproduce-{name}"


def parse_seeds(text: str) -> tuple[int, ...]:
    """Seeds from ``0,1,2``: distinct integers >= 0."""
    try:
        seeds = tuple(int(item) for item in text.split(","))
    except ValueError:
        seeds = ()
    if not seeds or min(seeds) < 0 or len(set(seeds)) < len(seeds):
        raise InvalidConfigError("seeds", OWNER, "comma-separated distinct integers >= 0", text)
    return seeds


def parse_jobs(jobs: int | None) -> int:
    """``--jobs``: an integer >= 1; None for the number of cores."""
    if jobs is None:
        return os.cpu_count() or 1
    if jobs < 1:
        raise InvalidConfigError("jobs", OWNER, "an integer >= 1", jobs)
    return jobs


def command_line(
    name: str,
    quick: bool,
    out: Path | None,
    data: str | None,
    seeds: str | None,
    resume: bool = False,
) -> str:
    """The ``lowcomm reproduce`` command with the flags that change results, shell-quoted."""
    words = ["lowcomm", "reproduce", name]
    if quick:
        words.append("--quick")
    if resume:
        words.append("--resume")
    given = {"--out": None if out is None else str(out), "--data": data, "--seeds": seeds}
    for flag, value in given.items():
        if value is not None:
            words += [flag, value]
    return shlex.join(words)


def make_request(
    name: str,
    quick: bool,
    out: Path | None,
    data: str | None,
    seeds: str | None,
    progress: bool,
    resume: bool = False,
    jobs: int | None = None,
) -> Request:
    """Validate the command line's arguments into a request (defaults filled in)."""
    from lowcomm.experiments.reproduce.report import Request

    check_name(name)
    if name == ALL and data is not None:
        raise InvalidConfigError("--data", OWNER, "left out with NAME all", data)
    return Request(
        out=default_out(name) if out is None else out,
        quick=quick,
        data=data,
        seeds=None if seeds is None else parse_seeds(seeds),
        progress=progress,
        command=command_line(name, quick, out, data, seeds, resume),
        resume=resume,
        jobs=parse_jobs(jobs),
    )


def study_of(name: str) -> Study:
    """The declared study of reproduction ``name`` (its module is imported now)."""
    check_name(name)
    study: Study = importlib.import_module(f"{__name__}.{REPRODUCTIONS[name]}").STUDY
    return study


def reproduce(name: str, request: Request) -> Outcome:
    """Run reproduction ``name``; an unknown name is an :class:`InvalidConfigError`."""
    from lowcomm.experiments.study import run_study

    return run_study(study_of(name), request)


def reproduce_all(request: Request) -> dict[str, Outcome]:
    """Run every reproduction into ``OUT/<name>/`` and write ``OUT/index.md`` and ``index.html``.

    Every study is planned (and so validated) before the first one runs.
    """
    from lowcomm.experiments.reproduce.report import Request
    from lowcomm.experiments.study import planned, run_study

    start = time.perf_counter()
    requests = {}
    for name in REPRODUCTIONS:
        command = request.command.replace(f" {ALL}", f" {name}", 1)
        requests[name] = Request(
            **(vars(request) | {"out": request.out / name, "command": command})
        )
    plans = {name: planned(study_of(name), one) for name, one in requests.items()}  # all first
    outcomes = {name: run_study(study_of(name), one, plans[name]) for name, one in requests.items()}
    write_index(request, outcomes, time.perf_counter() - start)
    return outcomes


def write_index(request: Request, outcomes: dict[str, Outcome], wall: float) -> Path:
    """The index page of ``reproduce all``: each study's verdicts, wall time and report."""
    from lowcomm.experiments.reproduce.html import write_html
    from lowcomm.experiments.reproduce.report import markdown_table, write_report

    rows = []
    for name, outcome in outcomes.items():
        verdicts = [c.verdict for c in outcome.claims]
        passed, failed = verdicts.count("PASS"), verdicts.count("FAIL")
        row = (f"[{name}]({name}/report.md)", passed, failed, len(verdicts) - passed - failed)
        rows.append((*row, len(outcome.sensitivity), f"{outcome.wall_time:.0f}"))
    headers = ("study", "PASS", "FAIL", "not judged", "sensitivity results", "wall time (s)")
    sections = [
        "# Reproductions",
        f"Produced by `{request.command}`; {wall:.0f} s in all.",
        markdown_table(headers, rows),
    ]
    index = write_report(request.out / INDEX_MD, sections)
    write_html(index)
    return index
