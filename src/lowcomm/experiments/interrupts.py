"""Stop a run cleanly on SIGINT or SIGTERM: after the round under way, with the rows so far.

While :func:`stop_on_signals` is active (in the main thread), the first SIGINT or SIGTERM
only asks the run to stop: the engine ends after the round under way (``RunOptions.stop``),
the run is saved marked interrupted, and :class:`Interrupted` says where it stopped. The
handlers that were there before are back from the first signal on, so a second one acts at
once (Ctrl-C twice stops a long round).

On ``torchdist`` only rank 0 runs the rounds. A worker rank takes SIGINT the same way and goes
on serving until rank 0, to which ``torchrun`` passes the same Ctrl-C, stops the run and with it
every rank; SIGTERM, which ``torchrun`` sends to the ranks left when one fails, ends a worker
rank at once as before.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """A run stopped by a signal after saving what it had; ``exit_code`` is 128 + the signal.

    A ``KeyboardInterrupt``, so that code calling :func:`lowcomm.run` sees Ctrl-C as usual.
    """

    def __init__(
        self, signum: int, round_: int, rounds: int | None, saved: Path | None, resumable: bool
    ) -> None:
        of = "" if rounds is None else f" of {rounds}"
        if saved is None:
            kept = "nothing saved (no output folder)"
        else:
            hint = " (--resume continues it)" if resumable else ""
            kept = f"the history so far is in {saved}{hint}"
        name = signal.Signals(signum).name
        super().__init__(f"interrupted by {name} at round {round_}{of}; {kept}")
        self.signal = signum
        self.round = round_
        self.exit_code = 128 + signum


class SignalStop:
    """Whether a stop was asked (call it), and by which signal (``received``)."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def __call__(self) -> bool:
        """Whether a signal asked the run to stop."""
        return self.received is not None

    def install(self, signals: Sequence[int]) -> None:
        """Catch ``signals`` from now on (main thread only: Python's rule for handlers)."""
        if threading.current_thread() is threading.main_thread():
            self._previous = {signum: signal.signal(signum, self._handle) for signum in signals}

    def restore(self) -> None:
        """Put the previous handlers back (the default one where none was set from Python)."""
        for signum, handler in self._previous.items():
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)
        self._previous = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.received = signum
        self.restore()


@contextmanager
def stop_on_signals(signals: Sequence[int] = SIGNALS) -> Iterator[SignalStop]:
    """A :class:`SignalStop` that ``signals`` set while the block runs."""
    stop = SignalStop()
    stop.install(signals)
    try:
        yield stop
    finally:
        stop.restore()
