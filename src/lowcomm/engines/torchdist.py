"""The multi-process engine: an aggregator rank and worker ranks over ``torch.distributed``.

Rank 0 aggregates; ranks 1..P-1 host contiguous groups of workers
(``np.array_split(range(n_workers), P - 1)``) and keep those workers' state. Each synchronous
round, rank 0 sends each worker rank a command and the download (the one row of a broadcast
download, or each of its workers' rows); each worker rank runs ``algorithm.local`` on its group
and sends back a header (sent mask, gradient evaluations and HVPs per worker) and the rows of
its senders only (see :mod:`lowcomm.engines.wire`). Rank 0 rebuilds the full upload and
accounts, aggregates, evaluates and checkpoints exactly as the ``simulate`` engine does (shared
in :mod:`lowcomm.engines.session`), so both engines give the same ledger and history.

With partial participation (:mod:`lowcomm.engines.participation`) every rank computes the round's
participants itself, from the seed and the round: rank 0 still sends each worker rank its
command, but the download goes to the participants only, and only a rank hosting some computes
them and answers, with their header and rows.

Asynchronous algorithms run event-driven instead (:mod:`lowcomm.engines.remote_async`): rank 0
replies to each worker point-to-point and worker ranks compute one worker at a time.

Every rank computes on the device of the problem (the run's ``device``; on ``cuda`` each rank's
own GPU, ``LOCAL_RANK``): worker ranks keep their group's shards and state there and rank 0 the
aggregator's state. Payloads are decoded onto it; worker state crosses ranks (checkpoints,
resumes) through the host.

Every message is point-to-point and every wait lasts at most ``options.timeout`` seconds: a rank
that stalls or dies ends the run with a :class:`~lowcomm.engines.ranks.RankError` naming it
and the round, rank 0's carrying the run so far (:mod:`lowcomm.engines.ranks`). Ranks started
with different trajectory settings refuse to run.

Launch under ``torchrun``, or create the default process group before :meth:`TorchDist.run`;
without one, the engine joins from the environment (:mod:`lowcomm.engines.process_group`) and
destroys the group when ``run`` returns.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from lowcomm.algorithms.base import Algorithm, Context
from lowcomm.core.clock import ClockModel
from lowcomm.core.device import HOST
from lowcomm.core.errors import InvalidConfigError
from lowcomm.core.messages import AnyPayload, Download, Upload
from lowcomm.core.rng import Streams
from lowcomm.data.dataset import Shards
from lowcomm.engines import remote_async, wire
from lowcomm.engines.blocks import WorkerBlocks
from lowcomm.engines.evaluation import Evaluator
from lowcomm.engines.participation import Participants, check_run
from lowcomm.engines.process_group import init_process_group
from lowcomm.engines.ranks import (
    RUN,
    STOP,
    Follower,
    aggregating,
    check_same_settings,
    gather_workers,
    owners,
    scatter_workers,
    send_command,
)
from lowcomm.engines.session import (
    RunOptions,
    RunResult,
    RunState,
    close_sync_round,
    first_state,
    partial_result,
    run_rounds,
    save_checkpoint,
)
from lowcomm.problems.base import Problem

__all__ = ["TorchDist", "init_process_group", "worker_groups"]

_OWNER = "the torchdist engine"


def worker_groups(world_size: int, n_workers: int) -> list[torch.Tensor]:
    """The global worker ids each rank 1..P-1 hosts: contiguous, near-equal groups.

    Raises:
        InvalidConfigError: fewer than 2 ranks, or more worker ranks than workers.
    """
    if world_size < 2:
        allowed = ">= 2 (rank 0 aggregates, ranks 1.. host the workers)"
        raise InvalidConfigError("WORLD_SIZE", _OWNER, allowed, world_size)
    if world_size - 1 > n_workers:
        allowed = f"at most {n_workers + 1} (one aggregator and at most one rank per worker)"
        raise InvalidConfigError("WORLD_SIZE", _OWNER, allowed, world_size)
    return [torch.from_numpy(g) for g in np.array_split(np.arange(n_workers), world_size - 1)]


@dataclass(frozen=True)
class TorchDist:
    """One multi-process run: the same fields as :class:`~lowcomm.engines.simulate.Simulation`.

    Every rank builds it identically; ``shards`` holds all workers' shards and each worker
    rank takes its own group.
    """

    algorithm: Algorithm
    problem: Problem
    shards: Shards
    evaluator: Evaluator
    streams: Streams
    clock: ClockModel
    options: RunOptions

    def run(self, resume: RunState | None = None) -> RunResult | None:
        """Run to ``options.rounds``; the result on rank 0, None on the worker ranks.

        ``resume`` is read on rank 0 only, which sends each worker rank its workers' state.
        Asynchronous algorithms run the schedule of :mod:`lowcomm.engines.remote_async`.

        Raises:
            RankError: a rank did not answer within ``options.timeout`` or is gone.
            LowcommError: the ranks were started with different settings, a bad rank layout.
        """
        created = init_process_group(self.options.timeout)
        try:
            with wire.waiting(self.options.timeout):
                return self._run_rank(resume)
        finally:
            if created:
                dist.destroy_process_group()

    def _run_rank(self, resume: RunState | None) -> RunResult | None:
        """This rank's part of the run, once the settings are found the same on every rank."""
        check_same_settings(self.options)
        check_run(self.algorithm, self.options.per_round, self.shards.rows)
        groups = worker_groups(dist.get_world_size(), self.shards.rows)
        rank = dist.get_rank()
        asynchronous = not self.algorithm.synchronous
        if asynchronous:
            remote_async.check_order(self.options.async_order)
        if rank == 0 and asynchronous:
            return remote_async.Aggregator(self, groups).run(resume)
        if rank == 0:
            return _Aggregator(self, groups).run(resume)
        if asynchronous:
            remote_async.WorkerRank(self, groups[rank - 1]).serve()
        else:
            _WorkerRank(self, groups[rank - 1]).serve()
        return None


