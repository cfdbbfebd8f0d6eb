"""The command line: run, compare and plot end to end on tiny problems, and its errors."""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner, Result

from lowcomm.algorithms.registry import REGISTRY
from lowcomm.cli import app, parse_sets
from lowcomm.core.errors import InvalidConfigError
from lowcomm.engines.asynchrony import event_order
from lowcomm.experiments.results import mean_history

KNOWN = ", ".join(REGISTRY)

DATA = ["--data", "synthetic-logistic:400,5", "--workers", "5"]
COUNTERS = ["uploads", "downloads", "bytes_up", "bytes_down", "grad_evals", "hvps", "sync_rounds"]
CONTRACT = ["round", *COUNTERS, "sim_time", "wall_time", "train_loss", "test_metric"]


def lowcomm(*args: str | Path) -> Result:
    return CliRunner().invoke(app, [str(a) for a in args])


def one_error_line(result: Result) -> str:
    """The single stderr line of a failed command (no traceback, nothing else)."""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert "Traceback" not in result.output
    return lines[0]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "run"
    sets = ["--set", "lr=0.5", "--set", "batch_size=8"]
    result = lowcomm(
        "run", *DATA, "--rounds", "5", "--partition", "dirichlet:0.5", *sets, "--out", out
    )
    assert result.exit_code == 0, result.output
    return out


def test_run_writes_history_and_metadata(run_dir: Path) -> None:
    assert {p.name for p in run_dir.iterdir()} == {"history.csv", "history.parquet", "run.json"}
    history = pd.read_csv(run_dir / "history.csv")
    pd.testing.assert_frame_equal(history, pd.read_parquet(run_dir / "history.parquet"))
    assert history.columns[: len(CONTRACT)].tolist() == CONTRACT
    assert history["round"].tolist() == [0, 1, 2, 3, 4, 5]
    steps = history[[*COUNTERS, "sim_time", "wall_time"]].diff().dropna()
    assert (steps >= 0).all().all()
    assert history["uploads"].iloc[-1] == 25
    dim = json.loads((run_dir / "run.json").read_text())["problem"]["dim"]
    assert history["bytes_up"].iloc[-1] == 25 * dim * 4  # float32 models, one per upload


def test_run_metadata_has_config_seed_versions_and_shards(run_dir: Path) -> None:
    meta = json.loads((run_dir / "run.json").read_text())
    config = meta["config"]
    assert (config["workers"], config["rounds"], config["partition"]) == (5, 5, "dirichlet:0.5")
    assert config["options"] == {"lr": 0.5, "batch_size": 8}
    assert meta["seed"] == 0
    assert set(meta["versions"]) >= {"lowcomm", "torch", "numpy", "python"}
    sizes = meta["partition"]["sizes"]
    assert len(sizes) == 5 and sum(sizes) == meta["data"]["n_train"] and min(sizes) >= 1
    assert meta["summary"]["rounds"] == 5
    assert meta["summary"]["divergence"] is None


def test_run_prints_a_summary(tmp_path: Path) -> None:
    result = lowcomm("run", *DATA, "--rounds", "2", "--out", tmp_path / "r")
    assert "Final train loss" in result.stdout
    assert f"Saved to {tmp_path / 'r'}" in result.stdout
    assert lowcomm("run", *DATA, "--rounds", "2", "--out", tmp_path / "q", "-q").stdout == ""


INVALID = [
    (["--workers", "0"], "The 'workers' parameter of the run config must be a number >= 1. Got 0."),
    (
        ["--partition", "dirichlet:-1"],
        "The 'partition' parameter of lowcomm run must be dirichlet:ALPHA with a finite number "
        "ALPHA > 0. Got 'dirichlet:-1'.",
    ),
    (
        ["--algorithm", "nope"],
        f"The 'algorithm' parameter of lowcomm must be one of {KNOWN}. Got 'nope'.",
    ),
    (
        ["--engine", "foo"],
        "The 'engine' parameter of the run config must be one of 'simulate' or 'torchdist'. "
        "Got 'foo'.",
    ),
    (
        ["--set", "lr"],
        "The 'set' parameter of lowcomm run must be KEY=VALUE with a YAML value. Got 'lr'.",
    ),
    (
        ["--set", "step=0.1"],
        "The 'step' parameter of sgd must be a known setting (one of lr, batch_size, momentum, "
        "nesterov, reduce, asynchronous, sampling, order, projection, unit, compressor, "
        "error_feedback). Got 0.1.",
    ),
    (
        ["--set", "lr=-1"],
        "The 'lr' parameter of sgd must be a finite number > 0, or const:ETA, inv:ETA0,T0, "
        "step:ETA0,GAMMA,EVERY or cosine:ETA0,K. Got -1.",
    ),
]


