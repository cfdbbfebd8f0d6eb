"""The simulate engine: determinism, resume, divergence, the clock, the asynchronous loop."""

from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import pytest
import torch

from lowcomm.algorithms.base import Context, NoState
from lowcomm.algorithms.local_data import LocalData
from lowcomm.algorithms.local_sgd import LocalSGD, LocalSGDConfig
from lowcomm.algorithms.sgd import SGD, SGDConfig
from lowcomm.core.clock import ClockModel, ComputeModel, Link, NetworkModel
from lowcomm.core.messages import AnyPayload, Dense, Download, Upload
from lowcomm.core.rng import Streams
from lowcomm.engines.session import first_state, load_checkpoint, partial_result
from lowcomm.experiments.config import make_config
from lowcomm.experiments.runner import prepare
from lowcomm.problems.base import Problem
from tests.conftest import Setup


def without_wall_time(history: pd.DataFrame) -> pd.DataFrame:
    return history.drop(columns="wall_time")


def test_same_seed_gives_identical_history_and_ledger(setup: Setup) -> None:
    algorithm = LocalSGD(LocalSGDConfig(lr=0.3, batch_size=4, local_steps=2))
    a, b = setup.run(algorithm, 8, seed=5), setup.run(algorithm, 8, seed=5)
    pd.testing.assert_frame_equal(without_wall_time(a.history), without_wall_time(b.history))
    pd.testing.assert_frame_equal(a.ledger.records(), b.ledger.records())
    assert torch.equal(a.model, b.model)
    c = setup.run(algorithm, 8, seed=6)
    assert not torch.equal(a.model, c.model)


def test_resumed_run_continues_bit_identically(setup: Setup, tmp_path: Path) -> None:
    algorithm = SGD(SGDConfig(lr=0.2, batch_size=3, momentum=0.5))
    straight = setup.run(algorithm, 10, eval_every=2)
    setup.run(algorithm, 6, eval_every=2, checkpoint_every=3, checkpoint_dir=tmp_path)
    state = load_checkpoint(tmp_path)
    assert state.round == 6
    resumed = setup.resume(algorithm, 10, state, eval_every=2)
    pd.testing.assert_frame_equal(
        without_wall_time(straight.history), without_wall_time(resumed.history)
    )
    pd.testing.assert_frame_equal(straight.ledger.records(), resumed.ledger.records())
    assert torch.equal(straight.model, resumed.model)


def test_divergence_stops_with_the_round_and_keeps_history_and_checkpoint(
    setup: Setup, tmp_path: Path
) -> None:
    algorithm = SGD(SGDConfig(lr=1e150, batch_size=5))
    result = setup.run(algorithm, 50, checkpoint_every=1, checkpoint_dir=tmp_path)
    assert result.divergence is not None
    last = int(result.history["round"].iloc[-1])
    assert str(result.divergence).startswith(f"Training diverged at round {last}: ")
    assert result.history["round"].tolist() == list(range(last + 1))
    assert np.isfinite(result.history["train_loss"].iloc[:-1]).all()
    assert load_checkpoint(tmp_path).round == last - 1


def test_sync_round_time_is_the_slowest_worker(setup: Setup) -> None:
    """Round = latency + down/bandwidth + grads*cost/speed + latency + up/bandwidth, max over w."""
    network = NetworkModel(Link(0.5, 1000.0), {1: Link(2.0, 1000.0)})
    compute = ComputeModel(seconds_per_grad=0.01, speeds=(1.0, 1.0, 1.0, 4.0))
    result = setup.run(SGD(SGDConfig(lr=0.1, batch_size=10)), 3, clock=ClockModel(network, compute))
    d_bytes = 5 * 8
    worker1 = 2 * 2.0 + 2 * d_bytes / 1000.0 + 10 * 0.01
    assert result.history["sim_time"].tolist() == pytest.approx(
        [0, worker1, 2 * worker1, 3 * worker1]
    )


class Staleness(NamedTuple):
    params: torch.Tensor
    seen: torch.Tensor


class RecordStaleness:
    """An asynchronous toy: the aggregator logs the staleness of every upload it handles."""

    name = "record-staleness"
    synchronous = False

    def init(self, problem: Problem, sizes: torch.Tensor, streams: Streams):
        params = torch.zeros(problem.dim, dtype=problem.dtype)
        return Staleness(params, torch.zeros(0, 2, dtype=torch.int64)), Download(
            Dense(params[None]), True
        )

    def init_workers(self, problem, workers, streams):
        return NoState()

    def local(self, state, down: AnyPayload, data: LocalData, ctx: Context):
        assert isinstance(down, Dense)
        index = data.sample(ctx.streams, ctx.round, 1)
        return Upload.all(Dense(data.grad(down.values, index))), state

    def aggregate(self, state: Staleness, up: Upload, ctx: Context):
        assert ctx.staleness is not None
        row = torch.stack([ctx.workers, ctx.staleness], dim=1)
        new = Staleness(state.params, torch.cat([state.seen, row]))
        return new, Download(Dense(state.params[None]), True)

    def model(self, state):
        return state.params

    def metrics(self, state):
        return {}


