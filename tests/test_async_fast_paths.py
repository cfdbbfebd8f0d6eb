"""The asynchronous schedule's per-update work: the workers it involves, bit for bit as before."""

import numpy as np
import pytest
import torch

from lowcomm.algorithms.hogwild_ib import HogwildIB, HogwildIBConfig
from lowcomm.core.clock import ClockModel, ComputeModel
from lowcomm.engines import asynchrony
from lowcomm.engines.asynchrony import Slowest
from tests.conftest import Setup


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