@pytest.mark.parametrize(("flags", "message"), INVALID)
def test_invalid_flag_is_one_error_line_and_creates_nothing(
    tmp_path: Path, flags: list[str], message: str
) -> None:
    result = lowcomm("run", *DATA, *flags, "--out", tmp_path / "out")
    assert result.exit_code == 2
    assert one_error_line(result) == f"error: {message}"
    assert not (tmp_path / "out").exists()


def test_invalid_flag_leaves_an_existing_output_folder_alone(run_dir: Path) -> None:
    before = {p.name: p.read_bytes() for p in run_dir.iterdir()}
    result = lowcomm("run", *DATA, "--workers", "0", "--out", run_dir)
    assert result.exit_code == 2
    assert {p.name: p.read_bytes() for p in run_dir.iterdir()} == before


def test_usage_errors_are_one_line_too_through_the_entry_point(tmp_path: Path) -> None:
    argv = ["run", "--workers", "abc", "--out", str(tmp_path / "out")]
    done = subprocess.run(
        [sys.executable, "-m", "lowcomm", *argv], capture_output=True, text=True, check=False
    )
    assert done.returncode == 2
    assert done.stderr == (
        "error: Invalid value for '--workers': Input should be a valid integer, unable to parse "
        "string as an integer; see 'lowcomm run --help'\n"
    )
    assert not (tmp_path / "out").exists()


def test_config_file_then_flags(tmp_path: Path) -> None:
    config = tmp_path / "run.toml"
    config.write_text(
        'data = "synthetic-logistic:100,3"\nworkers = 3\nrounds = 1\noptions = {lr = 0.3}\n'
    )
    out = tmp_path / "out"
    result = lowcomm("run", config, "--rounds", "2", "--set", "momentum=0.5", "--out", out, "-q")
    assert result.exit_code == 0, result.output
    saved = json.loads((out / "run.json").read_text())["config"]
    assert (saved["workers"], saved["rounds"]) == (3, 2)
    assert saved["options"] == {"lr": 0.3, "momentum": 0.5}


def test_bad_config_file_is_one_error_line(tmp_path: Path) -> None:
    config = tmp_path / "run.yaml"
    config.write_text("workers: [1\nrounds: 2\n")
    result = lowcomm("run", config, "--out", tmp_path / "out")
    assert result.exit_code == 2
    assert one_error_line(result).startswith(f"error: {config}: not valid YAML: ")


@pytest.mark.parametrize(
    ("item", "value"),
    [
        ("local_steps=8", 8),
        ("lr=0.05", 0.05),
        ("lr=1e-3", 0.001),
        ("asynchronous=true", True),
        ("reduce=size-weighted", "size-weighted"),
        ("speeds=[1, 2.5]", [1, 2.5]),
        ("note=a=b", "a=b"),
    ],
)
def test_set_values_are_yaml(item: str, value: object) -> None:
    key = item.partition("=")[0]
    assert parse_sets([item], "lowcomm run") == {key: value}


@pytest.mark.parametrize("item", ["lr", "=1", "lr=[1"])
def test_malformed_set_is_refused(item: str) -> None:
    with pytest.raises(InvalidConfigError) as caught:
        parse_sets([item], "lowcomm run")
    expected = (
        f"The 'set' parameter of lowcomm run must be KEY=VALUE with a YAML value. Got {item!r}."
    )
    assert str(caught.value) == expected