class _Aggregator:
    """Rank 0: sends downloads, rebuilds uploads, accounts, aggregates, evaluates, saves."""

    def __init__(self, engine: TorchDist, groups: list[torch.Tensor]) -> None:
        self.engine = engine
        self.groups = groups
        self.owner = owners(groups)
        self.device = engine.problem.device
        self.rows = torch.arange(engine.shards.rows, device=self.device)
        self.timing = engine.clock.for_workers(engine.shards.rows)
        n = engine.shards.rows
        self.participants = Participants(engine.streams, n, engine.options.per_round)

    def run(self, resume: RunState | None) -> RunResult:
        """The whole run; worker state lives on the worker ranks (``state.workers`` is None)."""
        r = self.engine
        if resume is None:
            sizes = r.shards.sizes
            state = first_state(r.algorithm, r.problem, sizes, r.streams, r.evaluator, None)
        else:
            state = resume
        label = f"{r.algorithm.name} (torchdist)"
        with aggregating(
            lambda: state.round + 1,
            lambda: partial_result(state, r.algorithm, r.evaluator),
            r.options,
            lambda: self._command(STOP),
        ):
            if resume is not None:
                scatter_workers(state.workers, self.groups)
                state.workers = None
            return run_rounds(
                state, r.algorithm, r.evaluator, r.options, label, self.step, self.checkpoint
            )

    def _command(self, command: int, round_: int = 0, broadcast: bool = False) -> None:
        for rank in range(1, len(self.groups) + 1):
            send_command(rank, command, round_, int(broadcast))

    def step(self, state: RunState) -> None:
        """One synchronous round across the ranks, of every worker or the participants."""
        r, download = self.engine, state.download
        chosen = self.participants.of(state.round)
        ids = self.rows if chosen is None else chosen.to(self.device)
        self._command(RUN, state.round, download.broadcast)
        taking = self._taking(ids.tolist())
        self._send_download(download, ids.tolist(), taking)
        up, grads, hvps = self._receive_uploads(taking)
        ctx = Context(state.round, r.shards.workers[ids], r.shards.rows, r.streams)
        down_bytes = download.for_workers(ids).nbytes().cpu().numpy()
        close_sync_round(state, r.algorithm, self.timing, ctx, down_bytes, up, grads, hvps)

    def _taking(self, ids: list[int]) -> dict[int, int]:
        """Rank -> how many of the workers ``ids`` it hosts, for the ranks hosting any, in order."""
        return dict(Counter(self.owner[worker] for worker in ids))

    def _send_download(self, download: Download, ids: list[int], taking: dict[int, int]) -> None:
        """The one row of a broadcast download to each rank taking part, else each worker's row."""
        if download.broadcast:
            row = wire.row(download.payload, 0)
            for rank in taking:
                wire.send_payload(row, rank)
            return
        for worker in ids:
            wire.send_payload(wire.row(download.payload, worker), self.owner[worker])

    def _receive_uploads(self, taking: dict[int, int]) -> tuple[Upload, np.ndarray, np.ndarray]:
        """Each rank's header and its senders' rows, rebuilt into one upload of the round."""
        headers, rows, like = [], [], None
        for rank, count in taking.items():
            header = wire.recv_tensor((3, count), torch.int64, rank)
            senders = int(header[0].sum())
            if senders:
                rows += [wire.recv_payload(rank, self.device) for _ in range(senders)]
            else:
                like = wire.recv_payload(rank, self.device)
            headers.append(header)
        header = torch.cat(headers, dim=1)
        sent = header[0].to(self.device, torch.bool)
        up = Upload(wire.assemble(rows, sent, like), sent)
        return up, header[1].numpy(), header[2].numpy()

    def checkpoint(self, state: RunState, folder: Path) -> None:
        """Gather the worker ranks' state (on the host) and save the run as ``simulate`` would."""
        modules = (type(self.engine.algorithm).__module__,)
        workers = gather_workers(len(self.groups), modules, self.device)
        save_checkpoint(dataclasses.replace(state, workers=workers), folder)


