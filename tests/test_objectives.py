"""On unequal shards every algorithm minimises the objective it reports (issue 17, item 4).

The reported objective is F = (1/N) sum_i loss_i + (l2/2)||x||^2 over all training examples.
Deterministic methods that the papers say converge exactly must reach F's minimiser; every
stochastic method's update must follow F's gradient in expectation. Shards of 50, 50, 100 and
100 examples: a reshuffled batch of 100 is then one or two whole passes over every shard, i.e.
the full local gradient (a batch of the largest shard alone would run into the next epoch of
the smaller ones and add sampling noise).
"""

from typing import Any

import numpy as np
import pytest
import torch

from lowcomm.algorithms.base import Context
from lowcomm.algorithms.registry import build_algorithm
from lowcomm.algorithms.sgd import SGD, SGDConfig
from lowcomm.core.messages import Dense, Upload
from lowcomm.core.rng import Streams
from lowcomm.data.dataset import Dataset, Shards, TrainTest, shares
from lowcomm.engines.evaluation import Evaluator
from lowcomm.problems.logistic import newton_optimum
from tests import reference
from tests.conftest import Setup

SIZES = (50, 50, 100, 100)
FULL = {"batch_size": 100, "sampling": "reshuffle"}


def split(setup: Setup, parts: list[np.ndarray]) -> Setup:
    """``setup`` with its training set cut into ``parts``."""
    setup.parts = parts
    setup.shards = Shards.build(setup.data.train, parts, setup.problem.dtype)
    return setup


@pytest.fixture(scope="module")
def unequal() -> tuple[Setup, float]:
    setup = split(Setup(), np.split(np.arange(300), np.cumsum(SIZES)[:-1]))
    evaluator = setup.evaluator
    _, f_star = newton_optimum(setup.problem, evaluator.X_train, evaluator.y_train)
    return setup, f_star


def test_shares_are_one_exactly_on_equal_shards() -> None:
    assert shares(torch.tensor([54, 54, 54, 54])).tolist() == [1.0] * 4
    assert shares(torch.tensor([50, 50, 100, 100])).tolist() == [2 / 3, 2 / 3, 4 / 3, 4 / 3]


# name -> settings, rounds: the deterministic methods (and full-batch SGD / LASG)
EXACT: dict[str, tuple[str, dict[str, Any], int]] = {
    "gd": ("gd", {"step0": 4.0}, 100),
    "giant": ("giant", {}, 30),
    "lag-wk": ("lag", {"lr": 0.5}, 300),
    "lag-ps": ("lag", {"lr": 0.5, "rule": "ps"}, 300),
    "lasg-threshold-0": ("lasg", {"lr": 0.5, "threshold": 0.0, **FULL}, 300),
    "sgd-full-batches": ("sgd", {"lr": 2.0, **FULL}, 300),
}


@pytest.mark.parametrize("label", sorted(EXACT))
def test_exact_methods_reach_the_reported_optimum(label: str, unequal: tuple[Setup, float]) -> None:
    setup, f_star = unequal
    name, settings, rounds = EXACT[label]
    result = setup.run(build_algorithm(name, settings), rounds, eval_every=rounds)
    assert result.history["train_loss"].iloc[-1] - f_star < 1e-6


def test_uniform_mean_sgd_plateaus_above_the_reported_optimum(
    unequal: tuple[Setup, float],
) -> None:
    """The old default weighs the workers alike: it converges to another objective's minimiser."""
    setup, f_star = unequal
    algorithm = build_algorithm("sgd", {"lr": 2.0, "reduce": "mean", **FULL})
    result = setup.run(algorithm, 300, eval_every=300)
    assert result.history["train_loss"].iloc[-1] - f_star > 1e-4


def one_example_per_shard() -> Setup:
    """Unequal shards, each n_m copies of one example: any batch's gradient is the shard's."""
    setup = Setup()
    rng = np.random.default_rng(3)
    points, labels = rng.normal(size=(len(SIZES), 5)), np.array([0, 1, 1, 0])
    index = np.repeat(np.arange(len(SIZES)), SIZES)
    train = Dataset("copies", points[index], labels[index], 2)
    setup.data = TrainTest(train, train)
    setup.evaluator = Evaluator.build(setup.problem, setup.data)
    return split(setup, np.split(np.arange(index.size), np.cumsum(SIZES)[:-1]))


# name -> settings, the step taken along F's gradient in the first update
STOCHASTIC: dict[str, tuple[str, dict[str, Any], float]] = {
    "sgd": ("sgd", {"lr": 0.3}, 0.3),
    "sgd-asynchronous": ("sgd", {"lr": 0.3, "asynchronous": True}, 0.3),
    "local-sgd": ("local-sgd", {"lr": 0.3, "local_steps": 1}, 0.3),
    "async-msgd": ("async-msgd", {"lr": 0.3}, 0.3),
    "async-msgd-delay": ("async-msgd", {"lr": 0.3, "delay": "const:0"}, 0.3),
    # the sum convention: M = 4 workers' shares of the total add up to 4 F
    "lasg": ("lasg", {"lr": 0.05}, 0.2),
    "sasg": ("sasg", {"lr": 0.05, "density": 1.0}, 0.2),
    "topk-ef": ("topk-ef", {"lr": 0.05, "density": 1.0}, 0.2),
    "hogwild-ib": ("hogwild-ib", {"sample_sizes": "const:1", "step": "const:0.05"}, 0.2),
    "hogwild-ib-minibatch": (
        "hogwild-ib",
        {"sample_sizes": "const:1", "step": "const:0.05", "mode": "minibatch"},
        0.2,
    ),
}


@pytest.mark.parametrize("label", sorted(STOCHASTIC))
def test_a_stochastic_update_follows_the_global_gradient(label: str) -> None:
    setup = one_example_per_shard()
    name, settings, step = STOCHASTIC[label]
    x0 = setup.problem.init_params(Streams(0).generator("init")).numpy()
    result = setup.run(build_algorithm(name, settings), 1)
    train = setup.data.train
    expected = x0 - step * reference.logistic_grad(x0, train.X, train.y, 1e-2)
    np.testing.assert_allclose(result.model.numpy(), expected, rtol=1e-12, atol=1e-15)


def test_asynchronous_sgd_scales_a_lone_arrival_by_its_share() -> None:
    """Worker m alone moves the model by lr * (M n_m / N) g_m: F's gradient on average."""
    sizes = torch.tensor(SIZES)
    algorithm = SGD(SGDConfig(lr=0.5, asynchronous=True))
    grads = torch.eye(4, 5, dtype=torch.float64)
    steps = []
    for m in range(4):
        state, _ = algorithm.init(Setup().problem, sizes, Streams(0))
        ctx = Context(0, torch.tensor([m]), 4, Streams(0))
        new, _ = algorithm.aggregate(
            state, Upload(Dense(grads[m : m + 1]), torch.tensor([True])), ctx
        )
        steps.append((state.params - new.params) / 0.5)
    torch.testing.assert_close(torch.stack(steps), shares(sizes)[:, None] * grads)
    weighted = (sizes[:, None] / sizes.sum() * grads).sum(dim=0)
    torch.testing.assert_close(torch.stack(steps).mean(dim=0), weighted)