def test_divergence_saves_outputs_and_exits_3(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = lowcomm("run", *DATA, "--rounds", "5", "--set", "lr=1e38", "--out", out, "-q")
    assert result.exit_code == 3
    line = one_error_line(result)
    assert line == (
        "error: Training diverged at round 1: the training loss is inf. "
        "The history up to this round was kept; try a smaller step size."
    )
    summary = json.loads((out / "run.json").read_text())["summary"]
    assert summary["divergence"] == line.removeprefix("error: ")
    assert pd.read_csv(out / "history.csv")["round"].tolist() == [0, 1]


def test_divergence_names_the_checkpoint_only_when_one_was_kept(tmp_path: Path) -> None:
    args = ["--data", "synthetic-logistic:200,5", "--algorithm", "local-sgd", "--rounds", "30"]
    result = lowcomm("run", *args, "--set", "lr=1e5", "--checkpoint-every", "1", "--out", tmp_path)
    assert result.exit_code == 3
    assert one_error_line(result) == (
        "error: Training diverged at round 5: the training loss is inf. The history up to this "
        "round and the last good checkpoint were kept; try a smaller step size."
    )
    assert (tmp_path / "checkpoint.pt").is_file()


def test_resume_continues_exactly(tmp_path: Path) -> None:
    common = [*DATA, "--algorithm", "local-sgd", "--set", "local_steps=2", "-q"]
    first = lowcomm(
        "run", *common, "--rounds", "4", "--checkpoint-every", "2", "--out", tmp_path / "a"
    )
    assert first.exit_code == 0, first.output
    assert (tmp_path / "a" / "checkpoint.pt").is_file()
    resumed = lowcomm("run", "--resume", "--rounds", "8", "--out", tmp_path / "a", "-q")
    assert resumed.exit_code == 0, resumed.output
    straight = lowcomm("run", *common, "--rounds", "8", "--out", tmp_path / "b")
    assert straight.exit_code == 0, straight.output
    a, b = (pd.read_csv(tmp_path / name / "history.csv") for name in ("a", "b"))
    assert len(a) == 9
    pd.testing.assert_frame_equal(a.drop(columns="wall_time"), b.drop(columns="wall_time"))
    fresh = lowcomm("run", *DATA, "--rounds", "1", "--out", tmp_path / "a", "-q", "--overwrite")
    assert fresh.exit_code == 0, fresh.output
    assert not (tmp_path / "a" / "checkpoint.pt").exists()  # not resumable from a stale state


def test_resume_errors(tmp_path: Path) -> None:
    missing = lowcomm("run", "--resume", "--out", tmp_path)
    assert missing.exit_code == 2
    assert one_error_line(missing) == (
        f"error: {tmp_path / 'checkpoint.pt'}: no checkpoint to resume from "
        "(save one with --checkpoint-every N)"
    )
    lowcomm("run", *DATA, "--rounds", "2", "--checkpoint-every", "2", "--out", tmp_path, "-q")
    early = lowcomm("run", "--resume", "--rounds", "1", "--out", tmp_path)
    assert one_error_line(early) == (
        "error: The 'rounds' parameter of lowcomm run --resume must be a number >= 2 "
        "(the checkpoint's round). Got 1."
    )
    changed = lowcomm("run", "--resume", "--rounds", "4", "--set", "lr=0.01", "--out", tmp_path)
    assert changed.exit_code == 2
    assert one_error_line(changed) == (
        "error: The 'options' parameter of lowcomm run --resume must be unchanged from "
        "OUT/run.json except rounds, epochs, grad_budget, eval_every, checkpoint_every, engine, "
        "timeout (start a new run to change the others). Got {'lr': 0.01}."
    )
    other = lowcomm("run", "--resume", "--rounds", "4", "--workers", "3", "--out", tmp_path)
    assert one_error_line(other).startswith("error: The 'workers' parameter of lowcomm run")
    longer = lowcomm("run", "--resume", "--rounds", "4", "--eval-every", "2", "--out", tmp_path)
    assert longer.exit_code == 0, longer.output


FIGURES = [
    "compare.png",
    *(f"compare-{x}.png" for x in ("round", "bytes", "grad_evals", "sim_time")),
]


@pytest.fixture(scope="module")
def compare_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "cmp"
    sets = ["--set", "lr=0.5", "--set", "local-sgd.local_steps=3"]
    args = ["--algorithms", "sgd,local-sgd", "--seeds", "0,1", "--rounds", "4", "--latency", "0.01"]
    result = lowcomm("compare", *DATA, *args, *sets, "--out", out)
    assert result.exit_code == 0, result.output
    assert "Cost to reach train loss" in result.stdout
    return out


def test_compare_writes_runs_figures_and_summary(compare_dir: Path) -> None:
    for name in ("sgd", "local-sgd"):
        for seed in (0, 1):
            options = json.loads((compare_dir / name / f"seed{seed}" / "run.json").read_text())
            expected = {"lr": 0.5} | ({"local_steps": 3} if name == "local-sgd" else {})
            assert options["config"]["options"] == expected
            assert options["seed"] == seed
    for figure in FIGURES:
        assert (compare_dir / figure).stat().st_size > 10_000
    summary = pd.read_csv(compare_dir / "summary.csv")
    assert summary["algorithm"].tolist() == ["sgd", "local-sgd"]
    assert summary["seeds"].tolist() == [2, 2]


def test_compare_cost_to_target_matches_the_saved_histories(compare_dir: Path) -> None:
    summary = pd.read_csv(compare_dir / "summary.csv").set_index("algorithm")
    means = {}
    for name in ("sgd", "local-sgd"):
        runs = [pd.read_csv(compare_dir / name / f"seed{s}" / "history.csv") for s in (0, 1)]
        means[name] = (runs[0]["train_loss"] + runs[1]["train_loss"]) / 2
        assert mean_history(runs)["train_loss"].tolist() == pytest.approx(means[name].tolist())
    target = max(mean.iloc[-1] for mean in means.values())
    assert summary["target_loss"].tolist() == pytest.approx([target, target])
    for name, mean in means.items():
        first = next(r for r, loss in enumerate(mean) if loss <= target + 1e-12)
        assert summary.loc[name, "rounds_to_target"] == first
        assert summary.loc[name, "uploads_to_target"] == 5 * first
        assert summary.loc[name, "sim_time_to_target"] == pytest.approx(0.02 * first)
        assert summary.loc[name, "final_train_loss"] == pytest.approx(mean.iloc[-1])


def test_compare_with_a_given_target(tmp_path: Path) -> None:
    args = ["--algorithms", "gd", "--rounds", "2", "--target-loss", "1e-9", "-q"]
    result = lowcomm("compare", *DATA, *args, "--out", tmp_path)
    assert result.exit_code == 0, result.output
    summary = pd.read_csv(tmp_path / "summary.csv")
    assert summary["target_loss"].tolist() == [1e-9]
    assert math.isnan(summary["rounds_to_target"].iloc[0])


def test_compare_config_file_with_algorithms_seeds_and_option_tables(tmp_path: Path) -> None:
    config = tmp_path / "compare.yaml"
    config.write_text(
        "algorithms: [sgd, gd]\nseeds: [2]\nrounds: 1\nworkers: 2\n"
        "data: synthetic-logistic:60,3\noptions: {lr: 0.3, local-sgd: {local_steps: 2}}\n"
    )
    out = tmp_path / "out"
    result = lowcomm("compare", config, "--algorithms", "sgd,local-sgd", "--out", out, "-q")
    assert result.exit_code == 0, result.output
    saved = json.loads((out / "compare.json").read_text())
    assert (saved["algorithms"], saved["seeds"]) == (["sgd", "local-sgd"], [2])
    assert saved["options"] == {"sgd": {"lr": 0.3}, "local-sgd": {"lr": 0.3, "local_steps": 2}}
    assert saved["config"]["workers"] == 2


def test_compare_config_file_settings_for_algorithms_not_compared_are_left_out(
    tmp_path: Path,
) -> None:
    config = tmp_path / "compare.yaml"
    config.write_text(
        "algorithms: [sgd, local-sgd]\nrounds: 1\nworkers: 2\ndata: synthetic-logistic:60,3\n"
        "options: {lr: 0.3, local_steps: 2, local-sgd: {lr: 0.1}}\n"
    )
    out = tmp_path / "out"
    result = lowcomm("compare", config, "--algorithms", "gd", "--out", out, "-q")
    assert result.exit_code == 0, result.output
    assert json.loads((out / "compare.json").read_text())["options"] == {"gd": {}}
    config.write_text(config.read_text().replace("local_steps", "local_stepz"))
    typo = lowcomm("compare", config, "--algorithms", "gd", "--out", tmp_path / "typo")
    assert one_error_line(typo).startswith("error: The 'local_stepz' parameter")


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (
            ["--partition", "dirichlet:-1"],
            "The 'partition' parameter of lowcomm run must be dirichlet:ALPHA with a finite "
            "number ALPHA > 0. Got 'dirichlet:-1'.",
        ),
        (
            ["--set", "gd.lr=1"],
            "The 'set' parameter of lowcomm compare must be KEY or ALGORITHM.KEY with ALGORITHM "
            "one of sgd, local-sgd. Got 'gd.lr'.",
        ),
        (
            ["--seeds", "0,x"],
            "The 'seeds' parameter of lowcomm compare must be comma-separated integers >= 0. "
            "Got '0,x'.",
        ),
    ],
)
def test_compare_errors_come_before_any_run(tmp_path: Path, flags: list[str], message: str) -> None:
    result = lowcomm("compare", *DATA, *flags, "--out", tmp_path / "out")
    assert result.exit_code == 2
    assert one_error_line(result) == f"error: {message}"
    assert not (tmp_path / "out").exists()


