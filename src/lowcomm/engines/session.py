"""What both engines share: run options, run state and result, and the loop of rounds.

The first state, the accounting of a synchronous round, the loop with its history rows,
checkpoints and divergence detection, and the progress display live here, so that the
in-process and the multi-process engines record a run identically.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from lowcomm.algorithms.base import Algorithm, Context
from lowcomm.core.clock import Timing
from lowcomm.core.errors import DivergenceError, InvalidConfigError
from lowcomm.core.ledger import Ledger
from lowcomm.core.messages import Download, Upload
from lowcomm.core.rng import Streams
from lowcomm.core.validate import at_least, one_of, positive
from lowcomm.engines.evaluation import Evaluator
from lowcomm.engines.progress import progress_bar
from lowcomm.engines.trusted import load_trusted
from lowcomm.problems.base import Problem

CHECKPOINT_NAME = "checkpoint.pt"
ASYNC_ORDERS = ("clock", "arrival")

Events = tuple[tuple[int, ...], ...]
"""The workers whose uploads each asynchronous update handled, update by update."""


@dataclass(frozen=True)
class RunOptions:
    """How long to run and what to record.

    ``rounds`` counts sync rounds (synchronous algorithms) or aggregator updates (asynchronous
    ones); ``grad_budget`` (K) stops the run once that many gradient evaluations are done (the
    round in which it is reached completes); ``lag_cap`` bounds how many rounds a worker may
    run ahead of the slowest one in an asynchronous run (None: unbounded). ``async_order``
    and ``replay`` choose which uploads each asynchronous update handles
    (:mod:`lowcomm.engines.asynchrony`). ``stop`` is asked before each round; when it says
    yes the run ends there, checkpointed if checkpoints are on (a signal handler sets it).
    ``timeout``: the seconds a ``torchdist`` rank waits for another before it reports it.
    ``per_round``: K, the workers that take part in each synchronous round, a seeded sample
    (:mod:`lowcomm.engines.participation`); None: every worker.
    ``progress``: a bar on a terminal, else a line every ``progress_every`` seconds
    (:mod:`lowcomm.engines.progress`). ``on_row``: called with each history row as it is
    recorded (round 0's of a fresh run included), e.g. to log it to TensorBoard.
    """

    rounds: int
    eval_every: int = 1
    checkpoint_every: int = 0
    checkpoint_dir: Path | None = None
    lag_cap: int | None = None
    progress: bool = False
    grad_budget: int | None = None
    async_order: str = "clock"
    replay: Events | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    stop: Callable[[], bool] | None = None
    timeout: float = 300.0
    per_round: int | None = None
    progress_every: float = 10.0
    on_row: Callable[[dict[str, float]], None] | None = None

    def __post_init__(self) -> None:
        one_of("the run", "async_order", self.async_order, ASYNC_ORDERS)
        positive("the run", "timeout", self.timeout)
        positive("the run", "progress_every", self.progress_every)
        if self.replay is not None:
            object.__setattr__(self, "replay", _events(self.replay))
            if self.async_order == "arrival":
                allowed = "'clock' with a replay (the replay fixes the order)"
                raise InvalidConfigError("async_order", "the run", allowed, self.async_order)
        at_least("the run", "rounds", self.rounds, 1)
        at_least("the run", "eval_every", self.eval_every, 1)
        at_least("the run", "checkpoint_every", self.checkpoint_every, 0)
        if self.checkpoint_every and self.checkpoint_dir is None:
            raise InvalidConfigError(
                "checkpoint_dir", "the run", "a folder when checkpoint_every > 0", None
            )
        if self.lag_cap is not None:
            at_least("the run", "lag_cap", self.lag_cap, 0)
        if self.grad_budget is not None:
            at_least("the run", "grad_budget", self.grad_budget, 1)
        if self.per_round is not None:
            at_least("the run", "per_round", self.per_round, 1)

    def finished(self, state: RunState) -> bool:
        """All rounds done, or the gradient budget K spent."""
        spent = (
            self.grad_budget is not None and state.ledger.total("grad_evals") >= self.grad_budget
        )
        return state.round >= self.rounds or spent

    def stop_asked(self) -> bool:
        """Whether ``stop`` asks the run to end now."""
        return self.stop is not None and self.stop()

    def observe(self, row: dict[str, float]) -> None:
        """Hand a new history row to ``on_row``, if any."""
        if self.on_row is not None:
            self.on_row(row)


def _events(replay: Sequence[Sequence[int]]) -> Events:
    """``replay`` as :data:`Events`, each update a non-empty set of distinct worker ids >= 0."""
    events = tuple(tuple(int(w) for w in update) for update in replay)
    for update in events:
        if not update or min(update) < 0 or len(set(update)) < len(update):
            allowed = "a sequence of updates, each of distinct worker ids >= 0"
            raise InvalidConfigError("replay", "the run", allowed, update)
    return events


@dataclass
class RunState:
    """Everything a run needs to continue bit-identically from where it stopped."""

    round: int
    aggregator: Any
    workers: Any
    download: Download
    ledger: Ledger
    sim_time: float = 0.0
    wall_time: float = 0.0
    history: list[dict[str, float]] = field(default_factory=list)
    engine: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)


@dataclass
class RunResult:
    """The history (one row per evaluation), the ledger, the final model, and why it stopped.

    ``stopped_at``: the round after which ``RunOptions.stop`` ended the run early, else None.
    """

    history: pd.DataFrame
    ledger: Ledger
    model: torch.Tensor
    divergence: DivergenceError | None = None
    stopped_at: int | None = None


def first_state(
    algorithm: Algorithm,
    problem: Problem,
    sizes: torch.Tensor,
    streams: Streams,
    evaluator: Evaluator,
    workers: Any,
) -> RunState:
    """The state before round 1, with the history row of round 0.

    ``workers`` is the state of all workers, or None where an engine keeps it elsewhere.
    """
    aggregator, download = algorithm.init(problem, sizes, streams)
    state = RunState(0, aggregator, workers, download, Ledger(int(sizes.shape[0])))
    record(state, algorithm, evaluator)
    return state


def close_sync_round(
    state: RunState,
    algorithm: Algorithm,
    timing: Timing,
    ctx: Context,
    down_bytes: np.ndarray,
    up: Upload,
    grad_evals: np.ndarray,
    hvps: np.ndarray,
) -> None:
    """Account a synchronous round of all workers ``ctx.workers``, aggregate and move on.

    Records each worker's download, its oracle calls and its upload (sent rows only) and one
    sync round (none for a piggy-backed exchange); aggregates; advances simulated time by the
    slowest worker's round plus the clock's per-round latency (not for a piggy-backed one).
    """
    r, ids = state.round + 1, ctx.workers.cpu().numpy()
    sent, up_bytes = up.sent.cpu().numpy(), up.payload.nbytes().cpu().numpy()
    state.ledger.download(r, ids, down_bytes)
    state.ledger.compute(r, ids, grad_evals, hvps)
    state.ledger.upload(r, ids, sent, up_bytes)
    piggyback = state.download.piggyback
    if not piggyback:
        state.ledger.sync_round()
    state.aggregator, state.download = algorithm.aggregate(state.aggregator, up, ctx)
    state.sim_time += timing.sync_round(ids, down_bytes, up_bytes, sent, grad_evals, hvps)
    state.sim_time += 0.0 if piggyback else timing.round_latency
    state.round = r


def record(state: RunState, algorithm: Algorithm, evaluator: Evaluator) -> dict[str, float]:
    """Append the history row of the current state and return it."""
    model = algorithm.model(state.aggregator)
    row: dict[str, float] = {"round": state.round, **state.ledger.snapshot()}
    row.update(
        sim_time=state.sim_time,
        wall_time=state.wall_time,
        train_loss=evaluator.train_loss(model),
        test_metric=evaluator.test_metric(model),
    )
    row.update(algorithm.metrics(state.aggregator))
    state.history.append(row)
    return row


def diverged(row: dict[str, float], options: RunOptions) -> DivergenceError | None:
    """A divergence error if the row's training loss is NaN or infinite.

    Its message says whether a checkpoint (of an earlier, finite state) is there to keep.
    """
    loss = row["train_loss"]
    if math.isfinite(loss):
        return None
    folder = options.checkpoint_dir
    kept = folder is not None and (folder / CHECKPOINT_NAME).is_file()
    return DivergenceError(int(row["round"]), loss, kept)


def save_checkpoint(state: RunState, folder: Path) -> None:
    """Write the state atomically (the engines call it only while the model is finite)."""
    folder.mkdir(parents=True, exist_ok=True)
    partial = folder / (CHECKPOINT_NAME + ".partial")
    torch.save(state, partial)
    partial.replace(folder / CHECKPOINT_NAME)


def load_checkpoint(
    path: Path, device: torch.device | None = None, modules: Sequence[str] = ()
) -> RunState:
    """Read a state written by :func:`save_checkpoint` (a file or the folder holding it).

    Loaded by :func:`~lowcomm.engines.trusted.load_trusted` (``modules``: those of a
    third-party algorithm), so a crafted checkpoint cannot run code.
    Its tensors are put on ``device``; None leaves them where they were saved.
    """
    path = path / CHECKPOINT_NAME if path.is_dir() else path
    state = load_trusted(path, modules, device)
    if not isinstance(state, RunState):
        raise ValueError(f"it holds a {type(state).__name__}, not a run's state")
    return state


def result(
    state: RunState,
    algorithm: Algorithm,
    divergence: DivergenceError | None,
    stopped_at: int | None = None,
) -> RunResult:
    """Package the state as a result."""
    frame = pd.DataFrame(state.history)
    model = algorithm.model(state.aggregator)
    return RunResult(frame, state.ledger, model, divergence, stopped_at)


def partial_result(state: RunState, algorithm: Algorithm, evaluator: Evaluator) -> RunResult:
    """The run so far, for a run that fails mid-way: its history ends at the last update applied.

    A failure can come after a round's update and before its row (e.g. while the next model is
    sent), so that round's row is recorded now, as a finished run's last row is.
    """
    if not state.history or state.history[-1]["round"] < state.round:
        record(state, algorithm, evaluator)
    return result(state, algorithm, None)


def run_rounds(
    state: RunState,
    algorithm: Algorithm,
    evaluator: Evaluator,
    options: RunOptions,
    label: str,
    step: Callable[[RunState], None],
    checkpoint: Callable[[RunState, Path], None] = save_checkpoint,
) -> RunResult:
    """Call ``step`` until ``options.rounds``; evaluate and checkpoint at their cadence.

    Stops at the first divergence, whose result carries it, or when ``options.stop`` asks
    (checkpointed there; the result says where). ``checkpoint`` writes the state (an engine
    that keeps worker state elsewhere gathers it first).
    """
    state.settings = dict(options.settings)  # what its checkpoints are checked against
    watch = Stopwatch(state)
    if state.round == 0:
        options.observe(state.history[-1])  # a resumed run's rows were observed before
    total = None if options.grad_budget is not None else options.rounds  # a budget: not known
    with progress_bar(options.progress, total, label, options.progress_every) as show:
        while not options.finished(state) and not options.stop_asked():
            step(state)
            watch.pause()
            divergence = _after_round(state, algorithm, evaluator, options, show, checkpoint)
            if divergence is not None:
                return result(state, algorithm, divergence)
            watch.resume()
    watch.pause()
    if options.finished(state):
        return result(state, algorithm, None)
    if options.checkpoint_every and state.round % options.checkpoint_every:
        _keep(state, algorithm, options, checkpoint)  # not saved at this round yet
    return result(state, algorithm, None, stopped_at=state.round)


def _after_round(
    state: RunState,
    algorithm: Algorithm,
    evaluator: Evaluator,
    options: RunOptions,
    show: Callable[[int, float], None],
    checkpoint: Callable[[RunState, Path], None],
) -> DivergenceError | None:
    """Evaluate and checkpoint at their cadence; report a divergence."""
    divergence = None
    if state.round % options.eval_every == 0 or options.finished(state):
        row = record(state, algorithm, evaluator)
        options.observe(row)
        show(state.round, row["train_loss"])
        divergence = diverged(row, options)
    checkpoint_due = options.checkpoint_every and state.round % options.checkpoint_every == 0
    if checkpoint_due and divergence is None:
        _keep(state, algorithm, options, checkpoint)
    return divergence


def _keep(
    state: RunState,
    algorithm: Algorithm,
    options: RunOptions,
    checkpoint: Callable[[RunState, Path], None],
) -> None:
    """Checkpoint the state into ``options.checkpoint_dir`` if its model is finite."""
    healthy = bool(torch.isfinite(algorithm.model(state.aggregator)).all())
    if healthy and options.checkpoint_dir is not None:
        checkpoint(state, options.checkpoint_dir)


class Stopwatch:
    """Wall time spent in the training loop only (evaluation and checkpoints excluded)."""

    def __init__(self, state: RunState) -> None:
        self.state = state
        self.start = time.perf_counter()

    def pause(self) -> None:
        """Add the time since the last resume to the state's wall time."""
        self.state.wall_time += time.perf_counter() - self.start

    def resume(self) -> None:
        """Start counting again."""
        self.start = time.perf_counter()
