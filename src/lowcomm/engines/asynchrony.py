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

Where a worker computes is the engine's business (:class:`~lowcomm.engines.workforce.Workforce`):
in process, or on a worker rank behind point-to-point messages. The state of the schedule lives
in ``state.engine`` so that a checkpoint resumes it bit for bit.
"""

from __future__ import annotations

import heapq
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch

from lowcomm.algorithms.base import Algorithm, Context
from lowcomm.core.clock import Timing
from lowcomm.core.errors import InvalidConfigError
from lowcomm.core.messages import AnyPayload, Upload, concat
from lowcomm.core.rng import Streams
from lowcomm.engines.session import Events, RunOptions, RunState
from lowcomm.engines.workforce import Completed, Workforce, positions


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


class Slowest:
    """The smallest of the workers' update counts, kept in O(1) per count that grows by one."""

    def __init__(self, counts: list[int]) -> None:
        self.tally = Counter(counts)
        self.value = min(self.tally, default=0)

    def advance(self, old: int) -> None:
        """One worker's count went from ``old`` to ``old + 1``."""
        self.tally[old] -= 1
        self.tally[old + 1] += 1
        if not self.tally[old]:
            del self.tally[old]
            if self.value == old:
                self.value = old + 1


class AsyncRounds:
    """The asynchronous schedule of one run; :meth:`step` is one aggregator update.

    Its work per update is that of the workers the update involves: timing, accounting and the
    lag cap never loop over the other workers.
    """

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
        if state.engine:
            self.slowest = Slowest(state.engine["done"])
        else:
            self._start(state)
        self.released_at = self.slowest.value  # parked workers wait for the slowest to move

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
        self.slowest = Slowest(state.engine["done"])
        self._reply(state, 1, np.arange(n))
        self._gather(state, ())

    def _reply(self, state: RunState, round_: int, ids: np.ndarray) -> None:
        """Send row i of ``state.download`` to worker ``ids[i]``, and start its next computation.

        The ledger records each row as a download of ``round_``.
        """
        device = state.download.payload.device
        down = state.download.for_workers(positions(0, len(ids), device))
        nbytes = down.host_nbytes()
        if len(ids) == 1:  # one reply (an asynchronous update): Python numbers, no arrays
            worker, size = int(ids[0]), int(nbytes[0])
            state.ledger.one(round_, worker, downloads=1, bytes_down=size)
            first = state.sim_time + self.timing.transfer_one(worker, size, True)
            self._dispatch(state, [worker], down, [first])
            return
        state.ledger.download(round_, ids, nbytes)
        starts = state.sim_time + self.timing.transfer(ids, nbytes, np.ones(len(ids), dtype=bool))
        self._dispatch(state, ids.tolist(), down, starts.tolist())

    def _may_start(self, state: RunState, worker: int) -> bool:
        cap = self.options.lag_cap
        return cap is None or state.engine["done"][worker] - self.slowest.value <= cap

    def _dispatch(
        self, state: RunState, workers: list[int], down: AnyPayload, starts: list[float]
    ) -> None:
        """Start each worker's next computation on its row of ``down``, or park it (lag cap)."""
        eng = state.engine
        go = [i for i, worker in enumerate(workers) if self._may_start(state, worker)]
        if len(go) < len(workers):
            index = torch.arange(len(workers), device=down.device)
            parked = sorted(set(range(len(workers))).difference(go))
            eng["blocked"].extend((workers[i], down.take(index[i : i + 1])) for i in parked)
            down = down.take(index[go])
        if not go:
            return
        rounds = []
        for i in go:
            worker = workers[i]
            eng["started"][worker] = starts[i]
            eng["computing"].append(worker)
            rounds.append(eng["local_rounds"][worker])
            eng["local_rounds"][worker] += 1
        self.workforce.submit(state, [workers[i] for i in go], rounds, down)

    def _arrivals(self, state: RunState, finished: list[Completed]) -> list[Arrival]:
        """When each finished upload reaches the aggregator: its start, work, then transfer.

        Its workers are no longer computing.
        """
        gone = {done.worker for done in finished}
        eng = state.engine
        eng["computing"] = [w for w in eng["computing"] if w not in gone]
        if len(finished) == 1:
            return [self._arrival(eng, finished[0])]
        ids = np.array([done.worker for done in finished])
        grads = np.array([done.grad_evals for done in finished])
        work = self.timing.work(ids, grads, np.array([done.hvps for done in finished]))
        up = _stacked(finished)
        send = self.timing.transfer(ids, up.payload.host_nbytes(), up.sent.cpu().numpy())
        times = np.array([eng["started"][w] for w in ids.tolist()]) + work + send
        return [Arrival(*a) for a in zip(times.tolist(), ids.tolist(), finished, strict=True)]

    def _arrival(self, eng: dict[str, Any], done: Completed) -> Arrival:
        """:meth:`_arrivals` of one upload: the same IEEE operations on Python floats."""
        worker, timing = done.worker, self.timing
        work = timing.work_one(worker, done.grad_evals, done.hvps)
        up = done.upload
        nbytes, sent = up.payload.host_nbytes(), up.sent.cpu().numpy()
        send = timing.transfer_one(worker, int(nbytes[0]), bool(sent[0]))
        return Arrival(eng["started"][worker] + work + send, worker, done)

    def _gather(self, state: RunState, workers: Sequence[int]) -> None:
        """Queue the computations of ``workers`` and any others already finished.

        Not in ``arrival`` order, where uploads are taken as they come.
        """
        if self.options.async_order == "arrival" and self.options.replay is None:
            return
        finished = self.workforce.collect(workers)
        if finished:
            for arrival in self._arrivals(state, finished):
                heapq.heappush(state.engine["queue"], arrival)

    def _next(self, state: RunState) -> list[Arrival]:
        """The uploads the next update handles."""
        eng, replay = state.engine, self.options.replay
        if replay is not None:
            return self._replayed(state, replay)
        if self.options.async_order == "arrival":
            return self._arrivals(state, [self.workforce.next_arrival()])
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
        up = _stacked(done)
        _account(state, r, ids, done, up)
        device = up.payload.device
        lags = [state.round - eng["sent_version"][i] for i in ids]
        if len(ids) == 1:  # the index tensor [w], made once per worker
            workers = positions(int(ids[0]), int(ids[0]) + 1, device)
        else:
            workers = torch.from_numpy(ids).to(device)
        staleness = torch.tensor(lags, device=device)
        ctx = Context(state.round, workers, self.n, self.streams, staleness)
        state.aggregator, state.download = self.algorithm.aggregate(state.aggregator, up, ctx)
        state.round = r
        for worker in ids.tolist():
            eng["sent_version"][worker] = r
            self.slowest.advance(eng["done"][worker])
            eng["done"][worker] += 1
        self._reply(state, r + 1, ids)
        self._release(state)
        self._gather(state, ())

    def _release(self, state: RunState) -> None:
        """Start the parked workers that the lag cap now lets through.

        A parked worker may start only once the slowest worker has moved on since it was parked.
        """
        if self.slowest.value == self.released_at:
            return
        self.released_at = self.slowest.value
        parked, state.engine["blocked"] = state.engine["blocked"], []
        free: list[tuple[int, AnyPayload]] = []
        for worker, down in parked:
            (free if self._may_start(state, worker) else state.engine["blocked"]).append(
                (worker, down)
            )
        if free:
            rows = concat([down for _, down in free])
            self._dispatch(state, [w for w, _ in free], rows, [state.sim_time] * len(free))


def _account(
    state: RunState, round_: int, ids: np.ndarray, done: list[Completed], up: Upload
) -> None:
    """Record in the ledger the computations and uploads ``done`` (of ``ids``) of update r."""
    sent, nbytes = up.sent.cpu().numpy(), up.payload.host_nbytes()
    if len(done) == 1:  # one worker: Python integers, no arrays
        one, uploads = done[0], int(sent[0])
        size = int(nbytes[0]) if uploads else 0
        counts = {"grad_evals": one.grad_evals, "hvps": one.hvps, "uploads": uploads}
        state.ledger.one(round_, one.worker, **counts, bytes_up=size)
        return
    grads = np.array([d.grad_evals for d in done])
    state.ledger.compute(round_, ids, grads, np.array([d.hvps for d in done]))
    state.ledger.upload(round_, ids, sent, nbytes)


def _stacked(finished: list[Completed]) -> Upload:
    """The uploads of ``finished`` as one, in order."""
    if len(finished) == 1:
        return finished[0].upload
    payload = concat([d.upload.payload for d in finished])
    return Upload(payload, torch.cat([d.upload.sent for d in finished]))