def test_plot_redraws_a_comparison(compare_dir: Path) -> None:
    for figure in FIGURES:
        (compare_dir / figure).unlink()
    result = lowcomm("plot", compare_dir)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [str(compare_dir / figure) for figure in FIGURES]
    assert all((compare_dir / figure).is_file() for figure in FIGURES)


def test_plot_groups_seed_folders_and_takes_run_folders(
    compare_dir: Path, run_dir: Path, tmp_path: Path
) -> None:
    seeds = [compare_dir / "sgd" / "seed0", compare_dir / "sgd" / "seed1"]
    result = lowcomm("plot", run_dir, *seeds, "--y", "test_metric", "--out", tmp_path / "p.png")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "p.png").is_file() and (tmp_path / "p-bytes.png").is_file()


def test_plot_of_a_folder_without_history_is_one_error_line(tmp_path: Path) -> None:
    result = lowcomm("plot", tmp_path)
    assert result.exit_code == 2
    assert one_error_line(result) == (
        f"error: {tmp_path}: no history.parquet or history.csv here (not a lowcomm run folder)"
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.dist
@pytest.mark.slow
def test_torchdist_run_is_saved_and_printed_by_rank_0_only(tmp_path: Path) -> None:
    env = os.environ | {
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(free_port()),
        "WORLD_SIZE": "3",
        "LOWCOMM_BACKEND": "gloo",
    }
    argv = ["run", "--engine", "torchdist", *DATA, "--rounds", "2", "--out", str(tmp_path / "td")]
    ranks = [
        subprocess.Popen(
            [sys.executable, "-m", "lowcomm", *argv],
            env=env | {"RANK": str(rank)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in range(3)
    ]
    outputs = [rank.communicate(timeout=180) for rank in ranks]
    assert [rank.returncode for rank in ranks] == [0, 0, 0], outputs
    assert "Run summary" in outputs[0][0]
    assert outputs[1:] == [("", ""), ("", "")]
    history = pd.read_csv(tmp_path / "td" / "history.csv")
    assert history["round"].tolist() == [0, 1, 2]


def test_the_demo_runs_every_registered_algorithm(tmp_path: Path) -> None:
    demo = Path(__file__).parent.parent / "examples" / "demo.yaml"
    result = lowcomm("compare", demo, "--rounds", "2", "--seeds", "0", "--out", tmp_path, "-q")
    assert result.exit_code == 0, result.output
    summary = pd.read_csv(tmp_path / "summary.csv")
    assert sorted(summary["algorithm"]) == sorted(REGISTRY)
    assert (summary["final_round"] == 2).all()


def test_an_asynchronous_run_saves_its_ledger_and_replay_follows_its_order(
    tmp_path: Path,
) -> None:
    speeds = tmp_path / "speeds.yaml"
    speeds.write_text("speeds: [1.0, 2.0, 3.0, 5.0, 8.0]\nseconds_per_grad: 0.01\n")
    common = [*DATA, "--algorithm", "hogwild-ib", "--rounds", "30", "--eval-every", "10", "-q"]
    raced = lowcomm("run", speeds, *common, "--out", tmp_path / "raced")
    assert raced.exit_code == 0, raced.output
    ledger = pd.read_csv(tmp_path / "raced" / "ledger.csv")
    plain = lowcomm("run", *common, "--out", tmp_path / "plain")  # all arrive together
    assert plain.exit_code == 0, plain.output
    unraced = event_order(pd.read_csv(tmp_path / "plain" / "ledger.csv"))
    assert unraced == ((0, 1, 2, 3, 4),) * 30
    assert event_order(ledger) != unraced
    replayed = lowcomm("run", *common, "--replay", tmp_path / "raced", "--out", tmp_path / "re")
    assert replayed.exit_code == 0, replayed.output
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "re" / "ledger.csv"), ledger)
    a, b = (pd.read_csv(tmp_path / name / "history.csv") for name in ("raced", "re"))
    same = [c for c in a.columns if c not in ("sim_time", "wall_time")]
    pd.testing.assert_frame_equal(a[same], b[same])
    assert b["sim_time"].iloc[-1] < a["sim_time"].iloc[-1]  # its own (faster) clock
    sync = lowcomm("run", *DATA, "--replay", tmp_path / "raced", "--out", tmp_path / "s")
    assert one_error_line(sync).startswith("error: The '--replay' parameter of lowcomm run")
    flags = ["--replay", tmp_path / "raced", "--checkpoint-every", "5", "--out", tmp_path / "c"]
    checkpointed = lowcomm("run", *common, *flags)
    assert one_error_line(checkpointed).startswith("error: The '--replay' parameter")
    assert "without --resume and --checkpoint-every" in checkpointed.output
    missing = lowcomm("run", *common, "--replay", tmp_path, "--out", tmp_path / "m")
    assert one_error_line(missing) == f"error: {tmp_path / 'ledger.csv'}: not found " + (
        "(an asynchronous lowcomm run saves its ledger there)"
    )