def test_async_loop_orders_events_by_speed_and_reports_staleness(setup: Setup) -> None:
    compute = ComputeModel(seconds_per_grad=1.0, speeds=(1.0, 2.0, 4.0, 4.0))
    sim = setup.simulation(RecordStaleness(), 14, clock=ClockModel(compute=compute))
    state = sim.start()
    sim.run(state)
    seen = state.aggregator.seen.tolist()
    # workers 2 and 3 arrive together every 0.25 s (one update), worker 1 every 0.5 s, worker
    # 0 every 1 s; staleness counts the updates since the model a worker used was sent
    assert seen[:5] == [[2, 0], [3, 0], [1, 1], [2, 0], [3, 0]]
    assert seen[5:9] == [[2, 0], [3, 0], [0, 3], [1, 1]]
    assert state.round == 14
    assert state.sim_time == pytest.approx(3.5)  # 4 updates per simulated second


def test_lag_cap_keeps_fast_workers_within_reach_of_the_slowest(setup: Setup) -> None:
    compute = ComputeModel(seconds_per_grad=1.0, speeds=(1.0, 10.0, 10.0, 10.0))
    result = setup.run(RecordStaleness(), 40, clock=ClockModel(compute=compute), lag_cap=1)
    records = result.ledger.records()
    uploads = records.pivot_table(index="round", columns="worker", values="uploads", fill_value=0)
    done = uploads.cumsum()
    assert (done.max(axis=1) - done.min(axis=1)).max() <= 2
    assert done.iloc[-1].tolist()[0] >= 9


@pytest.mark.parametrize("lag_cap", [None, 0])
def test_an_asynchronous_run_resumes_bit_identically_with_workers_parked(
    setup: Setup, tmp_path: Path, lag_cap: int | None
) -> None:
    algorithm = SGD(SGDConfig(lr=0.2, batch_size=3, momentum=0.5, asynchronous=True))
    clock = ClockModel(compute=ComputeModel(seconds_per_grad=0.1, speeds=(1.0, 3.0, 7.0, 10.0)))
    options = {"clock": clock, "lag_cap": lag_cap, "eval_every": 2}
    straight = setup.run(algorithm, 20, **options)
    for stop in (6, 8, 10):  # checkpoints taken with uploads queued and workers parked
        folder = tmp_path / f"{lag_cap}-{stop}"
        setup.run(algorithm, stop, checkpoint_every=stop, checkpoint_dir=folder, **options)
        state = load_checkpoint(folder)
        assert state.engine["queue"] and not state.engine["computing"]
        if lag_cap == 0 and stop in (6, 10):
            assert state.engine["blocked"], "the lag cap parks fast workers"
        resumed = setup.resume(algorithm, 20, state, **options)
        pd.testing.assert_frame_equal(
            without_wall_time(straight.history), without_wall_time(resumed.history)
        )
        pd.testing.assert_frame_equal(straight.ledger.records(), resumed.ledger.records())
        assert torch.equal(straight.model, resumed.model)


class EchoOwnRow(RecordStaleness):
    """An asynchronous toy whose first download gives worker w the row (w, w, ...): each worker
    uploads what it received, and the aggregator keeps (worker, first value) pairs."""

    name = "echo-own-row"

    def init(self, problem: Problem, sizes: torch.Tensor, streams: Streams):
        rows = torch.arange(sizes.shape[0], dtype=problem.dtype)[:, None].expand(-1, problem.dim)
        state = Staleness(torch.zeros(problem.dim, dtype=problem.dtype), torch.zeros(0, 2))
        return state, Download(Dense(rows.clone()), broadcast=False)

    def local(self, state, down: AnyPayload, data: LocalData, ctx: Context):
        assert isinstance(down, Dense)
        return Upload.all(Dense(down.values)), state

    def aggregate(self, state: Staleness, up: Upload, ctx: Context):
        assert isinstance(up.payload, Dense)
        row = torch.stack([ctx.workers.to(up.payload.values.dtype), up.payload.values[:, 0]], 1)
        new = Staleness(state.params, torch.cat([state.seen, row]))
        return new, Download(Dense(state.params[None]), True)


def test_an_asynchronous_first_download_gives_each_worker_its_own_row(setup: Setup) -> None:
    compute = ComputeModel(seconds_per_grad=1.0, speeds=(1.0, 2.0, 3.0, 5.0))
    sim = setup.simulation(EchoOwnRow(), 4, clock=ClockModel(compute=compute))
    state = sim.start()
    sim.run(state)
    first = {int(w): float(v) for w, v in reversed(state.aggregator.seen.tolist())}
    assert first == {0: 0.0, 1: 1.0, 2: 2.0, 3: 3.0}


def test_a_partial_result_ends_at_the_last_update_applied() -> None:
    p = prepare(make_config({"data": "synthetic-logistic:100,3", "workers": 2, "rounds": 3}))
    state = first_state(p.algorithm, p.problem, p.shards.sizes, p.streams, p.evaluator, None)
    assert [row["round"] for row in state.history] == [0]
    state.round = 1  # an update applied, its row not yet recorded (a failure came between)
    rows = partial_result(state, p.algorithm, p.evaluator).history["round"].tolist()
    assert rows == [0, 1]
    partial_result(state, p.algorithm, p.evaluator)  # already there: nothing added
    assert len(state.history) == 2
