"""The in-process engine: every worker in one process, deterministic for a seed.

Synchronous algorithms run in rounds in which all workers are computed in one batched call.
Asynchronous algorithms run in an event-driven loop: each worker's computation and each
message take simulated time (speeds, latency, bandwidth from the clock model); the aggregator
handles uploads in order of arrival and replies to the senders, and a worker may run at most
``lag_cap`` rounds ahead of the slowest one. Uploads that arrive at the same instant are one
aggregator update (one ``aggregate`` call with one row per sender, in worker order): with zero
delays every worker arrives together each round, so an asynchronous run is the synchronous one.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

import numpy as np
import torch

from lowcomm.algorithms.base import Algorithm, Context
from lowcomm.algorithms.local_data import LocalData
from lowcomm.core import tree
from lowcomm.core.clock import ClockModel, Timing
from lowcomm.core.messages import AnyPayload, Upload, concat
from lowcomm.core.rng import Streams
from lowcomm.data.dataset import Shards
from lowcomm.engines.blocks import WorkerBlocks
from lowcomm.engines.evaluation import Evaluator
from lowcomm.engines.session import (
    RunOptions,
    RunResult,
    RunState,
    close_sync_round,
    first_state,
    run_rounds,
)
from lowcomm.problems.base import Problem


@dataclass(frozen=True)
class Simulation:
    """One simulated run: the algorithm, the problem, the shards and how time passes."""

    algorithm: Algorithm
    problem: Problem
    shards: Shards
    evaluator: Evaluator
    streams: Streams
    clock: ClockModel
    options: RunOptions

    def start(self) -> RunState:
        """The state before round 1, with the history row of round 0."""
        algorithm, problem, streams = self.algorithm, self.problem, self.streams
        workers = algorithm.init_workers(problem, self.shards.workers, streams)
        return first_state(algorithm, problem, self.shards.sizes, streams, self.evaluator, workers)

    def run(self, resume: RunState | None = None) -> RunResult:
        """Run to ``options.rounds`` from the start or from a checkpointed state."""
        state = resume if resume is not None else self.start()
        loop = _SyncLoop(self) if self.algorithm.synchronous else _AsyncLoop(self, state)
        label = f"{self.algorithm.name} (simulate)"
        return run_rounds(state, self.algorithm, self.evaluator, self.options, label, loop.step)


class _SyncLoop:
    """Synchronous rounds: broadcast, all workers in batched blocks, gather, aggregate."""

    def __init__(self, sim: Simulation) -> None:
        self.sim = sim
        self.blocks = WorkerBlocks(sim.problem, sim.shards)
        self.rows = torch.arange(sim.shards.rows)
        self.timing = sim.clock.for_workers(sim.shards.rows)

    def step(self, state: RunState) -> None:
        """One synchronous round."""
        sim = self.sim
        ctx = Context(state.round, sim.shards.workers, sim.shards.rows, sim.streams)
        down = state.download.for_workers(self.rows)
        up, state.workers, grads, hvps = self.blocks.local(sim.algorithm, state.workers, down, ctx)
        down_bytes = down.nbytes().numpy()
        close_sync_round(state, sim.algorithm, self.timing, ctx, down_bytes, up, grads, hvps)


@dataclass(order=True)
class _Arrival:
    """An upload on its way to the aggregator, ordered by arrival time then worker id."""

    time: float
    worker: int
    upload: Upload
    grad_evals: int
    hvps: int


class _AsyncLoop:
    """Event-driven asynchronous rounds; its bookkeeping lives in ``state.engine``."""

    def __init__(self, sim: Simulation, state: RunState) -> None:
        self.sim = sim
        n = sim.shards.rows
        self.timing: Timing = sim.clock.for_workers(n)
        self.data = [LocalData(sim.problem, sim.shards.span(i, i + 1)) for i in range(n)]
        if not state.engine:
            state.engine.update(
                queue=[], blocked=[], sent_version=[0] * n, local_rounds=[0] * n, done=[0] * n
            )
            down = state.download.for_workers(torch.zeros(n, dtype=torch.int64))
            state.ledger.download(1, np.arange(n), down.nbytes().numpy())
            for i in range(n):
                arrival = self._transfer(i, down.take(torch.tensor([i])))
                self._dispatch(state, i, down.take(torch.tensor([i])), arrival)

    def _transfer(self, worker: int, payload: AnyPayload) -> float:
        nbytes = payload.nbytes().numpy()
        seconds = self.timing.transfer(np.array([worker]), nbytes, np.array([True]))
        return float(seconds[0])

    def _may_start(self, state: RunState, worker: int) -> bool:
        cap = self.sim.options.lag_cap
        done = state.engine["done"]
        return cap is None or done[worker] - min(done) <= cap

    def _dispatch(self, state: RunState, worker: int, down: AnyPayload, start: float) -> None:
        """Compute the worker's round on what it received, or park it behind the lag cap."""
        if not self._may_start(state, worker):
            state.engine["blocked"].append((worker, down))
            return
        eng, sim, index = state.engine, self.sim, torch.tensor([worker])
        ctx = Context(eng["local_rounds"][worker], index, sim.shards.rows, sim.streams)
        mine = tree.take(state.workers, index)
        up, mine = sim.algorithm.local(mine, down, self.data[worker], ctx)
        state.workers = tree.put(state.workers, index, mine)
        eng["local_rounds"][worker] += 1
        grads, hvps = (int(c[0]) for c in self.data[worker].reset_counts())
        ids = np.array([worker])
        work = float(self.timing.work(ids, np.array([grads]), np.array([hvps]))[0])
        send = self.timing.transfer(ids, up.nbytes().numpy(), up.sent.numpy())
        heapq.heappush(
            eng["queue"], _Arrival(start + work + float(send[0]), worker, up, grads, hvps)
        )

    def step(self, state: RunState) -> None:
        """Handle the next uploads to arrive (all those arriving at once) and reply."""
        eng, sim = state.engine, self.sim
        batch = [heapq.heappop(eng["queue"])]
        while eng["queue"] and eng["queue"][0].time == batch[0].time:
            batch.append(heapq.heappop(eng["queue"]))
        ids, r = np.array([a.worker for a in batch]), state.round + 1
        state.sim_time = batch[0].time
        grads = np.array([a.grad_evals for a in batch])
        state.ledger.compute(r, ids, grads, np.array([a.hvps for a in batch]))
        up = Upload(
            concat([a.upload.payload for a in batch]), torch.cat([a.upload.sent for a in batch])
        )
        state.ledger.upload(r, ids, up.sent.numpy(), up.payload.nbytes().numpy())
        staleness = torch.tensor([state.round - eng["sent_version"][i] for i in ids])
        ctx = Context(state.round, torch.from_numpy(ids), sim.shards.rows, sim.streams, staleness)
        state.aggregator, state.download = sim.algorithm.aggregate(state.aggregator, up, ctx)
        state.round = r
        down = state.download.for_workers(torch.arange(len(batch)))
        state.ledger.download(r + 1, ids, down.nbytes().numpy())
        for worker in ids.tolist():
            eng["sent_version"][worker] = r
            eng["done"][worker] += 1
        for position, worker in enumerate(ids.tolist()):
            row = down.take(torch.tensor([position]))
            self._dispatch(state, worker, row, state.sim_time + self._transfer(worker, row))
        self._release(state)

    def _release(self, state: RunState) -> None:
        """Start the parked workers that the lag cap now lets through."""
        parked, state.engine["blocked"] = state.engine["blocked"], []
        for worker, down in parked:
            self._dispatch(state, worker, down, state.sim_time)
