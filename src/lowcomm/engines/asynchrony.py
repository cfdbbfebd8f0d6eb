"""Event-driven asynchronous rounds, the same bookkeeping on both engines.

The aggregator handles uploads one update (round) at a time and replies to the senders only;
each reply starts that worker's next computation on what it received, so the worker's model is
as stale as the number of updates since. A worker may run at most ``lag_cap`` rounds ahead of
the slowest one (parked until then). Each worker's computation and each message take simulated
time from the clock model (speeds, latency, bandwidth). Which uploads an update handles:

- ``clock`` order: the next to arrive in simulated time; uploads arriving at the same instant
  are one update (one ``aggregate`` call, one row per sender in worker order), so with zero
  delays every worker arrives together each round and an asynchronous run is the synchronous
  one. Deterministic, and the same on both engines. Before an update the schedule waits only
  for the computations that started no later than the earliest upload it holds (an upload
  never arrives before its computation starts), so remote workers keep computing meanwhile.
- ``arrival`` order (``torchdist`` only): the next upload to reach rank 0 in real time, one per
  update; staleness is then real. The simulated clock still advances by the clock model
  (never backwards).
- ``replay``: the workers of each update given in advance, e.g. the order a real run had, read
  from its ledger by :func:`event_order`; replaying it on ``simulate`` gives that run's ledger.

Where a worker computes is the engine's business (:class:`Workforce`): in process, or on a
worker rank behind point-to-point messages. The state of the schedule lives in
``state.engine`` so that a checkpoint resumes it bit for bit.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import pandas as pd
import torch

from lowcomm.algorithms.base import Algorithm, Context
from lowcomm.algorithms.local_data import LocalData
from lowcomm.core import tree
from lowcomm.core.clock import Timing
from lowcomm.core.errors import InvalidConfigError
from lowcomm.core.messages import AnyPayload, Upload, concat
from lowcomm.core.rng import Streams
from lowcomm.engines.session import Events, RunOptions, RunState


@dataclass(frozen=True)
class Completed:
    """A worker's finished computation: its upload and the oracle calls it made."""

    worker: int
    upload: Upload
    grad_evals: int
    hvps: int


def compute_one(
    algorithm: Algorithm,
    workers: Any,
    position: int,
    worker: int,
    local_round: int,
    down: AnyPayload,
    data: LocalData,
    streams: Streams,
    n_workers: int,
) -> tuple[Completed, Any]:
    """One worker's computation number ``local_round`` on ``down`` (a one-row payload).

    ``workers`` is the state of the workers hosted here, ``position`` this worker's row in it and
    ``data`` its shard alone. Returns the result and the hosted workers' new state.
    """
    device = data.sizes.device
    index = torch.tensor([position], device=device)
    ctx = Context(local_round, torch.tensor([worker], device=device), n_workers, streams)
    up, mine = algorithm.local(tree.take(workers, index), down, data, ctx)
    grads, hvps = (int(c[0]) for c in data.reset_counts())
    return Completed(worker, up, grads, hvps), tree.put(workers, index, mine)


class Workforce(Protocol):
    """Where asynchronous workers compute."""

    def submit(self, state: RunState, worker: int, local_round: int, down: AnyPayload) -> None:
        """Start ``worker``'s computation number ``local_round`` on the one-row ``down``."""
        ...

    def collect(self, workers: Sequence[int]) -> list[Completed]:
        """The computations of ``workers`` (waiting for them) and any others already finished."""
        ...

    def next_arrival(self) -> Completed:
        """Wait for the next computation to finish in real time."""
        ...


@dataclass(order=True)
class Arrival:
    """An upload on its way to the aggregator, ordered by simulated arrival time, then worker."""

    time: float
    worker: int
    done: Completed = field(compare=False)


def event_order(records: pd.DataFrame) -> Events:
    """The workers each update of an asynchronous run handled, from its ledger's records.

    The aggregator replies to exactly the workers it handled in update r, and the ledger records
    those replies as downloads of round r + 1 (round 1's downloads are the initial broadcast).
    """
    replies = records[(records["downloads"] > 0) & (records["round"] >= 2)]
    grouped = replies.groupby("round")["worker"].apply(lambda w: tuple(sorted(int(i) for i in w)))
    return tuple(grouped.tolist())


