"""What a run reports while it runs: TensorBoard scalars per history row, the progress cadence.

:func:`lowcomm.run` and :func:`lowcomm.compare` (and so the command line) open a
:func:`tracking` context around their runs; :meth:`Prepared.options
<lowcomm.experiments.runner.Prepared.options>` asks the current one for each run's row
observer, which the run loop calls per evaluation (:func:`lowcomm.engines.session.run_rounds`),
so the engines never import TensorBoard. TensorBoard is optional (``lowcomm[tensorboard]``) and
imported only when a folder is given.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from lowcomm.core.errors import LowcommError
from lowcomm.core.validate import positive
from lowcomm.experiments.run_folder import check_out

TENSORBOARD_MISSING = (
    "--tensorboard needs the tensorboard package: pip install 'lowcomm[tensorboard]'"
)
SCALARS = ("train_loss", "test_metric", "bytes_up", "bytes_down", "uploads", "sim_time")
"""The history columns written as scalars, each under its own name, at step = round."""
FLUSH_SECONDS = 10


@dataclass
class Tracking:
    """The reporting of the runs in a :func:`tracking` context.

    ``tensorboard``: the folder of the event files (None: none written); ``subfolder``: where
    under it the current run logs (a comparison's run folder, see :func:`run_subfolder`);
    ``progress_every``: seconds between progress lines where stderr is not a terminal.
    """

    tensorboard: Path | None = None
    subfolder: str = ""
    progress_every: float = 10.0
    writer_class: Any = None
    writers: dict[Path, Any] = field(default_factory=dict)

    def observer(self) -> Callable[[dict[str, float]], None] | None:
        """The callback that logs the current run's rows (None without TensorBoard)."""
        if self.tensorboard is None:
            return None
        return partial(self._write, self.tensorboard / self.subfolder)

    def _write(self, folder: Path, row: dict[str, float]) -> None:
        """Add the row's scalars at step = its round (the writer opens at the first row)."""
        if folder not in self.writers:
            self.writers[folder] = self.writer_class(str(folder), flush_secs=FLUSH_SECONDS)
        writer, step = self.writers[folder], int(row["round"])
        for column in SCALARS:
            writer.add_scalar(column, row[column], global_step=step)

    def close(self, folder: Path | None = None) -> None:
        """Flush and close the writer of ``folder``, or (None) every writer opened."""
        folders = list(self.writers) if folder is None else [folder]
        for name in folders:
            writer = self.writers.pop(name, None)
            if writer is not None:
                writer.close()


_CURRENT: ContextVar[Tracking | None] = ContextVar("lowcomm_tracking", default=None)


def current() -> Tracking:
    """The tracking of the innermost :func:`tracking` context (nothing written outside one)."""
    return _CURRENT.get() or Tracking()


def summary_writer() -> Any:
    """``torch.utils.tensorboard.SummaryWriter``, or one error line when TensorBoard is missing."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise LowcommError(TENSORBOARD_MISSING) from None
    return SummaryWriter


@contextmanager
def tracking(
    tensorboard: str | Path | None = None, progress_every: float = 10.0
) -> Iterator[Tracking]:
    """Report the runs started inside on these terms; the event files are closed at the end.

    Raises:
        LowcommError: a TensorBoard folder is given but TensorBoard is not installed, or the
            folder cannot be written (before any run starts).
        InvalidConfigError: ``progress_every`` is not a number > 0.
    """
    positive("the run", "progress_every", progress_every)
    folder = None if tensorboard is None else Path(tensorboard)
    writer_class = None if folder is None else summary_writer()
    if folder is not None:
        check_out(folder)
    track = Tracking(folder, "", progress_every, writer_class)
    token = _CURRENT.set(track)
    try:
        yield track
    finally:
        _CURRENT.reset(token)
        track.close()


@contextmanager
def run_subfolder(name: str) -> Iterator[None]:
    """The runs started inside log to ``name`` under the tracking folder (a comparison's run)."""
    track = current()
    before, track.subfolder = track.subfolder, name
    try:
        yield
    finally:
        if track.tensorboard is not None:
            track.close(track.tensorboard / name)  # one open writer (a thread, a file) at a time
        track.subfolder = before
