"""``lowcomm``: ``run``, ``compare``, ``plot``, ``partition``, ``reproduce`` (``docs/cli.md``).

Each command imports what it runs (pandas, matplotlib, scikit-learn, the engines) when it runs,
so ``lowcomm --help``, ``lowcomm run --help`` and ``lowcomm algorithms`` start about as fast as
``import torch``.

Exit codes: 0 success; 2 invalid usage, settings or data, reported as one ``error:`` line on
stderr before any work starts; 3 the training diverged (the outputs are saved anyway); 130 or
143 SIGINT or SIGTERM stopped a run after a round (one line says where; the rows so far are
saved); 4 a torchdist rank stalled or failed (one line names it and the round; rank 0 saves the
rows so far).

The commands live in one module per concept and register on the shared ``app``
(:mod:`lowcomm.cli.app`) when imported here, in the order ``lowcomm --help`` lists them.
"""

from __future__ import annotations

import sys

import typer

# isort: off
from lowcomm.cli.app import app
from lowcomm.cli import runs, reproduction, inspection  # noqa: F401 (registers the commands)

# isort: on
from lowcomm.cli.errors import _echo_error
from lowcomm.cli.settings import parse_sets, parse_value

__all__ = ["app", "main", "parse_sets", "parse_value"]


def main(argv: list[str] | None = None) -> None:
    """Run the command line; usage errors are one ``error:`` line too (exit code 2)."""
    args = sys.argv[1:] if argv is None else argv
    command = typer.main.get_command(app)
    try:
        code = command.main(args=args or ["--help"], prog_name="lowcomm", standalone_mode=False)
    except typer.Abort:
        _echo_error("aborted")
        code = 1
    except typer.TyperException as exc:
        context = getattr(exc, "ctx", None)
        message = exc.format_message()
        if context is not None:
            message = f"{message.rstrip('.')}; see '{context.command_path} --help'"
        _echo_error(message)
        code = exc.exit_code
    sys.exit(code if isinstance(code, int) else 0)
