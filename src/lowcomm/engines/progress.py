"""Progress on stderr: a rich bar on a terminal, plain lines elsewhere (CI logs, batch jobs).

:func:`progress_bar` shows a run's rounds, :func:`count_progress` a study's finished runs. A bar
redrawn in place is noise in a log file and, where stderr is not a terminal, rich does not draw
it until the end; there :class:`ProgressLines` prints one line every ``every`` seconds and,
after those, one when the run ends. A run shorter than ``every`` prints none, so its stderr
holds only what it has to say (a note, one error line).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

LONGEST = timedelta(days=99_999)
"""The longest time :func:`clock_time` writes out; beyond it an ETA says nothing useful."""


def clock_time(seconds: float) -> str:
    """``seconds`` as H:MM:SS (``-`` past :data:`LONGEST`)."""
    if not seconds <= LONGEST.total_seconds():
        return "-"
    return str(timedelta(seconds=round(seconds)))


def on_terminal() -> bool:
    """Whether stderr shows a live bar: a terminal, or a Jupyter notebook."""
    return sys.stderr.isatty() or Console(stderr=True).is_jupyter


class ProgressLines:
    """``label: round r/R, loss L, ETA H:MM:SS`` on stderr at most every ``every`` seconds.

    The ETA extrapolates the pace since the first round shown; ``total`` None: not known in
    advance (a run to a gradient budget), shown as ``round r`` with no ETA. ``unit``: what is
    counted (``round``; ``run`` for a study's jobs, shown without a loss). ``clock``: the time
    source (seconds), replaceable in tests.
    """

    def __init__(
        self,
        total: int | None,
        label: str,
        every: float,
        clock: Callable[[], float] = time.monotonic,
        unit: str = "round",
    ) -> None:
        self.total, self.label, self.every, self.clock, self.unit = total, label, every, clock, unit
        self.start = self.printed = clock()
        self.first: tuple[int, float] | None = None  # (round, time) of the first round shown
        self.last: tuple[int, float | None] | None = None  # (round, loss) of the latest shown
        self.lines = 0

    def show(self, round_: int, loss: float | None = None) -> None:
        """Note the round's loss; print a line if ``every`` seconds passed since the last."""
        now = self.clock()
        self.first = self.first or (round_, now)
        self.last = (round_, loss)
        if now - self.printed >= self.every:
            self.printed = now
            self._print(f"ETA {self._eta(round_, now)}")

    def finish(self) -> None:
        """After any line: one with the last round shown and the time the run took."""
        if self.lines:
            self._print(f"{clock_time(self.clock() - self.start)} elapsed")

    def _eta(self, round_: int, now: float) -> str:
        """The time left at the pace since the first round shown; ``-`` before any pace."""
        assert self.first is not None
        first_round, first_time = self.first
        if round_ <= first_round or self.total is None:
            return "-"
        pace = (now - first_time) / (round_ - first_round)
        return clock_time(pace * max(self.total - round_, 0))

    def _print(self, tail: str) -> None:
        """One line on the current stderr, flushed at once."""
        assert self.last is not None
        round_, loss = self.last
        loss_part = "" if loss is None else f", loss {loss:.4g}"
        of = "" if self.total is None else f"/{self.total}"
        line = f"{self.label}: {self.unit} {round_}{of}{loss_part}, {tail}"
        print(line, file=sys.stderr, flush=True)
        self.lines += 1


@contextmanager
def progress_bar(
    enabled: bool, total: int | None, label: str, every: float = 10.0
) -> Iterator[Callable[[int, float], None]]:
    """Progress on stderr; yields ``show(round, loss)`` (a no-op when disabled).

    ``total``: the rounds, None when the run ends at a gradient budget instead.

    A bar on a terminal (or in Jupyter); otherwise a line every ``every`` seconds and, after
    those, one at the end (:class:`ProgressLines`).
    """
    if not enabled:
        yield lambda round_, loss: None
        return
    if not on_terminal():
        lines = ProgressLines(total, label, every)
        yield lines.show
        lines.finish()
        return
    columns = (
        TextColumn(label),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]}"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=Console(stderr=True)) as bar:
        task = bar.add_task(label, total=total, loss="-")

        def show(round_: int, loss: float) -> None:
            bar.update(task, completed=round_, loss=f"{loss:.4g}")

        yield show


@contextmanager
def count_progress(
    enabled: bool, total: int, label: str, every: float = 10.0
) -> Iterator[Callable[[], None]]:
    """Progress of ``total`` jobs on stderr; yields ``advance()``, called as each one ends.

    A transient bar on a terminal, else :class:`ProgressLines` counting runs; nothing when
    not ``enabled``.
    """
    if not enabled:
        yield lambda: None
        return
    if not on_terminal():
        lines, done = ProgressLines(total, label, every, unit="run"), [0]

        def count() -> None:
            done[0] += 1
            lines.show(done[0])

        yield count
        lines.finish()
        return
    with Progress(console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(label, total=total)
        yield lambda: bar.advance(task)
