"""Shared fixtures: small deterministic problems and a way to run the simulate engine."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from lowcomm.algorithms.base import Algorithm
from lowcomm.core.clock import ClockModel
from lowcomm.core.rng import Streams
from lowcomm.data.dataset import Dataset, Shards, TrainTest
from lowcomm.engines.evaluation import Evaluator
from lowcomm.engines.session import RunOptions, RunResult, RunState
from lowcomm.engines.simulate import Simulation
from lowcomm.problems.logistic import LogisticRegression

SHARED_DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"

# The tests' tensors are small: one intra-op thread is faster, and with pytest-xdist's two
# processes on two cores more threads would only wait for each other.
torch.set_num_threads(1)


class Setup:
    """A small binary logistic problem split over workers with unequal shards."""

    def __init__(
        self,
        workers: int = 4,
        n: int = 300,
        d: int = 5,
        l2: float = 1e-2,
        dtype: torch.dtype = torch.float64,
    ) -> None:
        rng = np.random.default_rng(7)
        X = rng.normal(size=(n + 100, d))
        y = (X @ np.linspace(1, -1, d) + 0.5 * rng.normal(size=n + 100) > 0).astype(np.int64)
        data = Dataset("toy", X, y, 2)
        self.data = TrainTest(data.subset(np.arange(n)), data.subset(np.arange(n, n + 100)))
        cuts = np.cumsum(np.linspace(1, 2, workers) / np.linspace(1, 2, workers).sum() * n)
        self.parts = np.split(np.arange(n), cuts[:-1].astype(int))
        self.problem = LogisticRegression(d, l2, dtype=dtype)
        self.shards = Shards.build(self.data.train, self.parts, dtype)
        self.evaluator = Evaluator.build(self.problem, self.data)

    def simulation(
        self, algorithm: Algorithm, rounds: int, seed: int = 0, **options: object
    ) -> Simulation:
        clock = options.pop("clock", ClockModel())
        assert isinstance(clock, ClockModel)
        run_options = RunOptions(rounds=rounds, **options)  # type: ignore[arg-type]
        return Simulation(
            algorithm, self.problem, self.shards, self.evaluator, Streams(seed), clock, run_options
        )

    def run(self, algorithm: Algorithm, rounds: int, seed: int = 0, **options: object) -> RunResult:
        return self.simulation(algorithm, rounds, seed, **options).run()

    def resume(
        self, algorithm: Algorithm, rounds: int, state: RunState, **opts: object
    ) -> RunResult:
        return self.simulation(algorithm, rounds, **opts).run(state)


@pytest.fixture
def setup() -> Setup:
    return Setup()
