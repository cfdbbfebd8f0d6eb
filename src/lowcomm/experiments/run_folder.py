"""An output folder holds one run (or one comparison), written by one process at a time.

- Locked while a run writes it: an OS lock (``flock``) on ``OUT/.lock``, which names its holder
  (pid, host, start time). The OS releases it when the process ends, however it ends, so a
  killed run leaves no stale lock; the file is removed when a run lets go of it.
- One run each: a new run in a folder that holds one (its ``run.json``; ``compare.json`` for a
  comparison) is refused unless ``overwrite`` is given; then the old run's files are removed
  before the new run starts, so whenever it stops the files there are all its own. A run is
  never written into a comparison's folder, nor a comparison into a run's.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import tempfile
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from lowcomm.core.errors import DataError, InvalidConfigError
from lowcomm.engines.session import CHECKPOINT_NAME
from lowcomm.experiments.results import HISTORY_CSV, HISTORY_PARQUET, LEDGER_CSV, RUN_JSON

LOCK_NAME = ".lock"
COMPARE_JSON = "compare.json"
MARKERS = {"run": RUN_JSON, "comparison": COMPARE_JSON}
"""The file that marks a folder as holding a run, or a comparison."""
RUN_FILES = (
    HISTORY_CSV,
    HISTORY_PARQUET,
    RUN_JSON,
    LEDGER_CSV,
    CHECKPOINT_NAME,
    f"{CHECKPOINT_NAME}.partial",
    "plots.png",
    "plots-*.png",
    "rank*.log",
)
"""What a run folder's run consists of (``lowcomm plot`` draws ``plots*.png`` there; a failed
torchdist run leaves ``rank<k>.log``)."""


def check_new(out: Path, overwrite: bool, resume: bool = False, kind: str = "run") -> None:
    """Refuse a new ``kind`` (``run`` or ``comparison``) in ``out`` if it holds one already.

    With ``overwrite`` the one of the same kind may be replaced; one of the other kind never
    is. A resumed run continues the one there, so it neither needs nor takes ``overwrite``.
    """
    if resume and overwrite:
        allowed = "left out with --resume (a resumed run continues the run in OUT)"
        raise InvalidConfigError("overwrite", "lowcomm run", allowed, True)
    for held, marker in MARKERS.items():
        if held != kind and (out / marker).is_file():
            raise DataError(out, f"holds a {held} ({marker}), not a {kind}: choose another --out")
    marker = MARKERS[kind]
    if (out / marker).is_file() and not (resume or overwrite):
        resumable = (out / CHECKPOINT_NAME).is_file()
        hint = ", or --resume to continue it from its checkpoint" if resumable else ""
        problem = f"holds a {kind} already ({marker}); give --overwrite to replace it{hint}"
        raise DataError(out, problem)


def remove(out: Path, patterns: Iterable[str]) -> None:
    """Remove the files of ``out`` that match ``patterns`` (the previous run's)."""
    for pattern in patterns:
        for path in out.glob(pattern):
            path.unlink(missing_ok=True)


@contextmanager
def hold(out: Path | None) -> Iterator[None]:
    """Lock the folder ``out`` (created if needed) while the block runs; None: no folder, no lock.

    Raises:
        DataError: another process holds the lock (the message names it).
    """
    if out is None:
        yield
        return
    out.mkdir(parents=True, exist_ok=True)
    path = out / LOCK_NAME
    fd = _acquire(path)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps(_holder()).encode())
        yield
    finally:
        path.unlink(missing_ok=True)  # while still locked: a waiting run then locks a new file
        os.close(fd)


def _holder() -> dict[str, object]:
    """Who holds a lock: this process."""
    started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    return {"pid": os.getpid(), "host": socket.gethostname(), "started": started}


def _acquire(path: Path) -> int:
    """An open descriptor of ``path`` holding its exclusive lock, or the error naming the holder.

    A holder removes the file as it lets go; a lock taken on a file removed meanwhile is
    dropped and the new file locked instead.
    """
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = _describe(os.pread(fd, 4096, 0))
            os.close(fd)
            if isinstance(exc, BlockingIOError):
                problem = f"in use by another run ({holder}); wait for it or choose another --out"
            else:
                problem = f"cannot be locked ({exc.strerror or exc})"
            raise DataError(path.parent, problem) from None
        if _same_file(fd, path):
            return fd
        os.close(fd)


def _same_file(fd: int, path: Path) -> bool:
    """Whether ``path`` still names the file open as ``fd``."""
    try:
        named = path.stat()
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (named.st_dev, named.st_ino) == (held.st_dev, held.st_ino)


def _describe(content: bytes) -> str:
    """The holder written in a lock file, in words."""
    try:
        holder = json.loads(content)
        return f"pid {holder['pid']} on {holder['host']}, started {holder['started']}"
    except (ValueError, TypeError, KeyError):
        return "holder not known yet: it is just starting"


def check_out(out: Path) -> None:
    """Refuse, before any work, an output path that is not a folder or cannot be written.

    Unwritable (read-only file system, no permission): a probe file cannot be created and
    removed in ``out`` or, if it does not exist yet, in its nearest existing parent.
    """
    if out.exists() and not out.is_dir():
        raise DataError(out, "exists and is not a folder")
    where = next(folder for folder in (out, *out.absolute().parents) if folder.exists())
    try:
        with tempfile.TemporaryFile(dir=where):
            pass
    except OSError as exc:
        raise DataError(out, f"cannot be written ({exc.strerror or exc} in {where})") from None
