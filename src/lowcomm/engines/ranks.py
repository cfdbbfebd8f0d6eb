"""How torchdist ranks work together: commands, worker state, the settings check, failures.

Rank 0 drives each worker rank with point-to-point commands, int64 ``[command, a, b]``:
``RUN`` (a synchronous round: ``a`` the round, ``b`` whether the download is one row for all),
``COMPUTE`` (an asynchronous computation: ``a`` the worker, ``b`` its local round),
``GATHER`` and ``SCATTER`` (the workers' state, for a checkpoint and a resume) and ``STOP``.
Every message is point-to-point, so a failed one names its peer
(:class:`~lowcomm.engines.wire.PeerError`).

A failed message ends the rank's run with a :class:`RankError`: one line naming the rank that
did not answer within the timeout or is gone, and the round; the traceback goes to
``OUT/rank<k>.log``; rank 0's failure carries the run so far, to be saved. From then on the
rank ignores SIGTERM (:func:`ignore_sigterm`), so that the one ``torchrun`` sends every rank
once a rank has died cannot cut the saving short.
"""

from __future__ import annotations

import json
import signal
import threading
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from lowcomm.core import tree
from lowcomm.core.device import HOST
from lowcomm.core.errors import LowcommError
from lowcomm.engines import wire
from lowcomm.engines.session import RunOptions, RunResult
from lowcomm.engines.trusted import dumps, loads

RUN, GATHER, SCATTER, STOP, COMPUTE = range(5)


def owners(groups: list[torch.Tensor]) -> list[int]:
    """The rank hosting each worker, in worker order (``groups``: those of ranks 1..P-1)."""
    return [rank for rank, group in enumerate(groups, start=1) for _ in group]


def send_command(rank: int, command: int, a: int = 0, b: int = 0) -> None:
    """Tell worker rank ``rank`` what comes next."""
    wire.send_tensor(torch.tensor([command, a, b], dtype=torch.int64), rank)


def recv_command() -> tuple[int, int, int]:
    """The next command from rank 0, waited for twice the timeout.

    Rank 0 may itself be waiting up to the timeout for another rank; it is the one to report
    that rank, and this one then sees it gone.
    """
    with wire.waiting(2 * wire.limit()):
        command, a, b = wire.recv_tensor((3,), torch.int64, 0).tolist()
    return command, a, b


def send_state(state: Any, dst: int) -> None:
    """Send workers' state to rank ``dst`` through the host (read there as data, no pickle)."""
    wire.send_bytes(dumps(tree.to(state, HOST)), dst)


def recv_state(src: int, modules: tuple[str, ...], device: torch.device) -> Any:
    """Workers' state sent by :func:`send_state` on rank ``src``, on ``device``."""
    return tree.to(loads(wire.recv_bytes(src), modules), device)


def gather_workers(ranks: int, modules: tuple[str, ...], device: torch.device) -> Any:
    """Rank 0: the state of all workers, joined from worker ranks 1..``ranks`` in order."""
    for rank in range(1, ranks + 1):
        send_command(rank, GATHER)
    return tree.concat([recv_state(rank, modules, device) for rank in range(1, ranks + 1)])


def scatter_workers(workers: Any, groups: list[torch.Tensor]) -> None:
    """Rank 0: send each worker rank the state of its group of workers."""
    on_host = tree.to(workers, HOST)
    for rank, group in enumerate(groups, start=1):
        send_command(rank, SCATTER)
        send_state(tree.take(on_host, group), rank)


class Follower:
    """A worker rank: its workers' state, following rank 0's commands until ``STOP``.

    Subclasses do the work of ``RUN`` or ``COMPUTE`` in :meth:`work`; ``last_round`` is the
    last round the rank heard of (None where it does not know rounds).
    """

    state: Any
    device: torch.device
    modules: tuple[str, ...]
    options: RunOptions
    last_round: int | None = None

    def serve(self) -> None:
        """Follow commands until rank 0 says stop; a lost aggregator is a :class:`RankError`."""
        try:
            while True:
                command, a, b = recv_command()
                if command == STOP:
                    return
                if command == GATHER:
                    send_state(self.state, 0)
                elif command == SCATTER:
                    self.state = recv_state(0, self.modules, self.device)
                else:
                    self.work(command, a, b)
        except wire.PeerError as error:
            raise lost(error, self.options, self.last_round) from error

    def work(self, command: int, a: int, b: int) -> None:
        """Carry out ``RUN`` or ``COMPUTE``."""
        raise NotImplementedError


