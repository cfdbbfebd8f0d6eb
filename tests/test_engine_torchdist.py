"""The torchdist engine against simulate: same models, ledgers, histories, checkpoints.

One module fixture spawns an aggregator and two worker ranks over gloo on 127.0.0.1, runs every
scenario in that one process group and leaves rank 0's results in files; each test then runs
its scenarios on the simulate engine in the test process and compares.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import pytest
import torch
import torch.distributed as dist

from lowcomm.algorithms.base import Algorithm, Context
from lowcomm.algorithms.local_data import LocalData
from lowcomm.algorithms.registry import build_algorithm
from lowcomm.algorithms.sgd import SGD, SGDConfig
from lowcomm.core.clock import ClockModel, ComputeModel, Link, NetworkModel
from lowcomm.core.errors import InvalidConfigError
from lowcomm.core.ledger import COUNTERS
from lowcomm.core.messages import AnyPayload, Bundle, Dense, Download, Sparse, Upload
from lowcomm.core.rng import Streams
from lowcomm.data.dataset import Dataset, Shards, TrainTest
from lowcomm.engines.evaluation import Evaluator
from lowcomm.engines.session import RunOptions, RunResult, RunState, load_checkpoint
from lowcomm.engines.simulate import Simulation
from lowcomm.engines.torchdist import TorchDist, init_process_group, worker_groups
from lowcomm.problems.base import Problem
from lowcomm.problems.logistic import LogisticRegression
from tests.test_conformance import CASES, VARIANTS
from tests.test_wire import free_port, spawn

WORLD = 3  # one aggregator, two worker ranks hosting workers [0, 1, 2] and [3, 4]
SIZES = (14, 23, 31, 9, 40)
D = 6


class Case:
    """A binary logistic problem over five workers with unequal shards, built identically."""

    def __init__(self) -> None:
        rng = np.random.default_rng(11)
        n = sum(SIZES)
        X = rng.normal(size=(n + 50, D))
        y = (X @ np.linspace(1, -1, D) + 0.5 * rng.normal(size=n + 50) > 0).astype(np.int64)
        data = Dataset("toy", X, y, 2)
        self.data = TrainTest(data.subset(np.arange(n)), data.subset(np.arange(n, n + 50)))
        parts = np.split(rng.permutation(n), np.cumsum(SIZES)[:-1])
        self.problem = LogisticRegression(D, l2=1e-3, dtype=torch.float64)
        self.shards = Shards.build(self.data.train, parts, torch.float64)
        self.evaluator = Evaluator.build(self.problem, self.data)
        network = NetworkModel(Link(0.01, 1e5), {1: Link(0.05, 2e4)})
        self.clock = ClockModel(network, ComputeModel(1e-4, 0.0, (1.0, 2.0, 0.5)))

    def engine(self, kind: type, algorithm: Algorithm, rounds: int, **options: Any) -> Any:
        run_options = RunOptions(rounds=rounds, **options)
        parts = (self.problem, self.shards, self.evaluator, Streams(3), self.clock, run_options)
        return kind(algorithm, *parts)


class ToyState(NamedTuple):
    params: torch.Tensor
    senders: torch.Tensor


class Residual(NamedTuple):
    residual: torch.Tensor


class SparseSkip:
    """A toy with ragged sparse messages both ways, skips and worker state.

    Each round the aggregator sends every worker (point-to-point) the model and a request for
    k_w = (w + round) % 4 coordinates (a Sparse row, possibly empty). A worker skips when
    (w + round) % 3 == 0, and all skip when round % 5 == 4; otherwise it uploads its gradient
    plus residual at the requested coordinates and keeps the rest as its residual.
    """

    name = "sparse-skip"
    synchronous = True

    def init(self, problem: Problem, sizes: torch.Tensor, streams: Streams) -> tuple[Any, Download]:
        params = problem.init_params(streams.generator("init"))
        return ToyState(params, torch.tensor(0)), self._download(params, sizes.shape[0], 0)

    def init_workers(self, problem: Problem, workers: torch.Tensor, streams: Streams) -> Residual:
        return Residual(torch.zeros(workers.shape[0], problem.dim, dtype=problem.dtype))

    def _download(self, params: torch.Tensor, n: int, round_: int) -> Download:
        counts = (torch.arange(n) + round_) % 4
        columns = (torch.arange(n)[:, None] + round_ + torch.arange(3)[None, :]) % params.shape[0]
        request = Sparse(columns.int(), params[columns], counts, params.shape[0])
        return Download(Bundle((Dense(params.expand(n, -1).clone()), request)), broadcast=False)

    def local(
        self, state: Residual, down: AnyPayload, data: LocalData, ctx: Context
    ) -> tuple[Upload, Residual]:
        assert isinstance(down, Bundle)
        model, request = down.parts
        assert isinstance(model, Dense) and isinstance(request, Sparse)
        g = data.grad(model.values) + state.residual
        sent = ((ctx.workers + ctx.round) % 3 != 0) & (ctx.round % 5 != 4)
        values = torch.gather(g, 1, request.indices.long())
        up = Sparse(request.indices, values, request.counts, request.dim)
        return Upload(up, sent), Residual(g - up.to_dense() * sent[:, None])

    def aggregate(self, state: ToyState, up: Upload, ctx: Context) -> tuple[Any, Download]:
        assert isinstance(up.payload, Sparse)
        total = (up.payload.to_dense() * up.sent[:, None]).sum(dim=0)
        params = state.params - 0.5 * total / ctx.n_workers
        new = ToyState(params, up.sent.sum())
        return new, self._download(params, ctx.n_workers, ctx.round + 1)

    def model(self, state: ToyState) -> torch.Tensor:
        return state.params

    def metrics(self, state: ToyState) -> dict[str, float]:
        return {"senders": float(state.senders)}


def builtin() -> dict[str, tuple[Algorithm, int]]:
    """Every registered synchronous algorithm, with its conformance settings, for 6 rounds."""
    algorithms = {name: build_algorithm(name, settings) for name, (settings, _, _) in CASES.items()}
    runs = {name: (a, 6) for name, a in algorithms.items() if a.synchronous}
    # example orders: per-worker permutation and sign-bit downloads, b = 1 pairs across steps
    # adaptive LocalNewton that goes on as GIANT once L = 1 stalls: both protocols in one run
    switching = {"local_steps": 2, "adaptive": True, "tolerance": 1e-6, "then_giant": True}
    runs["local-newton-then-giant"] = (build_algorithm("local-newton", switching), 24)
    for order in ("cd-grab", "cd-grab-signs", "id-grab"):
        settings = {"order": order, "batch_size": 1, "lr": 0.2, "projection": 3}
        runs[f"sgd-{order}"] = (build_algorithm("sgd", settings), 20)
    # minibatch units of 2: 4 units per epoch (smallest shard 9), unit orders sent 4 times
    settings = {"order": "cd-grab", "unit": "minibatch", "batch_size": 2, "lr": 0.2}
    runs["sgd-cd-grab-minibatch"] = (build_algorithm("sgd", settings), 20)
    # every compressor on every synchronous algorithm that takes one
    for label, (name, (settings, _, _)) in VARIANTS.items():
        algorithm = build_algorithm(name, settings)
        if "[" in label and algorithm.synchronous:
            runs[label] = (algorithm, 6)
    return runs


@contextmanager
def process_group(rank: int, port: int) -> Iterator[None]:
    torch.set_num_threads(1)
    url = f"tcp://127.0.0.1:{port}"
    timeout = timedelta(seconds=60)
    dist.init_process_group("gloo", init_method=url, rank=rank, world_size=WORLD, timeout=timeout)
    try:
        yield
    finally:
        dist.destroy_process_group()


def keep(result: RunResult | None, path: Path) -> None:
    """Rank 0 writes what the comparison needs; the other ranks must get None."""
    if dist.get_rank() != 0:
        assert result is None
        return
    assert result is not None
    divergence = result.divergence
    torch.save(
        {
            "history": result.history,
            "records": result.ledger.records(),
            "sync_rounds": result.ledger.sync_rounds,
            "totals": result.ledger.totals,
            "model": result.model,
            "divergence": None if divergence is None else (divergence.round, divergence.loss),
        },
        path,
    )


def load(path: Path) -> dict[str, Any]:
    kept: dict[str, Any] = torch.load(path, weights_only=False)
    return kept


def assert_same_run(td: dict[str, Any], sim: RunResult) -> None:
    torch.testing.assert_close(td["model"], sim.model, rtol=0.0, atol=1e-5)
    pd.testing.assert_frame_equal(td["records"], sim.ledger.records())
    assert td["sync_rounds"] == sim.ledger.sync_rounds
    for counter in COUNTERS:
        np.testing.assert_array_equal(td["totals"][counter], sim.ledger.totals[counter])
    # Counters and simulated time are exact; losses are bit-identical on CPU (tolerance 1e-9).
    pd.testing.assert_frame_equal(
        td["history"].drop(columns="wall_time"),
        sim.history.drop(columns="wall_time"),
        rtol=1e-9,
        atol=1e-12,
    )


def _all_ranks(rank: int, port: int, out: str) -> None:
    """Every scenario in one process group: the built-in algorithms, then the toy."""
    folder = Path(out)
    with process_group(rank, port):
        case = Case()
        for name, (algorithm, rounds) in builtin().items():
            result = case.engine(TorchDist, algorithm, rounds, eval_every=2).run()
            keep(result, folder / f"{name}.pt")
        toy = SparseSkip()
        keep(case.engine(TorchDist, toy, 10, eval_every=3).run(), folder / "toy.pt")
        options = {"eval_every": 3, "checkpoint_every": 3, "checkpoint_dir": folder / "td"}
        case.engine(TorchDist, toy, 6, **options).run()
        resume = load_checkpoint(folder / "td", modules=(__name__,)) if rank == 0 else None
        keep(case.engine(TorchDist, toy, 10, eval_every=3).run(resume), folder / "resumed.pt")
        sgd = SGD(SGDConfig(lr=1e150, batch_size=5))
        options = {"checkpoint_every": 1, "checkpoint_dir": folder / "td-diverged"}
        keep(case.engine(TorchDist, sgd, 50, **options).run(), folder / "diverged.pt")


@pytest.fixture(scope="module")
def torchdist_runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder where rank 0 of one 3-process torchdist group left every scenario's result."""
    folder = tmp_path_factory.mktemp("torchdist")
    spawn(_all_ranks, free_port(), str(folder), nprocs=WORLD)
    return folder


