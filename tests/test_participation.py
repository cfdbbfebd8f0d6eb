"""Partial participation: K seeded workers per round, on both engines, or a one-line refusal."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

import lowcomm
from lowcomm.algorithms.registry import REGISTRY, build_algorithm
from lowcomm.cli import app
from lowcomm.core.errors import InvalidConfigError
from lowcomm.core.rng import Streams
from lowcomm.engines.participation import Participants, per_round
from lowcomm.engines.session import RunResult, load_checkpoint
from lowcomm.engines.simulate import Simulation
from lowcomm.engines.torchdist import TorchDist
from tests.conftest import Setup
from tests.test_engine_torchdist import (
    WORLD,
    Case,
    SparseSkip,
    assert_same_run,
    keep,
    load,
    process_group,
)
from tests.test_wire import free_port, spawn

DIGITS: dict[str, Any] = {"data": "digits", "workers": 8}
TAKING = ("sgd", "local-sgd", "async-msgd")  # async-msgd with a delay model: synchronous
REFUSING = ("gd", "sasg", "lasg", "lag", "topk-ef", "giant", "hogwild-ib")


def uploaders(ledger: pd.DataFrame) -> dict[int, list[int]]:
    """Round -> the workers that uploaded in it."""
    sent = ledger.loc[ledger["uploads"] > 0]
    return {int(r): group["worker"].tolist() for r, group in sent.groupby("round")}


def drawn(seed: int, n: int, k: int, rounds: int) -> dict[int, list[int]]:
    """Round (1-based, as the ledger counts) -> the participants drawn for it."""
    sample = Participants(Streams(seed), n, k)
    return {r: sample.of(r - 1).tolist() for r in range(1, rounds + 1)}  # type: ignore[union-attr]


def same_result(a: RunResult, b: RunResult) -> None:
    """Bit-identical models, histories (but wall time) and ledgers."""
    assert torch.equal(a.model, b.model)
    pd.testing.assert_frame_equal(
        a.history.drop(columns="wall_time"), b.history.drop(columns="wall_time")
    )
    pd.testing.assert_frame_equal(a.ledger.records(), b.ledger.records())


@pytest.mark.parametrize(
    ("n", "fraction", "count", "k"),
    [
        (8, 0.5, None, 4),
        (5, 0.5, None, 3),
        (10, 0.3, None, 3),
        (8, 0.01, None, 1),
        (8, None, 3, 3),
        (8, 1.0, None, None),
        (8, None, 8, None),
        (8, None, None, None),
    ],
)
def test_k_is_round_p_n_halves_up_at_least_one_and_none_for_everyone(
    n: int, fraction: float | None, count: int | None, k: int | None
) -> None:
    assert per_round(n, fraction, count) == k


def test_the_sample_is_k_distinct_workers_seeded_by_seed_and_round() -> None:
    sets = drawn(3, 10, 4, 50)
    assert all(len(s) == len(set(s)) == 4 and s == sorted(s) for s in sets.values())
    assert sets == drawn(3, 10, 4, 50)
    assert sets != drawn(4, 10, 4, 50)
    assert len({tuple(s) for s in sets.values()}) > 25  # rounds draw different sets
    every = Participants(Streams(3), 10, 4)
    assert every.within(6, 3, 7).tolist() == [w - 3 for w in sets[7] if 3 <= w < 7]  # type: ignore[union-attr]
    assert Participants(Streams(3), 10, None).of(0) is None


def test_only_participants_compute_receive_and_send(setup: Setup, tmp_path: Path) -> None:
    settings = {"lr": 0.3, "batch_size": 8, "compressor": "topk:0.4", "error_feedback": True}
    sgd = build_algorithm("sgd", settings)
    result = setup.run(sgd, 6, seed=5, per_round=2)
    ledger = result.ledger.records()
    chosen = drawn(5, 4, 2, 6)
    assert uploaders(ledger) == chosen
    active = {int(r): g["worker"].tolist() for r, g in ledger.groupby("round")}
    assert active == chosen  # downloads and gradient evaluations too: no row for the others
    assert (ledger["grad_evals"] == 8).all() and (ledger["downloads"] == 1).all()
    assert result.ledger.sync_rounds == 6
    # one round, checkpointed: only its participants' error memory moved from zero
    options = {"per_round": 2, "checkpoint_every": 1, "checkpoint_dir": tmp_path}
    setup.run(sgd, 1, seed=5, **options)
    memory = load_checkpoint(tmp_path).workers
    moved = [w for w in range(4) if bool(torch.any(memory[0][w] != 0))]
    assert moved == chosen[1]


def test_everyone_is_the_full_run_bit_for_bit(setup: Setup) -> None:
    local_sgd = build_algorithm("local-sgd", {"lr": 0.3, "batch_size": 8, "local_steps": 2})
    same_result(setup.run(local_sgd, 5, per_round=4), setup.run(local_sgd, 5))
    full, everyone = (lowcomm.run("sgd", rounds=3, **DIGITS, participation=p) for p in (None, 1))
    assert full is not None and everyone is not None
    pd.testing.assert_frame_equal(
        full.history.drop(columns="wall_time"), everyone.history.drop(columns="wall_time")
    )
    pd.testing.assert_frame_equal(full.ledger, everyone.ledger)
    assert torch.equal(full.params, everyone.params)
    # all workers is no sample: algorithms that refuse one take it
    giant = lowcomm.run("giant", rounds=2, data="synthetic-logistic:400,5", participation=1)
    assert giant is not None and giant.history["uploads"].iloc[-1] == 2 * 8


def test_a_resumed_run_draws_the_same_participants(setup: Setup, tmp_path: Path) -> None:
    local_sgd = build_algorithm("local-sgd", {"lr": 0.3, "batch_size": 8, "local_steps": 2})
    straight = setup.run(local_sgd, 8, seed=2, per_round=3)
    setup.run(local_sgd, 4, seed=2, per_round=3, checkpoint_every=4, checkpoint_dir=tmp_path)
    same_result(
        setup.resume(local_sgd, 8, load_checkpoint(tmp_path), seed=2, per_round=3), straight
    )


def test_fedavg_with_half_the_workers_learns_digits_and_records_the_option(
    tmp_path: Path,
) -> None:
    out = tmp_path / "run"
    result = lowcomm.run("local-sgd", rounds=20, **DIGITS, participation=0.5, out=out, seed=1)
    assert result is not None
    assert uploaders(result.ledger) == drawn(1, 8, 4, 20)  # round(0.5 * 8) = 4 a round
    first, last = result.history["train_loss"].iloc[[0, -1]]
    assert first == pytest.approx(np.log(10), abs=1e-3) and last < 1.35  # reached: 1.26
    saved = json.loads((out / "run.json").read_text())["config"]
    assert (saved["participation"], saved["per_round"]) == (0.5, None)


def test_a_config_file_and_a_resume_keep_the_sample_and_refuse_another(tmp_path: Path) -> None:
    def cli(*args: str | Path) -> Any:
        return CliRunner().invoke(app, ["run", "-q", *map(str, args)])

    common = ["--data", "synthetic-logistic:400,5", "--workers", "5", "--per-round", "2"]
    config = tmp_path / "run.toml"  # the first part set in a config file, the rest by flags
    config.write_text('data = "synthetic-logistic:400,5"\nworkers = 5\nper_round = 2\n')
    first = cli(config, "--rounds", "4", "--checkpoint-every", "2", "--out", tmp_path / "a")
    assert first.exit_code == 0, first.output
    assert cli("--resume", "--rounds", "6", "--out", tmp_path / "a").exit_code == 0
    assert cli(*common, "--rounds", "6", "--out", tmp_path / "b").exit_code == 0
    a, b = (pd.read_csv(tmp_path / name / "history.csv") for name in ("a", "b"))
    pd.testing.assert_frame_equal(a.drop(columns="wall_time"), b.drop(columns="wall_time"))
    assert a["uploads"].tolist() == [0, 2, 4, 6, 8, 10, 12]
    other = cli("--resume", "--rounds", "6", "--per-round", "3", "--out", tmp_path / "a")
    assert other.exit_code == 2
    assert other.stderr.startswith("error: The 'per_round' parameter of lowcomm run --resume")


def test_compare_samples_every_run_or_refuses_before_any(tmp_path: Path) -> None:
    data: dict[str, Any] = {"data": "synthetic-logistic:400,5", "workers": 5, "rounds": 3}
    compared = lowcomm.compare(["sgd", "local-sgd"], seeds=[0, 1], per_round=2, **data)
    for name, results in compared.runs.items():
        for seed, result in enumerate(results):
            assert uploaders(result.ledger) == drawn(seed, 5, 2, 3), (name, seed)
    flags = [f"--{key}={value}" for key, value in data.items()]
    out = tmp_path / "refused"
    refused = CliRunner().invoke(
        app,
        ["compare", *flags, "--algorithms", "sgd,gd", "--participation", "0.4", "--out", str(out)],
    )
    assert refused.exit_code == 2
    assert refused.stderr == (
        "error: The 'participation' parameter of the run config must be left out for gd: its "
        "gradient and line-search rounds must hear the same workers. Got 0.4.\n"
    )
    assert not out.exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--algorithm", "giant", "--participation", "0.5"],
            "The 'participation' parameter of the run config must be left out for giant: its "
            "gradient, direction and line-search rounds must hear the same workers. Got 0.5.",
        ),
        (
            ["--algorithm", "hogwild-ib", "--per-round", "2"],
            "The 'per_round' parameter of the run config must be left out for hogwild-ib: it is "
            "asynchronous (each worker takes part whenever its upload arrives). Got 2.",
        ),
        (
            ["--order", "d-rr", "--per-round", "2"],
            "The 'per_round' parameter of the run config must be left out for sgd: an example "
            "order steps every shard in lock-step. Got 2.",
        ),
        (
            ["--set", "sampling=reshuffle", "--per-round", "2"],
            "The 'per_round' parameter of the run config must be left out for sgd: reshuffled "
            "batches are keyed by round: a worker sitting rounds out skips examples. Got 2.",
        ),
        (
            ["--participation", "0.5", "--per-round", "2"],
            "The 'per_round' parameter of the run config must be left out when participation "
            "is given (one or the other). Got 2.",
        ),
        (
            ["--per-round", "9"],
            "The 'per_round' parameter of the run config must be an integer in [1, 8] (at most "
            "the workers). Got 9.",
        ),
        (
            ["--participation", "0"],
            "The 'participation' parameter of the run config must be a fraction in (0, 1]. "
            "Got 0.0.",
        ),
    ],
)
def test_refusals_are_one_line_before_anything_is_written(
    args: list[str], message: str, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["run", "--out", str(out), "--rounds", "1", *args])
    assert result.exit_code == 2
    assert result.stderr == f"error: {message}\n"
    assert not out.exists()


def test_every_algorithm_declares_whether_it_takes_part_time_workers() -> None:
    assert set(TAKING) | set(REFUSING) | {"local-newton"} == set(REGISTRY)
    listing = CliRunner().invoke(app, ["algorithms", "local-newton"])
    caption = " ".join(listing.stdout.split())
    expected = (
        "yes with adaptive=false; otherwise no: adaptive L judges F, reported by every worker"
    )
    assert f"partial participation: {expected}" in caption


def test_the_engines_refuse_an_asynchronous_run_and_too_many_workers(setup: Setup) -> None:
    hogwild = build_algorithm("hogwild-ib", {})
    with pytest.raises(InvalidConfigError, match="'per_round' parameter of the run of hogwild-ib"):
        setup.run(hogwild, 2, per_round=2)
    with pytest.raises(InvalidConfigError, match=r"must be at most the 4 workers\. Got 5\."):
        setup.run(build_algorithm("sgd", {}), 2, per_round=5)


# --- torchdist ----------------------------------------------------------------------------------


def scenarios() -> dict[str, tuple[Any, int, int]]:
    """Label -> (algorithm, rounds, K of the 5 workers of :class:`Case`)."""
    return {
        "local-sgd": (build_algorithm("local-sgd", {"lr": 0.3, "batch_size": 4}), 8, 2),
        "sgd-ef": (
            build_algorithm("sgd", {"compressor": "topk:0.5", "error_feedback": True}),
            8,
            3,
        ),
        "async-msgd": (build_algorithm("async-msgd", {"lr": 0.3, "delay": "uniform:2"}), 8, 2),
        "toy": (SparseSkip(), 10, 3),
    }


def _ranks(rank: int, port: int, out: str) -> None:
    """Every scenario with partial participation in one torchdist group, then a resume."""
    folder = Path(out)
    with process_group(rank, port):
        case = Case()
        for label, (algorithm, rounds, k) in scenarios().items():
            result = case.engine(TorchDist, algorithm, rounds, eval_every=2, per_round=k).run()
            keep(result, folder / f"{label}.pt")
        toy = SparseSkip()
        options = {"checkpoint_every": 6, "checkpoint_dir": folder / "td", "per_round": 3}
        case.engine(TorchDist, toy, 6, eval_every=2, **options).run()
        modules = (SparseSkip.__module__,)
        resume = load_checkpoint(folder / "td", modules=modules) if rank == 0 else None
        resumed = case.engine(TorchDist, toy, 10, eval_every=2, per_round=3).run(resume)
        keep(resumed, folder / "resumed.pt")


@pytest.mark.dist
def test_torchdist_samples_the_same_workers_and_ledger_as_simulate(tmp_path: Path) -> None:
    spawn(_ranks, free_port(), str(tmp_path), nprocs=WORLD)
    case = Case()
    for label, (algorithm, rounds, k) in scenarios().items():
        sim = case.engine(Simulation, algorithm, rounds, eval_every=2, per_round=k).run()
        assert_same_run(load(tmp_path / f"{label}.pt"), sim)
        ledger, sets = sim.ledger.records(), drawn(3, 5, k, rounds)
        assert {int(r): g["worker"].tolist() for r, g in ledger.groupby("round")} == sets
        assert all(set(w) <= set(sets[r]) for r, w in uploaders(ledger).items())
    # rounds in which one of the worker ranks (hosting workers 0-2 and 3-4) had nobody
    local_sgd = drawn(3, 5, 2, 8).values()
    assert any(max(s) <= 2 for s in local_sgd) and any(min(s) >= 3 for s in local_sgd)
    toy = case.engine(Simulation, SparseSkip(), 10, eval_every=2, per_round=3).run()
    assert_same_run(load(tmp_path / "resumed.pt"), toy)
    assert sum(map(len, uploaders(toy.ledger.records()).values())) < 3 * 10  # skips too
