"""Sparse LIBSVM features: the same numbers as the dense path, and runs that never densify."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch
from typer.testing import CliRunner

from lowcomm.algorithms.registry import build_algorithm
from lowcomm.cli import app
from lowcomm.core.clock import ClockModel
from lowcomm.core.rng import Streams
from lowcomm.data.dataset import Dataset, Shards, TrainTest
from lowcomm.data.loaders import load_libsvm, load_libsvm_pair
from lowcomm.data.sparse import DENSE_LIMIT
from lowcomm.engines.evaluation import Evaluator
from lowcomm.engines.session import RunOptions, RunResult
from lowcomm.engines.simulate import Simulation
from lowcomm.engines.torchdist import TorchDist
from lowcomm.experiments.config import make_config
from lowcomm.experiments.runner import prepare
from lowcomm.problems.base import Problem
from lowcomm.problems.logistic import LogisticRegression
from lowcomm.problems.softmax import SoftmaxRegression
from tests.test_engine_torchdist import WORLD, assert_same_run, keep, load, process_group
from tests.test_wire import free_port, spawn

TOL = {"rtol": 1e-12, "atol": 1e-12}


def write_libsvm(path: Path, n: int, d: int, nnz: int, classes: int, seed: int) -> Path:
    """``n`` lines with ``nnz`` random features each among ``d``; labels from a planted model."""
    rng = np.random.default_rng(seed)
    teacher = rng.normal(size=(classes, d))
    lines = []
    for _ in range(n):
        index = np.sort(rng.choice(d, size=nnz, replace=False))
        value = rng.normal(size=nnz)
        label = int(np.argmax(teacher[:, index] @ value + rng.gumbel(size=classes)))
        pairs = " ".join(f"{i + 1}:{v:.6g}" for i, v in zip(index, value, strict=True))
        lines.append(f"{label} {pairs}\n")
    path.write_text("".join(lines))
    return path


@pytest.fixture(scope="module", params=[2, 3], ids=["binary", "3 classes"])
def loaded(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    classes = request.param
    path = write_libsvm(tmp_path_factory.mktemp("svm") / "small", 60, 12, 4, classes, classes)
    return load_libsvm(path, dense_limit=0)


def problems(data: Dataset) -> list[Problem]:
    d, dtype = data.feature_shape[0], torch.float64
    if data.n_classes == 2:
        return [LogisticRegression(d, 0.1, fit_intercept=f, dtype=dtype) for f in (False, True)]
    return [SoftmaxRegression(d, 3, 0.1, fit_intercept=f, dtype=dtype) for f in (False, True)]


def densified(data: Dataset) -> Dataset:
    return Dataset(data.name, data.X.toarray(), data.y, data.n_classes)


def both(data: Dataset) -> tuple[Shards, Shards]:
    """Sparse and dense shards of ``data`` over 3 unequal workers (padding in two of them)."""
    parts = [np.arange(0, 25), np.arange(25, 40), np.arange(40, 60)[::-1]]
    sparse = Shards.build(data, parts, torch.float64)
    return sparse, Shards.build(densified(data), parts, torch.float64)


def test_the_sparse_file_holds_the_dense_matrix(loaded: Dataset, tmp_path: Path) -> None:
    assert sp.issparse(loaded.X) and loaded.X.shape == (60, 12)
    path = write_libsvm(tmp_path / "again", 60, 12, 4, loaded.n_classes, loaded.n_classes)
    dense = load_libsvm(path)
    assert isinstance(dense.X, np.ndarray)
    np.testing.assert_array_equal(loaded.X.toarray(), dense.X)
    np.testing.assert_array_equal(loaded.y, dense.y)


def test_shards_select_the_same_rows(loaded: Dataset) -> None:
    sparse, dense = both(loaded)
    assert sparse.X.is_sparse and not dense.X.is_sparse
    assert torch.equal(sparse.X.to_dense(), dense.X)
    index = torch.tensor([2, 0])
    assert torch.equal(sparse.take(index).X.to_dense(), dense.take(index).X)
    assert torch.equal(sparse.span(1, 3).X.to_dense(), dense.span(1, 3).X)
    batch = torch.tensor([[0, 24, 24, 3], [14, 0, 14, 7], [19, 0, 5, 5]])
    (Xs, ys), (Xd, yd) = sparse.span(0, 3).gather(batch), dense.gather(batch)
    assert Xs.is_coalesced() and torch.equal(Xs.to_dense(), Xd) and torch.equal(ys, yd)


def test_loss_gradient_and_hvp_match_the_dense_path(loaded: Dataset) -> None:
    sparse, dense = both(loaded)
    batch = torch.tensor([[0, 24, 24, 3], [14, 0, 14, 7], [19, 0, 5, 5]])
    generator = torch.Generator().manual_seed(0)
    for problem in problems(loaded):
        x = torch.randn(3, problem.dim, generator=generator, dtype=torch.float64)
        v = torch.randn(3, problem.dim, generator=generator, dtype=torch.float64)
        full = [(s.X, s.y, s.weight) for s in (sparse, dense)]
        batched = [
            (*s.gather(batch), torch.ones(batch.shape, dtype=torch.float64))
            for s in (sparse, dense)
        ]
        for (Xs, ys, ws), (Xd, yd, wd) in (full, batched):
            torch.testing.assert_close(
                problem.loss(x, Xs, ys, ws), problem.loss(x, Xd, yd, wd), **TOL
            )
            torch.testing.assert_close(
                problem.grad(x, Xs, ys, ws), problem.grad(x, Xd, yd, wd), **TOL
            )
            hvp = problem.hvp(x, Xs, ys, ws, v), problem.hvp(x, Xd, yd, wd, v)
            torch.testing.assert_close(*hvp, **TOL)
            hessian = problem.hessian(x, Xs, ys, ws), problem.hessian(x, Xd, yd, wd)
            torch.testing.assert_close(*hessian, **TOL)
            per_example = problem.per_example_grads(x, Xs, ys), problem.per_example_grads(x, Xd, yd)
            torch.testing.assert_close(*per_example, **TOL)


def test_evaluation_matches_the_dense_path(loaded: Dataset) -> None:
    split = TrainTest(loaded.subset(np.arange(40)), loaded.subset(np.arange(40, 60)))
    dense = TrainTest(densified(split.train), densified(split.test))
    for problem in problems(loaded):
        evaluators = Evaluator.build(problem, split), Evaluator.build(problem, dense)
        assert evaluators[0].X_train.is_sparse and evaluators[0].X_test.is_sparse
        x = torch.linspace(-1, 1, problem.dim, dtype=torch.float64)
        losses = [e.train_loss(x) for e in evaluators]
        assert losses[0] == pytest.approx(losses[1], rel=1e-12)
        assert evaluators[0].test_metric(x) == evaluators[1].test_metric(x)


ALGORITHMS = {
    "sgd": {"sampling": "reshuffle", "batch_size": 8},
    "local-sgd": {"batch_size": 4},
    "sasg": {"batch_size": 4},
    "giant": {},
    "local-newton": {},
    "async-msgd": {},
}


def run(
    engine: type[Simulation] | type[TorchDist], path: Path, name: str, sparse: bool = True
) -> RunResult | None:
    """Six rounds of algorithm ``name`` on the small binary file at ``path`` over 3 workers."""
    data = load_libsvm(path, dense_limit=0)
    if not sparse:
        data = densified(data)
    split = TrainTest(data.subset(np.arange(45)), data.subset(np.arange(45, 60)))
    problem = LogisticRegression(12, 0.1, dtype=torch.float64)
    parts = [np.arange(0, 20), np.arange(20, 30), np.arange(30, 45)]
    shards = Shards.build(split.train, parts, torch.float64)
    evaluator = Evaluator.build(problem, split)
    algorithm = build_algorithm(name, ALGORITHMS[name])
    clock, options = ClockModel(), RunOptions(rounds=6)
    return engine(algorithm, problem, shards, evaluator, Streams(0), clock, options).run()


@pytest.fixture(scope="module")
def small_binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_libsvm(tmp_path_factory.mktemp("binary") / "small", 60, 12, 4, 2, 5)


@pytest.mark.parametrize("name", ALGORITHMS)
def test_simulated_runs_match_the_dense_path(small_binary: Path, name: str) -> None:
    sparse, dense = run(Simulation, small_binary, name), run(Simulation, small_binary, name, False)
    assert sparse is not None and dense is not None
    torch.testing.assert_close(sparse.model, dense.model, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(
        sparse.history["train_loss"], dense.history["train_loss"], rtol=1e-10
    )
    np.testing.assert_array_equal(sparse.history["grad_evals"], dense.history["grad_evals"])


def _all_ranks(rank: int, port: int, path: str, out: str) -> None:
    """Sparse shards on the worker ranks: a synchronous and an asynchronous algorithm."""
    with process_group(rank, port):
        for name in ("sgd", "async-msgd"):
            keep(run(TorchDist, Path(path), name), Path(out) / f"{name}.pt")


@pytest.mark.dist
def test_torchdist_runs_on_sparse_shards_match_simulate(small_binary: Path, tmp_path: Path) -> None:
    spawn(_all_ranks, free_port(), str(small_binary), str(tmp_path), nprocs=WORLD)
    for name in ("sgd", "async-msgd"):
        sim = run(Simulation, small_binary, name)
        assert sim is not None
        assert_same_run(load(tmp_path / f"{name}.pt"), sim)


def test_wide_files_stay_sparse_and_narrow_ones_dense(tmp_path: Path) -> None:
    rows = 8
    wide_features = DENSE_LIMIT // (8 * rows) + 1
    wide = tmp_path / "wide"
    wide.write_text(f"1 1:1 {wide_features}:2\n" + "-1 2:1\n" * (rows - 1))
    assert sp.issparse(load_libsvm(wide).X)
    assert isinstance(load_libsvm(wide, dense_limit=DENSE_LIMIT * 2).X, np.ndarray)
    split = load_libsvm_pair(wide, wide)
    assert sp.issparse(split.train.X) and sp.issparse(split.test.X)


WIDE = 100_000


@pytest.fixture(scope="module")
def wide_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """400 binary examples over 100,000 features (0.3 GB dense: kept sparse), 20 non-zeros each."""
    return write_libsvm(tmp_path_factory.mktemp("wide") / "wide.svm", 400, WIDE, 20, 2, 1)


def test_wide_data_stay_sparse_from_file_to_evaluator(wide_file: Path) -> None:
    config = {"data": f"libsvm:{wide_file},n_features={WIDE}", "workers": 4}
    prepared = prepare(make_config(config))
    assert sp.issparse(prepared.data.train.X) and sp.issparse(prepared.data.test.X)
    assert prepared.shards.X.is_sparse and prepared.shards.X.shape == (4, 75, WIDE)
    assert prepared.evaluator.X_train.is_sparse and prepared.evaluator.X_test.is_sparse
    assert isinstance(prepared.problem, LogisticRegression)


def test_cli_trains_logistic_regression_on_sparse_data(wide_file: Path, tmp_path: Path) -> None:
    data = f"libsvm:{wide_file},n_features={WIDE}"
    flags = ["--workers", "4", "--rounds", "20", "--l2", "0", "--set", "lr=3"]
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["run", "--data", data, *flags, "--out", str(out)])
    assert result.exit_code == 0, result.output
    history = pd.read_csv(out / "history.csv")
    assert history["train_loss"].iloc[0] == pytest.approx(np.log(2), rel=1e-5)
    assert history["train_loss"].iloc[-1] < 0.3  # 0.259 when written (sgd, batches of 32)


def test_models_that_need_dense_features_are_refused(wide_file: Path, tmp_path: Path) -> None:
    data = f"libsvm:{wide_file},n_features={WIDE}"
    args = ["run", "--data", data, "--model", "mlp", "--out", str(tmp_path / "o")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    assert "must be logistic or softmax for sparse data" in result.stderr
    assert "400 x 100000 features would take 0.30 GiB dense, over the 0.25 GiB" in result.stderr
    assert not (tmp_path / "o").exists()
