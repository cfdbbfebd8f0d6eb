"""Exit codes and the one-line ``error:`` reports of the command line."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import NoReturn

import typer

from lowcomm.core.errors import LowcommError
from lowcomm.experiments.interrupts import Interrupted

USAGE, DIVERGED, RANK_FAILED = 2, 3, 4


def _echo_error(message: str) -> None:
    """Print ``error: <message>`` as one line on stderr."""
    typer.echo(f"error: {' '.join(message.split())}", err=True)


def _fail(message: str, code: int) -> NoReturn:
    """Print ``error: <message>`` as one line on stderr and exit with ``code``."""
    _echo_error(message)
    raise typer.Exit(code)


@contextmanager
def _user_errors() -> Iterator[None]:
    """Turn a :class:`LowcommError` into one ``error:`` line and exit code 2.

    An interrupted run is one ``error:`` line too, with exit code 128 + the signal; a torchdist
    rank that stalled or failed, with exit code 4.
    """
    try:
        yield
    except LowcommError as exc:
        from lowcomm.engines.ranks import RankError, ignore_sigterm  # loaded if one was raised

        if isinstance(exc, RankError):
            ignore_sigterm()  # torchrun's SIGTERM must not cut this line short
            _fail(str(exc), RANK_FAILED)
        _fail(str(exc), USAGE)
    except Interrupted as exc:
        _fail(str(exc), exc.exit_code)
