"""Progress as plain lines, for a stderr that is not a terminal (CI logs, batch jobs, files).

A bar redrawn in place is noise in a log file and, where stderr is not a terminal, rich does
not draw it until the end; :class:`ProgressLines` prints one line every ``every`` seconds and,
after those, one when the run ends instead. A run shorter than ``every`` prints none, so its
stderr holds only what it has to say (a note, one error line).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from datetime import timedelta


def clock_time(seconds: float) -> str:
    """``seconds`` as H:MM:SS."""
    return str(timedelta(seconds=round(seconds)))


class ProgressLines:
    """``label: round r/R, loss L, ETA H:MM:SS`` on stderr at most every ``every`` seconds.

    The ETA extrapolates the pace since the first round shown. ``clock``: the time source
    (seconds), replaceable in tests.
    """

    def __init__(
        self, total: int, label: str, every: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.total, self.label, self.every, self.clock = total, label, every, clock
        self.start = self.printed = clock()
        self.first: tuple[int, float] | None = None  # (round, time) of the first round shown
        self.last: tuple[int, float] | None = None  # (round, loss) of the latest round shown
        self.lines = 0

    def show(self, round_: int, loss: float) -> None:
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
        if round_ <= first_round:
            return "-"
        pace = (now - first_time) / (round_ - first_round)
        return clock_time(pace * max(self.total - round_, 0))

    def _print(self, tail: str) -> None:
        """One line on the current stderr, flushed at once."""
        assert self.last is not None
        round_, loss = self.last
        line = f"{self.label}: round {round_}/{self.total}, loss {loss:.4g}, {tail}"
        print(line, file=sys.stderr, flush=True)
        self.lines += 1
