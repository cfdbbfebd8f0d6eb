"""The rich tables the commands print, and the console they print them on."""

from __future__ import annotations

import math
import sys
from typing import TYPE_CHECKING

from rich.console import Console
from rich.markup import escape
from rich.table import Table

if TYPE_CHECKING:
    import pandas as pd

    from lowcomm.experiments.execution import Result

MB = 1e6


def _console() -> Console:
    """Standard output; wide when it is not a terminal, so tables are never cut."""
    return Console() if sys.stdout.isatty() else Console(width=160)


def _run_table(result: Result) -> Table:
    """The final state of a run as a two-column table."""
    s, metric = result.summary, result.metadata["problem"]["metric"]
    table = Table(title="Run summary", show_header=False)
    rows = [
        ("Rounds", f"{s['rounds']}"),
        ("Uploads", f"{s['uploads']:,}"),
        ("MB up / down", f"{_number(s['bytes_up'] / MB)} / {_number(s['bytes_down'] / MB)}"),
        ("Gradient evaluations", f"{s['grad_evals']:,}"),
        ("Simulated time (s)", f"{s['sim_time']:.4g}"),
        ("Final train loss", f"{s['train_loss']:.6g}"),
        (f"Test metric ({metric})", f"{s['test_metric']:.4f}"),
    ]
    for row in rows:
        table.add_row(*row)
    return table


def _number(value: float, digits: int = 4) -> str:
    """A table cell: ``-`` for NaN, otherwise ``value`` to ``digits`` significant digits."""
    return "-" if math.isnan(value) else f"{value:,.{digits}g}"


def _compare_table(table: pd.DataFrame, rule: str, metric: str) -> Table:
    """The comparison summary as a rich table."""
    target = float(table["target_loss"].iloc[0])
    shown = Table(title=f"Cost to reach train loss {target:.6g} ({rule}), mean over seeds")
    headers = (
        "algorithm",
        "seeds",
        "rounds",
        "uploads",
        "MB",
        "grad evals",
        "sim time (s)",
        "final loss",
        f"test {metric}",
        "diverged",
    )
    for header in headers:
        shown.add_column(header, justify="left" if header == "algorithm" else "right")
    for row in table.itertuples():
        shown.add_row(
            escape(str(row.algorithm)),
            str(row.seeds),
            _number(row.rounds_to_target, 6),
            _number(row.uploads_to_target, 6),
            _number(row.bytes_to_target / MB),
            _number(row.grad_evals_to_target, 6),
            _number(row.sim_time_to_target),
            _number(row.final_train_loss),
            _number(row.final_test_metric),
            str(row.diverged),
        )
    return shown


def _table(title: str, headers: tuple[str, ...], rows: list[tuple[str, ...]]) -> Table:
    """Rows of text as a rich table."""
    table = Table(title=title)
    for header in headers:
        table.add_column(header)
    for row in rows:
        table.add_row(*row)
    return table
