"""The in-process engine: every worker in one process, deterministic for a seed.

Synchronous algorithms run in rounds in which all workers, or the round's seeded sample of them
(:mod:`lowcomm.engines.participation`), are computed in batched calls.
Asynchronous algorithms run in the event-driven schedule of :mod:`lowcomm.engines.asynchrony`
(uploads handled in simulated arrival order, or in a replayed order), each worker computed in
this process when its download reaches it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from lowcomm.algorithms.base import Algorithm, Context
from lowcomm.algorithms.local_data import LocalData
from lowcomm.core import tree
from lowcomm.core.clock import ClockModel
from lowcomm.core.errors import InvalidConfigError
from lowcomm.core.messages import AnyPayload
from lowcomm.core.rng import Streams
from lowcomm.data.dataset import Shards
from lowcomm.engines.asynchrony import AsyncRounds
from lowcomm.engines.blocks import WorkerBlocks
from lowcomm.engines.evaluation import Evaluator
from lowcomm.engines.participation import Participants, check_run
from lowcomm.engines.session import (
    RunOptions,
    RunResult,
    RunState,
    close_sync_round,
    first_state,
    run_rounds,
)
from lowcomm.engines.workforce import Completed, compute_one, positions
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
        if self.options.async_order == "arrival":
            allowed = (
                "'clock' on simulate ('arrival' is torchdist's real order; replay it with replay)"
            )
            raise InvalidConfigError("async_order", "the simulate engine", allowed, "arrival")
        check_run(self.algorithm, self.options.per_round, self.shards.rows)
        state = resume if resume is not None else self.start()
        loop = _SyncLoop(self) if self.algorithm.synchronous else self._async(state)
        label = f"{self.algorithm.name} (simulate)"
        return run_rounds(state, self.algorithm, self.evaluator, self.options, label, loop.step)

    def _async(self, state: RunState) -> AsyncRounds:
        state.workers = tree.concat([state.workers])  # a copy of its own, updated in place
        timing = self.clock.for_workers(self.shards.rows)
        return AsyncRounds(
            self.algorithm, self.streams, timing, self.options, _InProcess(self), state
        )


class _SyncLoop:
    """Synchronous rounds: broadcast, the workers (or participants) in blocks, aggregate."""

    def __init__(self, sim: Simulation) -> None:
        self.sim = sim
        self.blocks = WorkerBlocks(sim.problem, sim.shards)
        self.rows = torch.arange(sim.shards.rows, device=sim.shards.workers.device)
        self.timing = sim.clock.for_workers(sim.shards.rows)
        self.participants = Participants(sim.streams, sim.shards.rows, sim.options.per_round)

    def step(self, state: RunState) -> None:
        """One synchronous round of every worker, or of the round's participants."""
        sim = self.sim
        chosen = self.participants.of(state.round)
        ids = self.rows if chosen is None else chosen.to(self.rows.device)
        ctx = Context(state.round, sim.shards.workers[ids], sim.shards.rows, sim.streams)
        down = state.download.for_workers(ids)
        local = self.blocks.local
        up, state.workers, grads, hvps = local(sim.algorithm, state.workers, down, ctx, chosen)
        down_bytes = down.nbytes().cpu().numpy()
        close_sync_round(state, sim.algorithm, self.timing, ctx, down_bytes, up, grads, hvps)


class _InProcess:
    """Asynchronous workers computed in this process, one worker per call, when submitted.

    One call per worker even when arrivals tie: a batched call can round differently.
    """

    def __init__(self, sim: Simulation) -> None:
        self.sim = sim
        n = sim.shards.rows
        self.data = [LocalData(sim.problem, sim.shards.span(i, i + 1)) for i in range(n)]
        self.ids = [data.shards.workers for data in self.data]  # each worker's id, [1]
        self.finished: list[Completed] = []

    def submit(
        self, state: RunState, workers: Sequence[int], local_rounds: Sequence[int], down: AnyPayload
    ) -> None:
        """Compute each worker's round now; the results wait for :meth:`collect`."""
        sim, n = self.sim, len(workers)
        for i, (worker, local_round) in enumerate(zip(workers, local_rounds, strict=True)):
            row = down if n == 1 else down.take(positions(i, i + 1, down.device))
            ctx = Context(local_round, self.ids[worker], sim.shards.rows, sim.streams)
            done = compute_one(sim.algorithm, state.workers, worker, row, self.data[worker], ctx)
            self.finished.append(done)

    def collect(self, workers: Sequence[int]) -> list[Completed]:
        """Every result computed since the last call (each is computed when submitted)."""
        finished, self.finished = self.finished, []
        return finished

    def next_arrival(self) -> Completed:
        """Not available: one process has no real arrival order (refused in :meth:`run`)."""
        raise NotImplementedError("simulate orders asynchronous uploads by the clock")
