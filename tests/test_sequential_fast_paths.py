"""Sequential single-example steps: fast paths give the bits of the general computation."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from torch import nn

from lowcomm.algorithms.base import Context
from lowcomm.algorithms.hogwild_ib import HogwildIB, HogwildIBConfig
from lowcomm.algorithms.local_data import LocalData
from lowcomm.algorithms.objective import WorkerObjective
from lowcomm.core.rng import Streams
from lowcomm.data.dataset import Dataset, Shards
from lowcomm.problems.base import ExampleGradients, Problem
from lowcomm.problems.linear import design_matrix, normalise_weights, rmatmul
from lowcomm.problems.logistic import LogisticRegression
from lowcomm.problems.softmax import SoftmaxRegression
from lowcomm.problems.torch_model import TorchModel

FEATURES, CLASSES = 6, 4


def closed_form(kind: str, dtype: torch.dtype, intercept: bool, l2: float) -> Problem:
    if kind == "softmax":
        return SoftmaxRegression(FEATURES, CLASSES, l2, intercept, dtype)
    return LogisticRegression(FEATURES, l2, intercept, dtype)


def shards(classes: int, dtype: torch.dtype, sparse: bool = False) -> Shards:
    """Three unequal shards (so the workers' shares differ from 1) of a random data set."""
    rng = np.random.default_rng(3)
    X = rng.normal(size=(60, FEATURES)) * (rng.random((60, FEATURES)) < 0.5)
    y = rng.integers(0, classes, 60)
    data = Dataset("toy", sp.csr_matrix(X) if sparse else X, y, classes)
    return Shards.build(data, [np.arange(0, 10), np.arange(10, 30), np.arange(30, 60)], dtype)


@pytest.mark.parametrize("kind", ["softmax", "logistic"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(("intercept", "l2"), [(False, 0.0), (True, 1e-3)])
def test_example_grad_is_grad_with_unit_weight_bit_for_bit(
    kind: str, dtype: torch.dtype, intercept: bool, l2: float
) -> None:
    problem = closed_form(kind, dtype, intercept, l2)
    assert isinstance(problem, ExampleGradients)
    g = torch.Generator().manual_seed(1)
    params = torch.randn(3, problem.dim, generator=g, dtype=dtype)
    X = torch.randn(3, 5, FEATURES, generator=g, dtype=dtype)
    y = torch.randint(0, CLASSES if kind == "softmax" else 2, (3, 5), generator=g)
    ones = torch.ones(3, 1, dtype=dtype)
    for j in range(5):
        Xj, yj = X[:, j : j + 1], y[:, j : j + 1]
        assert torch.equal(problem.example_grad(params, Xj, yj), problem.grad(params, Xj, yj, ones))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_softmax_grad_subtracts_the_one_hot_exactly(dtype: torch.dtype) -> None:
    problem = SoftmaxRegression(FEATURES, CLASSES, 1e-3, True, dtype)
    g = torch.Generator().manual_seed(2)
    params = torch.randn(2, problem.dim, generator=g, dtype=dtype)
    X = torch.randn(2, 7, FEATURES, generator=g, dtype=dtype)
    y = torch.randint(0, CLASSES, (2, 7), generator=g)
    weight = torch.rand(2, 7, generator=g, dtype=dtype)
    A = design_matrix(X, True)
    Z = torch.bmm(A, params.view(2, CLASSES, -1).transpose(1, 2))
    R = torch.softmax(Z, dim=2) - nn.functional.one_hot(y, CLASSES).to(dtype)
    G = rmatmul(A, R * normalise_weights(weight)[..., None]).flatten(start_dim=1)
    assert torch.equal(problem.grad(params, X, y, weight), G + 1e-3 * params)


def mlp_problem(dtype: torch.dtype) -> Problem:
    torch.manual_seed(0)
    module = nn.Sequential(nn.Linear(FEATURES, 5), nn.Tanh(), nn.Linear(5, CLASSES))
    return TorchModel(module, l2=1e-3, dtype=dtype)


@pytest.mark.parametrize(
    ("kind", "sparse"),
    [("softmax", False), ("logistic", False), ("logistic", True), ("mlp", False)],
)
@pytest.mark.parametrize("objective", [False, True])
def test_grad_at_gives_each_steps_grad_and_charges_the_steps_once(
    kind: str, sparse: bool, objective: bool
) -> None:
    dtype = torch.float64
    problem = mlp_problem(dtype) if kind == "mlp" else closed_form(kind, dtype, True, 1e-2)
    classes = 2 if kind == "logistic" else CLASSES
    fast, plain = (LocalData(problem, shards(classes, dtype, sparse)) for _ in range(2))
    if objective:
        fast, plain = WorkerObjective(fast), WorkerObjective(plain)
        assert not fast.shards.equal_shares
    index = Streams(4).integers("batch", torch.arange(3), 0, 6, fast.sizes)
    params = torch.randn(3, problem.dim, generator=torch.Generator().manual_seed(5), dtype=dtype)
    visits = fast.visits(index)
    assert (visits.example_grad is not None) == (kind != "mlp" and not sparse)
    assert fast.grad_evals.tolist() == [6, 6, 6]
    for j in range(6):
        expected = plain.grad(params, index[:, j : j + 1])
        assert torch.equal(fast.grad_at(params, visits, j), expected)
        params = params - 0.3 * expected
    assert fast.grad_evals.tolist() == plain.grad_evals.tolist() == [6, 6, 6]


def step_by_step(
    algorithm: HogwildIB, model: torch.Tensor, data: LocalData, ctx: Context
) -> torch.Tensor:
    """hogwild-ib's local steps written out: one gather, gradient and step size per step."""
    n, i = ctx.n_workers, ctx.round
    s, start = algorithm.sizes(i), n * algorithm.sizes.total(i)
    index = data.sample(ctx.streams, i, s)
    params, workers = model, ctx.workers.tolist()
    for j in range(s):
        if algorithm.config.step_timing == "round":
            eta = model.new_full((len(workers), 1), algorithm.step(start))
        else:
            eta = model.new_tensor([[algorithm.step(start + n * j + c)] for c in workers])
        params = params - eta * data.grad(params, index[:, j : j + 1])
    return model - params


@pytest.mark.parametrize("timing", ["round", "gradient"])
@pytest.mark.parametrize("kind", ["softmax", "mlp"])
def test_local_steps_are_the_step_by_step_updates(timing: str, kind: str) -> None:
    dtype = torch.float32
    problem = mlp_problem(dtype) if kind == "mlp" else closed_form(kind, dtype, False, 1e-3)
    algorithm = HogwildIB(HogwildIBConfig("linear:3,2", "inv:0.5,10", step_timing=timing))
    data = shards(CLASSES, dtype)
    model = torch.randn(3, problem.dim, generator=torch.Generator().manual_seed(6), dtype=dtype)
    streams = Streams(7)
    for rows in ([0], [2], [0, 1, 2]):  # one worker per call, or tied arrivals in one call
        mine = torch.tensor(rows)
        for i in (0, 3):
            ctx = Context(i, mine, 3, streams)
            fast, plain = (WorkerObjective(LocalData(problem, data.take(mine))) for _ in range(2))
            got = algorithm._update(model[mine], fast, ctx)
            assert torch.equal(got, step_by_step(algorithm, model[mine], plain, ctx))
            counts = [algorithm.sizes(i)] * len(rows)
            assert fast.grad_evals.tolist() == plain.grad_evals.tolist() == counts
