"""Asynchronous runs on ``torchdist``: rank 0's schedule, workers on the other ranks.

Rank 0 runs the schedule of :mod:`lowcomm.engines.asynchrony` (the same code as ``simulate``)
and is the only rank that knows it: each reply is a point-to-point message to the rank hosting
that worker (a ``COMPUTE`` command ``[worker, local round]`` then the one-row download), and a
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

A checkpoint first receives every computation under way into the schedule's queue of uploads
(as ``simulate`` holds them: none in flight), then gathers the workers' state; so in ``clock``
order checkpoints and resumes equal ``simulate``'s. In ``arrival`` order the uploads so received
are handled first after a checkpoint (in a resumed run as in the uninterrupted one), one per
update in simulated-time order, before real arrivals are taken again.
"""

from __future__ import annotations

import dataclasses
import heapq
import time
from collections import defaultdict, deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from lowcomm.algorithms.base import Context
from lowcomm.algorithms.local_data import LocalData
from lowcomm.core import tree
from lowcomm.core.errors import InvalidConfigError
from lowcomm.core.messages import AnyPayload, Upload
from lowcomm.engines import wire
from lowcomm.engines.asynchrony import Arrival, AsyncRounds
from lowcomm.engines.ranks import (
    COMPUTE,
    STOP,
    Follower,
    aggregating,
    gather_workers,
    owners,
    scatter_workers,
    send_command,
)
from lowcomm.engines.session import (
    RunResult,
    RunState,
    first_state,
    partial_result,
    run_rounds,
    save_checkpoint,
)
from lowcomm.engines.workforce import Completed, compute_one

_INT64 = torch.int64


class RemoteWorkers:
    """Rank 0's side: the workers on ranks 1..P-1 as an asynchronous workforce.

    A rank computes one worker at a time, so each rank has at most one computation under way;
    further ones wait here and are sent when the rank answers. Every message is then a blocking
    send met by a receive already posted (or about to be): no send ever waits on another, on
    gloo or NCCL. A rank busy for longer than ``timeout`` seconds is reported when another
    answers (``arrival`` order); a receive from one rank times out by itself.
    """

    def __init__(self, owner: list[int], device: torch.device, timeout: float) -> None:
        self.owner = owner
        self.device = device
        self.timeout = timeout
        self.busy: dict[int, int] = {}
        self.since: dict[int, float] = {}
        self.waiting: dict[int, deque[tuple[int, int, AnyPayload]]] = defaultdict(deque)
        self.started: list[int] = []

    def submit(
        self, state: RunState, workers: Sequence[int], local_rounds: Sequence[int], down: AnyPayload
    ) -> None:
        """Send each worker's rank the command and its row, or queue them if the rank is busy."""
        for position, (worker, local_round) in enumerate(zip(workers, local_rounds, strict=True)):
            rank = self.owner[worker]
            self.started.append(worker)
            if rank in self.busy:
                self.waiting[rank].append((worker, local_round, wire.row(down, position)))
            else:
                self._send(rank, worker, local_round, wire.row(down, position))

    def _send(self, rank: int, worker: int, local_round: int, down: AnyPayload) -> None:
        send_command(rank, COMPUTE, worker, local_round)
        wire.send_payload(down, rank)
        self.busy[rank] = worker
        self.since[rank] = time.monotonic()

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
        """The first computation under way to reach rank 0 (a receive from any rank).

        Raises:
            PeerError: ranks busy for longer than the timeout, or none answered within it.
        """
        now = time.monotonic()
        late = [rank for rank in sorted(self.busy) if now - self.since[rank] > self.timeout]
        if late:
            raise wire.PeerError(late, "timed out: busy for too long", self.timeout)
        header = wire.recv_tensor_any((4,), _INT64, sorted(self.busy))
        return self._receive(self.owner[int(header[0])], header)

    def _receive(self, rank: int, header: torch.Tensor | None = None) -> Completed:
        """A rank's answer as a one-row upload; then its next queued computation is sent.

        ``header``: the answer's header when already received (a receive from any rank).
        """
        if header is None:
            header = wire.recv_tensor((4,), _INT64, rank)
        worker, sent, grad_evals, hvps = header.tolist()
        payload = wire.recv_payload(rank, self.device)
        assert self.busy.pop(rank) == worker, "a rank answers for the worker it was sent"
        del self.since[rank]
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
            send_command(rank, STOP)


