"""The asynchronous schedule's per-update work: the workers it involves, bit for bit as before."""

import numpy as np
import pandas as pd
import pytest
import torch

from lowcomm.algorithms.async_msgd import AsyncMSGD, AsyncMSGDConfig
from lowcomm.algorithms.hogwild_ib import HogwildIB, HogwildIBConfig
from lowcomm.algorithms.local_data import LocalData
from lowcomm.algorithms.objective import WorkerObjective
from lowcomm.algorithms.sgd import SGD, SGDConfig
from lowcomm.core.clock import ClockModel, ComputeModel, Link, NetworkModel, Timing
from lowcomm.core.ledger import Ledger
from lowcomm.core.rng import Streams
from lowcomm.data.dataset import shares
from lowcomm.engines import asynchrony
from lowcomm.engines.asynchrony import Slowest
from tests.conftest import Setup

SPEEDS = (1.0, 2.0, 3.0, 0.7, 1.3)


def test_slowest_tracks_the_minimum_of_counts_that_grow_by_one() -> None:
    rng = np.random.default_rng(0)
    counts = [0, 0, 1, 3]
    slowest = Slowest(counts)
    for worker in rng.integers(0, 4, size=200).tolist():
        slowest.advance(counts[worker])
        counts[worker] += 1
        assert slowest.value == min(counts)


