"""The public API: a user's own module, loss and arrays through ``lowcomm.run`` and ``compare``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset

import lowcomm
from lowcomm.core.errors import InvalidConfigError
from tests.test_engine_torchdist import process_group
from tests.test_wire import free_port, spawn

RUNS = {
    "sasg": {"lr": 0.1, "batch_size": 8},
    "hogwild-ib": {"step": "const:0.05", "sample_sizes": "linear:1,2"},
}
"""A synchronous and an asynchronous algorithm, each with its own settings."""


class TwoLayer(nn.Module):
    """The user's network."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.hidden = nn.Linear(5, 8)
        self.out = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.tanh(self.hidden(x)))


def smooth_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The user's loss: label-smoothed cross-entropy, mean-reduced."""
    return F.cross_entropy(logits, y, label_smoothing=0.1)


def arrays(n: int = 240, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Three Gaussian blobs in 5 dimensions."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    X = rng.normal(size=(n, 5)) + 2.0 * np.eye(3, 5)[y]
    return X.astype(np.float32), y


def user_run(algorithm: str, engine: str = "simulate", **kwargs: object) -> lowcomm.Result | None:
    X, y = arrays()
    return lowcomm.run(
        algorithm,
        model=TwoLayer(),
        loss=smooth_loss,
        data=(X, y),
        workers=4,
        partition="dirichlet:0.5",
        rounds=12,
        settings=RUNS[algorithm],
        seed=1,
        engine=engine,
        **kwargs,
    )


def _ranks(rank: int, port: int, out: str) -> None:
    with process_group(rank, port):
        for algorithm in RUNS:
            result = user_run(algorithm, engine="torchdist")
            if dist.get_rank() == 0:
                assert result is not None
                torch.save({"ledger": result.ledger, "params": result.params}, f"{out}/{algorithm}")
            else:
                assert result is None


@pytest.mark.dist
def test_own_module_loss_and_arrays_agree_on_both_engines(tmp_path: Path) -> None:
    spawn(_ranks, free_port(), str(tmp_path), nprocs=3)
    for algorithm in RUNS:
        simulated = user_run(algorithm)
        assert simulated is not None
        distributed = torch.load(tmp_path / algorithm, weights_only=False)
        pd.testing.assert_frame_equal(distributed["ledger"], simulated.ledger)
        torch.testing.assert_close(distributed["params"], simulated.params, rtol=0, atol=1e-5)


def test_run_trains_the_users_module_and_returns_its_state_dict(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = user_run("sasg")
    assert result is not None
    assert list(tmp_path.iterdir()) == [], "out=None writes nothing"
    history = result.history
    assert history["train_loss"].iloc[-1] < 0.75 * history["train_loss"].iloc[0]
    net = TwoLayer()
    net.load_state_dict(result.model)
    assert result.metadata["data"]["n_train"] == 180, "a quarter is held out for the test"
    assert result.metadata["data"]["n_test"] == 60
    params = torch.nn.utils.parameters_to_vector(net.parameters())
    torch.testing.assert_close(params, result.params)


def test_result_history_and_ledger_are_what_the_run_folder_holds(tmp_path: Path) -> None:
    result = user_run("hogwild-ib", out=tmp_path / "run")
    assert result is not None
    saved = pd.read_csv(tmp_path / "run" / "history.csv")
    pd.testing.assert_frame_equal(saved, result.history, check_dtype=False)
    ledger = pd.read_csv(tmp_path / "run" / "ledger.csv")
    pd.testing.assert_frame_equal(ledger, result.ledger, check_dtype=False)
    assert result.ledger["bytes_up"].sum() == result.history["bytes_up"].iloc[-1]


def test_same_seed_same_trajectory_and_a_dataset_equals_its_arrays() -> None:
    X, y = arrays()
    first = lowcomm.run("sgd", model=TwoLayer(), data=(X, y), rounds=5, settings={"lr": 0.2})
    again = lowcomm.run(
        "sgd",
        model=TwoLayer(),
        data=TensorDataset(torch.from_numpy(X), torch.from_numpy(y)),
        rounds=5,
        settings={"lr": 0.2},
    )
    assert first is not None and again is not None
    pd.testing.assert_frame_equal(
        first.history.drop(columns="wall_time"), again.history.drop(columns="wall_time")
    )
    assert torch.equal(first.params, again.params)


def test_an_explicit_test_set_is_used_whole_and_training_keeps_every_example() -> None:
    X, y = arrays(300)
    result = lowcomm.run(
        "gd", model="softmax", data=(X[:200], y[:200]), test=(X[200:], y[200:]), rounds=3
    )
    assert result is not None
    assert result.metadata["data"]["n_train"] == 200
    assert result.metadata["data"]["n_test"] == 100
    assert sum(result.metadata["partition"]["sizes"]) == 200


def test_batch_norm_module_returns_training_set_statistics() -> None:
    """In eval mode the returned module reproduces the reported training loss (to 1e-3)."""
    X, y = arrays(400)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(5, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 3))
    result = lowcomm.run(
        "local-sgd",
        model=net,
        data=(X[:300], y[:300]),
        test=(X[300:], y[300:]),
        workers=3,
        rounds=20,
        settings={"lr": 0.1},
        l2=0.0,
    )
    assert result is not None
    net.load_state_dict(result.model)
    net.eval()
    with torch.no_grad():
        loss = F.cross_entropy(net(torch.from_numpy(X[:300])), torch.from_numpy(y[:300]))
    reported = result.history["train_loss"].iloc[-1]
    assert reported < result.history["train_loss"].iloc[0]
    assert float(loss) == pytest.approx(reported, abs=1e-3)


def test_compare_shares_data_and_seeds_and_writes_nothing_without_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    X, y = arrays()
    comparison = lowcomm.compare(
        ["sgd", "local-sgd"],
        seeds=[0, 1],
        model=TwoLayer(),
        data=(X, y),
        rounds=4,
        settings={"lr": 0.1, "local-sgd": {"local_steps": 2}},
    )
    assert list(tmp_path.iterdir()) == []
    assert comparison.summary["algorithm"].tolist() == ["sgd", "local-sgd"]
    sgd, local = comparison.runs["sgd"], comparison.runs["local-sgd"]
    assert [r.config.seed for r in sgd] == [0, 1]
    assert local[0].config.options == {"lr": 0.1, "local_steps": 2}
    assert local[0].metadata["partition"] == sgd[0].metadata["partition"]
    assert sgd[0].history["train_loss"].iloc[0] == local[0].history["train_loss"].iloc[0]
    alone = lowcomm.run(
        "sgd", model=TwoLayer(), data=(X, y), rounds=4, seed=1, settings={"lr": 0.1}
    )
    assert alone is not None
    assert torch.equal(alone.params, sgd[1].params)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"data": "digits", "test": (np.zeros((2, 64)), np.zeros(2))}, "'test' parameter"),
        ({"data": (np.zeros((5, 3)), np.zeros(4))}, r"X\[n, features...\] and y\[n\]"),
        ({"data": (np.full((5, 3), np.nan), np.arange(5) % 2)}, "finite features"),
        ({"model": "no_such_package.models:net"}, "importable package.module:name"),
        ({"model": "tests.test_api:arrays"}, "a callable returning a torch.nn.Module"),
        ({"model": "resnet"}, "'model' parameter of the run config"),
        ({"algorithm": "sgd", "settings": {"lr": -1.0}}, "'lr' parameter of sgd"),
    ],
)
def test_bad_input_is_one_clear_error_and_nothing_is_written(
    tmp_path: Path, kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(InvalidConfigError, match=message):
        lowcomm.run(out=tmp_path / "out", rounds=2, **kwargs)  # type: ignore[arg-type]
    assert not (tmp_path / "out").exists()


def test_public_names_are_exported() -> None:
    assert set(lowcomm.__all__) <= set(dir(lowcomm))
    for name in lowcomm.__all__:
        assert getattr(lowcomm, name) is not None
    with pytest.raises(AttributeError):
        lowcomm.no_such_name  # noqa: B018


def test_a_wide_sparse_matrix_stays_sparse_and_trains_as_its_dense_twin() -> None:
    """120,000 columns, all zero but the first 20: the same losses as the 20 dense columns."""
    rng = np.random.default_rng(3)
    narrow = rng.normal(size=(300, 20)) * (rng.random((300, 20)) < 0.3)
    y = (narrow @ rng.normal(size=20) > 0).astype(int)
    wide = sp.hstack([sp.csr_matrix(narrow), sp.csr_matrix((300, 119_980))], format="csr")
    runs = [
        lowcomm.run("gd", data=(X, y), workers=3, rounds=4, model="logistic")
        for X in (wide, narrow)
    ]
    assert runs[0] is not None and runs[1] is not None
    assert runs[0].metadata["data"]["feature_shape"] == [120_000]
    for column in ("train_loss", "test_metric", "grad_evals"):
        np.testing.assert_allclose(runs[0].history[column], runs[1].history[column], rtol=1e-6)
    assert runs[0].history["train_loss"].iloc[-1] < 0.9 * runs[0].history["train_loss"].iloc[0]