class RemoteRounds(AsyncRounds):
    """The asynchronous schedule with remote workers, which a checkpoint lets settle first."""

    def settle(self, state: RunState) -> None:
        """Receive every computation under way into the queue of uploads (none in flight)."""
        finished = self.workforce.collect(list(state.engine["computing"]))
        for arrival in self._arrivals(state, finished) if finished else ():
            heapq.heappush(state.engine["queue"], arrival)

    def _next(self, state: RunState) -> list[Arrival]:
        """In ``arrival`` order, the uploads a checkpoint received come first, one at a time."""
        queue = state.engine["queue"]
        if queue and self.options.async_order == "arrival" and self.options.replay is None:
            return [heapq.heappop(queue)]
        return super()._next(state)


class Aggregator:
    """Rank 0's whole asynchronous run; the workers' state lives on the worker ranks."""

    def __init__(self, engine: Any, groups: list[torch.Tensor]) -> None:
        self.engine = engine
        self.groups = groups
        self.device = engine.problem.device
        self.workforce = RemoteWorkers(owners(groups), self.device, engine.options.timeout)

    def run(self, resume: RunState | None) -> RunResult:
        """From the start or from ``resume`` (whose workers' state is sent to their ranks)."""
        r = self.engine
        sizes = r.shards.sizes
        state = resume or first_state(r.algorithm, r.problem, sizes, r.streams, r.evaluator, None)
        label = f"{r.algorithm.name} (torchdist, async)"
        with aggregating(
            lambda: state.round + 1,
            lambda: partial_result(state, r.algorithm, r.evaluator),
            r.options,
            lambda: self.workforce.stop(len(self.groups)),
        ):
            if resume is not None:
                scatter_workers(state.workers, self.groups)
                state.workers = None
            timing = r.clock.for_workers(r.shards.rows)
            self.rounds = RemoteRounds(
                r.algorithm, r.streams, timing, r.options, self.workforce, state
            )
            step = self.rounds.step
            return run_rounds(state, r.algorithm, r.evaluator, r.options, label, step, self.save)

    def save(self, state: RunState, folder: Path) -> None:
        """Checkpoint: every computation received, the workers' state gathered, then saved."""
        self.rounds.settle(state)
        modules = (type(self.engine.algorithm).__module__,)
        workers = gather_workers(len(self.groups), modules, self.device)
        save_checkpoint(dataclasses.replace(state, workers=workers), folder)


class WorkerRank(Follower):
    """A worker rank's side: its workers' state and shards; one computation per command."""

    def __init__(self, engine: Any, group: torch.Tensor) -> None:
        self.engine = engine
        self.options = engine.options
        self.modules = (type(engine.algorithm).__module__,)
        self.device = engine.problem.device
        self.first = int(group[0])
        shards = engine.shards.span(self.first, int(group[-1]) + 1)
        self.data = [LocalData(engine.problem, shards.span(i, i + 1)) for i in range(shards.rows)]
        state = engine.algorithm.init_workers(engine.problem, shards.workers, engine.streams)
        self.state = tree.concat([state])  # a copy of its own, updated in place

    def work(self, command: int, worker: int, local_round: int) -> None:
        """Compute what rank 0 asks (``command`` is ``COMPUTE``) and answer."""
        r, position = self.engine, worker - self.first
        down = wire.recv_payload(0, self.device)
        ctx = Context(
            local_round, torch.tensor([worker], device=self.device), r.shards.rows, r.streams
        )
        done = compute_one(r.algorithm, self.state, position, down, self.data[position], ctx)
        up, sent = done.upload, bool(done.upload.sent[0])
        header = torch.tensor([worker, int(sent), done.grad_evals, done.hvps])
        wire.send_tensor(header, 0)
        wire.send_payload(wire.row(up.payload, 0) if sent else wire.no_rows(up.payload), 0)


def check_order(order: str) -> None:
    """Refuse the ``arrival`` order without gloo's receive from any rank (on every rank)."""
    if order == "arrival" and dist.get_backend() != dist.Backend.GLOO:
        allowed = "'clock' on NCCL (the 'arrival' order needs gloo's receive from any rank)"
        raise InvalidConfigError("async_order", "the torchdist engine", allowed, order)