class AsyncRounds:
    """The asynchronous schedule of one run; :meth:`step` is one aggregator update."""

    def __init__(
        self,
        algorithm: Algorithm,
        streams: Streams,
        timing: Timing,
        options: RunOptions,
        workforce: Workforce,
        state: RunState,
    ) -> None:
        self.algorithm, self.streams, self.timing = algorithm, streams, timing
        self.options, self.workforce = options, workforce
        self.n = state.ledger.n_workers
        if not state.engine:
            self._start(state)

    def _start(self, state: RunState) -> None:
        """Send every worker the first download and start its first computation."""
        n = self.n
        state.engine.update(
            queue=[],
            blocked=[],
            sent_version=[0] * n,
            local_rounds=[0] * n,
            done=[0] * n,
            started=[0.0] * n,
            computing=[],
        )
        self._reply(state, 1, np.arange(n))
        self._gather(state, ())

    def _reply(self, state: RunState, round_: int, ids: np.ndarray) -> None:
        """Send row i of ``state.download`` to worker ``ids[i]``, and start its next computation.

        The ledger records each row as a download of ``round_``.
        """
        device = state.download.payload.device
        down = state.download.for_workers(torch.arange(len(ids), device=device))
        state.ledger.download(round_, ids, down.nbytes().cpu().numpy())
        for position, worker in enumerate(ids.tolist()):
            row = down.take(torch.tensor([position], device=device))
            self._dispatch(state, worker, row, state.sim_time + self._transfer(worker, row))

    def _transfer(self, worker: int, payload: AnyPayload) -> float:
        nbytes = payload.nbytes().cpu().numpy()
        seconds = self.timing.transfer(np.array([worker]), nbytes, np.array([True]))
        return float(seconds[0])

    def _may_start(self, state: RunState, worker: int) -> bool:
        cap, done = self.options.lag_cap, state.engine["done"]
        return cap is None or done[worker] - min(done) <= cap

    def _dispatch(self, state: RunState, worker: int, down: AnyPayload, start: float) -> None:
        """Start the worker's next computation on what it received, or park it (lag cap)."""
        eng = state.engine
        if not self._may_start(state, worker):
            eng["blocked"].append((worker, down))
            return
        eng["started"][worker] = start
        eng["computing"].append(worker)
        self.workforce.submit(state, worker, eng["local_rounds"][worker], down)
        eng["local_rounds"][worker] += 1

    def _arrival(self, state: RunState, done: Completed) -> Arrival:
        """When ``done``'s upload reaches the aggregator: its start, work, then transfer."""
        ids = np.array([done.worker])
        work = self.timing.work(ids, np.array([done.grad_evals]), np.array([done.hvps]))
        up = done.upload
        send = self.timing.transfer(ids, up.nbytes().cpu().numpy(), up.sent.cpu().numpy())
        start = state.engine["started"][done.worker]
        return Arrival(start + float(work[0]) + float(send[0]), done.worker, done)

    def _arrived(self, state: RunState, done: Completed) -> Arrival:
        """``done`` is no longer computing; when its upload arrives."""
        state.engine["computing"].remove(done.worker)
        return self._arrival(state, done)

    def _gather(self, state: RunState, workers: Sequence[int]) -> None:
        """Queue the computations of ``workers`` and any others already finished.

        Not in ``arrival`` order, where uploads are taken as they come.
        """
        if self.options.async_order == "arrival" and self.options.replay is None:
            return
        for done in self.workforce.collect(workers):
            heapq.heappush(state.engine["queue"], self._arrived(state, done))

    def _next(self, state: RunState) -> list[Arrival]:
        """The uploads the next update handles."""
        eng, replay = state.engine, self.options.replay
        if replay is not None:
            return self._replayed(state, replay)
        if self.options.async_order == "arrival":
            return [self._arrived(state, self.workforce.next_arrival())]
        queue = eng["queue"]
        head = queue[0].time if queue else math.inf
        self._gather(state, [w for w in eng["computing"] if eng["started"][w] <= head])
        batch = [heapq.heappop(queue)]
        while queue and queue[0].time == batch[0].time:
            batch.append(heapq.heappop(queue))
        return batch

    def _replayed(self, state: RunState, replay: Events) -> list[Arrival]:
        """The queued uploads of the workers that update ``state.round + 1`` handled."""
        if state.round >= len(replay):
            allowed = f"as long as the run ({len(replay)} updates: set rounds <= {len(replay)})"
            owner = "the asynchronous schedule"
            raise InvalidConfigError("replay", owner, allowed, f"update {state.round + 1}")
        wanted = replay[state.round]
        self._gather(state, [w for w in wanted if w in state.engine["computing"]])
        queue = state.engine["queue"]
        batch = [a for a in queue if a.worker in wanted]
        if len(batch) != len(wanted):
            queued = sorted(a.worker for a in queue)
            allowed = f"updates of computing workers (update {state.round + 1}: {queued})"
            raise InvalidConfigError("replay", "the asynchronous schedule", allowed, wanted)
        state.engine["queue"] = [a for a in queue if a.worker not in wanted]
        heapq.heapify(state.engine["queue"])
        return sorted(batch)

    def step(self, state: RunState) -> None:
        """Handle the next uploads, aggregate once and reply to their senders."""
        batch = self._next(state)
        eng = state.engine
        ids, r = np.array([a.worker for a in batch]), state.round + 1
        state.sim_time = max(state.sim_time, max(a.time for a in batch))
        done = [a.done for a in batch]
        grads = np.array([d.grad_evals for d in done])
        state.ledger.compute(r, ids, grads, np.array([d.hvps for d in done]))
        up = Upload(
            concat([d.upload.payload for d in done]), torch.cat([d.upload.sent for d in done])
        )
        state.ledger.upload(r, ids, up.sent.cpu().numpy(), up.payload.nbytes().cpu().numpy())
        device = up.payload.device
        lags = [state.round - eng["sent_version"][i] for i in ids]
        workers, staleness = torch.from_numpy(ids).to(device), torch.tensor(lags, device=device)
        ctx = Context(state.round, workers, self.n, self.streams, staleness)
        state.aggregator, state.download = self.algorithm.aggregate(state.aggregator, up, ctx)
        state.round = r
        for worker in ids.tolist():
            eng["sent_version"][worker] = r
            eng["done"][worker] += 1
        self._reply(state, r + 1, ids)
        self._release(state)
        self._gather(state, ())

    def _release(self, state: RunState) -> None:
        """Start the parked workers that the lag cap now lets through."""
        parked, state.engine["blocked"] = state.engine["blocked"], []
        for worker, down in parked:
            self._dispatch(state, worker, down, state.sim_time)