class _WorkerRank(Follower):
    """Ranks 1..P-1: hold a group's state and data, run each round rank 0 asks for."""

    def __init__(self, engine: TorchDist, group: torch.Tensor) -> None:
        self.engine = engine
        self.options = engine.options
        self.modules = (type(engine.algorithm).__module__,)
        self.device = engine.problem.device
        first, last = int(group[0]), int(group[-1]) + 1
        self.span = first, last
        self.shards = engine.shards.span(first, last)
        self.blocks = WorkerBlocks(engine.problem, self.shards)
        self.state = engine.algorithm.init_workers(
            engine.problem, self.shards.workers, engine.streams
        )
        self.positions = torch.arange(group.shape[0], device=self.device)
        n = engine.shards.rows
        self.participants = Participants(engine.streams, n, engine.options.per_round)

    def work(self, command: int, round_: int, broadcast: int) -> None:
        """One synchronous round (``command`` is ``RUN``): the round after ``round_``.

        Only the group's participants compute; a group without any does nothing.
        """
        r = self.engine
        self.last_round = round_ + 1
        chosen = self.participants.within(round_, *self.span)
        mine = self.positions if chosen is None else chosen.to(self.device)
        if not mine.numel():
            return
        down = self._receive_download(bool(broadcast), mine)
        ctx = Context(round_, self.shards.workers[mine], r.shards.rows, r.streams)
        local = self.blocks.local
        up, self.state, grads, hvps = local(r.algorithm, self.state, down, ctx, chosen)
        counts = [torch.from_numpy(grads), torch.from_numpy(hvps)]
        wire.send_tensor(torch.stack([up.sent.to(HOST, torch.int64), *counts]), 0)
        senders = torch.nonzero(up.sent).flatten().tolist()
        for position in senders:
            wire.send_payload(wire.row(up.payload, position), 0)
        if not senders:
            wire.send_payload(wire.no_rows(up.payload), 0)

    def _receive_download(self, broadcast: bool, mine: torch.Tensor) -> AnyPayload:
        if broadcast:
            payload = wire.recv_payload(0, self.device)
            return Download(payload, True).for_workers(mine)
        rows = [wire.recv_payload(0, self.device) for _ in mine]
        return wire.assemble(rows, torch.ones(len(rows), dtype=torch.bool, device=HOST))
