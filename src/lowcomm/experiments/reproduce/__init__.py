"""Reproductions of papers' claims: ``lowcomm reproduce NAME`` (see ``docs/reproductions``).

Each reproduction is a function from a :class:`Request` to an :class:`Outcome`, registered in
:data:`REPRODUCTIONS` under the name the command line takes.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from pathlib import Path

from lowcomm.core.errors import InvalidConfigError
from lowcomm.experiments.reproduce import async_msgd, cdgrab, hogwild, localnewton, sasg
from lowcomm.experiments.reproduce.report import Outcome, Request

OWNER = "lowcomm reproduce"

REPRODUCTIONS: dict[str, Callable[[Request], Outcome]] = {
    "sasg": sasg.reproduce,
    "localnewton": localnewton.reproduce,
    "cdgrab": cdgrab.reproduce,
    "hogwild": hogwild.reproduce,
    "async-msgd": async_msgd.reproduce,
}

RESUMABLE = ("sasg", "localnewton", "hogwild")
"""Reproductions whose runs are saved one by one, so ``--resume`` can read them back."""


def check_name(name: str) -> None:
    """Refuse a name that is not in :data:`REPRODUCTIONS`."""
    if name not in REPRODUCTIONS:
        raise InvalidConfigError("NAME", OWNER, f"one of {', '.join(REPRODUCTIONS)}", name)


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


def check_resume(name: str, resume: bool) -> None:
    """Refuse ``--resume`` for a reproduction that cannot read its runs back."""
    if resume and name not in RESUMABLE:
        raise InvalidConfigError(
            "--resume",
            OWNER,
            f"used with a reproduction that saves its runs one by one ({', '.join(RESUMABLE)})",
            name,
        )


def command_line(
    name: str,
    quick: bool,
    out: Path | None,
    data: str | None,
    seeds: str | None,
    resume: bool = False,
) -> str:
    """The ``lowcomm reproduce`` command with the flags that were given, shell-quoted."""
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
) -> Request:
    """Validate the command line's arguments into a request (defaults filled in)."""
    check_name(name)
    check_resume(name, resume)
    return Request(
        out=default_out(name) if out is None else out,
        quick=quick,
        data=data,
        seeds=None if seeds is None else parse_seeds(seeds),
        progress=progress,
        command=command_line(name, quick, out, data, seeds, resume),
        resume=resume,
    )


def reproduce(name: str, request: Request) -> Outcome:
    """Run reproduction ``name``; an unknown name is an :class:`InvalidConfigError`."""
    check_name(name)
    return REPRODUCTIONS[name](request)