@pytest.mark.dist
def test_every_registered_algorithm_matches_simulate(torchdist_runs: Path) -> None:
    case = Case()
    for name, (algorithm, rounds) in builtin().items():
        sim = case.engine(Simulation, algorithm, rounds, eval_every=2).run()
        assert_same_run(load(torchdist_runs / f"{name}.pt"), sim)
        if name == "local-newton-then-giant":
            assert 0 in sim.history["local_steps"].tolist(), "the run switched to GIANT"


@pytest.mark.dist
def test_skips_ragged_sparse_checkpoints_and_divergence_match_simulate(
    torchdist_runs: Path, tmp_path: Path
) -> None:
    td = torchdist_runs
    case, toy = Case(), SparseSkip()
    sim = case.engine(Simulation, toy, 10, eval_every=3).run()
    assert_same_run(load(td / "toy.pt"), sim)
    assert_same_run(load(td / "resumed.pt"), sim)
    assert sim.ledger.totals["uploads"].sum() < 5 * 10  # skips happened
    assert 0 in sim.history["senders"].tolist()  # a round in which every worker skipped

    options = {"eval_every": 3, "checkpoint_every": 3, "checkpoint_dir": tmp_path / "sim"}
    case.engine(Simulation, toy, 6, **options).run()
    assert_same_state(
        load_checkpoint(td / "td", modules=(__name__,)),
        load_checkpoint(tmp_path / "sim", modules=(__name__,)),
    )

    sgd = SGD(SGDConfig(lr=1e150, batch_size=5))
    options = {"checkpoint_every": 1, "checkpoint_dir": tmp_path / "sim-diverged"}
    diverged = case.engine(Simulation, sgd, 50, **options).run()
    assert diverged.divergence is not None
    kept = load(td / "diverged.pt")
    assert kept["divergence"][0] == diverged.divergence.round
    assert_same_run(kept, diverged)
    a, b = (
        load_checkpoint(td / "td-diverged", modules=(__name__,)),
        load_checkpoint(tmp_path / "sim-diverged", modules=(__name__,)),
    )
    assert a.round == b.round < diverged.divergence.round


def assert_same_state(td: RunState, sim: RunState) -> None:
    """A torchdist checkpoint holds what simulate's holds, worker state included."""
    assert td.round == sim.round and td.sim_time == sim.sim_time
    torch.testing.assert_close(td.workers.residual, sim.workers.residual, rtol=0.0, atol=1e-12)
    torch.testing.assert_close(td.aggregator.params, sim.aggregator.params, rtol=0.0, atol=1e-12)
    pd.testing.assert_frame_equal(td.ledger.records(), sim.ledger.records())
    assert td.download.broadcast == sim.download.broadcast


def test_the_rank_layout_is_checked() -> None:
    assert [g.tolist() for g in worker_groups(3, 5)] == [[0, 1, 2], [3, 4]]
    assert [g.tolist() for g in worker_groups(6, 5)] == [[0], [1], [2], [3], [4]]
    with pytest.raises(InvalidConfigError, match=r"WORLD_SIZE.*>= 2"):
        worker_groups(1, 5)
    with pytest.raises(InvalidConfigError, match=r"WORLD_SIZE.*at most 6"):
        worker_groups(7, 5)


def test_a_launch_without_torchrun_is_explained(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("RANK", "WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(InvalidConfigError, match=r"RANK.*torchrun"):
        init_process_group()
