"""Asynchronous runs on ``torchdist``: rank 0's schedule, workers on the other ranks.

Rank 0 runs the schedule of :mod:`lowcomm.engines.asynchrony` (the same code as ``simulate``)
and is the only rank that knows it: each reply is a point-to-point message to the rank hosting
that worker (a command ``[compute, worker, local round]`` then the one-row download), and a
worker rank answers each computation with a header ``[worker, sent, gradient evaluations,
HVPs]`` and its row (no rows when it skips). A rank computes one worker at a time; rank 0
keeps the computations meant for a busy rank until it answers. Worker ranks know nothing of
rounds or of each other.

In ``clock`` order (or with ``replay``) rank 0 handles the uploads in simulated-time order,
waiting only for the computations that could arrive first: the ledger and history equal
``simulate``'s. In ``arrival`` order it handles whichever upload reaches it first (a receive
from any rank: gloo only, NCCL has none), so staleness is real; the order it took is in the
ledger (:func:`~lowcomm.engines.asynchrony.event_order`) and replaying it on ``simulate`` gives
the same ledger. When the run ends, computations still under way are received and discarded
(never accounted, as on ``simulate``) and every worker rank is stopped.
"""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Sequence
from typing import Any

import torch
import torch.distributed as dist

from lowcomm.algorithms.local_data import LocalData
from lowcomm.core.errors import InvalidConfigError
from lowcomm.core.messages import AnyPayload, Upload
from lowcomm.engines import wire
from lowcomm.engines.asynchrony import AsyncRounds, Completed, compute_one
from lowcomm.engines.session import RunResult, RunState, first_state, run_rounds

_COMPUTE, _STOP = 0, 1
_INT64 = torch.int64


class RemoteWorkers:
    """Rank 0's side: the workers on ranks 1..P-1 as an asynchronous workforce.

    A rank computes one worker at a time, so each rank has at most one computation under way;
    further ones wait here and are sent when the rank answers. Every message is then a blocking
    send met by a receive already posted (or about to be): no send ever waits on another, on
    gloo or NCCL.
    """

    def __init__(self, owner: list[int], device: torch.device) -> None:
        self.owner = owner
        self.device = device
        self.busy: dict[int, int] = {}
        self.waiting: dict[int, deque[tuple[int, int, AnyPayload]]] = defaultdict(deque)
        self.started: list[int] = []

    def submit(self, state: RunState, worker: int, local_round: int, down: AnyPayload) -> None:
        """Send the worker's rank the command and the download, or queue them if it is busy."""
        rank = self.owner[worker]
        self.started.append(worker)
        if rank in self.busy:
            self.waiting[rank].append((worker, local_round, down))
        else:
            self._send(rank, worker, local_round, down)

    def _send(self, rank: int, worker: int, local_round: int, down: AnyPayload) -> None:
        wire.send_tensor(torch.tensor([_COMPUTE, worker, local_round]), rank)
        wire.send_payload(wire.row(down, 0), rank)
        self.busy[rank] = worker

    def collect(self, workers: Sequence[int]) -> list[Completed]:
        """Receive the computations of ``workers`` (and those queued before them on their ranks)."""
        wanted, received = set(workers), []
        while wanted.intersection(self.started):
            worker = next(w for w in self.started if w in wanted)
            while True:
                done = self._receive(self.owner[worker])
                received.append(done)
                wanted.discard(done.worker)
                if done.worker == worker:
                    break
        return received

    def next_arrival(self) -> Completed:
        """The first computation under way to reach rank 0 (a receive from any rank)."""
        header = torch.empty(4, dtype=_INT64)
        rank = dist.recv(header, src=None)
        return self._receive(rank, header)

    def _receive(self, rank: int, header: torch.Tensor | None = None) -> Completed:
        """A rank's answer as a one-row upload; then its next queued computation is sent.

        ``header``: the answer's header when already received (a receive from any rank).
        """
        if header is None:
            header = wire.recv_tensor((4,), _INT64, rank)
        worker, sent, grad_evals, hvps = header.tolist()
        payload = wire.recv_payload(rank, self.device)
        assert self.busy.pop(rank) == worker, "a rank answers for the worker it was sent"
        self.started.remove(worker)
        if self.waiting[rank]:
            self._send(rank, *self.waiting[rank].popleft())
        mask = torch.tensor([bool(sent)], device=self.device)
        rows = [payload] if sent else []
        return Completed(worker, Upload(wire.assemble(rows, mask, payload), mask), grad_evals, hvps)

    def stop(self, ranks: int) -> None:
        """Drop what was never sent, receive and drop what is under way, stop every rank."""
        self.waiting.clear()
        self.started = [w for w in self.started if self.busy.get(self.owner[w]) == w]
        self.collect(list(self.started))
        for rank in range(1, ranks + 1):
            wire.send_tensor(torch.tensor([_STOP, 0, 0]), rank)


class WorkerRank:
    """A worker rank's side: its workers' state and shards; one computation per command."""

    def __init__(self, engine: Any, group: torch.Tensor) -> None:
        self.engine = engine
        self.device = engine.problem.device
        self.first = int(group[0])
        shards = engine.shards.span(self.first, int(group[-1]) + 1)
        self.data = [LocalData(engine.problem, shards.span(i, i + 1)) for i in range(shards.rows)]
        self.state = engine.algorithm.init_workers(engine.problem, shards.workers, engine.streams)

    def serve(self) -> None:
        """Compute what rank 0 asks, in order, until it says stop."""
        while True:
            command, worker, local_round = wire.recv_tensor((3,), _INT64, 0).tolist()
            if command == _STOP:
                return
            self._compute(worker, local_round, wire.recv_payload(0, self.device))

    def _compute(self, worker: int, local_round: int, down: AnyPayload) -> None:
        r, position = self.engine, worker - self.first
        done, self.state = compute_one(
            r.algorithm,
            self.state,
            position,
            worker,
            local_round,
            down,
            self.data[position],
            r.streams,
            r.shards.rows,
        )
        up, sent = done.upload, bool(done.upload.sent[0])
        header = torch.tensor([worker, int(sent), done.grad_evals, done.hvps])
        wire.send_tensor(header, 0)
        wire.send_payload(wire.row(up.payload, 0) if sent else wire.no_rows(up.payload), 0)


def check_order(order: str) -> None:
    """Refuse the ``arrival`` order without gloo's receive from any rank (on every rank)."""
    if order == "arrival" and dist.get_backend() != dist.Backend.GLOO:
        allowed = "'clock' on NCCL (the 'arrival' order needs gloo's receive from any rank)"
        raise InvalidConfigError("async_order", "the torchdist engine", allowed, order)


def run_aggregator(engine: Any, owner: list[int]) -> RunResult:
    """Rank 0's whole asynchronous run (``owner[w]``: the rank hosting worker w)."""
    r = engine
    state = first_state(r.algorithm, r.problem, r.shards.sizes, r.streams, r.evaluator, None)
    workforce = RemoteWorkers(owner, r.problem.device)
    try:
        timing = r.clock.for_workers(r.shards.rows)
        rounds = AsyncRounds(r.algorithm, r.streams, timing, r.options, workforce, state)
        label = f"{r.algorithm.name} (torchdist, async)"
        return run_rounds(state, r.algorithm, r.evaluator, r.options, label, rounds.step)
    finally:
        workforce.stop(max(owner))
