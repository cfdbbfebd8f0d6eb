"""Asynchronous runs on ``torchdist``: rank 0's schedule, workers on the other ranks.

Rank 0 runs the schedule of :mod:`lowcomm.engines.asynchrony` (the same code as ``simulate``)
and is the only rank that knows it: each reply is a point-to-point message to the rank hosting
that worker (a command ``[compute, worker, local round]`` then the one-row download, sent
without waiting), and a worker rank answers each computation with a header ``[worker, sent,
gradient evaluations, HVPs]`` and its row (no rows when it skips). Worker ranks take their
messages in order, one computation at a time, and know nothing of rounds or of each other.

In ``clock`` order (or with ``replay``) rank 0 waits, after each update, for every computation
it started and then handles them in simulated-time order: the ledger and history equal
``simulate``'s. In ``arrival`` order it handles whichever upload reaches it first (a receive
from any rank: gloo only, NCCL has none), so staleness is real; the order it took is in the
ledger (:func:`~lowcomm.engines.asynchrony.event_order`) and replaying it on ``simulate`` gives
the same ledger. When the run ends, computations still under way are received and discarded
(never accounted, as on ``simulate``) and every worker rank is stopped.
"""

from __future__ import annotations

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
    """Rank 0's side: the workers on ranks 1..P-1 as an asynchronous workforce."""

    def __init__(self, owner: list[int]) -> None:
        self.owner = owner
        self.in_flight: list[int] = []
        # per rank, in order: (worker, the sends of its command and download)
        self.sends: dict[int, list[tuple[int, list[wire.Pending]]]] = {}

    def submit(self, state: RunState, worker: int, local_round: int, down: AnyPayload) -> None:
        """Send the worker's rank the command and the download, without waiting."""
        rank = self.owner[worker]
        command = wire.isend_tensor(torch.tensor([_COMPUTE, worker, local_round]), rank)
        sends = [command, *wire.isend_payload(wire.row(down, 0), rank)]
        self.sends.setdefault(rank, []).append((worker, sends))
        self.in_flight.append(worker)

    def _settle(self, rank: int, worker: int) -> None:
        """Wait on (and drop) the sends that a worker's answer proves delivered.

        Its rank took every message up to that worker's download before computing it. Waiting
        is what frees them: gloo marks a send complete only once it is waited on.
        """
        queue = self.sends[rank]
        while queue:
            sent_to, sends = queue.pop(0)
            for send in sends:
                send.work.wait()
            if sent_to == worker:
                return

    def collect(self) -> list[Completed]:
        """Receive every computation under way, in the order they were started."""
        started, self.in_flight = self.in_flight, []
        return [self._receive(self.owner[worker]) for worker in started]

    def next_arrival(self) -> Completed:
        """The first computation under way to reach rank 0 (a receive from any rank)."""
        header = torch.empty(4, dtype=_INT64)
        rank = dist.recv(header, src=None)
        done = self._receive(rank, header)
        self.in_flight.remove(done.worker)
        return done

    def _receive(self, rank: int, header: torch.Tensor | None = None) -> Completed:
        """A worker rank's header (unless already received) and row, as a one-row upload."""
        if header is None:
            header = wire.recv_tensor((4,), _INT64, rank)
        worker, sent, grad_evals, hvps = header.tolist()
        self._settle(rank, worker)
        payload = wire.recv_payload(rank)
        mask = torch.tensor([bool(sent)])
        rows = [payload] if sent else []
        return Completed(worker, Upload(wire.assemble(rows, mask, payload), mask), grad_evals, hvps)

    def stop(self, ranks: int) -> None:
        """Receive and drop what is still under way, then stop every worker rank."""
        while self.in_flight:
            self.next_arrival()
        for rank in range(1, ranks + 1):
            wire.send_tensor(torch.tensor([_STOP, 0, 0]), rank)
        self.sends = {}


class WorkerRank:
    """A worker rank's side: its workers' state and shards; one computation per command."""

    def __init__(self, engine: Any, group: torch.Tensor) -> None:
        self.engine = engine
        self.first = int(group[0])
        shards = engine.shards.span(self.first, int(group[-1]) + 1)
        self.data = [LocalData(engine.problem, shards.span(i, i + 1)) for i in range(shards.rows)]
        self.state = engine.algorithm.init_workers(engine.problem, group, engine.streams)

    def serve(self) -> None:
        """Compute what rank 0 asks, in order, until it says stop."""
        while True:
            command, worker, local_round = wire.recv_tensor((3,), _INT64, 0).tolist()
            if command == _STOP:
                return
            self._compute(worker, local_round, wire.recv_payload(0))

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
    workforce = RemoteWorkers(owner)
    try:
        timing = r.clock.for_workers(r.shards.rows)
        rounds = AsyncRounds(r.algorithm, r.streams, timing, r.options, workforce, state)
        label = f"{r.algorithm.name} (torchdist, async)"
        return run_rounds(state, r.algorithm, r.evaluator, r.options, label, rounds.step)
    finally:
        workforce.stop(max(owner))
