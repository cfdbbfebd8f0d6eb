"""Asynchronous runs on torchdist against simulate: the same schedule, or a replayed real order.

One module fixture spawns an aggregator and two worker ranks over gloo on 127.0.0.1 and runs
every scenario in one process group; rank 0 leaves its results in files and each test compares
them with simulate runs in the test process.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from lowcomm.algorithms.base import Algorithm
from lowcomm.algorithms.registry import build_algorithm
from lowcomm.core.clock import ClockModel
from lowcomm.core.errors import InvalidConfigError
from lowcomm.engines.asynchrony import event_order
from lowcomm.engines.session import RunOptions
from lowcomm.engines.simulate import Simulation
from lowcomm.engines.torchdist import TorchDist
from tests.test_conformance import COMPRESSORS
from tests.test_engine_torchdist import Case, assert_same_run, keep, load, process_group
from tests.test_wire import free_port, spawn

WORKERS = 5


def scenarios() -> dict[str, tuple[Algorithm, int, dict[str, Any]]]:
    """Asynchronous algorithms, rounds and run options: clock order, lag caps, arrival order."""
    hogwild = build_algorithm("hogwild-ib", {"sample_sizes": "linear:1,1", "step": "inv:0.1,500"})
    msgd = build_algorithm("async-msgd", {"lr": 0.1, "momentum": 0.5, "batch_size": 4})
    sgd = build_algorithm("sgd", {"lr": 0.1, "batch_size": 3, "asynchronous": True})
    return {
        "hogwild-clock": (hogwild, 30, {"eval_every": 5}),
        "hogwild-cap1": (hogwild, 30, {"eval_every": 5, "lag_cap": 1}),
        "msgd-clock": (msgd, 40, {"eval_every": 4}),
        "sgd-cap0": (sgd, 25, {"eval_every": 5, "lag_cap": 0}),
        "hogwild-arrival": (hogwild, 30, {"eval_every": 5, "async_order": "arrival"}),
        "msgd-arrival": (msgd, 40, {"eval_every": 4, "async_order": "arrival", "lag_cap": 2}),
        **compressed(),
    }


def compressed() -> dict[str, tuple[Algorithm, int, dict[str, Any]]]:
    """Every compressor on the asynchronous algorithms that take one, in clock order."""
    bases = {
        "hogwild-ib": {"sample_sizes": "linear:1,1", "step": "inv:0.1,500"},
        "async-msgd": {"lr": 0.1, "momentum": 0.5, "batch_size": 4},
    }
    return {
        f"{name}[{spec}]": (
            build_algorithm(name, {**base, "compressor": spec, "error_feedback": feedback}),
            12,
            {"eval_every": 4},
        )
        for name, base in bases.items()
        for spec, feedback in COMPRESSORS.items()
    }


def _all_ranks(rank: int, port: int, out: str) -> None:
    with process_group(rank, port):
        case = Case()
        for name, (algorithm, rounds, options) in scenarios().items():
            result = case.engine(TorchDist, algorithm, rounds, **options).run()
            keep(result, Path(out) / f"{name}.pt")


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("torchdist-async")
    spawn(_all_ranks, free_port(), str(folder), nprocs=3)
    return folder


def simulate(name: str, **extra: Any) -> Any:
    algorithm, rounds, options = scenarios()[name]
    options = {k: v for k, v in options.items() if k != "async_order"} | extra
    return Case().engine(Simulation, algorithm, rounds, **options).run()


@pytest.mark.dist
@pytest.mark.parametrize("name", ["hogwild-clock", "hogwild-cap1", "msgd-clock", "sgd-cap0"])
def test_clock_order_equals_simulate(runs: Path, name: str) -> None:
    td, sim = load(runs / f"{name}.pt"), simulate(name)
    assert_same_run(td, sim)
    sizes = {len(update) for update in event_order(sim.ledger.records())}
    assert 1 in sizes and WORKERS not in sizes  # the workers' speeds made it asynchronous


@pytest.mark.dist
@pytest.mark.parametrize("name", sorted(compressed()))
def test_compressed_uploads_equal_simulate(runs: Path, name: str) -> None:
    assert_same_run(load(runs / f"{name}.pt"), simulate(name))


@pytest.mark.dist
@pytest.mark.parametrize("name", ["hogwild-arrival", "msgd-arrival"])
def test_the_real_arrival_order_replayed_on_simulate_gives_the_same_run(
    runs: Path, name: str
) -> None:
    td = load(runs / f"{name}.pt")
    events = event_order(td["records"])
    _, rounds, options = scenarios()[name]
    assert len(events) == rounds and all(len(update) == 1 for update in events)
    done = np.bincount([update[0] for update in events], minlength=WORKERS)
    if "lag_cap" in options:
        assert done.max() - done.min() <= options["lag_cap"] + 1
    replayed = simulate(name, replay=events)
    assert_same_run(td, replayed)
    assert event_order(replayed.ledger.records()) == events


def as_kept(result: Any) -> dict[str, Any]:
    """A simulate result in the form rank 0 keeps."""
    ledger = result.ledger
    return {
        "model": result.model,
        "records": ledger.records(),
        "sync_rounds": ledger.sync_rounds,
        "totals": ledger.totals,
        "history": result.history,
    }


def test_replaying_a_clock_order_run_reproduces_it_ties_included() -> None:
    sim = simulate("hogwild-cap1")
    events = event_order(sim.ledger.records())
    assert {len(update) for update in events} == {1, 3}  # single arrivals and ties
    assert_same_run(as_kept(sim), simulate("hogwild-cap1", replay=events))


def test_a_replay_on_another_clock_follows_the_order_under_a_lag_cap() -> None:
    algorithm, rounds, options = scenarios()["hogwild-cap1"]
    raced = simulate("hogwild-cap1")
    events = event_order(raced.ledger.records())
    sim = Case().engine(Simulation, algorithm, rounds, replay=events, **options)
    # no speeds and no delays: alone, every worker would arrive together every round
    replayed = dataclasses.replace(sim, clock=ClockModel()).run()
    pd.testing.assert_frame_equal(replayed.ledger.records(), raced.ledger.records())
    torch.testing.assert_close(replayed.model, raced.model, rtol=0, atol=0)
    assert replayed.history["sim_time"].iloc[-1] == 0.0 < raced.history["sim_time"].iloc[-1]


def test_a_replay_the_schedule_cannot_follow_is_refused() -> None:
    with pytest.raises(InvalidConfigError, match=r"replay.*update 1"):
        simulate("hogwild-clock", replay=((WORKERS + 1,),))
    with pytest.raises(InvalidConfigError, match=r"replay.*as long as the run \(1 updates"):
        simulate("hogwild-clock", replay=((0, 3, 4),))
    with pytest.raises(InvalidConfigError, match=r"async_order.*with a replay"):
        RunOptions(rounds=2, async_order="arrival", replay=((0,),))
    with pytest.raises(InvalidConfigError, match="replay"):
        simulate("hogwild-clock", replay=((0, 0),))


def test_arrival_order_is_torchdist_only() -> None:
    algorithm, rounds, _ = scenarios()["hogwild-clock"]
    with pytest.raises(InvalidConfigError, match=r"async_order.*replay"):
        Case().engine(Simulation, algorithm, rounds, async_order="arrival").run()