def test_the_lag_cap_never_takes_the_minimum_over_every_worker(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``min(done)`` over all workers was O(workers) per dispatch; :class:`Slowest` replaces it."""
    scans = []

    def spy(*args: object, **kwargs: object) -> object:
        if args and isinstance(args[0], list) and len(args[0]) == 7:
            scans.append(args[0])
        return min(*args, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr(asynchrony, "min", spy, raising=False)
    setup = Setup(workers=7, n=350)
    clock = ClockModel(compute=ComputeModel(1.0, speeds=(1.0, 2.0, 3.0, 5.0, 1.5, 2.5, 7.0)))
    result = setup.run(HogwildIB(HogwildIBConfig()), 30, clock=clock, lag_cap=1)
    assert scans == []
    assert result.history["round"].iloc[-1] == 30


def test_worker_state_is_updated_in_place_rows_of_the_involved_worker_only() -> None:
    setup = Setup(workers=5, n=250)
    algorithm = HogwildIB(HogwildIBConfig(compressor="topk:0.4", error_feedback=True))
    clock = ClockModel(compute=ComputeModel(1.0, speeds=(1.0, 2.0, 3.0, 5.0, 7.0)))
    sim = setup.simulation(algorithm, 1, clock=clock)
    state = sim.start()
    loop = sim._async(state)
    memory = state.workers[0]
    for _ in range(12):
        before = memory.clone()
        loop.step(state)
        assert state.workers[0] is memory  # no copy of every worker's state per update
        changed = (memory != before).any(dim=1).nonzero().flatten().tolist()
        records = state.ledger.records()
        handled = records[records["round"] == state.round]["worker"].tolist()
        assert set(changed) <= set(handled)


def test_the_first_state_is_not_written_by_the_run() -> None:
    """The run owns a copy of the workers' state: a state it started from stays as it was."""
    setup = Setup(workers=4)
    algorithm = HogwildIB(HogwildIBConfig(compressor="topk:0.4", error_feedback=True))
    clock = ClockModel(compute=ComputeModel(1.0, speeds=(1.0, 2.0, 3.0, 5.0)))
    sim = setup.simulation(algorithm, 10, clock=clock)
    start = sim.start()
    memory = start.workers[0]
    assert torch.equal(memory, torch.zeros_like(memory))
    sim.run(start)
    assert torch.equal(memory, torch.zeros_like(memory))
    assert not torch.equal(start.workers[0], memory)


def _timing() -> Timing:
    links = {0: Link(0.003, 1e5), 2: Link(0.0, 3.3e4), 3: Link(1e-7, 7e9)}
    network = NetworkModel(Link(0.01, 1.25e6), links)
    return ClockModel(network, ComputeModel(1e-3, 3e-5, SPEEDS)).for_workers(5)


def test_one_message_timing_is_the_vectorised_timing_bit_for_bit() -> None:
    timing, rng = _timing(), np.random.default_rng(3)
    for _ in range(300):
        w, nbytes, grads, hvps = (int(v) for v in rng.integers(0, [5, 10**7, 10**4, 50]))
        sent = bool(rng.integers(2))
        ids = np.array([w])
        vector = timing.transfer(ids, np.array([nbytes]), np.array([sent]))[0]
        assert timing.transfer_one(w, nbytes, sent).hex() == float(vector).hex()
        work = timing.work(ids, np.array([grads]), np.array([hvps]))[0]
        assert timing.work_one(w, grads, hvps).hex() == float(work).hex()


def test_a_ledger_record_of_one_worker_is_the_array_records() -> None:
    arrays, scalars = Ledger(4), Ledger(4)
    rng = np.random.default_rng(1)
    for r in range(1, 30):
        w, grads, hvps, nbytes = (int(v) for v in rng.integers(0, [4, 3, 2, 900]))
        sent = bool(rng.integers(2))
        ids = np.array([w])
        arrays.compute(r, ids, np.array([grads]), np.array([hvps]))
        arrays.upload(r, ids, np.array([sent]), np.array([nbytes]))
        arrays.download(r + 1, ids, np.array([nbytes]))
        scalars.one(r, w, grad_evals=grads, hvps=hvps, uploads=int(sent))
        scalars.one(r, w, bytes_up=nbytes if sent else 0)
        scalars.one(r + 1, w, downloads=1, bytes_down=nbytes)
    pd.testing.assert_frame_equal(scalars.records(), arrays.records(), check_exact=True)
    assert scalars.snapshot() == arrays.snapshot()


def test_one_workers_counts_are_read_and_zeroed_like_reset_counts() -> None:
    setup = Setup(workers=3)
    fast, general = (LocalData(setup.problem, setup.shards.span(1, 2)) for _ in range(2))
    index = torch.tensor([[0, 4, 4, 9]])
    for data in (fast, general):
        data.grad(setup.problem.init_params(Streams(0).generator("init"))[None], index)
        data.hvps += 2
    grads, hvps = general.reset_counts()
    assert fast.take_counts() == (int(grads), int(hvps)) == (4, 2)
    assert fast.take_counts() == (0, 0)


def test_a_worker_objective_counts_into_its_datas_counters_and_makes_none(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    setup = Setup(workers=3)
    data = LocalData(setup.problem, setup.shards)
    made: list[object] = []
    zeros = torch.zeros
    monkeypatch.setattr(torch, "zeros", lambda *a, **k: made.append(a) or zeros(*a, **k))
    objective = WorkerObjective(data)
    assert made == []
    assert objective.grad_evals is data.grad_evals and objective.hvps is data.hvps


def test_one_workers_gather_is_its_row_of_the_batched_gather() -> None:
    setup = Setup(workers=4)
    shards, rng = setup.shards, np.random.default_rng(0)
    index = torch.from_numpy(rng.integers(0, shards.sizes.min().item(), (4, 6)))
    X, y = shards.gather(index)
    for w in range(4):
        Xw, yw = shards.span(w, w + 1).gather(index[w : w + 1])
        assert torch.equal(Xw, X[w : w + 1]) and torch.equal(yw, y[w : w + 1])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_async_sgd_scales_rows_by_shares_and_skips_shares_of_one(dtype: torch.dtype) -> None:
    sgd = SGD(SGDConfig(asynchronous=True))
    rows = torch.tensor([[-0.0, 1.5, -3.25e-8, float("inf")]], dtype=dtype)
    equal = torch.tensor([100, 100, 100])
    assert sgd._scaled(rows, equal, torch.tensor([1])) is rows
    unequal = torch.tensor([90, 100, 113])
    expected = rows * shares(unequal)[torch.tensor([2]), None].to(rows)
    scaled = sgd._scaled(rows, unequal, torch.tensor([2]))
    assert scaled.dtype == dtype and torch.equal(scaled, expected)


def _general_paths(monkeypatch: pytest.MonkeyPatch) -> None:
    """Route the one-worker timing and ledger paths through the vectorised ones."""

    def one(ledger: Ledger, round_: int, worker: int, **amounts: int) -> None:
        for counter, amount in amounts.items():
            ledger._add(round_, counter, np.array([worker]), np.array([amount]))

    def transfer_one(timing: Timing, worker: int, nbytes: int, sent: bool) -> float:
        return float(timing.transfer(np.array([worker]), np.array([nbytes]), np.array([sent]))[0])

    def work_one(timing: Timing, worker: int, grads: int, hvps: int) -> float:
        return float(timing.work(np.array([worker]), np.array([grads]), np.array([hvps]))[0])

    monkeypatch.setattr(Ledger, "one", one)
    monkeypatch.setattr(Timing, "transfer_one", transfer_one)
    monkeypatch.setattr(Timing, "work_one", work_one)


@pytest.mark.parametrize(
    "algorithm",
    [
        SGD(SGDConfig(lr=0.1, batch_size=3, asynchronous=True, compressor="topk:0.4")),
        AsyncMSGD(
            AsyncMSGDConfig(
                lr=0.05, momentum=0.5, batch_size=2, compressor="qsgd:4", error_feedback=True
            )
        ),
        HogwildIB(HogwildIBConfig(sample_sizes="const:2")),
    ],
    ids=["sgd", "async-msgd", "hogwild-ib"],
)
def test_one_worker_updates_equal_the_vectorised_schedule(
    algorithm: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    setup = Setup(workers=5)
    network = NetworkModel(Link(0.01, 1e5), {2: Link(0.002, 3e4)})
    clock = ClockModel(network, ComputeModel(1e-3, speeds=SPEEDS))
    fast = setup.run(algorithm, 40, clock=clock, lag_cap=2)  # type: ignore[arg-type]
    _general_paths(monkeypatch)
    general = setup.run(algorithm, 40, clock=clock, lag_cap=2)  # type: ignore[arg-type]
    pd.testing.assert_frame_equal(fast.ledger.records(), general.ledger.records(), check_exact=True)
    times = [c for c in fast.history.columns if "wall" in c]
    pd.testing.assert_frame_equal(
        fast.history.drop(columns=times), general.history.drop(columns=times), check_exact=True
    )
    assert torch.equal(fast.model, general.model)