@contextmanager
def aggregating(
    round_: Callable[[], int],
    partial: Callable[[], RunResult],
    options: RunOptions,
    stop: Callable[[], None],
) -> Iterator[None]:
    """Rank 0's run: ``stop`` the worker ranks at the end or on an error of its own.

    A failed message becomes a :class:`RankError` carrying ``partial()``, the run so far, and
    naming ``round_()``, the round under way; the worker ranks are not waited for then.
    """
    try:
        yield
        stop()
    except wire.PeerError as error:
        raise lost(error, options, round_(), partial()) from error
    except Exception:
        stop()
        raise


class RankError(LowcommError):
    """A torchdist rank stalled or failed; on rank 0, ``partial`` is the run up to then.

    ``round``: on rank 0 the round under way, on a worker rank the last one it heard of.

    ``str()`` is one line: what happened, where the history so far is (``saved``, set by
    whoever saves ``partial``) and the log with the full traceback.
    """

    def __init__(
        self, problem: str, round_: int | None, log: Path | None, partial: RunResult | None = None
    ) -> None:
        super().__init__(problem)
        self.problem, self.round, self.log, self.partial = problem, round_, log, partial
        self.saved: Path | None = None

    def __str__(self) -> str:
        kept = "" if self.saved is None else f"; the history so far is in {self.saved}"
        details = "" if self.log is None else f" (details in {self.log})"
        return f"{self.problem}{kept}{details}"


def lost(
    error: wire.PeerError,
    options: RunOptions,
    round_: int | None,
    partial: RunResult | None = None,
) -> RankError:
    """The failure to report for ``error``; SIGTERM ignored, the traceback in the run's folder.

    ``round_``: on rank 0 the round under way, on a worker rank the last one it heard of.
    """
    ignore_sigterm()
    rank = dist.get_rank()
    if error.timed_out:
        what = f"did not answer within {error.seconds:g} s"
    else:
        what = "is gone (its connection closed)"
    if rank == 0:
        named = ", ".join(map(str, error.peers))
        problem = f"rank{'s' if len(error.peers) > 1 else ''} {named} {what}"
    else:
        problem = f"rank {rank}: the aggregator (rank 0) {what}"
    when = "" if round_ is None else f" at round {round_}"
    log = _log(error, options.checkpoint_dir, rank)
    return RankError(problem + when, round_, log, partial)


def ignore_sigterm() -> None:
    """Ignore SIGTERM from now on: a rank that is reporting a failure finishes doing so.

    In the main thread only (Python's rule for signal dispositions).
    """
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _log(error: BaseException, folder: Path | None, rank: int) -> Path | None:
    """Write ``error``'s traceback (its causes included) to ``folder/rank<k>.log``."""
    if folder is None:
        return None
    path = folder / f"rank{rank}.log"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(traceback.format_exception(error)))
    except OSError:
        return None
    return path


def check_same_settings(options: RunOptions) -> None:
    """Refuse to run unless every rank was started with rank 0's trajectory settings.

    Each worker rank sends rank 0 its ``options.settings`` as JSON; rank 0 compares and sends
    every rank the verdict ('' if the same), so that all ranks refuse together, naming what
    differs.
    """
    rank, size = dist.get_rank(), dist.get_world_size()
    try:
        if rank == 0:
            theirs = {r: _receive_json(r) for r in range(1, size)}
            verdict = _differences(options.settings, theirs)
            for r in range(1, size):
                _send_json(verdict, r)
        else:
            _send_json(options.settings, 0)
            verdict = _receive_json(0)
    except wire.PeerError as error:
        raise lost(error, options, None) from error
    if verdict:
        raise LowcommError(
            f"the ranks were started with different settings ({verdict}); "
            "start every rank with the same settings"
        )


def _differences(mine: dict[str, Any], theirs: dict[int, Any]) -> str:
    """Each setting in which a worker rank differs from rank 0, in words ('' if none)."""
    ours = _flat(mine)
    found = []
    for rank, settings in theirs.items():
        other = _flat(settings)
        for key in sorted(set(ours) | set(other)):
            if ours.get(key) != other.get(key):
                found.append(
                    f"{key}: {ours.get(key)!r} on rank 0, {other.get(key)!r} on rank {rank}"
                )
    return "; ".join(found)


def _flat(settings: Any, prefix: str = "") -> dict[str, Any]:
    """Nested settings as one level of dotted keys (``options.lr``)."""
    if not isinstance(settings, dict):
        return {prefix.rstrip("."): settings}
    flat: dict[str, Any] = {}
    for key, value in settings.items():
        flat.update(_flat(value, f"{prefix}{key}."))
    return flat


def _send_json(value: Any, dst: int) -> None:
    wire.send_bytes(torch.tensor(list(json.dumps(value).encode()), dtype=torch.uint8), dst)


def _receive_json(src: int) -> Any:
    return json.loads(wire.recv_bytes(src).numpy().tobytes().decode())
